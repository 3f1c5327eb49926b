#!/usr/bin/python3
"""NAT behaviour probes for the ftpair pair lab (tests/lab/test_nat.py).

Run inside lab namespaces (ftpair-lab exec HOST tools/lab/nattool.py ...). Every client
subcommand prints one JSON line at the end; servers print one line per event.

Servers
  udp-reflect --port P [--port Q ...]
        UDP on each port. Every datagram is answered, from the port it came to, with
        a JSON header {"src": "ip:port", "dport": P, "len": N, "sum": sha256-prefix}
        and a newline; when the request is longer than that, the reply is padded with
        0x5a bytes to the request's length (so a 4000-byte request gets a 4000-byte
        reply). Prints "LISTENING udp P" per port, then "RECV P ip:port N" per datagram.
  tcp-sink --port P
        TCP: reads each connection to EOF, answers {"bytes": N, "sha256": hex} and
        closes. Prints "LISTENING tcp P", then "SINK ip:port N sha256" per connection.

Clients
  udp-eim --bind-port P --to HOST:PORT [--to HOST:PORT ...]
        from one local port, one datagram to each destination (up to 3 tries); prints
        {"local": P, "seen": {"HOST:PORT": "ip:port" | null}}: the source each
        udp-reflect saw.
  udp-listen --bind-port P --first HOST:PORT --seconds S
        sends one datagram to HOST:PORT (a udp-reflect) from local port P, prints
        "MAPPED ip:port" (the source the reflector saw) or "MAPPED none", then prints
        "RECV ip:port payload" for every datagram that arrives within S seconds; the
        last line is a JSON summary {"mapped", "received": [[src, payload], ...]}.
  udp-send --to HOST:PORT [--bind-port P] [--data TEXT] [--count N]
        sends N copies of one datagram, prints {"sent": N, "local": "ip:port"}.
  udp-big --to HOST:PORT --size N
        one N-byte datagram to a udp-reflect; prints {"sent", "received", "reply_len",
        "seen_len", "src"} with "ok": the reply is N bytes and the reflector saw N bytes.
  udp-refused --to HOST:PORT [--timeout T]
        connected UDP socket: send, then recv; prints {"refused": bool, "error",
        "elapsed_s"}. A closed port answers ICMP port unreachable, which Linux reports
        as ECONNREFUSED on the next recv of a connected socket.
  udp-flows --to HOST:PORT --count N [--timeout T] [--retries R]
        N sockets (N distinct local ports), one datagram each; prints {"flows": N,
        "answered": K, "icmp_errors": E, "send_errors": F}.
  tcp-upload --to HOST:PORT --bytes N [--timeout T]
        sends N deterministic bytes to a tcp-sink, half-closes, compares the sink's
        byte count and sha256; prints {"ok", "sent", "sink_bytes", "sha_match",
        "elapsed_s", "error"}.
  tcp-connects --to HOST:PORT --seconds S [--interval I] [--timeout T]
        one new TCP connection (connect, send 4 bytes, read the echo, close) every I
        seconds for S seconds; prints {"tries", "ok", "results": [[t, ok, ms|error]...]}.
  syn-flood --to HOST:PORT --pps R --seconds S [--src-net 198.19.0.0/16]
        raw-socket TCP SYNs with random sources from --src-net (kept inside the lab's
        198.18.0.0/15) and random source ports, every packet a new 5-tuple (up to
        200,000). Prints "FLOODING ..." when the first packet goes, then
        {"sent", "seconds", "pps", "distinct"}.
"""

import argparse
import hashlib
import ipaddress
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import threading
import time


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def hostport(s):
    h, _, p = s.rpartition(":")
    return h, int(p)


def fmt(addr):
    return "%s:%d" % addr


# ------------------------------------------------------------------ servers --

def cmd_udp_reflect(a):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    socks = {}
    for p in a.port:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((a.bind, p))
        socks[s] = p
        out("LISTENING udp %d" % p)
    while True:
        r, _, _ = select.select(list(socks), [], [])
        for s in r:
            try:
                data, peer = s.recvfrom(65535)
            except OSError:
                continue
            p = socks[s]
            out("RECV %d %s %d" % (p, fmt(peer), len(data)))
            hdr = json.dumps({"src": fmt(peer), "dport": p, "len": len(data),
                              "sum": hashlib.sha256(data).hexdigest()[:16]}).encode() + b"\n"
            reply = hdr + b"\x5a" * max(0, len(data) - len(hdr))
            try:
                s.sendto(reply, peer)
            except OSError as e:
                out("SENDERR %s %s" % (fmt(peer), e))


def _sink_conn(c, peer):
    h = hashlib.sha256()
    n = 0
    try:
        c.settimeout(60)
        while True:
            d = c.recv(262144)
            if not d:
                break
            h.update(d)
            n += len(d)
        c.sendall(json.dumps({"bytes": n, "sha256": h.hexdigest()}).encode() + b"\n")
    except OSError as e:
        out("SINKERR %s %s" % (fmt(peer), e))
    finally:
        c.close()
    out("SINK %s %d %s" % (fmt(peer), n, h.hexdigest()))


def cmd_tcp_sink(a):
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((a.bind, a.port))
    ls.listen(64)
    out("LISTENING tcp %d" % a.port)
    while True:
        c, peer = ls.accept()
        threading.Thread(target=_sink_conn, args=(c, peer), daemon=True).start()


# ------------------------------------------------------------------ clients --

def _udp_sock(bind_port=0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", bind_port))
    return s


def _ask(s, dst, tries=3, wait=0.7):
    """Send a probe to a udp-reflect at dst; the parsed reply header, or None."""
    tag = ("probe-%d" % random.getrandbits(48)).encode()
    for _ in range(tries):
        try:
            s.sendto(tag, dst)
        except OSError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            r, _, _ = select.select([s], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                break
            try:
                data, peer = s.recvfrom(65535)
            except OSError:
                continue
            if peer != dst:
                continue
            try:
                hdr = json.loads(data.split(b"\n", 1)[0])
            except ValueError:
                continue
            if hdr.get("sum") == hashlib.sha256(tag).hexdigest()[:16]:
                return hdr
    return None


def cmd_udp_eim(a):
    s = _udp_sock(a.bind_port)
    seen = {}
    for t in a.to:
        hdr = _ask(s, hostport(t))
        seen[t] = hdr["src"] if hdr else None
    out(json.dumps({"local": s.getsockname()[1], "seen": seen}))
    return 0 if all(seen.values()) else 1


def cmd_udp_listen(a):
    s = _udp_sock(a.bind_port)
    dst = hostport(a.first)
    hdr = _ask(s, dst)
    mapped = hdr["src"] if hdr else None
    out("MAPPED %s" % (mapped or "none"))
    got = []
    deadline = time.monotonic() + a.seconds
    while time.monotonic() < deadline:
        r, _, _ = select.select([s], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
        if not r:
            continue
        try:
            data, peer = s.recvfrom(65535)
        except OSError:
            continue
        if peer == dst and data.startswith(b"{"):
            continue   # a late reply to the probe
        text = data[:80].decode(errors="replace")
        got.append([fmt(peer), text])
        out("RECV %s %s" % (fmt(peer), text))
    out(json.dumps({"mapped": mapped, "received": got}))
    return 0


def cmd_udp_send(a):
    s = _udp_sock(a.bind_port)
    for _ in range(a.count):
        s.sendto(a.data.encode(), hostport(a.to))
        time.sleep(0.01)
    out(json.dumps({"sent": a.count, "local": fmt(s.getsockname())}))
    return 0


def cmd_udp_big(a):
    s = _udp_sock(0)
    dst = hostport(a.to)
    rng = random.Random(a.size)
    payload = bytes(rng.getrandbits(8) for _ in range(a.size))
    res = {"sent": a.size, "received": 0, "reply_len": None, "seen_len": None, "src": None}
    for _ in range(3):
        s.sendto(payload, dst)
        r, _, _ = select.select([s], [], [], a.timeout)
        if r:
            data, peer = s.recvfrom(65535)
            res["received"] += 1
            res["reply_len"] = len(data)
            try:
                hdr = json.loads(data.split(b"\n", 1)[0])
                res["seen_len"] = hdr.get("len")
                res["src"] = hdr.get("src")
                res["sum_match"] = hdr.get("sum") == hashlib.sha256(payload).hexdigest()[:16]
            except ValueError:
                pass
            break
    res["ok"] = (res["reply_len"] == a.size and res["seen_len"] == a.size
                 and res.get("sum_match") is True)
    out(json.dumps(res))
    return 0 if res["ok"] else 1


def cmd_udp_refused(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(hostport(a.to))
    s.settimeout(a.timeout)
    t0 = time.monotonic()
    res = {"refused": False, "error": None}
    try:
        s.send(b"is anybody there")
        s.recv(2048)
        res["error"] = "got a reply"
    except ConnectionRefusedError:
        res["refused"] = True
        res["error"] = "ECONNREFUSED"
    except socket.timeout:
        res["error"] = "timeout"
    except OSError as e:
        res["error"] = "%s (errno %s)" % (e.strerror, e.errno)
    res["elapsed_s"] = round(time.monotonic() - t0, 3)
    out(json.dumps(res))
    return 0 if res["refused"] else 1


def cmd_udp_flows(a):
    dst = hostport(a.to)
    socks = []
    for i in range(a.count):
        s = _udp_sock(0)
        s.setblocking(False)
        socks.append(s)
    errors = 0
    for s in socks:
        try:
            s.sendto(b"flow", dst)
        except OSError:
            errors += 1
        time.sleep(a.gap_ms / 1000.0)
    answered, failed = set(), set()
    # Each round waits for answers, then sends again on the sockets still unanswered, so a
    # datagram lost on the way does not pass for one the gateway refused.
    for rnd in range(1 + a.retries):
        if rnd:
            for s in socks:
                if s not in answered and s not in failed:
                    try:
                        s.sendto(b"flow", dst)
                    except OSError:
                        errors += 1
        deadline = time.monotonic() + a.timeout
        while len(answered) + len(failed) < len(socks) and time.monotonic() < deadline:
            r, _, _ = select.select([s for s in socks if s not in answered and s not in failed],
                                    [], [], 0.1)
            for s in r:
                try:
                    s.recvfrom(65535)
                    answered.add(s)
                except OSError:
                    failed.add(s)    # e.g. an ICMP error for this flow
    out(json.dumps({"flows": a.count, "answered": len(answered), "icmp_errors": len(failed),
                    "send_errors": errors}))
    return 0


def _stream(n, seed=7):
    rng = random.Random(seed)
    left = n
    while left > 0:
        k = min(65536, left)
        yield rng.randbytes(k)
        left -= k


def cmd_tcp_upload(a):
    t0 = time.monotonic()
    h = hashlib.sha256()
    res = {"ok": False, "sent": 0, "sink_bytes": None, "sha_match": False, "error": None}
    try:
        s = socket.create_connection(hostport(a.to), timeout=a.timeout)
        s.settimeout(a.timeout)
        for chunk in _stream(a.bytes):
            s.sendall(chunk)
            h.update(chunk)
            res["sent"] += len(chunk)
        s.shutdown(socket.SHUT_WR)
        buf = b""
        while not buf.endswith(b"\n"):
            d = s.recv(4096)
            if not d:
                break
            buf += d
        s.close()
        j = json.loads(buf.decode() or "{}")
        res["sink_bytes"] = j.get("bytes")
        res["sha_match"] = j.get("sha256") == h.hexdigest()
        res["ok"] = res["sink_bytes"] == a.bytes and res["sha_match"]
    except socket.timeout:
        res["error"] = "timeout after %ss without progress (sent %d)" % (a.timeout, res["sent"])
    except (OSError, ValueError) as e:
        res["error"] = str(e)
    res["elapsed_s"] = round(time.monotonic() - t0, 3)
    out(json.dumps(res))
    return 0 if res["ok"] else 1


def cmd_tcp_connects(a):
    dst = hostport(a.to)
    res = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < a.seconds:
        t = time.monotonic()
        try:
            c = socket.create_connection(dst, timeout=a.timeout)
            c.settimeout(a.timeout)
            c.sendall(b"ping")
            got = b""
            while len(got) < 4:
                d = c.recv(4 - len(got))
                if not d:
                    break
                got += d
            c.close()
            ok = got == b"ping"
            res.append([round(t - t0, 2), ok, round((time.monotonic() - t) * 1000, 1) if ok
                        else "echo %r" % got])
        except OSError as e:
            res.append([round(t - t0, 2), False, str(e) or type(e).__name__])
        time.sleep(max(0.0, a.interval - (time.monotonic() - t)))
    out(json.dumps({"tries": len(res), "ok": sum(1 for r in res if r[1]), "results": res}))
    return 0


def _csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def _syn(src, dst, sport, dport, seq):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = struct.pack("!4s4sBBH", src, dst, 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.getrandbits(16), 0, 64,
                     socket.IPPROTO_TCP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return ip + tcp


def cmd_syn_flood(a):
    host, port = hostport(a.to)
    net = ipaddress.ip_network(a.src_net)
    if not ipaddress.ip_network("198.18.0.0/15").supernet_of(net):
        out(json.dumps({"error": "--src-net must lie inside 198.18.0.0/15"}))
        return 2
    dst = socket.inet_aton(host)
    base = int(net.network_address)
    size = net.num_addresses
    rng = random.Random(a.seed)
    variety = a.variety or min(200000, int(a.pps * a.seconds) + 1)
    pkts = [_syn(struct.pack("!I", base + rng.randrange(1, size - 1)), dst,
                 rng.randrange(1024, 65535), port, rng.getrandbits(32)) for _ in range(variety)]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    sent = errors = 0
    out("FLOODING %d pps for %g s, %d distinct SYNs" % (a.pps, a.seconds, len(pkts)))
    t0 = time.monotonic()
    end = t0 + a.seconds
    i = 0
    while not stop[0]:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - t0) * a.pps)
        while sent < due:
            try:
                s.sendto(pkts[i], (host, 0))
                sent += 1
            except OSError:
                errors += 1
                sent += 1
            i = (i + 1) % len(pkts)
        time.sleep(0.002)
    el = time.monotonic() - t0
    out(json.dumps({"sent": sent, "errors": errors, "seconds": round(el, 2),
                    "pps": round(sent / el) if el > 0 else 0, "distinct": len(pkts)}))
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description="NAT probes for the ftpair lab")
    sub = p.add_subparsers(dest="cmd", required=True)

    x = sub.add_parser("udp-reflect")
    x.add_argument("--port", type=int, action="append", required=True)
    x.add_argument("--bind", default="0.0.0.0")
    x.set_defaults(func=cmd_udp_reflect)

    x = sub.add_parser("tcp-sink")
    x.add_argument("--port", type=int, required=True)
    x.add_argument("--bind", default="0.0.0.0")
    x.set_defaults(func=cmd_tcp_sink)

    x = sub.add_parser("udp-eim")
    x.add_argument("--bind-port", type=int, default=0)
    x.add_argument("--to", action="append", required=True)
    x.set_defaults(func=cmd_udp_eim)

    x = sub.add_parser("udp-listen")
    x.add_argument("--bind-port", type=int, default=0)
    x.add_argument("--first", required=True)
    x.add_argument("--seconds", type=float, default=5.0)
    x.set_defaults(func=cmd_udp_listen)

    x = sub.add_parser("udp-send")
    x.add_argument("--to", required=True)
    x.add_argument("--bind-port", type=int, default=0)
    x.add_argument("--data", default="unsolicited")
    x.add_argument("--count", type=int, default=1)
    x.set_defaults(func=cmd_udp_send)

    x = sub.add_parser("udp-big")
    x.add_argument("--to", required=True)
    x.add_argument("--size", type=int, default=4000)
    x.add_argument("--timeout", type=float, default=1.0)
    x.set_defaults(func=cmd_udp_big)

    x = sub.add_parser("udp-refused")
    x.add_argument("--to", required=True)
    x.add_argument("--timeout", type=float, default=1.0)
    x.set_defaults(func=cmd_udp_refused)

    x = sub.add_parser("udp-flows")
    x.add_argument("--to", required=True)
    x.add_argument("--count", type=int, default=10)
    x.add_argument("--timeout", type=float, default=2.0)
    x.add_argument("--gap-ms", type=float, default=2.0)
    x.add_argument("--retries", type=int, default=0)
    x.set_defaults(func=cmd_udp_flows)

    x = sub.add_parser("tcp-upload")
    x.add_argument("--to", required=True)
    x.add_argument("--bytes", type=int, default=2 * 1024 * 1024)
    x.add_argument("--timeout", type=float, default=10.0)
    x.set_defaults(func=cmd_tcp_upload)

    x = sub.add_parser("tcp-connects")
    x.add_argument("--to", required=True)
    x.add_argument("--seconds", type=float, default=8)
    x.add_argument("--interval", type=float, default=0.5)
    x.add_argument("--timeout", type=float, default=2.0)
    x.set_defaults(func=cmd_tcp_connects)

    x = sub.add_parser("syn-flood")
    x.add_argument("--to", required=True)
    x.add_argument("--pps", type=float, default=10000)
    x.add_argument("--seconds", type=float, default=10)
    x.add_argument("--src-net", default="198.19.0.0/16")
    x.add_argument("--variety", type=int, default=0,
                   help="distinct packets to cycle through (default: as many as are sent, "
                        "at most 200000)")
    x.add_argument("--seed", type=int, default=1)
    x.set_defaults(func=cmd_syn_flood)

    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
