#!/usr/bin/python3
"""Writes the seed corpora in fuzz/corpus/<target>/ (run once; the files are committed).

Seeds are valid inputs that reach deep: whole TCP/UDP/ICMP conversations through the NAT,
ARP, expiry and captures for fuzz_packet; hello + full sync + incrementals for fuzz_records;
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


def ipv4(src, dst, proto, l4, ttl=64):
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0, ttl, proto, 0, ip(src), ip(dst))
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
