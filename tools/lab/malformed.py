#!/usr/bin/python3
"""Send a burst of malformed frames at ftpaird's inside port (lab only).

Run in the client namespace:
    ftpair-lab exec client tools/lab/malformed.py --iface eth0 --count 5

Every frame is addressed to the LAN virtual MAC (00:00:5e:00:01:01), comes from
the interface's own MAC and, where an IPv4 header exists, from 198.18.1.10 to
198.18.2.10. Each kind is named after the ftpair_drops_total{reason=...} label
it must raise. Frames are built with scapy and sent through a raw AF_PACKET
socket (not scapy's sendp, which silently pads frames the kernel refuses).

Output (stdout): one JSON object, label -> number of frames the kernel accepted.
A kind the kernel refused entirely (e.g. a 10-byte frame: packet sockets reject
frames shorter than an Ethernet header) is reported with 0 and explained on
stderr. A test compares: delta(ftpair_drops_total{reason=label}) >= count.
"""

import argparse
import json
import logging
import os
import random
import socket
import struct
import sys
import time

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_EOL, IPOption_NOP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.packet import Raw  # noqa: E402

VMAC_INSIDE = "00:00:5e:00:01:01"
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
UNKNOWN_ETHERTYPE = 0x88B5   # IEEE 802 local experimental
UNKNOWN_PROTO = 253          # RFC 3692 experimentation


class Ctx:
    def __init__(self, a, src_mac):
        self.a = a
        self.src_mac = src_mac
        self.rng = random.Random(a.seed)

    def eth(self, etype=ETH_P_IP):
        return Ether(dst=self.a.dst_mac, src=self.src_mac, type=etype)

    def ip(self, **kw):
        kw.setdefault("src", self.a.src_ip)
        kw.setdefault("dst", self.a.dst_ip)
        kw.setdefault("ttl", 64)
        kw.setdefault("id", self.rng.randrange(1, 65535))
        return IP(**kw)

    def sport(self):
        return self.rng.randrange(40000, 50000)

    def udp(self):
        return UDP(sport=self.sport(), dport=9) / Raw(b"ftpair-malformed")


def _b(p):
    return bytes(p)


# Each builder returns the raw frame bytes for iteration i.
def k_truncated_l2(c, i):
    return bytes.fromhex(c.a.dst_mac.replace(":", "")) + b"\x08\x00\x45\x00"   # 10 bytes


def k_unknown_ethertype(c, i):
    return _b(c.eth(UNKNOWN_ETHERTYPE) / Raw(b"\x00" * 46))


def k_truncated_l3(c, i):
    ip = _b(c.ip() / c.udp())
    return _b(c.eth()) + ip[:10]


def k_bad_ip_version(c, i):
    return _b(c.eth() / c.ip(version=6) / c.udp())


def _ip_checksum(hdr):
    if len(hdr) % 2:
        hdr += b"\x00"
    total = sum(struct.unpack("!%dH" % (len(hdr) // 2), hdr))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def k_bad_ihl(c, i):
    # IHL=3 (12 bytes) on an otherwise normal 20-byte header whose checksum is
    # valid over those 20 bytes, so only the IHL is wrong.
    ip = bytearray(_b(c.ip() / c.udp()))
    ip[0] = 0x43
    ip[10:12] = b"\x00\x00"
    ip[10:12] = struct.pack("!H", _ip_checksum(bytes(ip[:20])))
    return _b(c.eth()) + bytes(ip)


def k_ip_options(c, i):
    opts = [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()]
    return _b(c.eth() / c.ip(options=opts) / c.udp())   # IHL=6, checksum valid


def k_bad_ip_length(c, i):
    # total length says 200, the frame carries 20+8+16
    return _b(c.eth() / c.ip(len=200) / c.udp())


def k_bad_ip_checksum(c, i):
    pkt = c.ip() / c.udp()
    good = IP(_b(pkt)).chksum
    bad = (good + 0x1234) & 0xFFFF
    if bad in (good, 0xFFFF - good) or {good, bad} == {0, 0xFFFF}:
        bad = (good + 0x2345) & 0xFFFF
    return _b(c.eth() / c.ip(chksum=bad, id=pkt.id, src=pkt.src, dst=pkt.dst)
              / pkt.payload)


def k_bad_fragment(c, i):
    if i % 2 == 0:   # a first fragment too short for the UDP header (RFC 1858 tiny fragment)
        return _b(c.eth() / c.ip(flags="MF", frag=0, proto=17) / Raw(b"\x00" * 4))
    # a fragment that would end past 65535 bytes
    return _b(c.eth() / c.ip(flags=0, frag=8190, proto=17) / Raw(b"\x00" * 64))


def k_ttl_exceeded(c, i):
    return _b(c.eth() / c.ip(ttl=1) / c.udp())


def k_unknown_protocol(c, i):
    return _b(c.eth() / c.ip(proto=UNKNOWN_PROTO) / Raw(b"\x00" * 16))


def k_truncated_l4(c, i):
    tcp = _b(TCP(sport=c.sport(), dport=80, flags="S", seq=c.rng.getrandbits(32)))
    return _b(c.eth() / c.ip(proto=6) / Raw(tcp[:10]))   # 10 of 20 TCP header bytes


def k_bad_tcp_offset(c, i):
    return _b(c.eth() / c.ip() / TCP(sport=c.sport(), dport=80, flags="S", dataofs=4,
                                     seq=c.rng.getrandbits(32)))


def k_bad_tcp_flags(c, i):
    return _b(c.eth() / c.ip() / TCP(sport=c.sport(), dport=80, flags="SF",
                                     seq=c.rng.getrandbits(32)))


def k_icmp_unsupported(c, i):
    # ICMP timestamp request (type 13): id, seq, 3 x 32-bit timestamps
    return _b(c.eth() / c.ip() / ICMP(type=13, code=0, id=c.rng.randrange(1, 65535), seq=i)
              / Raw(b"\x00" * 12))


def k_bad_arp(c, i):
    # ARP request with hardware length 7 (Ethernet says 6)
    smac7 = bytes.fromhex(c.src_mac.replace(":", "")) + b"\x00"
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 7, 4, 1)
    arp += smac7 + socket.inet_aton(c.a.src_ip) + b"\x00" * 7 + socket.inet_aton(c.a.vip)
    return _b(c.eth(ETH_P_ARP)) + arp + b"\x00" * 8


KINDS = [
    ("truncated_l2", k_truncated_l2),
    ("unknown_ethertype", k_unknown_ethertype),
    ("truncated_l3", k_truncated_l3),
    ("bad_ip_version", k_bad_ip_version),
    ("bad_ihl", k_bad_ihl),
    ("ip_options", k_ip_options),
    ("bad_ip_length", k_bad_ip_length),
    ("bad_ip_checksum", k_bad_ip_checksum),
    ("bad_fragment", k_bad_fragment),
    ("ttl_exceeded", k_ttl_exceeded),
    ("unknown_protocol", k_unknown_protocol),
    ("truncated_l4", k_truncated_l4),
    ("bad_tcp_offset", k_bad_tcp_offset),
    ("bad_tcp_flags", k_bad_tcp_flags),
    ("icmp_unsupported", k_icmp_unsupported),
    ("bad_arp", k_bad_arp),
]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iface", default="eth0")
    p.add_argument("--count", type=int, default=5, help="frames per kind (default 5)")
    p.add_argument("--dst-mac", default=VMAC_INSIDE)
    p.add_argument("--src-ip", default="198.18.1.10")
    p.add_argument("--dst-ip", default="198.18.2.10")
    p.add_argument("--vip", default="198.18.1.1", help="ARP target of the bad ARP frames")
    p.add_argument("--kinds", default="",
                   help="comma-separated labels to send (default: all)")
    p.add_argument("--gap-ms", type=float, default=1.0, help="pause between frames")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--list", action="store_true", help="list the kinds and exit")
    a = p.parse_args(argv)

    if a.list:
        for name, _ in KINDS:
            print(name)
        return 0
    kinds = KINDS
    if a.kinds:
        want = [k.strip() for k in a.kinds.split(",") if k.strip()]
        unknown = set(want) - {n for n, _ in KINDS}
        if unknown:
            print("malformed.py: unknown kinds: %s" % ",".join(sorted(unknown)), file=sys.stderr)
            return 2
        kinds = [(n, f) for n, f in KINDS if n in want]

    try:
        with open("/sys/class/net/%s/address" % a.iface) as f:
            src_mac = f.read().strip()
    except OSError as e:
        print("malformed.py: no interface %s: %s" % (a.iface, e), file=sys.stderr)
        return 2

    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)   # proto 0: send only
        s.bind((a.iface, 0))
    except OSError as e:
        print("malformed.py: cannot open a packet socket on %s: %s" % (a.iface, e),
              file=sys.stderr)
        return 2

    c = Ctx(a, src_mac)
    sent = {}
    for i in range(a.count):
        for name, build in kinds:
            frame = build(c, i)
            sent.setdefault(name, 0)
            try:
                n = s.send(frame)
            except OSError as e:
                if sent[name] == 0 and i == 0:
                    print("malformed.py: skipped %s: kernel refused a %d-byte frame: %s"
                          % (name, len(frame), os.strerror(e.errno) if e.errno else e),
                          file=sys.stderr)
                continue
            if n == len(frame):
                sent[name] += 1
            if a.gap_ms > 0:
                time.sleep(a.gap_ms / 1000.0)
    s.close()
    print(json.dumps(sent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
