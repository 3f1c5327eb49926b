/* Virtual reassembly of IPv4 fragments (RFC 4787 REQ-14), in the manner of VPP's shallow
 * reassembly: nothing is reassembled. The first fragment carries the ports; it is looked up,
 * filtered and translated like any packet, and the outcome (the rewritten addresses, the
 * egress port and the next hop) is kept in a context that translates every other fragment
 * of the datagram. Fragments that come before the first wait in the context, within a
 * per-datagram and a global bound, until the first comes or the timeout passes. A context
 * ends when every byte of the datagram has been seen, or at the timeout. */
#include <cstring>

#include <rte_byteorder.h>
#include <rte_hash_crc.h>
#include <rte_ip.h>

#include "dataplane/csum.h"
#include "dataplane/nf.h"
#include "dataplane/nf_parsed.h"

namespace ftpair::dp {

namespace {
enum FragState : uint8_t { kFree = 0, kWaiting = 1, kPending = 2, kResolved = 3, kDropped = 4 };
}  // namespace

/* The context of p's datagram (addresses, identification, protocol, ingress port), or -1.
 * With create, a free way of the set is taken; -1 when all eight are busy. */
int32_t Nat44::frag_find(const Parsed &p, uint16_t port, bool create, uint64_t now) {
  const uint32_t key[3] = {p.ip->src_addr, p.ip->dst_addr,
                           uint32_t(p.ip->packet_id) << 16 | uint32_t(p.proto) << 8 | port};
  const uint32_t set = rte_hash_crc(key, sizeof(key), 0x2545f491) % kFragSets;
  int32_t free_way = -1;
  for (unsigned w = 0; w < kFragWays; w++) {
    const int32_t i = static_cast<int32_t>(set * kFragWays + w);
    FragCtx &c = frag_[i];
    if (c.state == kFree) {
      if (free_way < 0) free_way = i;
      continue;
    }
    if (c.src == key[0] && c.dst == key[1] && c.id == p.ip->packet_id && c.proto == p.proto && c.port == port)
      return i;
  }
  if (!create || free_way < 0) return -1;
  FragCtx &c = frag_[free_way];
  c = FragCtx{};
  c.src = key[0];
  c.dst = key[1];
  c.id = p.ip->packet_id;
  c.proto = p.proto;
  c.port = static_cast<uint8_t>(port);
  c.state = kWaiting;
  c.born_tsc = now;
  if (frag_active_++ == 0) frag_next_expiry_tsc_ = now + frag_timeout_tsc_;
  return free_way;
}

// Counts a fragment's bytes; the last fragment (MF clear) gives the datagram's length.
void Nat44::frag_account(FragCtx &c, const Parsed &p) {
  c.bytes_seen += p.l4_len;
  if (!(p.ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG)))
    c.total = (rte_be_to_cpu_16(p.ip->fragment_offset) & RTE_IPV4_HDR_OFFSET_MASK) * 8u + p.l4_len;
}

void Nat44::frag_free(FragCtx &c, DropReason why) {
  for (unsigned i = 0; i < c.nbuf; i++) drop(c.buf[i], why);
  frag_buffered_ -= c.nbuf;
  c.nbuf = 0;
  c.state = kFree;
  frag_active_--;
}

// The first fragment is about to be translated: its context waits for the outcome.
void Nat44::frag_first(Parsed &p, uint16_t port, uint64_t now) {
  p.frag_ctx = frag_find(p, port, true, now);
  if (p.frag_ctx < 0) {
    count(DropReason::FRAG_TABLE_FULL);  // the first goes on; its followers cannot
    return;
  }
  FragCtx &c = frag_[p.frag_ctx];
  if (c.state != kWaiting) {  // a duplicate first fragment: translate it, keep the context
    p.frag_ctx = -1;
    return;
  }
  c.state = kPending;
  frag_account(c, p);
}

// The first fragment was translated: record how, before it is sent (it may be freed then).
int32_t Nat44::frag_resolved(const Parsed &p, uint16_t egress, uint32_t next_hop, uint64_t dep) {
  if (p.frag != 1 || p.frag_ctx < 0) return -1;
  FragCtx &c = frag_[p.frag_ctx];
  c.new_src = p.ip->src_addr;
  c.new_dst = p.ip->dst_addr;
  c.egress = egress;
  c.next_hop = next_hop;
  c.dep = dep;
  c.state = kResolved;
  return p.frag_ctx;
}

// After the first fragment went out: the ones that waited follow, in arrival order.
void Nat44::frag_release(int32_t ctx, uint64_t now) {
  FragCtx &c = frag_[ctx];
  const unsigned n = c.nbuf;
  c.nbuf = 0;
  frag_buffered_ -= n;
  for (unsigned i = 0; i < n; i++) frag_send(c, c.buf[i], now);
  if (c.total && c.bytes_seen >= c.total) frag_free(c, DropReason::COUNT);
}

// The first fragment was dropped (no flow, filtered, a limit): so are the others.
void Nat44::frag_first_done(const Parsed &p) {
  if (p.frag != 1 || p.frag_ctx < 0) return;
  FragCtx &c = frag_[p.frag_ctx];
  if (c.state != kPending) return;
  c.state = kDropped;
  for (unsigned i = 0; i < c.nbuf; i++) drop(c.buf[i], DropReason::FRAG_OF_DROPPED);
  frag_buffered_ -= c.nbuf;
  c.nbuf = 0;
}

// A later fragment takes the first one's addresses: only the IP header changes.
void Nat44::frag_send(FragCtx &c, rte_mbuf *m, uint64_t now) {
  auto *ip = reinterpret_cast<rte_ipv4_hdr *>(rte_pktmbuf_mtod(m, rte_ether_hdr *) + 1);
  if (rte_be_to_cpu_16(ip->total_length) > cfg_.mtu[c.egress]) return drop(m, DropReason::NEEDS_FRAGMENTATION);
  uint16_t c16 = csum_update32(ip->hdr_checksum, ip->src_addr, c.new_src);
  c16 = csum_update32(c16, ip->dst_addr, c.new_dst);
  ip->src_addr = c.new_src;
  ip->dst_addr = c.new_dst;
  uint16_t before, after;
  std::memcpy(&before, &ip->time_to_live, 2);
  ip->time_to_live--;
  std::memcpy(&after, &ip->time_to_live, 2);
  ip->hdr_checksum = csum_update16(c16, before, after);
  bump(ctr_.fragments_forwarded);
  resolve_and_send(c.egress, m, c.next_hop, c.dep, now);
}

void Nat44::frag_follow(rte_mbuf *m, Parsed &p, uint16_t port, uint64_t now) {
  const int32_t i = frag_find(p, port, true, now);
  if (i < 0) return drop(m, DropReason::FRAG_TABLE_FULL);
  FragCtx &c = frag_[i];
  frag_account(c, p);
  switch (c.state) {
    case kResolved:
      frag_send(c, m, now);
      if (c.total && c.bytes_seen >= c.total) frag_free(c, DropReason::COUNT);
      return;
    case kDropped:
      drop(m, DropReason::FRAG_OF_DROPPED);
      if (c.total && c.bytes_seen >= c.total) frag_free(c, DropReason::COUNT);
      return;
    default:  // waiting for the first fragment
      if (c.nbuf == kFragBufPerDatagram || frag_buffered_ == kFragBufGlobal)
        return drop(m, DropReason::FRAG_BUFFER_FULL);
      c.buf[c.nbuf++] = m;
      frag_buffered_++;
      return;
  }
}

// Contexts past the timeout go, with the fragments still waiting in them.
void Nat44::frag_expire(uint64_t now) {
  frag_next_expiry_tsc_ = now + frag_timeout_tsc_ / 4 + 1;
  for (auto &c : frag_)
    if (c.state != kFree && c.state != kPending && now - c.born_tsc > frag_timeout_tsc_)
      frag_free(c, DropReason::FRAG_TIMEOUT);
}

}  // namespace ftpair::dp
