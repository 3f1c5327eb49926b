#!/usr/bin/python3
"""Traffic tools for the ftpair pair lab.

Run them inside the lab namespaces, e.g.
    ftpair-lab exec server tools/lab/traffic.py echo-server --port 7000 --udp
    ftpair-lab exec client tools/lab/traffic.py echo-client --host 198.18.2.10 \
        --port 7000 --conns 10 --seconds 5 --json

Subcommands
  echo-server  threaded TCP echo server (plus UDP echo with --udp). Prints
               "LISTENING tcp|udp ADDR:PORT" once ready, then one line per peer:
               "PEER ip:port" for every TCP connection and "PEER ip:port udp" for
               every new UDP peer address.
  echo-client  N long-lived TCP connections, each streaming a deterministic
               pseudo-random byte stream and verifying every echoed byte. Prints
               one JSON line at the end (and one, with "interim": true, on SIGUSR1):
               {"conns","ok","reset","corrupt","timeout","connect_failed","bytes",
                "max_gap_ms",...}. Exit 0 only if every connection is ok.
               Progress lines ("CONNECTED n/N", "STREAMING", "DRAINING") go to stderr.
               SIGINT/SIGTERM end the streaming phase early (then drain and report).
  udp-client   sends N numbered datagrams, counts the echoes. Prints
               {"sent","received","lost","duplicates","corrupt"}; exit 0 iff all came back.
  tcp-probe    one TCP connect with a timeout. Prints {"connected": bool, "error": ...};
               exit 0 if it connected, 1 if not.
"""

import argparse
import errno
import json
import os
import random
import selectors
import signal
import socket
import struct
import sys
import threading
import time

OP_TIMEOUT_S = 10.0

_print_lock = threading.Lock()


def out(line):
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def err(line):
    with _print_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


# ------------------------------------------------------------- echo-server --

def _tcp_echo_conn(conn, peer):
    try:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
    except OSError:
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass


def _tcp_server(bind, port, ready):
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((bind, port))
    ls.listen(1024)
    out("LISTENING tcp %s:%d" % (bind, port))
    ready.set()
    while True:
        try:
            conn, peer = ls.accept()
        except OSError as e:
            if e.errno in (errno.EINTR, errno.ECONNABORTED, errno.EMFILE, errno.ENFILE):
                time.sleep(0.01)
                continue
            raise
        out("PEER %s:%d" % peer)
        t = threading.Thread(target=_tcp_echo_conn, args=(conn, peer), daemon=True)
        t.start()


def _udp_server(bind, port, ready):
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    us.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    us.bind((bind, port))
    out("LISTENING udp %s:%d" % (bind, port))
    ready.set()
    seen = set()
    while True:
        try:
            data, peer = us.recvfrom(65535)
        except OSError:
            continue
        if peer not in seen:
            seen.add(peer)
            out("PEER %s:%d udp" % peer)
        try:
            us.sendto(data, peer)
        except OSError:
            pass


def cmd_echo_server(a):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    if a.no_tcp and not a.udp:
        err("echo-server: nothing to serve (--no-tcp without --udp)")
        return 2
    threads = []
    if not a.no_tcp:
        ev = threading.Event()
        threads.append((threading.Thread(target=_tcp_server, args=(a.bind, a.port, ev),
                                         daemon=True), ev))
    if a.udp:
        ev = threading.Event()
        threads.append((threading.Thread(target=_udp_server, args=(a.bind, a.port, ev),
                                         daemon=True), ev))
    for t, _ in threads:
        t.start()
    while all(t.is_alive() for t, _ in threads):
        time.sleep(0.2)
    err("echo-server: a listener thread died")
    return 1


# ------------------------------------------------------------- echo-client --

class _Conn:
    __slots__ = ("idx", "sock", "rng", "pending", "sent", "verified", "state", "detail",
                 "wait_start", "max_gap", "t_connect", "eof", "gen_buf", "gen_off", "last_echo_unix")

    def __init__(self, idx, seed):
        self.idx = idx
        self.sock = None
        self.rng = random.Random(seed * 1000003 + idx)
        self.pending = bytearray()   # sent, not yet echoed
        self.sent = 0
        self.verified = 0
        self.state = "connecting"    # connecting|open|draining|closing|ok|reset|corrupt|timeout|connect_failed
        self.detail = ""
        self.wait_start = None       # when we started waiting for echo progress
        self.max_gap = 0.0
        self.t_connect = None
        self.eof = False
        self.gen_buf = b""
        self.gen_off = 0
        self.last_echo_unix = 0.0    # wall clock of the newest verified echo (0: none yet)

    def next_bytes(self, n):
        """Next n bytes of this connection's deterministic stream."""
        chunks = []
        while n > 0:
            if self.gen_off >= len(self.gen_buf):
                self.gen_buf = self.rng.randbytes(65536)
                self.gen_off = 0
            take = min(n, len(self.gen_buf) - self.gen_off)
            chunks.append(self.gen_buf[self.gen_off:self.gen_off + take])
            self.gen_off += take
            n -= take
        return b"".join(chunks)

    @property
    def done(self):
        return self.state in ("ok", "reset", "corrupt", "timeout", "connect_failed")


class _EchoClient:
    def __init__(self, a):
        self.a = a
        self.sel = selectors.DefaultSelector()
        self.conns = [_Conn(i, a.seed) for i in range(a.conns)]
        self.t0 = time.monotonic()
        self.stop_streaming = False
        self.interim_requested = False
        self.pushback = {}  # idx -> bytes generated but not accepted by the kernel

    # -- bookkeeping
    def _fail(self, c, state, detail=""):
        if c.done:
            return
        now = time.monotonic()
        if c.wait_start is not None:
            c.max_gap = max(c.max_gap, now - c.wait_start)
        c.state = state
        c.detail = detail
        self._close(c)

    def _close(self, c):
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            try:
                c.sock.close()
            except OSError:
                pass
            c.sock = None

    def summary(self, interim):
        now = time.monotonic()
        counts = {"ok": 0, "reset": 0, "corrupt": 0, "timeout": 0, "connect_failed": 0}
        max_gap = 0.0
        for c in self.conns:
            g = c.max_gap
            if c.wait_start is not None and not c.done:
                g = max(g, now - c.wait_start)
            max_gap = max(max_gap, g)
            if c.state in counts:
                counts[c.state] += 1
        res = {
            "conns": len(self.conns),
            "ok": counts["ok"],
            "reset": counts["reset"],
            "corrupt": counts["corrupt"],
            "timeout": counts["timeout"],
            "connect_failed": counts["connect_failed"],
            "alive": sum(1 for c in self.conns if not c.done),
            "bytes": sum(c.verified for c in self.conns),
            "max_gap_ms": round(max_gap * 1000.0, 1),
            "elapsed_s": round(now - self.t0, 3),
            "interim": interim,
            # per connection, the wall-clock time of its newest verified echo (when did it last work)
            "last_echo_unix": [round(c.last_echo_unix, 3) for c in self.conns],
        }
        errors = [{"conn": c.idx, "state": c.state, "detail": c.detail}
                  for c in self.conns if c.state not in ("ok", "open", "draining", "closing")]
        if errors:
            res["errors"] = errors[:20]
        return res

    def _maybe_interim(self):
        if self.interim_requested:
            self.interim_requested = False
            out(json.dumps(self.summary(True)))

    # -- phases
    def connect_all(self):
        deadline = time.monotonic() + self.a.connect_timeout
        waiting = 0
        for c in self.conns:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.sock = s
            rc = s.connect_ex((self.a.host, self.a.port))
            if rc not in (0, errno.EINPROGRESS):
                self._fail(c, "connect_failed", os.strerror(rc))
                continue
            self.sel.register(s, selectors.EVENT_WRITE, c)
            waiting += 1
        while waiting and time.monotonic() < deadline:
            self._maybe_interim()
            for key, _ in self.sel.select(timeout=0.05):
                c = key.data
                e = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                waiting -= 1
                if e:
                    self._fail(c, "connect_failed", os.strerror(e))
                    continue
                c.state = "open"
                c.t_connect = time.monotonic()
                self.sel.modify(c.sock, selectors.EVENT_READ, c)
        for c in self.conns:
            if c.state == "connecting":
                self._fail(c, "connect_failed", "connect timeout")
        n_open = sum(1 for c in self.conns if c.state == "open")
        err("CONNECTED %d/%d" % (n_open, len(self.conns)))

    def _on_readable(self, c, now):
        try:
            data = c.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._fail(c, "timeout" if e.errno == errno.ETIMEDOUT else "reset", str(e))
            return
        if not data:
            if c.state == "closing" and not c.pending:
                c.eof = True
                c.state = "ok"
                self._close(c)
            else:
                self._fail(c, "reset", "connection closed by peer with %d bytes outstanding"
                           % len(c.pending))
            return
        n = len(data)
        if n > len(c.pending) or c.pending[:n] != data:
            off = next((i for i in range(min(n, len(c.pending)))
                        if c.pending[i] != data[i]), min(n, len(c.pending)))
            self._fail(c, "corrupt", "mismatch at stream offset %d" % (c.verified + off))
            return
        del c.pending[:n]
        c.verified += n
        c.last_echo_unix = time.time()
        if c.wait_start is not None:
            c.max_gap = max(c.max_gap, now - c.wait_start)
        c.wait_start = now if c.pending else None

    def _try_send(self, c, now, t_stream):
        if c.state != "open" or self.stop_streaming:
            return
        window = self.a.window - len(c.pending)
        if window <= 0:
            return
        if self.a.rate_bytes_per_s > 0:
            allowed = int(self.a.rate_bytes_per_s * (now - t_stream)) - c.sent
            # send in reasonably sized pieces, but never starve a slow rate
            if allowed < min(1024, self.a.rate_bytes_per_s // 50 or 1):
                return
        else:
            allowed = 1 << 20
        n = min(allowed, window, 16384)
        buf = self.pushback.pop(c.idx, None)
        if buf is None:
            buf = c.next_bytes(n)
        try:
            k = c.sock.send(buf)
        except (BlockingIOError, InterruptedError):
            self.pushback[c.idx] = buf
            return
        except OSError as e:
            self._fail(c, "timeout" if e.errno == errno.ETIMEDOUT else "reset", str(e))
            return
        if k < len(buf):
            self.pushback[c.idx] = buf[k:]
        if k > 0:
            if not c.pending:
                c.wait_start = now
            c.pending += buf[:k]
            c.sent += k

    def _check_timeouts(self, now):
        for c in self.conns:
            if c.done or c.wait_start is None:
                continue
            if now - c.wait_start > self.a.op_timeout:
                self._fail(c, "timeout", "no echo progress for %.1fs (%d bytes outstanding)"
                           % (now - c.wait_start, len(c.pending)))

    def _loop_once(self, now, t_stream):
        for key, _ in self.sel.select(timeout=0.01):
            self._on_readable(key.data, time.monotonic())
        now = time.monotonic()
        for c in self.conns:
            if c.state == "open":
                self._try_send(c, now, t_stream)
        self._check_timeouts(now)
        self._maybe_interim()

    def run(self):
        self.connect_all()
        t_stream = time.monotonic()
        t_end = t_stream + self.a.seconds
        err("STREAMING %.1fs" % self.a.seconds)
        while not self.stop_streaming and time.monotonic() < t_end:
            if all(c.done for c in self.conns):
                break
            self._loop_once(time.monotonic(), t_stream)
        self.stop_streaming = True
        # Drain: flush what the kernel refused, wait for all echoes.
        err("DRAINING")
        drain_deadline = time.monotonic() + self.a.op_timeout + 5
        while time.monotonic() < drain_deadline:
            now = time.monotonic()
            for c in self.conns:
                if c.state == "open" and c.idx in self.pushback:
                    buf = self.pushback.pop(c.idx)
                    try:
                        k = c.sock.send(buf)
                    except (BlockingIOError, InterruptedError):
                        k = 0
                    except OSError as e:
                        self._fail(c, "reset", str(e))
                        continue
                    if k < len(buf):
                        self.pushback[c.idx] = buf[k:]
                    if k:
                        if not c.pending:
                            c.wait_start = now
                        c.pending += buf[:k]
                        c.sent += k
                if c.state == "open" and c.idx not in self.pushback and not c.pending:
                    c.state = "closing"
                    try:
                        c.sock.shutdown(socket.SHUT_WR)
                    except OSError as e:
                        self._fail(c, "reset", str(e))
            if all(c.done for c in self.conns):
                break
            for key, _ in self.sel.select(timeout=0.01):
                self._on_readable(key.data, time.monotonic())
            self._check_timeouts(time.monotonic())
            self._maybe_interim()
        for c in self.conns:
            if c.state == "closing" and not c.pending:
                # everything echoed and verified; the peer is just slow to close
                c.state = "ok"
                self._close(c)
            elif not c.done:
                self._fail(c, "timeout", "drain did not finish (%d bytes outstanding)"
                           % len(c.pending))
        res = self.summary(False)
        out(json.dumps(res) if self.a.json else json.dumps(res, indent=1))
        return 0 if res["ok"] == res["conns"] else 1


def cmd_echo_client(a):
    cl = _EchoClient(a)

    def on_usr1(*_):
        cl.interim_requested = True

    def on_stop(*_):
        if cl.stop_streaming:
            out(json.dumps(cl.summary(True)))
            os._exit(1)
        cl.stop_streaming = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGTERM, on_stop)
    return cl.run()


# -------------------------------------------------------------- udp-client --

_UDP_MAGIC = b"FTPU"


def cmd_udp_client(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((a.host, a.port))
    s.setblocking(False)
    run_id = random.getrandbits(32)
    pad = bytes((i * 7) & 0xFF for i in range(max(0, a.size - 12)))
    received = set()
    dup = corrupt = errors = 0
    sent = 0
    t_next = time.monotonic()

    def drain():
        nonlocal dup, corrupt, errors
        while True:
            try:
                d = s.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                errors += 1   # e.g. ICMP port unreachable
                return
            if len(d) < 12 or d[:4] != _UDP_MAGIC:
                corrupt += 1
                continue
            rid, seq = struct.unpack("!II", d[4:12])
            if rid != run_id or d[12:] != pad or seq >= a.count:
                corrupt += 1
                continue
            if seq in received:
                dup += 1
            received.add(seq)

    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ)
    while sent < a.count:
        now = time.monotonic()
        if now >= t_next:
            try:
                s.send(_UDP_MAGIC + struct.pack("!II", run_id, sent) + pad)
            except (BlockingIOError, InterruptedError):
                sel.select(timeout=0.001)
                continue
            except OSError:
                errors += 1
            sent += 1
            t_next = now + a.interval_ms / 1000.0
        sel.select(timeout=max(0.0, min(0.01, t_next - time.monotonic())))
        drain()
    deadline = time.monotonic() + a.timeout
    while len(received) < sent and time.monotonic() < deadline:
        sel.select(timeout=0.05)
        drain()
    res = {"sent": sent, "received": len(received), "lost": sent - len(received),
           "duplicates": dup, "corrupt": corrupt, "errors": errors}
    out(json.dumps(res))
    return 0 if len(received) == sent and corrupt == 0 else 1


# --------------------------------------------------------------- tcp-probe --

def cmd_tcp_probe(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(a.timeout)
    t = time.monotonic()
    try:
        s.connect((a.host, a.port))
        res = {"connected": True, "error": None, "local": "%s:%d" % s.getsockname()}
    except socket.timeout:
        res = {"connected": False, "error": "timeout"}
    except OSError as e:
        res = {"connected": False, "error": e.strerror or str(e)}
    finally:
        s.close()
    res["elapsed_s"] = round(time.monotonic() - t, 3)
    out(json.dumps(res))
    return 0 if res["connected"] else 1


# -------------------------------------------------------------------- main --

def main(argv=None):
    p = argparse.ArgumentParser(description="ftpair lab traffic tools")
    sub = p.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("echo-server", help="TCP (and UDP) echo server")
    e.add_argument("--port", type=int, required=True)
    e.add_argument("--bind", default="0.0.0.0")
    e.add_argument("--udp", action="store_true", help="also serve UDP echo on the same port")
    e.add_argument("--no-tcp", action="store_true", help="UDP only (with --udp)")
    e.set_defaults(func=cmd_echo_server)

    c = sub.add_parser("echo-client", help="verified TCP echo streams")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--conns", type=int, default=1)
    c.add_argument("--seconds", type=float, default=5.0)
    c.add_argument("--rate-bytes-per-s", type=int, default=65536,
                   help="per connection; 0 = as fast as the window allows (default 65536)")
    c.add_argument("--window", type=int, default=262144,
                   help="max unechoed bytes per connection (default 262144)")
    c.add_argument("--seed", type=int, default=1)
    c.add_argument("--connect-timeout", type=float, default=OP_TIMEOUT_S)
    c.add_argument("--op-timeout", type=float, default=OP_TIMEOUT_S,
                   help="fail a connection after this long without echo progress")
    c.add_argument("--json", action="store_true", help="compact one-line JSON summary")
    c.set_defaults(func=cmd_echo_client)

    u = sub.add_parser("udp-client", help="numbered UDP datagrams, count echoes")
    u.add_argument("--host", required=True)
    u.add_argument("--port", type=int, required=True)
    u.add_argument("--count", type=int, default=10)
    u.add_argument("--size", type=int, default=64, help="datagram payload bytes (>= 12)")
    u.add_argument("--interval-ms", type=float, default=2.0)
    u.add_argument("--timeout", type=float, default=3.0,
                   help="seconds to wait for the last echoes")
    u.set_defaults(func=cmd_udp_client)

    t = sub.add_parser("tcp-probe", help="one TCP connect attempt")
    t.add_argument("--host", required=True)
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--timeout", type=float, default=2.0)
    t.set_defaults(func=cmd_tcp_probe)

    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
