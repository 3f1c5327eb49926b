#!/usr/bin/python3
"""Forged, malformed and replayed dataplane beats (EtherType 0x88B5, dataplane/dp_beat.h) for
lab_dp_beats, sent from the root namespace onto the lab's LAN bridge (an attacker on the LAN).
Needs Debian's python3-scapy.

  forge_dp_beats.py forge --iface BR --dst-mac MAC --kind KIND --count N [--node ID]
      KIND:
        short          a frame too short for a beat (padded to 60 bytes by the Ethernet minimum)
        bad_magic      not "FTDB"
        bad_version    version 9
        bad_field      worker 5 of 2 workers
        unauthenticated  key id 0, zero tag: "node ID is STANDBY at generation 2^40"
        unknown_key    key id 77
        bad_mac        key id 1 with a random tag: "node ID is STANDBY at generation 2^40",
                       sequence numbers far ahead of the genuine ones
      From a random locally administered source MAC (a learning bridge must not move the
      nodes' own MACs to the attacker's port).
  forge_dp_beats.py replay --iface BR --capture-iface VETH --dst-mac MAC --capture-s S --count N
      Captures S seconds of node ID's genuine beats on VETH (the host side of a node's LAN
      port), waits 0.2 s, then sends them again, the beat byte for byte (the Ethernet source a
      random MAC, as above), N frames in all.

Prints one JSON line: {"sent": n, "captured": m}.
"""

import argparse
import json
import os
import struct
import sys
import time

from scapy.all import Ether, Raw, sendp, sniff  # noqa: E402

ETHERTYPE = 0x88B5
ROLE_STANDBY_READY = 2


def payload(kind, node, seq):
    magic = b"BEEF" if kind == "bad_magic" else b"FTDB"
    version = 9 if kind == "bad_version" else 1
    key_id = {"unauthenticated": 0, "unknown_key": 77}.get(kind, 1)
    worker, workers = (5, 2) if kind == "bad_field" else (0, 1)
    nid = node.encode()[:16].ljust(16, b"\0")
    body = magic + struct.pack("!BBBBBBxx", version, key_id, ROLE_STANDBY_READY, worker, workers, 0) + nid + \
        struct.pack("!QQQQ", 1 << 40, 0x5EED, (1 << 50) + seq, time.time_ns() + 10**9)
    tag = b"\0" * 16 if kind == "unauthenticated" else os.urandom(16)
    out = body + tag
    return out[:20] if kind == "short" else out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=("forge", "replay"))
    p.add_argument("--iface", required=True)
    p.add_argument("--dst-mac", required=True)
    p.add_argument("--kind", default="bad_mac",
                   choices=("short", "bad_magic", "bad_version", "bad_field", "unauthenticated", "unknown_key", "bad_mac"))
    p.add_argument("--node", default="a")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--capture-iface")
    p.add_argument("--capture-s", type=float, default=0.3)
    a = p.parse_args()

    if a.mode == "forge":
        src = "02:%02x:%02x:%02x:%02x:%02x" % tuple(os.urandom(5))
        frames = [Ether(src=src, dst=a.dst_mac, type=ETHERTYPE) / Raw(payload(a.kind, a.node, i))
                  for i in range(a.count)]
        sendp(frames, iface=a.iface, verbose=False)
        print(json.dumps({"sent": len(frames), "captured": 0}))
        return 0

    if not a.capture_iface:
        print("replay needs --capture-iface", file=sys.stderr)
        return 2
    nid = a.node.encode()[:16].ljust(16, b"\0")
    got = sniff(iface=a.capture_iface, timeout=a.capture_s,
                lfilter=lambda f: f.haslayer(Ether) and f[Ether].type == ETHERTYPE and bytes(f)[14 + 12:14 + 28] == nid)
    captured = [bytes(f) for f in got]
    if not captured:
        print(json.dumps({"sent": 0, "captured": 0}))
        return 1
    time.sleep(0.2)
    src = "02:%02x:%02x:%02x:%02x:%02x" % tuple(os.urandom(5))
    out = [Ether(captured[i % len(captured)]) for i in range(a.count)]
    for f in out:
        f[Ether].dst = a.dst_mac
        f[Ether].src = src
    sendp(out, iface=a.iface, verbose=False)
    print(json.dumps({"sent": len(out), "captured": len(captured)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
