/* ICMP for the NAT: errors translated both ways with their embedded packet (RFC 5508,
 * RFC 5382 REQ-9, RFC 4787 REQ-12/13), and the errors the gateway originates itself (Time
 * Exceeded, Fragmentation Needed), rate-limited by a token bucket. */
#include <cstring>

#include <rte_byteorder.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "dataplane/csum.h"
#include "dataplane/mbuf.h"
#include "dataplane/nf.h"
#include "dataplane/nf_parsed.h"

namespace ftpair::dp {

namespace {
// An originated error quotes as much of the offending packet as fits in 576 bytes (RFC 1812 §4.3.2.3).
constexpr uint32_t kIcmpQuoteMax = 576 - sizeof(rte_ipv4_hdr) - 8;

inline uint16_t icmp_csum(const void *p, size_t len) {
  return static_cast<uint16_t>(~rte_raw_cksum(p, len));
}
}  // namespace


bool Nat44::icmp_allowed(uint64_t now) {
  const uint64_t cap = uint64_t(cfg_.icmp_burst) * hz_;
  icmp_tokens_ += (now - icmp_last_tsc_) * cfg_.icmp_rate;
  icmp_last_tsc_ = now;
  if (icmp_tokens_ > cap) icmp_tokens_ = cap;
  if (icmp_tokens_ < hz_) return false;
  icmp_tokens_ -= hz_;
  return true;
}

void Nat44::send_icmp_error(uint16_t port, rte_mbuf *orig, const Parsed &p, uint8_t type, uint8_t code,
                            uint16_t mtu, uint64_t now) {
  (void)orig;
  if (p.icmp_err) return;  // never an error about an error (RFC 1122 §3.2.2)
  if (!icmp_allowed(now)) {
    bump(ctr_.icmp_rate_limited);
    return;
  }
  rte_mbuf *m = mbuf_alloc(pool_);
  if (m == nullptr) {
    count(DropReason::NO_MBUF);
    return;
  }
  const uint32_t orig_len = rte_be_to_cpu_16(p.ip->total_length);
  const uint32_t quote = orig_len < kIcmpQuoteMax ? orig_len : kIcmpQuoteMax;
  const uint32_t ip_len = sizeof(rte_ipv4_hdr) + 8 + quote;
  auto *eth = reinterpret_cast<rte_ether_hdr *>(rte_pktmbuf_append(m, sizeof(rte_ether_hdr) + ip_len));
  if (eth == nullptr) {
    mbuf_free(m);
    count(DropReason::NO_MBUF);
    return;
  }
  eth->dst_addr = p.eth->src_addr;  // back to whoever handed us the packet
  eth->src_addr = cfg_.vmac[port];
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  auto *ip = reinterpret_cast<rte_ipv4_hdr *>(eth + 1);
  std::memset(ip, 0, sizeof(*ip));
  ip->version_ihl = RTE_IPV4_VHL_DEF;
  ip->type_of_service = 0xc0;  // internetwork control
  ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(ip_len));
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_ICMP;
  // From the address the packet reached us on: the LAN VIP, or the outside address it was sent to.
  ip->src_addr = port == kPortInside ? cfg_.vip[kPortInside] : p.ip->dst_addr;
  ip->dst_addr = p.ip->src_addr;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  uint8_t *icmp = reinterpret_cast<uint8_t *>(ip + 1);
  std::memset(icmp, 0, 8);
  icmp[0] = type;
  icmp[1] = code;
  if (type == kIcmpDestUnreach && code == kIcmpFragNeeded) {
    const uint16_t mtu_be = rte_cpu_to_be_16(mtu);
    std::memcpy(icmp + 6, &mtu_be, 2);  // next-hop MTU (RFC 1191)
  }
  std::memcpy(icmp + 8, p.ip, quote);
  const uint16_t c = icmp_csum(icmp, 8 + quote);
  std::memcpy(icmp + 2, &c, 2);
  agent_.tx(worker_, port, m, 0);
  bump(type == kIcmpTimeExceeded ? ctr_.icmp_time_exceeded : ctr_.icmp_frag_needed);
}

/* An ICMP error from either side. The embedded packet names the flow: seen from the LAN it
 * is a packet the flow sent inward (remote -> host), from the WAN one it sent outward
 * (outside endpoint -> remote). Both the embedded and the outer headers are translated and
 * every checksum fixed; an error never creates or refreshes a flow. */
void Nat44::icmp_error(rte_mbuf *m, Parsed &p, uint16_t port, uint64_t now) {
  if (p.l4_len < 8 + sizeof(rte_ipv4_hdr) + 8) return drop(m, DropReason::BAD_ICMP_ERROR);
  auto *emb = reinterpret_cast<rte_ipv4_hdr *>(p.l4 + 8);
  const uint32_t eihl = (emb->version_ihl & 0xf) * 4u;
  if ((emb->version_ihl >> 4) != 4 || eihl < sizeof(rte_ipv4_hdr) || 8 + eihl + 8 > p.l4_len)
    return drop(m, DropReason::BAD_ICMP_ERROR);
  // A non-first fragment carries no ports to find the flow by.
  if (emb->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK))
    return drop(m, DropReason::ICMP_ERROR_NO_FLOW);
  const uint8_t eproto = emb->next_proto_id;
  uint8_t *el4 = reinterpret_cast<uint8_t *>(emb) + eihl;
  const uint32_t el4_avail = p.l4_len - 8 - eihl;
  uint16_t esport, edport;
  switch (eproto) {
    case IPPROTO_TCP:
    case IPPROTO_UDP:
      std::memcpy(&esport, el4, 2);
      std::memcpy(&edport, el4 + 2, 2);
      break;
    case IPPROTO_ICMP: {
      const uint8_t et = el4[0];
      uint16_t ident;
      std::memcpy(&ident, el4 + 4, 2);
      if (et != RTE_IP_ICMP_ECHO_REQUEST && et != RTE_IP_ICMP_ECHO_REPLY)
        return drop(m, DropReason::ICMP_ERROR_NO_FLOW);
      // Keys by identifier: the inside view has it as the source port, the outside as the destination.
      esport = port == kPortInside ? 0 : ident;
      edport = port == kPortInside ? ident : 0;
      break;
    }
    default:
      return drop(m, DropReason::ICMP_ERROR_NO_FLOW);
  }
  // The embedded packet travelled the other way: its destination is the key's source.
  const FlowKey key{emb->dst_addr, emb->src_addr, edport, esport, eproto,
                    static_cast<uint8_t>(port == kPortInside ? 0 : 1), 0};
  const int slot = flows_.lookup(key);
  if (slot < 0) return drop(m, DropReason::ICMP_ERROR_NO_FLOW);
  const FlowRecord &r = flows_.record(static_cast<uint32_t>(slot));
  const bool inward = port == kPortOutside;
  // The embedded endpoint to rewrite: its source coming in (outside -> inside endpoint),
  // its destination going out (inside -> outside endpoint).
  const uint32_t old_ip = inward ? emb->src_addr : emb->dst_addr;
  const uint32_t new_ip = inward ? r.st.in_ip : r.st.nat_ip;
  const uint16_t new_port = inward ? r.st.in_port : r.st.nat_port;
  if (inward)
    emb->src_addr = new_ip;
  else
    emb->dst_addr = new_ip;
  emb->hdr_checksum = csum_update32(emb->hdr_checksum, old_ip, new_ip);
  if (eproto == IPPROTO_ICMP) {
    uint16_t old_id;
    std::memcpy(&old_id, el4 + 4, 2);
    std::memcpy(el4 + 4, &new_port, 2);
    uint16_t c;
    std::memcpy(&c, el4 + 2, 2);
    c = csum_update16(c, old_id, new_port);
    std::memcpy(el4 + 2, &c, 2);
  } else {
    uint8_t *pp = el4 + (inward ? 0 : 2);
    uint16_t old_port;
    std::memcpy(&old_port, pp, 2);
    std::memcpy(pp, &new_port, 2);
    // The embedded transport checksum, where the quote includes it (UDP's always, TCP's
    // when at least 18 bytes are quoted; a zero UDP checksum stays zero).
    const uint32_t coff = eproto == IPPROTO_UDP ? 6 : 16;
    if (el4_avail >= coff + 2) {
      uint16_t c;
      std::memcpy(&c, el4 + coff, 2);
      if (!(eproto == IPPROTO_UDP && c == 0)) {
        c = csum_update16(csum_update32(c, old_ip, new_ip), old_port, new_port);
        if (eproto == IPPROTO_UDP && c == 0) c = 0xffff;
        std::memcpy(el4 + coff, &c, 2);
      }
    }
  }
  // The outer header: toward the LAN host coming in; from the outside address going out.
  rte_ipv4_hdr *ip = p.ip;
  if (inward) {
    const uint32_t o = ip->dst_addr;
    ip->dst_addr = r.st.in_ip;
    ip->hdr_checksum = csum_update32(ip->hdr_checksum, o, ip->dst_addr);
  } else {
    const uint32_t o = ip->src_addr;
    ip->src_addr = r.st.nat_ip;
    ip->hdr_checksum = csum_update32(ip->hdr_checksum, o, ip->src_addr);
  }
  uint16_t before, after;
  std::memcpy(&before, &ip->time_to_live, 2);
  ip->time_to_live--;
  std::memcpy(&after, &ip->time_to_live, 2);
  ip->hdr_checksum = csum_update16(ip->hdr_checksum, before, after);
  auto *icmp = reinterpret_cast<rte_icmp_hdr *>(p.l4);
  icmp->icmp_cksum = 0;
  icmp->icmp_cksum = icmp_csum(p.l4, p.l4_len);
  bump(ctr_.icmp_errors_translated);
  bump(ctr_.forwarded[port]);
  if (inward) {
    resolve_and_send(kPortInside, m, r.st.in_ip, r.dirty_epoch, now);
  } else {
    const uint32_t nh = next_hop_out(ip->dst_addr);
    if (nh == 0) return drop(m, DropReason::NO_ROUTE);
    resolve_and_send(kPortOutside, m, nh, r.dirty_epoch, now);
  }
}

}  // namespace ftpair::dp
