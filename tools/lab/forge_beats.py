#!/usr/bin/python3
"""Forged and replayed fast beats for lab_trust, sent from the root namespace onto the lab's
management bridge with the source address and port of a node (an attacker on the management
network). Needs Debian's python3-scapy.

  forge_beats.py forge --iface BR --src IP --dst IP --dst-mac MAC --port P --kind KIND --count N
      KIND: active-2p40 ("I am ACTIVE with generation 2^40") | unhealthy ("my dataplane
      cannot service packets"); a plain (version 1, untagged) datagram, as the old daemon sent.
  forge_beats.py replay --iface BR --src IP --dst IP --dst-mac MAC --port P --capture-s S --count N
      Captures S seconds of genuine datagrams from SRC to DST on the bridge, waits until they
      are at least 64 beats old, then sends each again, byte for byte, N times in all.

Prints one JSON line: {"sent": n, "captured": m}.
"""

import argparse
import json
import sys
import time

from scapy.all import Ether, IP, UDP, Raw, sendp, sniff  # noqa: E402


def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, wire, payload):
    key = varint(num << 3 | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def beat(kind, seq):
    """ftpair.v1.Beat: node_id=1 "b", role=2, generation=3, sequence=4, dataplane_healthy=7,
    in_sync=10, sent_unix_ns=11."""
    if kind == "active-2p40":
        body = field(1, 2, b"b") + field(2, 2, b"ACTIVE") + field(3, 0, 1 << 40) + field(4, 0, seq) + \
            field(7, 0, 1) + field(10, 0, 1) + field(11, 0, time.time_ns())
    else:
        body = field(1, 2, b"a") + field(2, 2, b"ACTIVE") + field(3, 0, 1) + field(4, 0, seq) + \
            field(7, 0, 0) + field(10, 0, 1) + field(11, 0, time.time_ns())
    return b"FTPB\x01\x00\x00\x00" + body


def frame(a, payload):
    return Ether(dst=a.dst_mac) / IP(src=a.src, dst=a.dst) / UDP(sport=a.port, dport=a.port) / Raw(payload)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("forge", "replay"))
    p.add_argument("--iface", required=True)
    p.add_argument("--src", required=True)
    p.add_argument("--dst", required=True)
    p.add_argument("--dst-mac", required=True)
    p.add_argument("--port", type=int, default=50052)
    p.add_argument("--kind", default="active-2p40", choices=("active-2p40", "unhealthy"))
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--capture-s", type=float, default=0.5)
    a = p.parse_args()
    captured = []
    if a.mode == "forge":
        frames = [frame(a, beat(a.kind, 1_000_000 + i)) for i in range(a.count)]
    else:
        pkts = sniff(iface=a.iface, timeout=a.capture_s,
                     filter="udp and src host %s and dst host %s and port %d" % (a.src, a.dst, a.port))
        captured = [bytes(p[UDP].payload) for p in pkts if UDP in p]
        if not captured:
            print(json.dumps({"sent": 0, "captured": 0}))
            return 1
        time.sleep(1.0)  # 200 beats later at 5 ms: all outside the receiver's window
        frames = [frame(a, captured[i % len(captured)]) for i in range(a.count)]
    for f in frames:
        sendp(f, iface=a.iface, verbose=False)
        time.sleep(0.005)
    print(json.dumps({"sent": len(frames), "captured": len(captured)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
