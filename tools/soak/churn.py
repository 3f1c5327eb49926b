#!/usr/bin/python3
"""Flow churn for the soak test: short TCP connections and one-datagram UDP flows, forever.

  churn.py --host H --port P [--tcp-rate 10] [--udp-rate 20] [--timeout 3]   (client namespace)

Against tools/lab/traffic.py echo-server --udp on H:P:
  - every 1/tcp-rate s a new TCP connection: connect, send 64 bytes, read them back (checked),
    close from the client (FIN both ways, so the flow goes through SYN..TIME_WAIT);
  - every 1/udp-rate s a new UDP socket (a new source port, so a new NAT flow): one datagram,
    its echo checked, then the socket is closed.
Each operation either completes within --timeout seconds or counts as failed (by reason).
One event loop, no threads, no process per flow: the churn costs little CPU.

SIGUSR1 prints an interim JSON line; SIGTERM/SIGINT stop starting new flows, let the ones in
flight finish (or time out) and print the final line:
  {"tcp_started","tcp_ok","tcp_failed":{reason: n},"udp_started","udp_ok","udp_failed":{...},
   "fail_times":[monotonic s of the last failures], "interim"}
CLOCK_MONOTONIC is shared by the lab namespaces, so the driver can put failures next to its
events.
"""

import argparse
import errno
import json
import os
import selectors
import signal
import socket
import sys
import time

PAYLOAD = 64


class Churn:
    def __init__(self, a):
        self.a = a
        self.sel = selectors.DefaultSelector()
        self.ops = {}            # fileobj -> op dict
        self.tcp_started = self.tcp_ok = 0
        self.udp_started = self.udp_ok = 0
        self.tcp_failed = {}
        self.udp_failed = {}
        self.fail_times = []     # (monotonic s, kind, reason), the last 1000
        self.stopping = False
        self.interim = False
        self.seq = 0

    # -- bookkeeping
    def _fail(self, op, reason):
        d = self.tcp_failed if op["kind"] == "tcp" else self.udp_failed
        d[reason] = d.get(reason, 0) + 1
        self.fail_times.append((round(time.monotonic(), 3), op["kind"], reason))
        del self.fail_times[:-1000]
        self._close(op)

    def _close(self, op):
        s = op["sock"]
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        self.ops.pop(s, None)
        try:
            s.close()
        except OSError:
            pass

    def _token(self):
        self.seq += 1
        head = ("%d:%d:" % (os.getpid(), self.seq)).encode()
        return head + bytes((self.seq + i) & 0xFF for i in range(PAYLOAD - len(head)))

    # -- starting flows
    def start_tcp(self, now):
        self.tcp_started += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        op = {"kind": "tcp", "sock": s, "deadline": now + self.a.timeout, "phase": "connect",
              "data": self._token(), "got": b""}
        rc = s.connect_ex((self.a.host, self.a.port))
        if rc not in (0, errno.EINPROGRESS):
            op["sock"] = s
            self.ops[s] = op
            self._fail(op, "connect:" + errno.errorcode.get(rc, str(rc)))
            return
        self.ops[s] = op
        self.sel.register(s, selectors.EVENT_WRITE, op)

    def start_udp(self, now):
        self.udp_started += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        op = {"kind": "udp", "sock": s, "deadline": now + self.a.timeout, "data": self._token()}
        self.ops[s] = op
        try:
            s.connect((self.a.host, self.a.port))   # binds a fresh ephemeral port
            s.send(op["data"])
        except OSError as e:
            self._fail(op, "send:" + errno.errorcode.get(e.errno, str(e.errno)))
            return
        self.sel.register(s, selectors.EVENT_READ, op)

    # -- progress
    def _recv(self, op, size):
        """What arrived on op's socket (b"" at EOF), or None: nothing after all, or an error
        (the operation failed and is closed)."""
        try:
            return op["sock"].recv(size)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            self._fail(op, "recv:" + errno.errorcode.get(e.errno, str(e.errno)))
            return None

    def on_event(self, op, mask):
        s = op["sock"]
        if op["kind"] == "udp":
            d = self._recv(op, 2048)
            if d is None:
                return
            if d != op["data"]:
                self._fail(op, "corrupt")
                return
            self.udp_ok += 1
            self._close(op)
            return
        if op["phase"] == "connect":
            e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if e:
                self._fail(op, "connect:" + errno.errorcode.get(e, str(e)))
                return
            try:
                s.send(op["data"])   # 64 bytes always fit an empty send buffer
            except OSError as ex:
                self._fail(op, "send:" + errno.errorcode.get(ex.errno, str(ex.errno)))
                return
            op["phase"] = "echo"
            self.sel.modify(s, selectors.EVENT_READ, op)
            return
        d = self._recv(op, 4096)
        if d is None:
            return
        if op["phase"] == "echo":
            if not d:
                self._fail(op, "eof_before_echo")
                return
            op["got"] += d
            if not op["data"].startswith(op["got"]):
                self._fail(op, "corrupt")
                return
            if len(op["got"]) == len(op["data"]):
                # Close from the client: our FIN, then wait for the server's FIN.
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError as e:
                    self._fail(op, "shutdown:" + errno.errorcode.get(e.errno, str(e.errno)))
                    return
                op["phase"] = "fin"
            return
        # phase fin: the server's FIN (EOF) completes the connection
        if d:
            self._fail(op, "data_after_echo")
            return
        self.tcp_ok += 1
        self._close(op)

    def expire(self, now):
        for op in [o for o in self.ops.values() if now > o["deadline"]]:
            self._fail(op, "timeout" + ("" if op["kind"] == "udp" else ":" + op["phase"]))

    def summary(self, interim):
        return {"tcp_started": self.tcp_started, "tcp_ok": self.tcp_ok, "tcp_failed": self.tcp_failed,
                "udp_started": self.udp_started, "udp_ok": self.udp_ok, "udp_failed": self.udp_failed,
                "in_flight": len(self.ops), "fail_times": self.fail_times[-200:],
                "interim": interim}

    def run(self):
        t0 = time.monotonic()
        tcp_period = 1.0 / self.a.tcp_rate if self.a.tcp_rate > 0 else None
        udp_period = 1.0 / self.a.udp_rate if self.a.udp_rate > 0 else None
        n_tcp = n_udp = 0
        end = t0 + self.a.seconds if self.a.seconds > 0 else None
        while True:
            now = time.monotonic()
            if end is not None and now >= end:
                self.stopping = True
            if self.stopping:
                if not self.ops or now > self.stop_deadline():
                    break
            else:
                # a fixed schedule: flow n starts at t0 + n * period (a late loop catches up)
                while tcp_period and t0 + n_tcp * tcp_period <= now:
                    n_tcp += 1
                    self.start_tcp(now)
                while udp_period and t0 + n_udp * udp_period <= now:
                    n_udp += 1
                    self.start_udp(now)
            nxt = min(x for x in (t0 + n_tcp * tcp_period if tcp_period else now + 0.05,
                                  t0 + n_udp * udp_period if udp_period else now + 0.05,
                                  now + 0.05))
            for key, mask in self.sel.select(timeout=max(0.0, nxt - time.monotonic())):
                if key.data["sock"] in self.ops:
                    self.on_event(key.data, mask)
            self.expire(time.monotonic())
            if self.interim:
                self.interim = False
                print(json.dumps(self.summary(True)), flush=True)
        self.expire(float("inf"))
        print(json.dumps(self.summary(False)), flush=True)
        return 0

    def stop_deadline(self):
        if not hasattr(self, "_stop_deadline"):
            self._stop_deadline = time.monotonic() + self.a.timeout + 1
        return self._stop_deadline


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--tcp-rate", type=float, default=10.0, help="new TCP connections per second")
    p.add_argument("--udp-rate", type=float, default=20.0, help="new UDP flows per second")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds an operation may take")
    p.add_argument("--seconds", type=float, default=0, help="0: until SIGTERM")
    a = p.parse_args()
    c = Churn(a)

    def on_usr1(*_):
        c.interim = True

    def on_stop(*_):
        c.stopping = True

    signal.signal(signal.SIGUSR1, on_usr1)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    return c.run()


if __name__ == "__main__":
    sys.exit(main())
