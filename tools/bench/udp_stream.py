#!/usr/bin/python3
"""Constant-rate numbered UDP, for timing failovers to the packet.

  udp_stream.py sink   --port P --out FILE     (server namespace) records every datagram
  udp_stream.py source --host H --port P --pps R [--seconds S]   (client namespace)

The source sends datagrams carrying (sequence, send time) on a fixed schedule: a late
sender catches up, so sequence n always belongs to time start + n/R. The sink appends one
record per datagram to FILE: arrival CLOCK_MONOTONIC ns (the kernel's receive timestamp,
SO_TIMESTAMPNS, moved to the monotonic clock), sequence, source port (the NAT
port the gateway chose). Network namespaces share CLOCK_MONOTONIC, so a driver in the root
namespace can compare arrivals with the moment it injected a fault.
SIGTERM/SIGINT end either side cleanly.
"""

import argparse
import signal
import socket
import struct
import sys
import time

PAYLOAD = struct.Struct("!QQ")       # seq, send ns
RECORD = struct.Struct("<QQH6x")     # arrival ns, seq, source port
TIMESPEC = struct.Struct("@qq")      # struct timespec (SCM_TIMESTAMPNS)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python does not always name it


class Stop(Exception):
    pass


def _stop(signum, frame):
    raise Stop()


def sink(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    # The kernel's arrival time of each datagram (CLOCK_REALTIME), not the moment this
    # process got around to reading it: on a busy machine (a killed node's exit beside us)
    # the sink may read late, and a late stamp moves the failover's edges.
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind(("0.0.0.0", a.port))
    print("LISTENING udp %d" % a.port, flush=True)
    n = 0
    with open(a.out, "wb", buffering=1 << 16) as f:
        try:
            while True:
                data, anc, _, (ip, port) = s.recvmsg(2048, socket.CMSG_SPACE(TIMESPEC.size))
                now = time.monotonic_ns()
                for level, kind, cdata in anc:
                    if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= TIMESPEC.size:
                        sec, nsec = TIMESPEC.unpack_from(cdata)
                        # realtime -> monotonic: the two clocks' offset, read now
                        now = sec * 1_000_000_000 + nsec + (time.monotonic_ns() - time.time_ns())
                if len(data) < PAYLOAD.size:
                    continue
                seq, _ = PAYLOAD.unpack_from(data)
                f.write(RECORD.pack(now, seq, port))
                n += 1
        except Stop:
            pass
    print("RECEIVED %d" % n, flush=True)


def source(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((a.host, a.port))
    pad = b"\0" * max(0, a.size - PAYLOAD.size)
    period = 1e9 / a.pps
    start = time.monotonic_ns()
    end = start + int(a.seconds * 1e9) if a.seconds > 0 else None
    seq = 0
    errors = 0
    try:
        while True:
            now = time.monotonic_ns()
            if end is not None and now >= end:
                break
            due = int((now - start) / period) + 1
            while seq < due:
                try:
                    s.send(PAYLOAD.pack(seq, now) + pad)
                except OSError:
                    errors += 1
                seq += 1
            nxt = start + int(seq * period)
            delay = (nxt - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
    except Stop:
        pass
    print('{"sent": %d, "send_errors": %d, "start_ns": %d, "pps": %g}' % (seq, errors, start, a.pps), flush=True)


def main():
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("sink")
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--out", required=True)
    c = sub.add_parser("source")
    c.add_argument("--host", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--pps", type=float, default=5000)
    c.add_argument("--size", type=int, default=64)
    c.add_argument("--seconds", type=float, default=0, help="0: until SIGTERM")
    a = p.parse_args()
    if a.cmd == "source" and not (0 < a.pps <= 200000):
        p.error("--pps must be in (0, 200000]")
    (sink if a.cmd == "sink" else source)(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
