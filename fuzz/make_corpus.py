#!/usr/bin/python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (run once; the files are committed).

Seeds are valid inputs that reach deep: whole TCP/UDP/ICMP conversations through the NAT,
ARP, expiry and captures, ICMP errors both ways, fragment trains and TTL 1 for fuzz_packet; hello + full sync + incrementals for fuzz_records;
the lab's node config and variants for fuzz_config; real snapshot files for fuzz_snapshot.
Regression inputs (crashes found and fixed) live beside them as regress-*."""
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def crc32c(data, crc=0xFFFFFFFF):
    # rte_hash_crc: reflected CRC32C (Castagnoli), seed as given, no final inversion.
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ip(s):
    return bytes(int(x) for x in s.split("."))


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


VMAC_IN = bytes([0, 0, 0x5E, 0, 1, 1])
VMAC_OUT = bytes([0, 0, 0x5E, 0, 1, 2])
MAC_H = bytes([2, 0, 0, 0, 1, 10])
MAC_GW = bytes([2, 0, 0, 0, 2, 254])
MAC_R = bytes([2, 0, 0, 0, 2, 10])
BCAST = b"\xff" * 6


DF, MF = 0x4000, 0x2000


def ipv4(src, dst, proto, l4, ttl=64, ident=1, frag=0, opts=b""):
    """frag: the flags and fragment offset word (DF | MF | offset in 8-byte units)."""
    assert len(opts) % 4 == 0
    hl = 20 + len(opts)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, 0, hl + len(l4), ident, frag, ttl, proto, 0, ip(src),
                      ip(dst)) + opts
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + l4


def l4csum(src, dst, proto, l4):
    pseudo = ip(src) + ip(dst) + struct.pack("!BBH", 0, proto, len(l4))
    return csum(pseudo + l4)


def tcp(src, dst, sport, dport, flags, payload=b""):
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1000, 0, 5 << 4, flags, 65535, 0, 0) + payload
    c = l4csum(src, dst, 6, seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(src, dst, sport, dport, payload=b"hello"):
    seg = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = l4csum(src, dst, 17, seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def icmp_echo(ident, typ=8, payload=b"ping"):
    msg = struct.pack("!BBHHH", typ, 0, 0, ident, 1) + payload
    return msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]


def eth(dst, src, etype, payload):
    return dst + src + struct.pack("!H", etype) + payload


def arp(op, sha, sip, tha, tip):
    return struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + sha + ip(sip) + tha + ip(tip)


# ------------------------------------------------------------------ fuzz_packet
LAN, WAN = 0, 1
FIX, HK, CAP = 2, 4, 0x20
MS, SEC, JUMP = 1 << 3, 2 << 3, 3 << 3


def chunk(ctl, frame, extra=b""):
    # ctl, [jump byte], len, frame, [capture byte]
    out = bytes([ctl])
    if (ctl >> 3) & 3 == 3:
        out += bytes([extra[0] if extra else 4])
    assert len(frame) <= 255
    out += bytes([len(frame)]) + frame
    if ctl & CAP:
        out += bytes([extra[-1] if extra else 3])
    return out


H, R, GW = "198.18.1.10", "198.18.2.10", "198.18.2.254"
NAT = "198.18.2.1"
FAR = "203.0.113.5"


def lan(l3):
    return eth(VMAC_IN, MAC_H, 0x0800, l3)


def wan(l3, src_mac=MAC_R):
    return eth(VMAC_OUT, src_mac, 0x0800, l3)


arp_gw = eth(VMAC_OUT, MAC_GW, 0x0806, arp(2, MAC_GW, GW, VMAC_OUT, NAT))
arp_r = eth(VMAC_OUT, MAC_R, 0x0806, arp(2, MAC_R, R, VMAC_OUT, NAT))
arp_req_vip = eth(BCAST, MAC_H, 0x0806, arp(1, MAC_H, H, b"\0" * 6, "198.18.1.1"))

tcp_conv = b"".join([
    chunk(WAN, arp_r),
    chunk(LAN, lan(ipv4(H, R, 6, tcp(H, R, 40000, 80, 0x02)))),
    chunk(WAN | MS, wan(ipv4(R, NAT, 6, tcp(R, NAT, 80, 40000, 0x12)))),
    chunk(LAN | MS, lan(ipv4(H, R, 6, tcp(H, R, 40000, 80, 0x10)))),
    chunk(LAN | CAP, lan(ipv4(H, R, 6, tcp(H, R, 40000, 80, 0x18, b"GET /")))),
    chunk(WAN | CAP, wan(ipv4(R, NAT, 6, tcp(R, NAT, 80, 40000, 0x18, b"200 OK")))),
    chunk(LAN | CAP, lan(ipv4(H, R, 6, tcp(H, R, 40000, 80, 0x11)))),
    chunk(WAN | CAP, wan(ipv4(R, NAT, 6, tcp(R, NAT, 80, 40000, 0x11)))),
    chunk(LAN | CAP, lan(ipv4(H, R, 6, tcp(H, R, 40000, 80, 0x10)))),
    chunk(LAN | JUMP | HK | CAP, b"", b"\x08\x05"),
])
write("fuzz_packet", "tcp-conversation", tcp_conv)

udp_far = b"".join([
    chunk(LAN, lan(ipv4(H, FAR, 17, udp(H, FAR, 5000, 53)))),
    chunk(WAN, arp_gw),
    chunk(LAN | CAP, lan(ipv4(H, FAR, 17, udp(H, FAR, 5000, 53)))),
    chunk(WAN | MS | CAP, wan(ipv4(FAR, NAT, 17, udp(FAR, NAT, 53, 5000)), MAC_GW)),
    chunk(LAN | SEC | CAP, lan(ipv4(H, FAR, 17, udp(H, FAR, 5001, 53)))),
    chunk(LAN | JUMP | HK | CAP, b"", b"\x04\x05"),
])
write("fuzz_packet", "udp-via-gateway", udp_far)

icmp = b"".join([
    chunk(LAN, arp_req_vip),
    chunk(LAN, lan(ipv4(H, "198.18.1.1", 1, icmp_echo(7)))),
    chunk(WAN, wan(ipv4(R, NAT, 1, icmp_echo(9)))),
    chunk(WAN, arp_r),
    chunk(LAN | CAP, lan(ipv4(H, R, 1, icmp_echo(11)))),
    chunk(WAN | CAP, wan(ipv4(R, NAT, 1, icmp_echo(11, 0)))),
    chunk(LAN | CAP, lan(ipv4(H, R, 1, icmp_echo(11)))),
])
write("fuzz_packet", "icmp-and-arp", icmp)

forward = b"".join([
    chunk(LAN, eth(VMAC_IN, MAC_H, 0x0806, arp(2, MAC_H, H, VMAC_IN, "198.18.1.1"))),
    chunk(WAN, wan(ipv4(R, NAT, 6, tcp(R, NAT, 50000, 8080, 0x02)))),
    chunk(LAN | CAP, lan(ipv4(H, R, 6, tcp(H, R, 80, 50000, 0x12)))),
    chunk(WAN | CAP, wan(ipv4(R, NAT, 6, tcp(R, NAT, 50000, 8080, 0x10)))),
    chunk(WAN | CAP, wan(ipv4(R, NAT, 6, tcp(R, NAT, 50000, 8080, 0x04)))),
    chunk(WAN | 0x40, wan(ipv4(R, NAT, 17, udp(R, NAT, 4000, 5353)))),
    chunk(WAN | 0x40, wan(ipv4(R, NAT, 17, udp(R, NAT, 4000, 5353)))),
])
write("fuzz_packet", "port-forward-rst-standby", forward)

strict = b"".join([
    chunk(WAN | 0x80, arp_r),
    chunk(LAN, lan(ipv4(H, R, 17, udp(H, R, 7000, 7000)))),
    chunk(LAN | CAP, lan(ipv4(H, R, 17, udp(H, R, 7001, 7000)))),
    chunk(LAN | CAP, lan(ipv4(H, R, 17, udp(H, R, 7001, 7000)))),
    chunk(LAN | CAP, lan(ipv4(H, R, 17, udp(H, R, 7002, 7000)))),
    chunk(LAN | 0x80, lan(ipv4(H, R, 17, udp(H, R, 7003, 7000)))),
])
write("fuzz_packet", "strict-hold", strict)

# Many flows, so the narrow NAT range (20000-20063) runs out.
many = b"".join(chunk(LAN | (CAP if i % 8 == 0 else 0), lan(ipv4(H, R, 17, udp(H, R, 20000 + i % 2, 1000 + i))))
                for i in range(60))
write("fuzz_packet", "nat-exhaustion", many)

bad = b"".join([
    chunk(LAN | FIX, lan(ipv4(H, R, 6, tcp(H, R, 1, 2, 0x03)))),  # SYN+FIN
    chunk(LAN | FIX, lan(ipv4(H, R, 47, b"\0" * 8))),  # GRE
    chunk(LAN, lan(ipv4(H, R, 17, udp(H, R, 1, 2), ttl=1))),
    chunk(LAN, eth(VMAC_IN, MAC_H, 0x8100, b"\0" * 30)),
    chunk(LAN, lan(ipv4("198.18.9.9", R, 17, udp("198.18.9.9", R, 1, 2)))),
    chunk(WAN, wan(ipv4(R, NAT, 6, tcp(R, NAT, 1, 30000, 0x10)))),
    chunk(LAN, b"\0" * 10),
])
write("fuzz_packet", "drops", bad)

# ---- ICMP errors with embedded headers (RFC 5508), both ways
# The external port of a LAN-initiated mapping is random (RFC 6056), so a seed cannot name
# it: errors about those quote every port of the parity class (the NAT range is 20000-20063),
# one of which is the mapping's. The port-forwards (TCP 8080 -> 198.18.1.10:80, UDP 5353 ->
# 198.18.1.11:53) have fixed outside ports: errors about them match by construction.
H2 = "198.18.1.11"
MAC_H2 = bytes([2, 0, 0, 0, 1, 11])
UNREACH, TIME_EXCEEDED, PARAM_PROBLEM = 3, 11, 12


def icmp_err(typ, code, quoted, rest=b"\0\0\0\0"):
    """An ICMP error: type, code, checksum, the 4 'unused' bytes, then the quoted packet."""
    msg = struct.pack("!BBH", typ, code, 0) + rest + quoted
    return msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]


def quote(pkt, n=None):
    """The offending packet as an error quotes it: all of it, or its first n bytes."""
    return pkt if n is None else pkt[:n]


def lan_from(mac, l3):
    return eth(VMAC_IN, mac, 0x0800, l3)


arp_h = eth(VMAC_IN, MAC_H, 0x0806, arp(2, MAC_H, H, VMAC_IN, "198.18.1.1"))
arp_h2 = eth(VMAC_IN, MAC_H2, 0x0806, arp(2, MAC_H2, H2, VMAC_IN, "198.18.1.1"))
# The datagram the NAT sent for the UDP port-forward: 198.18.1.11:53's reply, translated.
fwd_udp_out = ipv4(NAT, FAR, 17, udp(NAT, FAR, 5353, 4000, b"dns-answer"), ttl=63)

# (a) Port unreachable from the WAN about a UDP datagram the NAT sent.
wan_unreach_fwd = b"".join([
    chunk(WAN, arp_gw),
    chunk(LAN, arp_h2),
    chunk(WAN | CAP, wan(ipv4(FAR, NAT, 17, udp(FAR, NAT, 4000, 5353, b"dns-query")), MAC_GW)),
    chunk(LAN | MS, lan_from(MAC_H2, ipv4(H2, FAR, 17, udp(H2, FAR, 53, 4000, b"dns-answer")))),
    # port unreachable from the far host, quoting the whole datagram
    chunk(WAN | MS, wan(ipv4(FAR, NAT, 1, icmp_err(UNREACH, 3, quote(fwd_udp_out))), MAC_GW)),
    # host unreachable from the gateway router, quoting IP + 8 bytes (RFC 792's minimum)
    chunk(WAN | CAP, wan(ipv4(GW, NAT, 1, icmp_err(UNREACH, 1, quote(fwd_udp_out, 28))), MAC_GW)),
    # the same error about a different remote port: no flow
    chunk(WAN, wan(ipv4(FAR, NAT, 1, icmp_err(UNREACH, 3, ipv4(NAT, FAR, 17, udp(NAT, FAR, 5353, 4001)))),
                   MAC_GW)),
    chunk(LAN | CAP, lan_from(MAC_H2, ipv4(H2, FAR, 17, udp(H2, FAR, 53, 4000, b"again")))),
])
write("fuzz_packet", "icmp-wan-unreach-forward", wan_unreach_fwd)

# A LAN-initiated UDP mapping (local port 5000, even: an even external port) and the far
# host's port unreachable about each even port of the range.
wan_unreach_scan = b"".join(
    [chunk(WAN, arp_gw), chunk(LAN | CAP, lan(ipv4(H, FAR, 17, udp(H, FAR, 5000, 53, b"q"))))] +
    [chunk(WAN, wan(ipv4(FAR, NAT, 1, icmp_err(UNREACH, 3, ipv4(NAT, FAR, 17, udp(NAT, FAR, p, 53, b"q"), ttl=63))),
                    MAC_GW)) for p in range(20000, 20064, 2)] +
    [chunk(LAN | CAP, lan(ipv4(H, FAR, 17, udp(H, FAR, 5000, 53, b"q"))))])
write("fuzz_packet", "icmp-wan-unreach-udp-scan", wan_unreach_scan)

# (b) Time exceeded from the WAN router about a TCP segment: the port-forward's SYN-ACK.
fwd_synack_out = ipv4(NAT, FAR, 6, tcp(NAT, FAR, 8080, 50000, 0x12), ttl=1)
wan_te_tcp = b"".join([
    chunk(WAN, arp_gw),
    chunk(LAN, arp_h),
    chunk(WAN | CAP, wan(ipv4(FAR, NAT, 6, tcp(FAR, NAT, 50000, 8080, 0x02)), MAC_GW)),
    chunk(LAN | MS, lan(ipv4(H, FAR, 6, tcp(H, FAR, 80, 50000, 0x12)))),
    chunk(WAN | MS, wan(ipv4(GW, NAT, 1, icmp_err(TIME_EXCEEDED, 0, quote(fwd_synack_out))), MAC_GW)),
    # 8 bytes of TCP: ports and sequence number, no checksum
    chunk(WAN | CAP, wan(ipv4(GW, NAT, 1, icmp_err(TIME_EXCEEDED, 0, quote(fwd_synack_out, 28))), MAC_GW)),
    # 18 bytes: the checksum just fits
    chunk(WAN, wan(ipv4(GW, NAT, 1, icmp_err(TIME_EXCEEDED, 0, quote(fwd_synack_out, 38))), MAC_GW)),
    # fragment reassembly time exceeded (code 1)
    chunk(WAN, wan(ipv4(FAR, NAT, 1, icmp_err(TIME_EXCEEDED, 1, quote(fwd_synack_out))), MAC_GW)),
    chunk(WAN | CAP, wan(ipv4(FAR, NAT, 6, tcp(FAR, NAT, 50000, 8080, 0x10)), MAC_GW)),
])
write("fuzz_packet", "icmp-wan-time-exceeded-tcp", wan_te_tcp)

# A LAN-initiated TCP connection (local port 40002) and time exceeded about each even port.
wan_te_scan = b"".join(
    [chunk(WAN, arp_gw), chunk(LAN | CAP, lan(ipv4(H, FAR, 6, tcp(H, FAR, 40002, 443, 0x02))))] +
    [chunk(WAN, wan(ipv4(GW, NAT, 1, icmp_err(TIME_EXCEEDED, 0, quote(ipv4(NAT, FAR, 6, tcp(NAT, FAR, p, 443, 0x02),
                                                                           ttl=1), 28))), MAC_GW))
     for p in range(20000, 20064, 2)])
write("fuzz_packet", "icmp-wan-time-exceeded-tcp-scan", wan_te_scan)

# (c) Errors from the LAN about packets that came from the WAN: the quoted packet went
# remote -> host, so it names the flow by its inside key (no random port involved).
lan_errors = b"".join([
    chunk(WAN, arp_r),
    chunk(LAN, arp_h2),
    # UDP flow H:5002 -> R:7000; H says port unreachable about R's datagram
    chunk(LAN | CAP, lan(ipv4(H, R, 17, udp(H, R, 5002, 7000)))),
    chunk(LAN | MS, lan(ipv4(H, R, 1, icmp_err(UNREACH, 3, ipv4(R, H, 17, udp(R, H, 7000, 5002, b"reply"), ttl=63))))),
    # TCP flow H:40004 -> R:80; H says administratively prohibited (3/13) about the SYN-ACK
    chunk(LAN, lan(ipv4(H, R, 6, tcp(H, R, 40004, 80, 0x02)))),
    chunk(LAN | CAP, lan(ipv4(H, R, 1, icmp_err(UNREACH, 13, quote(ipv4(R, H, 6, tcp(R, H, 80, 40004, 0x12)), 28))))),
    # echo flow (identifier 21); an error quoting the echo reply that came back
    chunk(LAN, lan(ipv4(H, R, 1, icmp_echo(21)))),
    chunk(LAN, lan(ipv4(H, R, 1, icmp_err(PARAM_PROBLEM, 0, ipv4(R, H, 1, icmp_echo(21, 0)), b"\x08\0\0\0")))),
    # the UDP port-forward: 198.18.1.11 refuses what R sent to WAN VIP:5353
    chunk(WAN | CAP, wan(ipv4(R, NAT, 17, udp(R, NAT, 4000, 5353, b"query")))),
    chunk(LAN | MS, lan_from(MAC_H2, ipv4(H2, R, 1, icmp_err(UNREACH, 3, ipv4(R, H2, 17, udp(R, H2, 4000, 53, b"query"),
                                                                             ttl=63))))),
    # an error from the LAN about something no flow sent
    chunk(LAN, lan(ipv4(H, R, 1, icmp_err(UNREACH, 3, ipv4(R, H, 17, udp(R, H, 7000, 5999)))))),
    # an error from the LAN to the WAN VIP (hairpin address): not forwarded
    chunk(LAN, lan(ipv4(H, NAT, 1, icmp_err(UNREACH, 3, ipv4(NAT, H, 17, udp(NAT, H, 5353, 5002)))))),
    # an error about an error is never answered: TTL 1 on the LAN error
    chunk(LAN | CAP, lan(ipv4(H, R, 1, icmp_err(UNREACH, 3, ipv4(R, H, 17, udp(R, H, 7000, 5002))), ttl=1))),
])
write("fuzz_packet", "icmp-lan-errors", lan_errors)

# (d) Errors with truncated or garbage embedded headers, about a flow that exists (the UDP
# port-forward), so each check is what stops them.
good_q = ipv4(NAT, R, 17, udp(NAT, R, 5353, 4000, b"x"), ttl=63)


def wan_err(quoted, typ=UNREACH, code=3, ttl=64, frag=0, rest=b"\0\0\0\0"):
    return wan(ipv4(R, NAT, 1, icmp_err(typ, code, quoted, rest), ttl=ttl, frag=frag))


def patch(b, off, new):
    return b[:off] + new + b[off + len(new):]


emb_opts = ipv4(NAT, R, 17, udp(NAT, R, 5353, 4000, b"x"), ttl=63, opts=b"\x01\x01\x01\x00")
bad_errors = b"".join([
    chunk(WAN, arp_r),
    chunk(LAN, arp_h2),
    chunk(WAN | CAP, wan(ipv4(R, NAT, 17, udp(R, NAT, 4000, 5353, b"x")))),
    chunk(WAN, wan_err(good_q[:20])),                       # IP header only, no ports
    chunk(WAN, wan_err(good_q[:27])),                       # one byte short of IP + 8
    chunk(WAN, wan_err(good_q[:28])),                       # exactly IP + 8: translated
    chunk(WAN, wan_err(patch(good_q, 0, b"\x65"))),         # version 6
    chunk(WAN, wan_err(patch(good_q, 0, b"\x44"))),         # IHL 4
    chunk(WAN, wan_err(patch(good_q, 0, b"\x4f"))),         # IHL 15, quote too short for it
    chunk(WAN, wan_err(emb_opts)),                          # IHL 6 with options: ports past them
    chunk(WAN, wan_err(emb_opts[:31])),                     # options, ports cut short
    chunk(WAN, wan_err(patch(good_q, 6, b"\x00\x0a"))),     # a non-first fragment: no ports
    chunk(WAN, wan_err(patch(good_q, 6, b"\x20\x00"))),     # a first fragment (MF): has ports
    chunk(WAN, wan_err(patch(good_q, 9, b"\x2f"))),         # GRE
    chunk(WAN, wan_err(ipv4(NAT, R, 1, icmp_err(UNREACH, 3, good_q[:28]))[:28])),  # an error in an error
    chunk(WAN, wan_err(ipv4(NAT, R, 1, icmp_echo(20007))[:28])),  # echo: an identifier, no flow
    chunk(WAN, wan_err(patch(good_q, 26, b"\0\0"))),        # UDP checksum zero: stays zero
    chunk(WAN, wan_err(patch(good_q, 10, b"\xde\xad"))),    # embedded header checksum wrong
    chunk(WAN, wan_err(patch(good_q, 2, b"\xff\xff"))),     # embedded total length nonsense
    chunk(WAN, wan_err(bytes(range(7, 7 + 36)))),           # garbage
    chunk(WAN, wan_err(b"\xff" * 40)),
    chunk(WAN, wan_err(good_q, UNREACH, 16)),               # codes beyond the defined ones
    chunk(WAN, wan_err(good_q, TIME_EXCEEDED, 2)),
    chunk(WAN, wan_err(good_q, PARAM_PROBLEM, 3)),
    chunk(WAN, wan_err(good_q, PARAM_PROBLEM, 0, rest=b"\x14\0\0\0")),
    chunk(WAN, wan_err(good_q, UNREACH, 4, rest=b"\0\0\x02\x40")),  # frag needed, MTU 576
    chunk(WAN, wan_err(good_q, ttl=1)),                     # TTL 1: no error about an error
    chunk(WAN, wan_err(good_q, frag=MF)),                   # an error split in fragments
    chunk(WAN, wan_err(good_q, frag=MF | 3)),
    chunk(WAN, wan(patch(ipv4(R, NAT, 1, icmp_err(UNREACH, 3, good_q)), 22, b"\0\0"))),  # ICMP checksum wrong
    chunk(LAN, lan(ipv4(H, R, 1, icmp_err(UNREACH, 3, b"\x45" + b"\0" * 18)))),  # LAN: too short
    chunk(LAN, lan(ipv4(H, R, 1, icmp_err(UNREACH, 3, patch(ipv4(R, H, 17, udp(R, H, 1, 2)), 0, b"\x46")[:28])))),
    chunk(WAN | HK | CAP, wan_err(good_q)),
])
write("fuzz_packet", "icmp-errors-malformed", bad_errors)

# ---- (e) Fragment trains (virtual reassembly): a 240-byte UDP datagram in three
# fragments of 80 bytes, from both sides. The WAN side uses the UDP port-forward (a fixed
# outside port, so the first fragment finds its flow).


def fragments(src, dst, proto, l4, ident, pieces, ttl=64, df=False):
    """pieces: (offset, length) in bytes, offset a multiple of 8; MF on all but the piece
    that ends the datagram. Returns the IP packets in the order given."""
    out = []
    for off, n in pieces:
        assert off % 8 == 0
        more = off + n < len(l4)
        out.append(ipv4(src, dst, proto, l4[off:off + n], ttl=ttl, ident=ident,
                        frag=(MF if more else 0) | (DF if df else 0) | off // 8))
    return out


THREE = [(0, 80), (80, 80), (160, 80)]
payload = bytes((i * 7) & 0xFF for i in range(232))
lan_dgram = udp(H, R, 6000, 7000, payload)
wan_dgram = udp(R, NAT, 4000, 5353, payload)


def lan_frags(ident, order, pieces=THREE, src_port=6000, ttl=64):
    d = udp(H, R, src_port, 7000, payload)
    f = fragments(H, R, 17, d, ident, pieces, ttl=ttl)
    return [lan(f[i]) for i in order]


def wan_frags(ident, order, pieces=THREE, ttl=64):
    f = fragments(R, NAT, 17, wan_dgram, ident, pieces, ttl=ttl)
    return [wan(f[i]) for i in order]


OVERLAP = [(0, 80), (40, 80), (80, 80), (160, 80)]  # the second overlaps the first and third
ONE_S_HK = SEC | HK                                   # advance 1 s, then an expiry sweep

frag_lan = b"".join(
    [chunk(WAN, arp_r)] +
    [chunk(LAN | (CAP if i == 0 else 0), f) for i, f in enumerate(lan_frags(0x100, [0, 1, 2]))] +     # in order
    [chunk(LAN, f) for f in lan_frags(0x101, [2, 1, 0])] +                                         # last first
    [chunk(LAN, f) for f in lan_frags(0x102, [1, 0, 2])] +                                         # middle first
    [chunk(LAN | (CAP if i == 2 else 0), f) for i, f in enumerate(lan_frags(0x103, [0, 1, 2, 3], OVERLAP))] +
    [chunk(LAN, f) for f in lan_frags(0x104, [0, 0, 1, 1, 2])] +                                   # duplicates
    [chunk(LAN, f) for f in lan_frags(0x105, [1, 2])] +                                            # no first...
    [chunk(LAN | ONE_S_HK, b""), chunk(LAN | ONE_S_HK, b""), chunk(LAN | ONE_S_HK, b"")] +          # ...times out
    [chunk(LAN, f) for f in lan_frags(0x105, [0])] +                                               # first, too late
    [chunk(LAN | CAP, f) for f in lan_frags(0x106, [2, 0, 1], src_port=6001)])                     # a new flow
write("fuzz_packet", "frag-lan-trains", frag_lan)

frag_wan = b"".join(
    [chunk(WAN, arp_r), chunk(LAN, arp_h2)] +
    [chunk(WAN | (CAP if i == 0 else 0), f) for i, f in enumerate(wan_frags(0x200, [0, 1, 2]))] +
    [chunk(WAN, f) for f in wan_frags(0x201, [2, 1, 0])] +
    [chunk(WAN | (CAP if i == 1 else 0), f) for i, f in enumerate(wan_frags(0x202, [0, 1, 2, 3], OVERLAP))] +
    [chunk(WAN, f) for f in wan_frags(0x203, [1, 2])] +
    [chunk(WAN | JUMP | HK, b"", b"\x01")] +  # 32 s: the context and its two fragments go
    [chunk(WAN, f) for f in wan_frags(0x203, [0])] +
    # the reply from 198.18.1.11, fragmented on the LAN: out through the port-forward
    [chunk(LAN, lan_from(MAC_H2, f)) for f in
     reversed(fragments(H2, R, 17, udp(H2, R, 53, 4000, payload), 0x300, THREE))] +
    # fragments to a mapping nobody has (random port): the first is dropped, so are the rest
    [chunk(WAN, wan(f)) for f in fragments(R, NAT, 17, udp(R, NAT, 4000, 20001, payload), 0x204, THREE)] +
    [chunk(WAN | CAP, f) for f in wan_frags(0x205, [2, 0, 1])])
write("fuzz_packet", "frag-wan-trains", frag_wan)

# Edge cases: tiny and malformed fragments, the per-datagram buffer bound, fragments of a
# dropped first, of an echo to the gateway, of TCP, hairpinned, with TTL 1, with DF.
tcp_seg = tcp(FAR, NAT, 50001, 8080, 0x02, bytes(100))
echo_big = icmp_echo(33, payload=bytes(150))
frag_edge = b"".join(
    [chunk(WAN, arp_r), chunk(WAN, arp_gw), chunk(LAN, arp_h), chunk(LAN, arp_h2)] +
    [chunk(LAN, lan(ipv4(H, R, 17, udp(H, R, 6002, 7000)[:4], ident=0x400, frag=MF))),            # 4 bytes: no ports
     chunk(WAN, wan(ipv4(FAR, NAT, 6, tcp_seg[:16], ident=0x401, frag=MF), MAC_GW)),              # TCP header cut
     chunk(LAN, lan(ipv4(H, R, 17, bytes(64), ident=0x402, frag=8191))),                          # past 64 KiB
     chunk(LAN, lan(ipv4(H, R, 17, udp(H, R, 6003, 7000, bytes(40)), ident=0x403, frag=DF | MF)))] +  # DF and MF
    # 17 later fragments before the first: one more than a datagram may buffer
    [chunk(LAN, lan(ipv4(H, R, 17, bytes(8), ident=0x404, frag=MF | (1 + i)))) for i in range(17)] +
    [chunk(LAN, lan(ipv4(H, R, 17, udp(H, R, 6004, 7000, bytes(400))[:8], ident=0x404, frag=MF)))] +
    # the first fragment arrives with TTL 1: Time Exceeded; its followers wait for the timeout
    [chunk(LAN, f) for f in lan_frags(0x405, [1, 0, 2], src_port=6005)[:1]] +
    [chunk(LAN, lan(fragments(H, R, 17, udp(H, R, 6005, 7000, payload), 0x405, THREE, ttl=1)[0]))] +
    [chunk(LAN, f) for f in lan_frags(0x405, [2], src_port=6005)] +
    # a later fragment with TTL 1 of a datagram that is going through
    [chunk(LAN, f) for f in lan_frags(0x406, [0], src_port=6006)] +
    [chunk(LAN, f) for f in lan_frags(0x406, [1], src_port=6006, ttl=1)] +
    [chunk(LAN, f) for f in lan_frags(0x406, [2], src_port=6006)] +
    # a fragmented echo request to the WAN VIP (the gateway answers the first fragment; the
    # second waits for a first that never goes through) and one through the NAT (ping -s)
    [chunk(WAN, wan(f)) for f in fragments(R, NAT, 1, echo_big, 0x407, [(0, 80), (80, 78)])] +
    [chunk(LAN, lan(f)) for f in fragments(H, R, 1, echo_big, 0x408, [(0, 80), (80, 78)])] +
    # TCP through the port-forward in two fragments, the second first
    [chunk(WAN, wan(f, MAC_GW)) for f in reversed(fragments(FAR, NAT, 6, tcp_seg, 0x409, [(0, 64), (64, 56)]))] +
    # hairpinned: client to WAN VIP:5353 (the port-forward to 198.18.1.11), in three
    [chunk(LAN, lan(f)) for f in fragments(H, NAT, 17, udp(H, NAT, 6007, 5353, payload), 0x40a, THREE)] +
    # two datagrams with the same identification from different sources
    [chunk(LAN, lan_from(MAC_H2, f)) for f in fragments(H2, R, 17, udp(H2, R, 6008, 7000, payload), 0x40b, THREE)[:2]] +
    [chunk(LAN, f) for f in lan_frags(0x40b, [2, 1, 0], src_port=6009)] +
    [chunk(LAN | JUMP | HK | CAP, b"", b"\x01\x05")])
write("fuzz_packet", "frag-edges", frag_edge)

# ---- (f) TTL 1 (and 0): the gateway's own Time Exceeded, except about errors and later
# fragments. DF packets larger than the egress MTU are not reachable here: a frame is at
# most 255 bytes and the NF's MTU is 1500 on both sides.
ttl_one = b"".join([
    chunk(WAN, arp_gw),
    chunk(WAN, arp_r),
    chunk(LAN, arp_h2),
    chunk(LAN, lan(ipv4(H, FAR, 17, udp(H, FAR, 5004, 33434), ttl=1))),          # traceroute's first probe
    chunk(LAN, lan(ipv4(H, FAR, 17, udp(H, FAR, 5004, 33435), ttl=2))),          # goes on, TTL 1 after us
    chunk(LAN, lan(ipv4(H, FAR, 6, tcp(H, FAR, 40006, 8080, 0x02), ttl=1))),      # traceroute -T
    chunk(LAN, lan(ipv4(H, FAR, 1, icmp_echo(44), ttl=1))),                      # traceroute -I
    chunk(LAN, lan(ipv4(H, "198.18.1.1", 1, icmp_echo(45), ttl=1))),              # to the VIP: answered
    chunk(LAN, lan(ipv4(H, NAT, 17, udp(H, NAT, 5005, 5353), ttl=1))),           # hairpin, TTL 1
    chunk(LAN, lan(ipv4(H, FAR, 17, udp(H, FAR, 5006, 53), ttl=0))),
    chunk(LAN, lan(ipv4(H, FAR, 17, udp(H, FAR, 5007, 53), frag=DF))),          # DF, small: passes
    chunk(WAN | CAP, wan(ipv4(R, NAT, 17, udp(R, NAT, 4000, 5353), ttl=1))),     # port-forward, TTL 1
    chunk(WAN, wan(ipv4(R, NAT, 17, udp(R, NAT, 4000, 5353), ttl=2, frag=DF))),
    chunk(LAN, lan_from(MAC_H2, ipv4(H2, R, 17, udp(H2, R, 53, 4000), ttl=1))),   # its reply, TTL 1
    chunk(WAN, wan(ipv4(R, NAT, 1, icmp_echo(46), ttl=1))),                      # echo to the VIP, TTL 1
    chunk(WAN | CAP, wan(ipv4(R, NAT, 6, tcp(R, NAT, 50002, 8080, 0x02), ttl=1))),
])
write("fuzz_packet", "ttl-one", ttl_one)

# Enough TTL-1 packets at one instant to empty the ICMP token bucket (burst 50).
ttl_flood = b"".join([chunk(WAN, arp_gw)] +
                     [chunk(LAN, lan(ipv4(H, FAR, 17, udp(H, FAR, 5100 + i, 33434 + i), ttl=1))) for i in range(60)] +
                     [chunk(LAN | SEC, lan(ipv4(H, FAR, 17, udp(H, FAR, 5200, 33434), ttl=1)))])
write("fuzz_packet", "ttl-one-rate-limit", ttl_flood)

# ------------------------------------------------------------------ fuzz_records


def rec_v2(slot, proto, state, flags, in_ip, ext_ip, nat_ip, in_port, ext_port, nat_port, idle=0, in_use=1):
    if not in_use:
        return struct.pack("<I", slot) + b"\0" * 36
    return (struct.pack("<IBBBB", slot, 1, proto, state, flags) + ip(in_ip) + ip(ext_ip) + ip(nat_ip) +
            struct.pack("!HHH", in_port, ext_port, nat_port) + b"\0" * 6 + struct.pack("<II", idle, 0))


def rec_v1(*a, **k):
    return rec_v2(*a, **k)[:32]


def s_hello(gen=1, formats=3, pmax=1, cap=128):
    return bytes([0, gen, formats, pmax]) + struct.pack("<H", cap)


def s_ckpt(delta, full, last, chunk_no, flows, batches, crc_ok=True, old_gen=False):
    flags = (1 if full else 0) | (2 if last else 0) | (4 if crc_ok else 0) | (8 if old_gen else 0)
    out = bytes([1, delta & 0xFF, flags, chunk_no]) + struct.pack("<H", flows) + bytes([len(batches)])
    for fmt, recs in batches:
        size = 40 if fmt == 2 else 32
        out += bytes([fmt, len(recs) // size]) + struct.pack("<H", len(recs)) + recs
        if not crc_ok:
            out += struct.pack("<I", crc32c(recs))
    return out


r1 = rec_v2(3, 6, 3, 0x11, H, R, NAT, 40000, 80, 20000, 100)
r2 = rec_v2(5, 17, 0, 0x01, H, FAR, NAT, 5000, 53, 20001)
r3 = rec_v2(9, 1, 0, 0x11, H, R, NAT, 11, 0, 20002)
r2b = rec_v2(7, 17, 0, 0x11, H, FAR, NAT, 5000, 53, 20001)  # r2 moved to slot 7
full_sync = (b"\0" + s_hello() + s_ckpt(1, True, False, 0, 3, [(2, r1 + r2)]) +
             s_ckpt(1, True, True, 1, 3, [(2, r3)]) +
             s_ckpt(1, False, False, 0, 3, [(2, rec_v2(5, 0, 0, 0, H, H, H, 0, 0, 0, in_use=0) + r2b)]) +
             s_ckpt(1, False, False, 0, 3, [(2, rec_v2(3, 6, 5, 0x1D, H, R, NAT, 40000, 80, 20000))]))
write("fuzz_records", "full-sync-then-incrementals", full_sync)
v1_sync = (b"\0" + s_hello(formats=1) + s_ckpt(1, True, True, 0, 2, [(1, rec_v1(3, 6, 1, 1, H, R, NAT, 1, 2, 3) +
                                                                   rec_v1(4, 17, 0, 1, H, R, NAT, 1, 2, 3))]))
write("fuzz_records", "format-v1", v1_sync)
errors = (b"\0" + s_ckpt(1, True, True, 0, 0, []) + s_hello() +
          s_ckpt(1, True, True, 0, 1, [(2, r1)], crc_ok=False) +
          s_ckpt(1, True, True, 0, 2, [(2, r1 + rec_v2(4, 6, 3, 0x11, H, R, NAT, 40000, 80, 20000))]) +
          s_ckpt(5, False, False, 0, 0, []) + bytes([3, 2]) + s_hello(gen=0) + s_ckpt(1, True, True, 0, 1, [(3, r1)]) +
          bytes([4, 0]) + s_ckpt(1, True, True, 0, 1, [(2, r1)]))
write("fuzz_records", "refusals", errors)


def pb_varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def pb_field(num, wt, payload):
    key = pb_varint(num << 3 | wt)
    if wt == 0:
        return key + pb_varint(payload)
    return key + pb_varint(len(payload)) + payload


hello_pb = (pb_field(1, 2, b"a") + pb_field(2, 0, 2) + pb_field(3, 2, b"0.1.0") + pb_field(4, 0, 1) +
            pb_field(5, 0, 1) + pb_field(6, 0, 2) + pb_field(6, 0, 1) + pb_field(11, 0, 128))
def framed(msg):
    return struct.pack("<H", len(msg)) + msg


write("fuzz_records", "pb-hello", b"\x01" + framed(pb_field(1, 2, hello_pb)))
recs = r1 + r2
batch = pb_field(1, 0, 2) + pb_field(2, 0, 2) + pb_field(3, 2, recs) + pb_field(4, 0, crc32c(recs))
ckpt_pb = (pb_field(1, 0, 1) + pb_field(2, 0, 2) + pb_field(3, 0, 1) + pb_field(5, 0, 1) + pb_field(6, 2, batch) +
           pb_field(7, 0, 2))
write("fuzz_records", "pb-hello-checkpoint", b"\x01" + framed(pb_field(1, 2, hello_pb)) + framed(pb_field(2, 2, ckpt_pb)))

# ------------------------------------------------------------------ fuzz_config
LAB = """node:
  id: a
  state_dir: /run/ftpair-lab/state-a
  role: active
dpdk:
  memory_mb: 256
  mbufs: 8191
  file_prefix: ftpair-a
  eal_args: ["--log-level", "pmd:debug"]
ports:
  inside:
    device: net_af_packet0,iface=lan0,qdisc_bypass=0
    vip: 198.18.1.1/24
    vmac_id: 1
  outside:
    device: net_af_packet1,iface=wan0,qdisc_bypass=0
    vip: 198.18.2.1/24
    vmac_id: 2
    gateway: 198.18.2.254
nat:
  port_min: 20000
  port_max: 60999
  port_forwards:
    - {proto: tcp, port: 8080, to: "198.18.1.10:8080"}
    - {proto: udp, port: 53, to: "198.18.1.11:53"}
flows:
  capacity: 65536
  timeouts: {tcp_syn: 30, tcp_established: 7440, udp: 120, icmp: 60}
arp: {capacity: 1024, timeout_s: 300}
management:
  metrics: 198.18.3.1:9108
  grpc: 198.18.3.1:50051
peer:
  grpc: 198.18.3.2:50051
worker:
  test_hooks: true
  stall_ms: 150
checkpoint:
  mode: strict
  interval_us: 1000
  hold_capacity: 16384
  hold_fallback: drop
failover:
  fence: process
  fence_pidfile: /run/ftpair-lab/b.pid
  heartbeat_interval_ms: 10
  miss_threshold: 10
"""
write("fuzz_config", "lab-node-a.yaml", LAB.encode())
MIN = """node: {id: b}
ports:
  inside: {device: net_ring0, vip: 10.0.0.1/24}
  outside: {device: net_ring1, vip: 10.1.0.1/24}
"""
write("fuzz_config", "minimal.yaml", MIN.encode())
write("fuzz_config", "overrides", MIN.encode() + b"\0checkpoint.mode=strict\0nat.port_min=2000\0"
      b"failover.fence=libvirt\0failover.libvirt_uri=qemu:///system\0failover.libvirt_domain=a")
write("fuzz_config", "bad-values", (MIN + "nat: {port_min: 70000}\nflows: {capacity: -1}\n").encode())
write("fuzz_config", "anchors", b"node: &n {id: x}\nports: {inside: *n, outside: [1, 2]}\n")

# ------------------------------------------------------------------ fuzz_snapshot


def snapshot(fmt, recs, count, gen=3, epoch=42, clean=1, created=1_700_000_000_000_000_000):
    body = b"".join(recs)
    h = b"FTPSNAP1" + struct.pack("<IIQQQQQI", 1, fmt, gen, epoch, clean, created, count, crc32c(body))
    h += b"0.1.0".ljust(32, b"\0") + b"a".ljust(32, b"\0")
    h += struct.pack("<I", crc32c(h))
    assert len(h) == 128
    return h + body


write("fuzz_snapshot", "v2-three-flows", snapshot(2, [r1, r2, r3], 3))
write("fuzz_snapshot", "v1-two-flows", snapshot(1, [rec_v1(3, 6, 1, 1, H, R, NAT, 1, 2, 3),
                                                   rec_v1(4, 17, 0, 1, H, R, NAT, 1, 2, 3)], 2))
write("fuzz_snapshot", "empty", snapshot(2, [], 0, clean=0))
write("fuzz_snapshot", "duplicate-keys", snapshot(2, [r1, rec_v2(4, 6, 3, 0x11, H, R, NAT, 40000, 80, 20000)], 2))
# ------------------------------------------------------------------ fuzz_smbios


def smbios11(strings, count=None, handle=0x1100):
    count = len(strings) if count is None else count
    sset = b"".join(x.encode() + b"\0" for x in strings) + b"\0" if strings else b"\0\0"
    return struct.pack("<BBHB", 11, 5, handle, count) + sset


def smbios(type_, formatted=b"", strings=(), handle=0):
    sset = b"".join(x.encode() + b"\0" for x in strings) + b"\0" if strings else b"\0\0"
    return struct.pack("<BBH", type_, 4 + len(formatted), handle) + formatted + sset


OEM = ["ftpair:node.role=active", "ftpair:node.id=a", "ftpair:peer.grpc=198.18.3.2:50051",
       "ftpair:management.grpc=198.18.3.1:50051", "ftpair:pair=lab", "Other vendor string"]
write("fuzz_smbios", "type11-active", b"\0" + smbios11(OEM))
write("fuzz_smbios", "type11-spare", b"\0" + smbios11(["ftpair:node.role=standby", "ftpair:node.id=c",
                                                      "ftpair:management.grpc=198.18.3.3:50051",
                                                      "ftpair:peer.candidates=198.18.3.1:50051,198.18.3.2:50051"]))
write("fuzz_smbios", "type11-count-mismatch", b"\0" + smbios11(OEM[:2], count=5))
table = (smbios(0, b"\x01\x02\x00\xf0\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00", ["SeaBIOS", "1.16"]) +
         smbios(1, b"\x01\x02\x03\x04" + b"\0" * 20, ["QEMU", "Standard PC"], handle=0x100) +
         smbios11(OEM[:3]) + smbios11(OEM[3:], handle=0x1101) + smbios(127, handle=0x7F00))
write("fuzz_smbios", "dmi-table", b"\x01" + table)
write("fuzz_smbios", "config-drive", b"\x02" + b"""node:
  role: standby
  id: b
peer:
  grpc: 198.18.3.1:50051
management:
  grpc: 198.18.3.2:50051
""")
# fuzz_encoder: header (mode, chunk, epoch, generation, now, hz), then 28-byte slots.
def enc_header(full, fmt, chunk, epoch=41, gen=2, now=5_000_000_000, hz=2_000_000_000):
    return struct.pack("<BBIBQI", (1 if full else 0) | fmt << 1, chunk, epoch, gen, now, hz)


def enc_slot(slot, in_use, proto_sel, state, flag_sel, in_ip, ext_ip, nat_ip, in_port, ext_port, nat_port,
             last_seen):
    kind = (1 if in_use else 0) | proto_sel << 1 | state << 3 | flag_sel << 6
    return (struct.pack("<BB", slot, kind) + ip(in_ip) + ip(ext_ip) + ip(nat_ip) +
            struct.pack("!HHH", in_port, ext_port, nat_port) + struct.pack("<Q", last_seen))


ENC_SLOTS = b"".join(
    enc_slot(s, 1, s % 3, s % 6, s % 4, "10.0.0.%d" % (s + 1), "198.18.2.%d" % (s % 7 + 10), "198.18.2.1",
             40000 + s, 53 if s % 3 == 1 else 443, 1024 + 2 * s, 5_000_000_000 - s * 400_000_000)
    for s in range(12))
write("fuzz_encoder", "full-v2-chunked", enc_header(True, 2, 5) + ENC_SLOTS)
write("fuzz_encoder", "full-v1-one-chunk", enc_header(True, 1, 16) + ENC_SLOTS)
write("fuzz_encoder", "incremental-v2-deletions",
      enc_header(False, 2, 4) + ENC_SLOTS[:6 * 28] +
      b"".join(enc_slot(s, 0, 0, 0, 0, "0.0.0.0", "0.0.0.0", "0.0.0.0", 0, 0, 0, 0) for s in range(20, 25)))
write("fuzz_encoder", "full-empty", enc_header(True, 2, 0))
write("fuzz_encoder", "idle-overflow", enc_header(True, 2, 1, now=1 << 63, hz=1) + ENC_SLOTS[:2 * 28])
# ticks x 1000 wraps to 384 on a 1 Hz clock: idle_ms must saturate, not read 384 ms.
write("fuzz_encoder", "regress-idle-wrap", enc_header(True, 2, 1, now=18446744073709552, hz=1) +
      enc_slot(0, 1, 1, 0, 0, "10.0.0.1", "198.18.2.10", "198.18.2.1", 40000, 53, 1024, 0))
write("fuzz_encoder", "unknown-format", enc_header(False, 3, 4) + ENC_SLOTS[:28])

print("corpora written under", ROOT, file=sys.stderr)
