#include "dataplane/nf.h"

#include <bit>
#include <cassert>
#include <cstring>
#include <netinet/in.h>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_cycles.h>
#include <rte_hash_crc.h>
#include <rte_random.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_prefetch.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "dataplane/csum.h"
#include "dataplane/dp_beat.h"
#include "dataplane/mbuf.h"
#include "dataplane/nf_parsed.h"
#include "dataplane/return_rss.h"
#include "dataplane/shards.h"

namespace ftpair::dp {

namespace {
constexpr uint8_t kTcpFin = RTE_TCP_FIN_FLAG, kTcpSyn = RTE_TCP_SYN_FLAG,
                  kTcpRst = RTE_TCP_RST_FLAG, kTcpAck = RTE_TCP_ACK_FLAG;
constexpr unsigned kIdxUdp = 7, kIdxIcmp = 8;

// Byte swaps the compiler can see through (DPDK's rte_be_to_cpu_* are volatile asm here).
inline uint16_t bswap16(uint16_t x) { return __builtin_bswap16(x); }
inline uint32_t bswap32(uint32_t x) { return __builtin_bswap32(x); }
// Unaligned loads, as values.
inline uint64_t load_u64(const uint8_t *p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint32_t load_u32(const uint8_t *p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline uint16_t load_u16(const uint8_t *p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline bool martian(uint32_t ip_be) {
  uint32_t ip = rte_be_to_cpu_32(ip_be);
  return ip == 0 || ip == 0xffffffff || (ip >> 28) == 0xe || (ip >> 24) == 127 || (ip >> 24) == 0;
}
inline bool multicast_or_bcast(uint32_t ip_be, uint32_t net_be, uint32_t mask_be) {
  uint32_t ip = rte_be_to_cpu_32(ip_be);
  if (ip == 0xffffffff || (ip >> 28) == 0xe) return true;
  return mask_be != 0xffffffff && (ip_be & ~mask_be) == (~mask_be & 0xffffffff) &&
         (ip_be & mask_be) == net_be;
}
// True when the 20-byte IPv4 header sums to 0xffff (its checksum is right). Five 32-bit
// adds and a fold: the same one's-complement sum as rte_raw_cksum's 16-bit loop, in either
// byte order, for a fraction of the instructions (about 50 fewer per packet).
inline bool ipv4_hdr_csum_ok(const rte_ipv4_hdr *ip) {
  uint32_t w[5];
  std::memcpy(w, ip, sizeof(w));
  uint64_t s = uint64_t(w[0]) + w[1] + w[2] + w[3] + w[4];
  s = (s & 0xffffffff) + (s >> 32);
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  s = (s & 0xffff) + (s >> 16);
  return s == 0xffff;
}
}  // namespace

NfCounters::NfCounters() {
  for (auto &d : drops) d.store(0);
  for (auto &f : forwarded) f.store(0);
}

// add_to() names every counter: a new one must be added there too.
static_assert(sizeof(NfCounters) == ((kDropReasonCount + kMaxPorts + 19) * 8 + 63) / 64 * 64);

void NfCounters::add_to(NfCounters *out) const {
  auto add = [](const std::atomic<uint64_t> &from, std::atomic<uint64_t> &to) {
    to.store(to.load(std::memory_order_relaxed) + from.load(std::memory_order_relaxed), std::memory_order_relaxed);
  };
  for (unsigned r = 0; r < kDropReasonCount; r++) add(drops[r], out->drops[r]);
  for (unsigned p = 0; p < kMaxPorts; p++) add(forwarded[p], out->forwarded[p]);
  add(flows_created, out->flows_created);
  add(flows_expired, out->flows_expired);
  add(flows_closed, out->flows_closed);
  add(flows_evicted, out->flows_evicted);
  add(arp_replies, out->arp_replies);
  add(arp_requests, out->arp_requests);
  add(garps, out->garps);
  add(icmp_time_exceeded, out->icmp_time_exceeded);
  add(icmp_frag_needed, out->icmp_frag_needed);
  add(icmp_rate_limited, out->icmp_rate_limited);
  add(icmp_errors_translated, out->icmp_errors_translated);
  add(mss_clamped, out->mss_clamped);
  add(hairpinned, out->hairpinned);
  add(tcp_out_of_window, out->tcp_out_of_window);
  add(tcp_rst_ignored, out->tcp_rst_ignored);
  add(fragments_forwarded, out->fragments_forwarded);
  add(fast_forwarded, out->fast_forwarded);
  add(rss_ports_steered, out->rss_ports_steered);
  add(rss_ports_unsteered, out->rss_ports_unsteered);
}


const char *filtering_name(Filtering f) {
  switch (f) {
    case Filtering::ENDPOINT: return "endpoint-independent";
    case Filtering::ADDRESS: return "address-dependent";
    case Filtering::ADDRESS_PORT: return "address-and-port-dependent";
  }
  return "unknown";
}

bool parse_filtering(const std::string &s, Filtering *out) {
  for (Filtering f : {Filtering::ENDPOINT, Filtering::ADDRESS, Filtering::ADDRESS_PORT})
    if (s == filtering_name(f)) {
      *out = f;
      return true;
    }
  return false;
}

Nat44::Nat44(const NfConfig &cfg, FlowTable &flows, ArpTable &arp, InterfaceAgent &agent,
             rte_mempool *pool, unsigned worker)
    : cfg_(cfg), flows_(flows), arp_(arp), agent_(agent), pool_(pool), worker_(worker),
      hz_(rte_get_tsc_hz()) {
  const Timeouts &t = cfg.timeouts;
  const uint32_t secs[9] = {t.tcp_syn, t.tcp_syn, t.tcp_syn, t.tcp_established, t.tcp_fin,
                            t.tcp_time_wait, t.tcp_closed, t.udp, t.icmp};
  uint64_t shortest = INT64_MAX;
  for (unsigned i = 0; i < 9; i++) {
    timeout_tsc_[i] = uint64_t(secs[i]) * hz_;
    shortest = timeout_tsc_[i] < shortest ? timeout_tsc_[i] : shortest;
  }
  min_timeout_tsc_ = shortest;
  arp_retry_tsc_ = uint64_t(cfg.arp_retry_ms) * hz_ / 1000;
  for (unsigned p = 0; p < kMaxPorts; p++)
    mask_[p] = cfg.prefix_len[p] == 0 ? 0 : rte_cpu_to_be_32(~0u << (32 - cfg.prefix_len[p]));
  std::memset(fwd_mask_, 0, sizeof(fwd_mask_));
  for (const auto &f : cfg.forwards) {
    unsigned pi = f.proto == IPPROTO_TCP ? 0 : 1;
    fwd_mask_[pi][f.outside_port / 64] |= 1ull << (f.outside_port % 64);
  }
  for (auto &m : fwd_mask_) m[0] |= 1;  // port (or identifier) 0 is never allocated
  nat_addrs_ = cfg.nat_addresses();
  flows_.set_nat_pool(nat_addrs_);
  nat_lo_ = UINT32_MAX;
  uint32_t nat_hi = 0;
  for (uint32_t a : nat_addrs_) {
    const uint32_t h = rte_be_to_cpu_32(a);
    nat_lo_ = h < nat_lo_ ? h : nat_lo_;
    nat_hi = h > nat_hi ? h : nat_hi;
  }
  // With no addresses the range is 255.255.255.255 alone, which bad_octet_ refuses first (and
  // is_nat_address's loop after it). The configuration always gives one (the WAN VIP).
  nat_span_ = nat_addrs_.empty() ? 0 : nat_hi - nat_lo_;
  const uint16_t mtu = cfg.mtu[kPortInside] < cfg.mtu[kPortOutside] ? cfg.mtu[kPortInside]
                                                                     : cfg.mtu[kPortOutside];
  mss_max_ = static_cast<uint16_t>(mtu - sizeof(rte_ipv4_hdr) - sizeof(rte_tcp_hdr));
  icmp_tokens_ = uint64_t(cfg.icmp_burst) * hz_;
  frag_.assign(kFragSets * kFragWays, FragCtx{});
  frag_timeout_tsc_ = uint64_t(cfg.fragment_timeout_ms) * hz_ / 1000;
  icmp_last_tsc_ = rte_rdtsc();
  for (unsigned p = 0; p < kMaxPorts; p++) net_[p] = cfg.vip[p] & mask_[p];
  // 0/8, 127/8 and 224/3 (multicast, class E and the limited broadcast): a superset of
  // what parse_ipv4() calls martian and multicast, so the fast test refuses them all.
  for (unsigned o = 0; o < 256; o++) bad_octet_[o] = o == 0 || o == 127 || o >= 224;
  fast_mtu_ok_ = cfg.mtu[kPortInside] >= sizeof(rte_ipv4_hdr) + 8 && cfg.mtu[kPortOutside] >= sizeof(rte_ipv4_hdr) + 8;
  fast_port_ok_[kPortInside] =
      cfg.prefix_len[kPortInside] >= 8 && !bad_octet_[rte_be_to_cpu_32(net_[kPortInside]) >> 24];
  fast_port_ok_[kPortOutside] = true;
  for (uint32_t a : nat_addrs_)
    if (multicast_or_bcast(a, net_[kPortOutside], mask_[kPortOutside]) || bad_octet_[rte_be_to_cpu_32(a) >> 24])
      fast_port_ok_[kPortOutside] = false;
  const uint32_t cap = flows_.capacity(), slice = cfg.expiry_scan_per_loop ? cfg.expiry_scan_per_loop : 1;
  expiry_interval_tsc_ = uint64_t(cfg.expiry_sweep_ms) * hz_ / 1000 * slice / (cap ? cap : 1);
  expiry_next_tsc_ = rte_rdtsc();
  nh_reset();  // every slot empty (the address no lookup in it finds) from the start
}

bool Nat44::is_nat_address(uint32_t ip) const {
  // Most packets are to none of them: one range check (host order) answers, as in fast_parse.
  if (rte_be_to_cpu_32(ip) - nat_lo_ > nat_span_) return false;
  if (nat_addrs_.size() == 1) return true;
  for (uint32_t a : nat_addrs_)
    if (a == ip) return true;
  return false;
}

// Paired pooling (RFC 4787 REQ-2): the same LAN host always gets the same outside address.
uint32_t Nat44::pool_address_for(uint32_t in_ip) const {
  if (nat_addrs_.size() == 1) return nat_addrs_[0];
  return nat_addrs_[rte_hash_crc_4byte(in_ip, 0x5bd1e995) % nat_addrs_.size()];
}

Nat44::~Nat44() {
  for (unsigned i = 0; i < n_pending_; i++) mbuf_free(pending_[i].m);
  for (auto &c : frag_)
    for (unsigned i = 0; i < c.nbuf; i++) mbuf_free(c.buf[i]);
}

uint32_t Nat44::timeout_s(const FlowState &st) const {
  const Timeouts &t = cfg_.timeouts;
  if (st.proto == IPPROTO_UDP) return t.udp;
  if (st.proto == IPPROTO_ICMP) return t.icmp;
  switch (static_cast<TcpState>(st.tcp_state)) {
    case TcpState::ESTABLISHED: return t.tcp_established;
    case TcpState::FIN_WAIT: return t.tcp_fin;
    case TcpState::TIME_WAIT: return t.tcp_time_wait;
    case TcpState::CLOSED: return t.tcp_closed;
    default: return t.tcp_syn;
  }
}

bool Nat44::forwarded_port(uint8_t proto, uint16_t port_host) const {
  if (proto == IPPROTO_ICMP) return false;
  unsigned pi = proto == IPPROTO_TCP ? 0 : 1;
  return (fwd_mask_[pi][port_host / 64] >> (port_host % 64)) & 1;
}

void Nat44::drop(rte_mbuf *m, DropReason r) {
  bump(ctr_.drops[static_cast<unsigned>(r)]);
  mbuf_free(m);
}

// ---------------------------------------------------------------- ARP

void Nat44::send_arp(uint16_t port, uint16_t op, uint32_t sip, const rte_ether_addr &sha,
                     uint32_t tip, const rte_ether_addr &tha, const rte_ether_addr &dst) {
  rte_mbuf *m = mbuf_alloc(pool_);
  if (m == nullptr) {
    bump(ctr_.drops[static_cast<unsigned>(DropReason::NO_MBUF)]);
    return;
  }
  auto *eth = reinterpret_cast<rte_ether_hdr *>(
      rte_pktmbuf_append(m, sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)));
  eth->dst_addr = dst;
  eth->src_addr = sha;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
  auto *arp = reinterpret_cast<rte_arp_hdr *>(eth + 1);
  arp->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
  arp->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  arp->arp_hlen = RTE_ETHER_ADDR_LEN;
  arp->arp_plen = 4;
  arp->arp_opcode = rte_cpu_to_be_16(op);
  arp->arp_data.arp_sha = sha;
  arp->arp_data.arp_sip = sip;
  arp->arp_data.arp_tha = tha;
  arp->arp_data.arp_tip = tip;
  agent_.tx(worker_, port, m, 0);
}

void Nat44::handle_arp(uint16_t port, rte_mbuf *m, uint64_t now) {
  if (rte_pktmbuf_data_len(m) < sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr))
    return drop(m, DropReason::BAD_ARP);
  auto *eth = rte_pktmbuf_mtod(m, rte_ether_hdr *);
  auto *arp = reinterpret_cast<rte_arp_hdr *>(eth + 1);
  uint16_t op = rte_be_to_cpu_16(arp->arp_opcode);
  if (arp->arp_hardware != rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) ||
      arp->arp_protocol != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) ||
      arp->arp_hlen != RTE_ETHER_ADDR_LEN || arp->arp_plen != 4 ||
      (op != RTE_ARP_OP_REQUEST && op != RTE_ARP_OP_REPLY) ||
      !rte_is_unicast_ether_addr(&arp->arp_data.arp_sha))
    return drop(m, DropReason::BAD_ARP);

  uint32_t sip = arp->arp_data.arp_sip, tip = arp->arp_data.arp_tip;
  uint32_t vip = cfg_.vip[port];
  bool on_link = (sip & mask_[port]) == (vip & mask_[port]) && sip != vip && sip != 0;
  if (on_link) {
    arp_.learn(sip, arp->arp_data.arp_sha, static_cast<uint8_t>(port), now);
    release_pending(sip, now);
  }
  const bool ours = tip == vip || (port == kPortOutside && is_nat_address(tip));
  if (op == RTE_ARP_OP_REQUEST && ours && sip != tip && vip_owner()) {
    // Answer in place, from the virtual MAC.
    rte_ether_addr asker = arp->arp_data.arp_sha;
    eth->dst_addr = asker;
    eth->src_addr = cfg_.vmac[port];
    arp->arp_opcode = rte_cpu_to_be_16(RTE_ARP_OP_REPLY);
    arp->arp_data.arp_tha = asker;
    arp->arp_data.arp_tip = sip;
    arp->arp_data.arp_sha = cfg_.vmac[port];
    arp->arp_data.arp_sip = tip;
    bump(ctr_.arp_replies);
    agent_.tx(worker_, port, m, 0);
    return;
  }
  if (on_link && (ours || op == RTE_ARP_OP_REPLY)) {
    mbuf_free(m);  // consumed: an answer to us, or a request seen while not owner
    return;
  }
  drop(m, DropReason::ARP_NOT_FOR_US);
}

void Nat44::park_for_arp(uint16_t port, rte_mbuf *m, uint32_t next_hop, uint64_t dep,
                         uint64_t now) {
  if (vip_owner() && arp_.should_request(next_hop, static_cast<uint8_t>(port), now, arp_retry_tsc_)) {
    static const rte_ether_addr zero{};
    rte_ether_addr bcast;
    std::memset(&bcast, 0xff, sizeof(bcast));
    send_arp(port, RTE_ARP_OP_REQUEST, cfg_.vip[port], cfg_.vmac[port], next_hop, zero, bcast);
    bump(ctr_.arp_requests);
  }
  if (n_pending_ == kPendingMax) {
    // Oldest first out: the queue is bounded.
    drop(pending_[0].m, DropReason::ARP_MISS);
    std::memmove(&pending_[0], &pending_[1], sizeof(PendingArp) * (kPendingMax - 1));
    n_pending_--;
  }
  pending_[n_pending_++] = PendingArp{m, dep, now, next_hop, port};
}

void Nat44::release_pending(uint32_t ip, uint64_t now) {
  if (n_pending_ == 0) return;
  rte_ether_addr mac;
  if (!arp_.lookup(ip, now, &mac)) return;
  unsigned keep = 0;
  for (unsigned i = 0; i < n_pending_; i++) {
    PendingArp &p = pending_[i];
    if (p.next_hop == ip) {
      auto *eth = rte_pktmbuf_mtod(p.m, rte_ether_hdr *);
      eth->dst_addr = mac;
      agent_.tx(worker_, p.port, p.m, p.dep);
    } else {
      pending_[keep++] = p;
    }
  }
  n_pending_ = keep;
}

void Nat44::expire_pending(uint64_t now) {
  unsigned keep = 0;
  for (unsigned i = 0; i < n_pending_; i++) {
    if (now - pending_[i].since_tsc > arp_retry_tsc_)
      drop(pending_[i].m, DropReason::ARP_MISS);
    else
      pending_[keep++] = pending_[i];
  }
  n_pending_ = keep;
}

void Nat44::announce() {
  rte_ether_addr bcast;
  std::memset(&bcast, 0xff, sizeof(bcast));
  for (uint16_t p = 0; p < kMaxPorts; p++) {
    // Gratuitous ARP: a request for our own address, from the virtual MAC.
    send_arp(p, RTE_ARP_OP_REQUEST, cfg_.vip[p], cfg_.vmac[p], cfg_.vip[p], rte_ether_addr{}, bcast);
    bump(ctr_.garps);
  }
  for (uint32_t a : nat_addrs_) {
    if (a == cfg_.vip[kPortOutside]) continue;
    send_arp(kPortOutside, RTE_ARP_OP_REQUEST, a, cfg_.vmac[kPortOutside], a, rte_ether_addr{}, bcast);
    bump(ctr_.garps);
  }
}

// Empties the next-hop cache (nf.h): every slot s holds (s ^ 1) << 24, found in no lookup.
void Nat44::nh_reset() {
  for (auto &port : nh_)
    for (unsigned s = 0; s < kNextHops; s++) port[s].ip = (s ^ 1u) << 24;
  nh_changes_ = arp_.changes();
  nh_until_ = UINT64_MAX;
}

// address_frame() for a next hop not cached: asks the ARP table, and remembers.
bool Nat44::cache_next_hop(uint16_t port, rte_mbuf *m, uint32_t next_hop, uint64_t dep, uint64_t now) {
  rte_ether_addr mac;
  uint64_t stale_from;
  if (!arp_.lookup(next_hop, now, &mac, &stale_from)) {
    rte_pktmbuf_mtod(m, rte_ether_hdr *)->src_addr = cfg_.vmac[port];
    park_for_arp(port, m, next_hop, dep, now);
    return false;
  }
  NextHop &e = nh_entry(port, next_hop);  // whatever it held goes
  e.ip = next_hop;
  std::memcpy(e.l2, &mac, RTE_ETHER_ADDR_LEN);
  std::memcpy(e.l2 + RTE_ETHER_ADDR_LEN, &cfg_.vmac[port], RTE_ETHER_ADDR_LEN);
  if (stale_from < nh_until_) nh_until_ = stale_from;
  // Packets parked for this next hop go first: its MAC may have been learnt without an ARP
  // reply (from the host's own traffic), and a later packet of a parked one's flow must not
  // overtake it.
  if (__builtin_expect(n_pending_ != 0, 0)) release_pending(next_hop, now);
  return true;
}


// ---------------------------------------------------------------- IPv4

bool Nat44::parse_ipv4(rte_mbuf *m, Parsed &p, uint16_t port) {
  const uint32_t l2 = sizeof(rte_ether_hdr);
  uint32_t seg = rte_pktmbuf_data_len(m);
  if (seg < l2 + sizeof(rte_ipv4_hdr)) return drop(m, DropReason::TRUNCATED_L3), false;
  p.eth = rte_pktmbuf_mtod(m, rte_ether_hdr *);
  p.ip = reinterpret_cast<rte_ipv4_hdr *>(p.eth + 1);
  rte_ipv4_hdr *ip = p.ip;
  if ((ip->version_ihl >> 4) != 4) return drop(m, DropReason::BAD_IP_VERSION), false;
  uint32_t ihl = (ip->version_ihl & 0xf) * 4u;
  if (ihl < sizeof(rte_ipv4_hdr)) return drop(m, DropReason::BAD_IHL), false;
  if (ihl > sizeof(rte_ipv4_hdr)) return drop(m, DropReason::IPV4_OPTIONS), false;
  uint32_t tot = rte_be_to_cpu_16(ip->total_length);
  if (tot < ihl || tot > rte_pktmbuf_pkt_len(m) - l2 || tot > seg - l2)
    return drop(m, DropReason::BAD_IP_LENGTH), false;
  if (!ipv4_hdr_csum_ok(ip))
    return drop(m, DropReason::BAD_IP_CHECKSUM), false;
  if (martian(ip->src_addr)) return drop(m, DropReason::BAD_SOURCE), false;
  uint32_t vip = cfg_.vip[port];
  if (multicast_or_bcast(ip->dst_addr, vip & mask_[port], mask_[port]))
    return drop(m, DropReason::BROADCAST_DST), false;
  // Trim Ethernet padding so L4 lengths are exact.
  if (rte_pktmbuf_pkt_len(m) > l2 + tot) rte_pktmbuf_trim(m, rte_pktmbuf_pkt_len(m) - l2 - tot);

  p.proto = ip->next_proto_id;
  p.l4 = reinterpret_cast<uint8_t *>(ip) + ihl;
  p.l4_len = static_cast<uint16_t>(tot - ihl);
  p.tcp_flags = 0;
  p.icmp_type = 0;
  p.icmp_err = false;
  p.hairpin = false;
  p.to_nat = false;
  p.frag = 0;
  if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG | RTE_IPV4_HDR_OFFSET_MASK)) {
    const uint32_t off8 = rte_be_to_cpu_16(ip->fragment_offset) & RTE_IPV4_HDR_OFFSET_MASK;
    if (off8 * 8 + p.l4_len > 65535) return drop(m, DropReason::BAD_FRAGMENT), false;
    if (off8 != 0) {
      // A later fragment: no transport header; the first fragment's outcome translates it.
      p.frag = 2;
      p.sport = p.dport = 0;
      return true;
    }
    p.frag = 1;
    // The first fragment must hold the whole transport header (RFC 1858 tiny fragments).
    const uint32_t need = p.proto == IPPROTO_TCP ? sizeof(rte_tcp_hdr) : 8;
    if (p.l4_len < need) return drop(m, DropReason::BAD_FRAGMENT), false;
  }
  switch (p.proto) {
    case IPPROTO_TCP: {
      if (p.l4_len < sizeof(rte_tcp_hdr)) return drop(m, DropReason::TRUNCATED_L4), false;
      auto *tcp = reinterpret_cast<rte_tcp_hdr *>(p.l4);
      uint32_t off = (tcp->data_off >> 4) * 4u;
      if (off < sizeof(rte_tcp_hdr) || off > p.l4_len)
        return drop(m, p.frag ? DropReason::BAD_FRAGMENT : DropReason::BAD_TCP_OFFSET), false;
      uint8_t f = tcp->tcp_flags;
      if (f == 0 || ((f & kTcpSyn) && (f & (kTcpFin | kTcpRst))) ||
          ((f & kTcpFin) && !(f & kTcpAck)))
        return drop(m, DropReason::BAD_TCP_FLAGS), false;
      p.tcp_flags = f;
      p.sport = tcp->src_port;
      p.dport = tcp->dst_port;
      break;
    }
    case IPPROTO_UDP: {
      if (p.l4_len < sizeof(rte_udp_hdr)) return drop(m, DropReason::TRUNCATED_L4), false;
      auto *udp = reinterpret_cast<rte_udp_hdr *>(p.l4);
      uint16_t ulen = rte_be_to_cpu_16(udp->dgram_len);
      // A first fragment holds only part of the datagram the length covers.
      if (ulen < sizeof(rte_udp_hdr) || (ulen > p.l4_len && p.frag == 0))
        return drop(m, DropReason::TRUNCATED_L4), false;
      p.sport = udp->src_port;
      p.dport = udp->dst_port;
      break;
    }
    case IPPROTO_ICMP: {
      if (p.l4_len < sizeof(rte_icmp_hdr)) return drop(m, DropReason::TRUNCATED_L4), false;
      auto *icmp = reinterpret_cast<rte_icmp_hdr *>(p.l4);
      p.icmp_type = icmp->icmp_type;
      const uint8_t code = icmp->icmp_code;
      switch (icmp->icmp_type) {
        case RTE_IP_ICMP_ECHO_REQUEST:
        case RTE_IP_ICMP_ECHO_REPLY:
          if (code != 0) return drop(m, DropReason::ICMP_UNSUPPORTED), false;
          break;
        case kIcmpDestUnreach:
          if (code > 15) return drop(m, DropReason::ICMP_UNSUPPORTED), false;
          p.icmp_err = true;
          break;
        case kIcmpTimeExceeded:
          if (code > 1) return drop(m, DropReason::ICMP_UNSUPPORTED), false;
          p.icmp_err = true;
          break;
        case kIcmpParamProblem:
          if (code > 2) return drop(m, DropReason::ICMP_UNSUPPORTED), false;
          p.icmp_err = true;
          break;
        default:
          return drop(m, DropReason::ICMP_UNSUPPORTED), false;
      }
      // The identifier plays the port: the inside host's on the LAN, ours on the WAN.
      p.sport = port == kPortInside ? icmp->icmp_ident : 0;
      p.dport = port == kPortInside ? 0 : icmp->icmp_ident;
      break;
    }
    default:
      return drop(m, DropReason::UNKNOWN_PROTOCOL), false;
  }
  p.key = FlowKey{ip->src_addr, ip->dst_addr, p.sport, p.dport, p.proto,
                  static_cast<uint8_t>(port == kPortInside ? 0 : 1), 0};
  return true;
}

// An echo request to one of the gateway's addresses: turned into the reply, sent back out.
void Nat44::answer_echo(rte_mbuf *m, Parsed &p, uint16_t port) {
  rte_ether_hdr *eth = p.eth;
  rte_ipv4_hdr *ip = p.ip;
  rte_icmp_hdr *icmp = reinterpret_cast<rte_icmp_hdr *>(p.l4);
  eth->dst_addr = eth->src_addr;
  eth->src_addr = cfg_.vmac[port];
  const uint32_t src = ip->src_addr;
  ip->src_addr = ip->dst_addr;
  ip->dst_addr = src;
  ip->time_to_live = 64;
  ip->hdr_checksum = 0;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  uint16_t old_word, new_word;
  std::memcpy(&old_word, &icmp->icmp_type, 2);
  icmp->icmp_type = RTE_IP_ICMP_ECHO_REPLY;
  std::memcpy(&new_word, &icmp->icmp_type, 2);
  icmp->icmp_cksum = csum_update16(icmp->icmp_cksum, old_word, new_word);
  agent_.tx(worker_, port, m, 0);
}

// Anything else to the gateway's own address is not for the NAT.
void Nat44::answer_echo_or_drop(rte_mbuf *m, Parsed &p, uint16_t port, bool echo_request) {
  if (echo_request)
    answer_echo(m, p, port);
  else
    drop(m, DropReason::TO_VIP);
}

static inline void decrement_ttl(rte_ipv4_hdr *ip) {
  uint16_t before, after;
  std::memcpy(&before, &ip->time_to_live, 2);
  ip->time_to_live--;
  std::memcpy(&after, &ip->time_to_live, 2);
  ip->hdr_checksum = csum_update16(ip->hdr_checksum, before, after);
}

// Rewrites one address and its port (or ICMP identifier), fixing every checksum.
static inline void rewrite(uint8_t proto, rte_ipv4_hdr *ip, uint8_t *l4, bool source,
                           uint32_t new_ip, uint16_t new_port) {
  const uint32_t old_ip = source ? ip->src_addr : ip->dst_addr;
  if (source)
    ip->src_addr = new_ip;
  else
    ip->dst_addr = new_ip;
  ip->hdr_checksum = csum_update32(ip->hdr_checksum, old_ip, new_ip);
  if (proto == IPPROTO_TCP) {
    auto *tcp = reinterpret_cast<rte_tcp_hdr *>(l4);
    const uint16_t old_port = source ? tcp->src_port : tcp->dst_port;
    tcp->cksum = csum_update16(csum_update32(tcp->cksum, old_ip, new_ip), old_port, new_port);
    if (source)
      tcp->src_port = new_port;
    else
      tcp->dst_port = new_port;
  } else if (proto == IPPROTO_UDP) {
    auto *udp = reinterpret_cast<rte_udp_hdr *>(l4);
    const uint16_t old_port = source ? udp->src_port : udp->dst_port;
    if (udp->dgram_cksum != 0) {  // zero: the sender did not checksum; leave it so
      uint16_t c = csum_update16(csum_update32(udp->dgram_cksum, old_ip, new_ip), old_port, new_port);
      udp->dgram_cksum = c == 0 ? 0xffff : c;
    }
    if (source)
      udp->src_port = new_port;
    else
      udp->dst_port = new_port;
  } else {
    auto *icmp = reinterpret_cast<rte_icmp_hdr *>(l4);
    icmp->icmp_cksum = csum_update16(icmp->icmp_cksum, icmp->icmp_ident, new_port);
    icmp->icmp_ident = new_port;
  }
}

// Applies a state change to a flow: touch first, so a pending capture keeps the old state.
inline void Nat44::update_flow(uint32_t slot, uint8_t tcp_state, uint8_t flags) {
  FlowRecord &r = flows_.record(slot);
  if (r.st.tcp_state == tcp_state && r.st.flags == flags) return;
  flows_.set_state(slot, tcp_state, flags);
}

/* RFC 6056 style: a random port of the host's parity and range class (RFC 4787 REQ-3/4)
 * that no mapping or port-forward uses on nat_ip. The scan starts at a random place and
 * covers the whole range, so a free port is found whenever one exists (the other parity,
 * then the other class, only when the preferred ones are full).
 * With a programmed RSS (rss_), a TCP or UDP port is also one whose replies from
 * ext_ip:ext_port land on this worker's queue: each pass (class and parity) is scanned with
 * that test first, then without it (*steered false), so the RFC's preferences still come
 * first. 0 = none free. */
uint16_t Nat44::pick_nat_port(uint32_t nat_ip, uint8_t proto, uint16_t in_port_host, uint32_t ext_ip,
                              uint16_t ext_port, bool *steered) {
  *steered = false;
  PortPool *pool = flows_.port_pool();
  const int a = pool ? pool->index(nat_ip) : -1, pi = proto_slot(proto);
  if (a < 0 || pi < 0) return 0;
  const uint32_t lo = cfg_.nat_port_min, hi = cfg_.nat_port_max;
  uint32_t clo = lo, chi = hi;
  if (proto != IPPROTO_ICMP) {
    if (in_port_host < 1024) {
      chi = hi < 1023 ? hi : 1023;
    } else if (lo < 1024) {
      clo = 1024;
    }
    if (clo > chi) clo = lo, chi = hi;
  }
  const uint64_t parity = proto == IPPROTO_ICMP ? ~0ull
                          : (in_port_host & 1) ? 0xaaaaaaaaaaaaaaaaull
                                               : 0x5555555555555555ull;
  struct Pass {
    uint32_t lo, hi;
    uint64_t parity;
  } passes[4] = {{clo, chi, parity}, {clo, chi, ~parity}, {lo, hi, parity}, {lo, hi, ~parity}};
  const unsigned npass = (clo == lo && chi == hi) ? 2 : 4;
  const bool steer = rss_ != nullptr && proto != IPPROTO_ICMP;
  const uint32_t base = steer ? rss_->base(ext_ip, nat_ip, ext_port) : 0;
  for (unsigned k = 0; k < npass; k++) {
    const Pass &ps = passes[k];
    if (ps.parity == 0) continue;
    for (unsigned round = steer ? 0 : 1; round < 2; round++) {
      const uint32_t w_lo = ps.lo / 64, w_hi = ps.hi / 64, words = w_hi - w_lo + 1;
      const uint32_t start = static_cast<uint32_t>(rte_rand() % words);
      const unsigned rot = static_cast<unsigned>(rte_rand() % 64);
      for (uint32_t i = 0; i < words; i++) {
        const uint32_t w = w_lo + (start + i) % words;
        uint64_t free = ~(pool->word(a, pi, w) | fwd_mask_[pi][w]) & ps.parity;
        if (w == w_lo) free &= ~0ull << (ps.lo % 64);
        if (w == w_hi && ps.hi % 64 != 63) free &= (2ull << (ps.hi % 64)) - 1;
        while (free != 0) {
          // A random free bit of the word: rotate, take the lowest, rotate back.
          const uint64_t r = rot ? (free >> rot) | (free << (64 - rot)) : free;
          const unsigned bit = (static_cast<unsigned>(__builtin_ctzll(r)) + rot) % 64;
          const uint16_t port = static_cast<uint16_t>(w * 64 + bit);
          free &= ~(1ull << bit);
          if (round == 0 && rss_->worker(base, port) != worker_) continue;
          // Claimed here, so another worker sharing the pool cannot take it meanwhile.
          if (pool->claim(a, pi, port)) {
            *steered = round == 0;
            return port;
          }
        }
      }
    }
  }
  return 0;
}

/* Makes room for a new flow at high occupancy by evicting the oldest embryonic flow
 * (RFC 6888 REQ-5 style: a flood of half-open flows cannot push out established users).
 * Returns true when a flow was evicted (slots looked up earlier in the burst are stale). */
bool Nat44::make_room(uint64_t) {
  const uint64_t size = flows_.occupancy(), cap = flows_.limit();
  if (cfg_.evict_embryonic_pct == 0 || size * 100 < cap * cfg_.evict_embryonic_pct) return false;
  const int32_t victim = flows_.oldest_embryonic();
  if (victim < 0) return false;
  flows_.remove(static_cast<uint32_t>(victim));
  bump(ctr_.flows_evicted);
  return true;
}

int32_t Nat44::insert_flow(FlowState &st, uint64_t now, bool count_host) {
  if (count_host && cfg_.max_sessions_per_host &&
      flows_.host_flows(st.in_ip) >= cfg_.max_sessions_per_host) {
    count(DropReason::HOST_SESSION_LIMIT);
    return -1;
  }
  if (make_room(now)) evicted_ = true;
  if (flows_.occupancy() >= flows_.limit()) {
    count(DropReason::FLOW_TABLE_FULL);
    return -1;
  }
  int slot = flows_.insert(st, now);
  if (slot < 0) {
    count(slot == -EEXIST ? DropReason::NAT_PORTS_EXHAUSTED : DropReason::FLOW_TABLE_FULL);
    return -1;
  }
  bump(ctr_.flows_created);
  created_ = true;
  return slot;
}

int32_t Nat44::create_snat_flow(const Parsed &p, uint64_t now) {
  FlowState st{};
  st.in_ip = p.ip->src_addr;
  st.ext_ip = p.ip->dst_addr;
  st.in_port = p.sport;
  st.ext_port = p.dport;
  st.proto = p.proto;
  st.tcp_state = p.proto == IPPROTO_TCP ? static_cast<uint8_t>(TcpState::SYN_SENT) : 0;
  st.tcp_wscale = p.proto == IPPROTO_TCP ? 0xff : 0;
  if (const Mapping *mp = flows_.mapping_inside(st.in_ip, st.in_port, st.proto)) {
    // Endpoint-independent mapping: every destination sees the same outside endpoint.
    st.nat_ip = mp->nat_ip;
    st.nat_port = mp->nat_port;
  } else {
    if (cfg_.max_sessions_per_host && flows_.host_flows(st.in_ip) >= cfg_.max_sessions_per_host) {
      count(DropReason::HOST_SESSION_LIMIT);
      return -1;
    }
    st.nat_ip = pool_address_for(st.in_ip);
    bool steered = false;
    uint16_t port =
        pick_nat_port(st.nat_ip, st.proto, rte_be_to_cpu_16(p.sport), st.ext_ip, rte_be_to_cpu_16(p.dport), &steered);
    if (port == 0) {
      count(DropReason::NAT_PORTS_EXHAUSTED);
      return -1;
    }
    st.nat_port = rte_cpu_to_be_16(port);
    const int32_t slot = insert_flow(st, now, true);
    // The port was claimed for this flow: give it back when the flow was not made.
    if (slot < 0) {
      flows_.port_pool()->release(flows_.port_pool()->index(st.nat_ip), proto_slot(st.proto), port);
    } else if (rss_ != nullptr && st.proto != IPPROTO_ICMP) {
      bump(steered ? ctr_.rss_ports_steered : ctr_.rss_ports_unsteered);
    }
    return slot;
  }
  return insert_flow(st, now, true);
}

/* A WAN packet (or the second pass of a hairpinned LAN packet) without a flow: a static
 * port-forward, or a new session on a LAN host's mapping when the filtering admits it. */
int32_t Nat44::create_inbound_flow(const Parsed &p, uint64_t now, bool hairpin) {
  const uint16_t dport = rte_be_to_cpu_16(p.dport);
  const uint32_t nat_ip = p.ip->dst_addr;
  const bool tcp_open = p.proto != IPPROTO_TCP || (p.tcp_flags & (kTcpSyn | kTcpAck)) == kTcpSyn;
  FlowState st{};
  st.ext_ip = p.ip->src_addr;
  st.ext_port = p.sport;
  st.nat_ip = nat_ip;
  st.nat_port = p.dport;
  st.proto = p.proto;
  st.tcp_state = p.proto == IPPROTO_TCP ? static_cast<uint8_t>(TcpState::SYN_SENT) : 0;
  st.tcp_wscale = p.proto == IPPROTO_TCP ? 0xff : 0;
  if (nat_ip == cfg_.vip[kPortOutside] && forwarded_port(p.proto, dport)) {
    const PortForward *rule = nullptr;
    for (const auto &f : cfg_.forwards)
      if (f.proto == p.proto && f.outside_port == dport) rule = &f;
    if (rule == nullptr) return count(DropReason::NO_MAPPING), -1;
    if (!tcp_open) return count(DropReason::TCP_NO_FLOW), -1;
    st.in_ip = rule->inside_ip;
    st.in_port = rte_cpu_to_be_16(rule->inside_port);
    st.flags = kFlowPortForward;
    return insert_flow(st, now, false);
  }
  const Mapping *mp = flows_.mapping_outside(nat_ip, p.dport, p.proto);
  if (mp == nullptr || p.proto == IPPROTO_ICMP) return count(DropReason::NO_MAPPING), -1;
  bool admit = false;
  switch (cfg_.filtering) {
    case Filtering::ENDPOINT: admit = true; break;
    case Filtering::ADDRESS: admit = flows_.flows_toward(st.ext_ip, nat_ip, p.dport, p.proto) > 0; break;
    case Filtering::ADDRESS_PORT: admit = false; break;  // the exact flow would have matched
  }
  if (!admit) return count(DropReason::FILTERED), -1;
  if (!tcp_open) return count(DropReason::TCP_NO_FLOW), -1;
  st.in_ip = mp->in_ip;
  st.in_port = mp->in_port;
  st.flags = kFlowInbound;
  (void)hairpin;
  return insert_flow(st, now, true);
}

// The responder of a flow is inside for port-forwarded and inbound flows, outside otherwise.
static inline bool responder_inside(const FlowState &st) {
  return st.flags & (kFlowPortForward | kFlowInbound);
}

__attribute__((always_inline)) inline bool Nat44::translate_in2out(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now, uint64_t *dep) {
  if (slot < 0) {
    if (p.proto == IPPROTO_TCP && (p.tcp_flags & (kTcpSyn | kTcpAck)) != kTcpSyn)
      return drop(m, DropReason::TCP_NO_FLOW), false;
    if (p.proto == IPPROTO_ICMP && p.icmp_type != RTE_IP_ICMP_ECHO_REQUEST)
      return drop(m, DropReason::ICMP_UNSUPPORTED), false;
    // An earlier packet of this burst may have created it (or evicted a flow and so made
    // the bulk lookup's answer stale): only then is it looked up again.
    if (created_ | evicted_) slot = flows_.lookup(p.key);
    if (slot < 0) {
      slot = create_snat_flow(p, now);
      if (slot < 0) return mbuf_free(m), false;
      // A changed MAC moves ARP's changes(): the next-hop cache is reset before its next use.
      arp_.learn(p.ip->src_addr, p.eth->src_addr, kPortInside, now);
    }
  }
  FlowRecord &r = flows_.record(static_cast<uint32_t>(slot));
  if (p.proto == IPPROTO_TCP) {
    uint8_t state, flags;
    DropReason why = track_tcp(static_cast<uint32_t>(slot), r, p, true, &state, &flags);
    if (why != DropReason::COUNT) return drop(m, why), false;
    update_flow(static_cast<uint32_t>(slot), state, flags);
    if (p.tcp_flags & kTcpSyn) clamp_mss(p);
  } else if (responder_inside(r.st) && !(r.st.flags & kFlowReplied)) {
    update_flow(static_cast<uint32_t>(slot), r.st.tcp_state, r.st.flags | kFlowReplied);
  }
  r.last_seen_tsc = now;
  decrement_ttl(p.ip);
  rewrite(p.proto, p.ip, p.l4, true, r.st.nat_ip, r.st.nat_port);
  *dep = r.dirty_epoch;
  return true;
}

__attribute__((always_inline)) inline bool Nat44::translate_out2in(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now, uint64_t *dep) {
  if (slot < 0) {
    if (created_ | evicted_) slot = flows_.lookup(p.key);
    if (slot < 0) {
      slot = create_inbound_flow(p, now, p.hairpin);
      if (slot < 0) return mbuf_free(m), false;
    }
  }
  FlowRecord &r = flows_.record(static_cast<uint32_t>(slot));
  if (p.proto == IPPROTO_TCP) {
    uint8_t state, flags;
    DropReason why = track_tcp(static_cast<uint32_t>(slot), r, p, false, &state, &flags);
    if (why != DropReason::COUNT) return drop(m, why), false;
    update_flow(static_cast<uint32_t>(slot), state, flags);
    if (p.tcp_flags & kTcpSyn) clamp_mss(p);
  } else if (!responder_inside(r.st) && !(r.st.flags & kFlowReplied)) {
    update_flow(static_cast<uint32_t>(slot), r.st.tcp_state, r.st.flags | kFlowReplied);
  }
  r.last_seen_tsc = now;
  if (!p.hairpin) decrement_ttl(p.ip);
  rewrite(p.proto, p.ip, p.l4, false, r.st.in_ip, r.st.in_port);
  *dep = r.dirty_epoch;
  return true;
}

void Nat44::inside_to_outside(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now) {
  const uint32_t nh = next_hop_out(p.ip->dst_addr);
  if (nh == 0) return drop(m, DropReason::NO_ROUTE);
  uint64_t dep;
  if (!translate_in2out(m, p, slot, now, &dep)) return;
  bump(ctr_.forwarded[kPortInside]);
  const int32_t ctx = p.frag ? frag_resolved(p, kPortOutside, nh, dep) : -1;
  resolve_and_send(kPortOutside, m, nh, dep, now);
  if (ctx >= 0) frag_release(ctx, now);
}

void Nat44::outside_to_inside(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now) {
  uint64_t dep;
  if (!translate_out2in(m, p, slot, now, &dep)) return;
  bump(ctr_.forwarded[kPortOutside]);
  const uint32_t nh = p.ip->dst_addr;
  const int32_t ctx = p.frag ? frag_resolved(p, kPortInside, nh, dep) : -1;
  resolve_and_send(kPortInside, m, nh, dep, now);
  if (ctx >= 0) frag_release(ctx, now);
}

/* Hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8): a LAN packet to an outside address goes
 * out through the sender's mapping and comes back in through the target's, so the target
 * sees the sender's outside endpoint, and both halves are ordinary, replicated flows. */
void Nat44::hairpin(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now) {
  // With several workers the target's half may be another worker's: it gets the packet
  // once the sender's half is done here.
  const int target = shards_ && shards_->workers() > 1
                         ? shards_->endpoint_worker(p.ip->dst_addr, p.proto, p.dport)
                         : int(worker_);
  // Nothing behind the address and port: refused before the sender's half is made.
  if (slot < 0 && !(p.ip->dst_addr == cfg_.vip[kPortOutside] &&
                    forwarded_port(p.proto, rte_be_to_cpu_16(p.dport))) &&
      (target < 0 || (target == int(worker_) &&
                      flows_.mapping_outside(p.ip->dst_addr, p.dport, p.proto) == nullptr)))
    return drop(m, DropReason::NO_MAPPING);
  if (target >= 0 && target != int(worker_) && p.frag) return drop(m, DropReason::FRAG_CROSS_WORKER);
  uint64_t dep_out, dep_in;
  if (!translate_in2out(m, p, slot, now, &dep_out)) return;
  if (target >= 0 && target != int(worker_)) {
    if (!shards_->hand(worker_, unsigned(target), m, handoff_meta(Handed::HAIRPIN, kPortOutside, dep_out))) {
      mbuf_free(m);
      shards_->count_full(worker_);
    }
    return;
  }
  Parsed q = p;
  q.hairpin = true;
  q.sport = q.proto == IPPROTO_TCP ? reinterpret_cast<rte_tcp_hdr *>(q.l4)->src_port
                                   : reinterpret_cast<rte_udp_hdr *>(q.l4)->src_port;
  q.key = FlowKey{q.ip->src_addr, q.ip->dst_addr, q.sport, q.dport, q.proto, 1, 0};
  if (!translate_out2in(m, q, flows_.lookup(q.key), now, &dep_in)) return;
  bump(ctr_.hairpinned);
  bump(ctr_.forwarded[kPortInside]);
  const uint64_t dep = dep_out > dep_in ? dep_out : dep_in;
  const uint32_t nh = q.ip->dst_addr;
  const int32_t ctx = p.frag ? frag_resolved(p, kPortInside, nh, dep) : -1;
  resolve_and_send(kPortInside, m, nh, dep, now);
  if (ctx >= 0) frag_release(ctx, now);
}

/* The second half of a hairpin the sender's worker translated on the way out: from the
 * sender's outside endpoint to the target's, which this worker's shard holds. */
void Nat44::hairpin_in(rte_mbuf *m, uint64_t dep_out, uint64_t now) {
  // Handed over before the node stepped down (the rings outlive the workers' park): a
  // standby's table is the applier's, so nothing is made in it.
  if (!vip_owner()) return drop(m, DropReason::NOT_ACTIVE);
  nh_valid(now);  // a send outside a burst: the next-hop cache's clock (nf.h)
  Parsed q;
  if (!parse_ipv4(m, q, kPortOutside)) return;
  q.hairpin = true;
  uint64_t dep_in;
  if (!translate_out2in(m, q, flows_.lookup(q.key), now, &dep_in)) return;
  bump(ctr_.hairpinned);
  bump(ctr_.forwarded[kPortInside]);
  resolve_and_send(kPortInside, m, q.ip->dst_addr, dep_out > dep_in ? dep_out : dep_in, now);
}

// A copy of an ARP packet another worker received (and answered): learnt from, then freed.
void Nat44::learn_arp(uint16_t port, rte_mbuf *m, uint64_t now) {
  if (rte_pktmbuf_data_len(m) >= sizeof(rte_ether_hdr) + sizeof(rte_arp_hdr)) {
    const auto *arp = reinterpret_cast<const rte_arp_hdr *>(rte_pktmbuf_mtod(m, rte_ether_hdr *) + 1);
    const uint16_t op = rte_be_to_cpu_16(arp->arp_opcode);
    const uint32_t sip = arp->arp_data.arp_sip, vip = cfg_.vip[port];
    if (arp->arp_hardware == rte_cpu_to_be_16(RTE_ARP_HRD_ETHER) &&
        arp->arp_protocol == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4) && arp->arp_hlen == RTE_ETHER_ADDR_LEN &&
        arp->arp_plen == 4 && (op == RTE_ARP_OP_REQUEST || op == RTE_ARP_OP_REPLY) &&
        rte_is_unicast_ether_addr(&arp->arp_data.arp_sha) &&
        (sip & mask_[port]) == (vip & mask_[port]) && sip != vip && sip != 0) {
      arp_.learn(sip, arp->arp_data.arp_sha, static_cast<uint8_t>(port), now);
      release_pending(sip, now);
    }
  }
  mbuf_free(m);
}

/* The fast path's test: an IPv4 TCP or UDP packet without options or fragmentation, with
 * a TTL to spare, that fits the egress MTU and that every filter of classify() would pass
 * (a packet from the LAN's own subnet to an address outside it and outside the NAT's; on
 * the WAN, to an outside address). Anything it does not take goes through parse_ipv4() and
 * classify(), which give every drop its reason, so this test may refuse more than it must
 * but never takes a packet classify() would not. It gives only the key, as its two 8-byte
 * halves (fill_parsed() does the rest for a packet that needs it), and returns the kind,
 * Burst::kFastUdp or kFastOther (TCP); 0 for a packet it does not take.
 *
 * The filters are run for every packet, a known flow's too. A flow's key does not vouch
 * for them: the key of a flow's reply direction was never filtered on that side (a WAN
 * reply from 127.0.0.1 to a LAN host's flow toward it; a LAN reply to the LAN's own VIP
 * for a forward a WAN packet from that address made), and a flow can outlive the
 * configuration it was made under (a snapshot, a peer's checkpoint). */
/* The fast test's constants, set once for a loop of them (fast_classify_run): the egress
 * MTU's room above 28 bytes, and the header checksum's divisibility test by 0xffff (t is a
 * multiple exactly when t times the inverse of 0xffff modulo 2^64 is at most
 * (2^64 - 1) / 0xffff). The last two are made opaque to the compiler, so that it keeps them
 * in a register or on the stack, where the multiply and the compare read them: as
 * immediates it rebuilt both for every packet. */
struct Nat44::FastConsts {
  uint32_t span;
  uint64_t csum_inv = 0xfffefffefffeffffull, csum_lim = 0x0001000100010001ull;
  explicit FastConsts(uint32_t span_) : span(span_) { asm("" : "+r"(csum_inv), "+r"(csum_lim)); }
};

__attribute__((always_inline)) inline uint8_t Nat44::fast_parse(rte_mbuf *m, uint16_t port, const FastConsts &c,
                                                               uint64_t &k0, uint64_t &k1) const {
  const uint32_t len = rte_pktmbuf_data_len(m);
  if (len < sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr) + 8 || rte_pktmbuf_pkt_len(m) != len)
    return 0;
  auto *eth = rte_pktmbuf_mtod(m, rte_ether_hdr *);
  if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) return 0;
  const uint8_t *ip = reinterpret_cast<const uint8_t *>(eth + 1);
  // The header in three loads: bytes 0-7, 8-15 (TTL, protocol, checksum, source), 16-19 (the
  // octet filters and the key read their bytes again, which measured cheaper).
  const uint64_t w0 = load_u64(ip), w1 = load_u64(ip + 8);
  const uint32_t dst = load_u32(ip + 16);
  // Version 4, IHL 5; neither MF nor a fragment offset (the bytes 6-7, in memory order),
  // each tested in memory (a 64-bit mask would take a register the loop needs).
  if (ip[0] != 0x45 || (load_u16(ip + 6) & 0xff3f) != 0) return 0;
  const uint32_t tot = bswap16(static_cast<uint16_t>(w0 >> 16));
  // 28 <= tot <= the egress MTU as one unsigned range test (span: the MTU - 28, at least 0 by
  // fast_mtu_ok_), and a TTL above 1. (32-bit arithmetic: sizeof's would widen it.)
  constexpr uint32_t kMinTot = sizeof(rte_ipv4_hdr) + 8, kL2 = sizeof(rte_ether_hdr);
  if (tot - kMinTot > c.span || (w1 & 0xfe) == 0) return 0;
  /* The datagram within the frame; the frame's bytes after it (Ethernet padding, below
   * Ethernet's minimum) taken off here, as parse_ipv4() does it. Whatever the rest of the
   * test says, classify() would take them off too, before anything it does depends on them.
   * Its data is the whole packet (pkt_len == data_len above), so the trim is two stores,
   * without a branch. (The ports give one segment a packet: no receive scatter, mbuf.h. A
   * chain whose later segments were empty would lose its padding here, where
   * rte_pktmbuf_trim would refuse and leave it.) */
  const uint32_t frame_len = kL2 + tot;
  if (len < frame_len) return 0;
  m->data_len = static_cast<uint16_t>(frame_len);
  m->pkt_len = frame_len;
  const uint32_t src = static_cast<uint32_t>(w1 >> 32);
  const uint32_t d = bswap32(dst);
  // The addresses' first octets: the remote end's (the other's is known good, fast_port_ok_).
  if (bad_octet_[ip[port == kPortInside ? 16 : 12]]) return 0;
  if (port == kPortInside) {
    // The source on the LAN, and the destination not (then it is where the source is not).
    const uint32_t lan_mask = mask_[0];
    if (((src ^ net_[0]) & lan_mask) != 0 || ((src ^ dst) & lan_mask) == 0 || d - nat_lo_ <= nat_span_ ||
        dst == cfg_.vip[kPortOutside])
      return 0;
  } else if (!is_nat_address(dst)) {
    return 0;
  }
  /* The header checksum from the same three loads: the one's-complement sum of the 16-bit
   * words is 0xffff exactly when their plain sum is a multiple of 0xffff (it is not zero: the
   * first byte is 0x45). 2^16 and 2^64 are 1 modulo 0xffff, so the sum of the three loads,
   * its carry out of 64 bits added back, is congruent to the words' sum (times 256, as the
   * loads are little-endian; 256 is invertible modulo 0xffff). */
  uint64_t s;
  const bool c1 = __builtin_add_overflow(w0, w1, &s);
  const bool c2 = __builtin_add_overflow(s, uint64_t(dst) + c1, &s);
  const uint64_t t = (s & 0xffffffff) + (s >> 32) + c2;  // 2^32 is 1 modulo 0xffff too
  if (t * c.csum_inv > c.csum_lim) return 0;  // t not a multiple of 0xffff (FastConsts)
  const uint8_t *l4 = ip + sizeof(rte_ipv4_hdr);
  const uint32_t l4_len = tot - sizeof(rte_ipv4_hdr);  // at least 8
  const uint8_t proto = static_cast<uint8_t>(w1 >> 8);
  uint8_t kind;  // set where the protocol is tested already
  if (__builtin_expect(proto == IPPROTO_UDP, 1)) {  // the short way's (the fall-through)
    kind = Burst::kFastUdp;
    // The UDP length is l4_len (at least 8), compared in network order. A shorter one, with
    // bytes after the datagram (legal, and rare), goes to classify().
    if (load_u16(l4 + 4) != bswap16(static_cast<uint16_t>(l4_len))) return 0;
  } else if (proto == IPPROTO_TCP) {
    kind = Burst::kFastOther;
    if (l4_len < sizeof(rte_tcp_hdr)) return 0;
    auto *tcp = reinterpret_cast<const rte_tcp_hdr *>(l4);
    const uint32_t off = (tcp->data_off >> 4) * 4u;
    const uint8_t flags = tcp->tcp_flags;
    if (off < sizeof(rte_tcp_hdr) || off > l4_len || flags == 0 ||
        ((flags & kTcpSyn) && (flags & (kTcpFin | kTcpRst))) || ((flags & kTcpFin) && !(flags & kTcpAck)))
      return 0;
  } else {
    return 0;
  }
  // The key in two halves: the addresses as they are in the header, then the ports (TCP and
  // UDP both start with them), protocol, direction (the ingress port) and the zero pad
  // (FlowKey's layout).
  static_assert(sizeof(FlowKey) == 16 && offsetof(FlowKey, src_port) == 8 && offsetof(FlowKey, proto) == 12 &&
                offsetof(FlowKey, dir) == 13);
  static_assert(std::endian::native == std::endian::little, "the key's two halves assume it");
  k0 = load_u64(ip + 12);
  // The direction byte (the ingress port) in place.
  k1 = load_u32(l4) | uint64_t(ip[9]) << 32 | uint64_t(port & 0xff) << 40;
  return kind;
}

// The rest of what parse_ipv4() fills, for a packet fast_parse() took that goes on to the
// general path (its key is already in p.key).
void Nat44::fill_parsed(rte_mbuf *m, Parsed &p) const {
  p.eth = rte_pktmbuf_mtod(m, rte_ether_hdr *);
  p.ip = reinterpret_cast<rte_ipv4_hdr *>(p.eth + 1);
  p.l4 = reinterpret_cast<uint8_t *>(p.ip + 1);
  p.l4_len = static_cast<uint16_t>(bswap16(p.ip->total_length) - sizeof(rte_ipv4_hdr));
  p.proto = p.key.proto;
  p.tcp_flags = p.proto == IPPROTO_TCP ? reinterpret_cast<rte_tcp_hdr *>(p.l4)->tcp_flags : 0;
  p.icmp_type = 0;
  p.icmp_err = false;
  p.hairpin = false;
  p.to_nat = false;
  p.frag = 0;
  p.sport = p.key.src_port;
  p.dport = p.key.dst_port;
}

/* Everything the fast path does not take: parses and filters the packet, answers what is
 * for the gateway, and takes the rare cases aside. Returns true when the packet goes on to
 * the flow lookup; false when it was consumed (sent, dropped, parked or buffered). */
bool Nat44::classify(rte_mbuf *m, Parsed &p, uint16_t port, uint64_t now) {
  if (rte_pktmbuf_data_len(m) < sizeof(rte_ether_hdr)) {
    drop(m, DropReason::TRUNCATED_L2);
    return false;
  }
  auto *eth = rte_pktmbuf_mtod(m, rte_ether_hdr *);
  if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) {
    if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP))
      handle_arp(port, m, now);
    else if (eth->ether_type == rte_cpu_to_be_16(kDpBeatEtherType) && dp_beats_ != nullptr && port == kPortInside) {
      // The peer's liveness, counted by the board (heard, or ignored by reason). Only on the
      // LAN port the nodes share: from the WAN it is an unknown EtherType like any other.
      dp_beats_->receive(rte_pktmbuf_mtod(m, const uint8_t *), rte_pktmbuf_data_len(m), now);
      mbuf_free(m);
    } else if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6))
      drop(m, DropReason::IPV6);
    else if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN) ||
             eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_QINQ))
      drop(m, DropReason::VLAN);
    else
      drop(m, DropReason::UNKNOWN_ETHERTYPE);
    return false;
  }
  if (!vip_owner()) {
    drop(m, DropReason::NOT_ACTIVE);
    return false;
  }
  if (!parse_ipv4(m, p, port)) return false;
  const uint32_t dst = p.ip->dst_addr, vip = cfg_.vip[port];
  // A fragmented echo to the gateway is not answered: that would take real reassembly.
  const bool echo_request =
      p.proto == IPPROTO_ICMP && p.icmp_type == RTE_IP_ICMP_ECHO_REQUEST && p.frag == 0;
  uint16_t egress = port ^ 1;
  if (port == kPortOutside) {
    // The WAN reaches the LAN only through mappings on the outside addresses, and the static
    // forwards on the VIP (which need not be one of the pool's addresses).
    if (dst != vip && !is_nat_address(dst)) return drop(m, DropReason::NOT_FOR_VIP), false;
    if (echo_request) return answer_echo(m, p, port), false;
  } else {
    if (dst == vip) return answer_echo_or_drop(m, p, port, echo_request), false;
    // Anti-spoofing: the LAN speaks only from its own subnet.
    if ((p.ip->src_addr & mask_[port]) != net_[port]) return drop(m, DropReason::BAD_SOURCE), false;
    if ((dst & mask_[port]) == net_[port]) return drop(m, DropReason::LAN_TO_LAN), false;
    p.to_nat = dst == cfg_.vip[kPortOutside] || is_nat_address(dst);
    if (p.to_nat) {
      // To an outside address from the LAN: an echo is answered, the rest hairpins.
      if (p.proto == IPPROTO_ICMP) return answer_echo_or_drop(m, p, port, echo_request), false;
      egress = kPortInside;
    }
  }
  // One test for everything off the fast path: fragments, ICMP errors, TTL expiry, and
  // packets too big for the egress.
  const bool rare = (p.frag | p.icmp_err | (p.ip->time_to_live <= 1)) ||
                    rte_be_to_cpu_16(p.ip->total_length) > cfg_.mtu[egress];
  return !rare || slow_path(m, p, port, egress, now);
}

// A looked-up packet through the NAT: slot is its flow, or -1.
void Nat44::dispatch(rte_mbuf *m, Parsed &p, uint16_t port, int32_t slot, uint64_t now) {
  if (__builtin_expect(p.frag | p.to_nat, 0)) {
    if (p.frag) frag_first(p, port, now);
    if (port == kPortOutside)
      outside_to_inside(m, p, slot, now);
    else if (p.to_nat)
      hairpin(m, p, slot, now);
    else
      inside_to_outside(m, p, slot, now);
    if (p.frag) frag_first_done(p);
  } else if (port == kPortOutside) {
    outside_to_inside(m, p, slot, now);
  } else {
    inside_to_outside(m, p, slot, now);
  }
}

/* The fast path's rewrite of a UDP packet: TTL decrement and one address and port, with
 * one incremental update of each checksum (RFC 1624), all in memory order as csum.h. The
 * TTL is the first byte of its 16-bit word (TTL, protocol), so decrementing it takes the
 * word m to m - 1, and ~m + (m - 1) = 0xfffe whatever m is. */
static inline void nat_udp(rte_ipv4_hdr *ip, rte_udp_hdr *udp, bool source, uint32_t new_ip,
                           uint16_t new_port) {
  uint8_t *addr = reinterpret_cast<uint8_t *>(ip) + (source ? 12 : 16);  // source or destination
  uint8_t *port = reinterpret_cast<uint8_t *>(udp) + (source ? 0 : 2);
  uint32_t old_ip;
  uint16_t old_port;
  std::memcpy(&old_ip, addr, 4);
  std::memcpy(&old_port, port, 2);
  // The address's change as one 32-bit one's-complement word: the sum of its 16-bit halves
  // modulo 0xffff is what the fold gives.
  const uint32_t d_ip = csum_add32(~old_ip, new_ip);
  // ~HC + 0xfffe as one subtraction: (0xffff - HC) + 0xfffe.
  ip->hdr_checksum = static_cast<uint16_t>(~csum_fold(csum_add32(d_ip, 0x1fffdu - ip->hdr_checksum)));
  ip->time_to_live--;
  std::memcpy(addr, &new_ip, 4);
  const uint16_t hc = udp->dgram_cksum;
  if (hc != 0) {  // zero: the sender did not checksum; leave it so
    /* HC' = HC - D, with D the change eqn 3 adds (d_ip + ~old_port + new_port): the sum of
     * HC, ~d_ip (a 32-bit complement is the one's-complement negation: 2^32 - 1 is a multiple
     * of 0xffff), old_port and ~new_port. The same value as eqn 3 modulo 0xffff, and a fold
     * of a sum that is not zero (HC is not) is never 0x0000: it gives 0xffff where eqn 3
     * gives 0, RFC 768's rule, without a test. */
    udp->dgram_cksum =
        csum_fold(csum_add32(~d_ip, uint32_t(hc) + old_port + (uint32_t(new_port) ^ 0xffff)));
  }
  std::memcpy(port, &new_port, 2);
}

// A known flow's UDP packet stamped as seen and translated, either way (fast_udp and
// fast_forward_run). Returns its frame, for the Ethernet header.
__attribute__((always_inline)) static inline uint8_t *translate_udp(FlowRecord &r, rte_mbuf *m, bool from_inside,
                                                                     uint64_t now) {
  r.last_seen_tsc = now;
  uint8_t *const frame = rte_pktmbuf_mtod(m, uint8_t *);
  auto *ip = reinterpret_cast<rte_ipv4_hdr *>(frame + sizeof(rte_ether_hdr));
  auto *udp = reinterpret_cast<rte_udp_hdr *>(ip + 1);
  if (from_inside)
    nat_udp(ip, udp, true, r.st.nat_ip, r.st.nat_port);
  else
    nat_udp(ip, udp, false, r.st.in_ip, r.st.in_port);
  return frame;
}

// A UDP packet of a known flow, either way: the whole NAT in one place (fast_forward_run is
// its call-free form). False when it cannot (no route): dispatch() then drops it with its reason.
__attribute__((always_inline)) inline bool Nat44::fast_udp(rte_mbuf *m, const FlowKey &key, uint16_t port,
                                                          uint32_t slot, uint64_t now, FastOut &out) {
  FlowRecord &r = flows_.record(slot);
  const bool from_inside = port == kPortInside;
  const uint32_t nh = from_inside ? next_hop_out(key.dst_ip) : r.st.in_ip;
  if (__builtin_expect(nh == 0, 0)) return false;
  const bool first_reply = !(r.st.flags & kFlowReplied) && responder_inside(r.st) == from_inside;
  if (__builtin_expect(first_reply, 0)) update_flow(slot, r.st.tcp_state, r.st.flags | kFlowReplied);
  uint8_t *const frame = translate_udp(r, m, from_inside, now);
  fwd_burst_++;
  // The output goes to the burst's list (process_chunk hands it over in one call); a next hop
  // whose MAC is not known parks the packet instead.
  const uint64_t dep = r.dirty_epoch;
  if (!address_frame(port ^ 1, m, frame, nh, dep, now)) return true;
  out.m[out.n] = m;
  out.dep[out.n++] = dep;
  out.bytes += rte_pktmbuf_pkt_len(m);
  return true;
}

/* One burst (at most kBurst packets) in stages, in the manner of VPP's graph nodes, each a
 * pass over the burst (the receive loop already prefetched the headers): classify (the fast
 * test, else the full parse and filters), hashing each key and prefetching its bucket; the
 * flows' candidates, their records prefetched; then per packet the key verified, conntrack,
 * NAT, rewrite and output, with the next hops' MACs from a cache of ARP's answers (nh_). A
 * UDP packet of a known flow takes the short way (fast_udp); every other packet goes through
 * dispatch(). The first and last stages' common ways are loops without calls
 * (fast_classify_run, fast_forward_run). With steer (receive(), several workers), another
 * worker's packet is handed to it in stage 3, in its place; a packet whose flow this table
 * holds is never asked its owner. */
template <bool steer>
void Nat44::process_chunk(uint16_t port, rte_mbuf **pkts, uint16_t n, uint64_t now) {
  Burst b;
  nh_valid(now);  // the burst's sends all use this now: the next-hop cache's clock, once (nf.h)
  const bool try_fast = cfg_.fast_path && fast_mtu_ok_ && fast_port_ok_[port] && vip_owner();
  // The two loops are built per ingress port: its filters and direction are then constants.
  auto classify_run = [&](unsigned from) {
    if (!try_fast) return from;
    const ClassifyEnd e = port == kPortInside ? fast_classify_run<kPortInside>(pkts + from, pkts + n, b.lane + b.n)
                                              : fast_classify_run<kPortOutside>(pkts + from, pkts + n, b.lane + b.n);
    b.n = static_cast<unsigned>(e.lane - b.lane);
    return static_cast<unsigned>(e.pkt - pkts);
  };
  auto forward_run = [&](unsigned from, FastOut &out) {
    // Not for a packet the loop would stop at first anyway (TCP, or what classify() took): its
    // set-up is not free.
    if (from >= b.n || b.lane[from].fast != Burst::kFastUdp) return from;
    // Each lane before from gave the output at most one packet, so the rest fit (kBurst).
    assert(out.n <= from);
    const Lane *const lp = b.lane + from, *const le = b.lane + b.n;
    const ForwardEnd e = port == kPortInside ? fast_forward_run<kPortInside>(lp, le, out, now)
                                             : fast_forward_run<kPortOutside>(lp, le, out, now);
    const auto fwd = static_cast<unsigned>(e.lane - lp);
    out.n += fwd;
    out.bytes += e.bytes;
    fwd_burst_ += fwd;
    return static_cast<unsigned>(e.lane - b.lane);
  };
  for (unsigned i = classify_run(0); i < n;) {
    // A packet the fast test did not take (in its place: classify()'s effects keep their order).
    Lane &l = b.lane[b.n];
    rte_mbuf *const m = pkts[i];
    const unsigned o = steer ? shards_->owner(port, m, worker_) : worker_;
    if (o != worker_ && o != kEveryWorker) {
      // Another worker's: handed to it in stage 3, after the packets before it.
      l.fast = Burst::kHandOff;
      l.to = static_cast<uint8_t>(o);
      l.m = m;
      l.p.key = FlowKey{};  // protocol 0, no flow's: its lookup in stage 3 misses
      l.hash = flows_.hash_prefetch(l.p.key);
      b.n++;
    } else {
      if (o == kEveryWorker) shards_->copy_to_others(worker_, port, m);  // ARP: this worker answers
      if (classify(m, l.p, port, now)) {
        l.fast = 0;
        l.m = m;
        l.hash = flows_.hash_prefetch(l.p.key);
        b.n++;
      }
    }
    i = classify_run(i + 1);
  }
  if (b.n == 0) return;
  flows_.candidates(b.n, [&b](unsigned i) { return b.lane[i].hash; },
                    [&b](unsigned i, uint32_t c) { b.lane[i].cand = c; });
  evicted_ = created_ = false;
  fwd_burst_ = 0;
  FastOut out;
  bool evicted = false;
  for (unsigned i = forward_run(0, out); i < b.n;) {
    // A packet the call-free loop left, and after an eviction every packet to the burst's end.
    // The only removal during a burst is make_room's eviction, and a flow evicted for a new one
    // may be a candidate taken earlier in this burst: after an eviction each key is looked up
    // again in full (a packet of an established flow must still find it, whatever its TCP
    // flags). Otherwise resolve() verifies the candidate against the record now.
    Lane &l = b.lane[i];
    Parsed &p = l.p;
    const int32_t slot = evicted ? flows_.lookup(p.key) : flows_.resolve(l.cand, p.key, l.hash);
    const uint8_t took_fast = l.fast;
    /* Steering, only for a packet whose flow this table does not hold (a flow in the table is
     * this worker's, shards.h): stage 1 named the owner of another worker's packet that the
     * fast test did not take (kHandOff, whose key no flow has); one the fast test took is
     * asked now. Another worker's packet leaves for it here, in its place. None of its
     * flow's packets went out before it: the flow is not in this table (so not in out), and
     * stage 1 kept its other packets here only when it held them to be this worker's. */
    const bool away = __builtin_expect(slot < 0, 0) && steer && took_fast && steer_away(l, port);
    if (!away && !(took_fast == Burst::kFastUdp && slot >= 0 &&
                   fast_udp(l.m, p.key, port, static_cast<uint32_t>(slot), now, out))) {
      // What the fast path queued goes first: a flow's packets leave in the order they came.
      if (out.n) flush_fast(out, port ^ 1);
      if (took_fast) fill_parsed(l.m, p);
      dispatch(l.m, p, port, slot, now);
      evicted = evicted_;  // the fast path never evicts
    }
    i = evicted ? i + 1 : forward_run(i + 1, out);
  }
  if (out.n) flush_fast(out, port ^ 1);
  if (fwd_burst_) {
    bump(ctr_.forwarded[port], fwd_burst_);
    bump(ctr_.fast_forwarded, fwd_burst_);
  }
}

/* process_chunk's common ways, each a loop without calls, out of line and built per ingress
 * port, so that the compiler has the registers for them (in a loop with a call it keeps the
 * loop's values in memory). Each stops at the first packet that needs more, which
 * process_chunk handles before it calls the loop again (stage 3's not after an eviction). */

// Stage 1: from packet pp (to pe), the packets that pass the fast test, each into the next
// lane (from l) with its key hashed and its bucket prefetched. Returns the first packet that
// does not pass (pe: none) and the next lane.
template <uint16_t port>
__attribute__((noinline)) Nat44::ClassifyEnd Nat44::fast_classify_run(rte_mbuf **pp, rte_mbuf **const pe,
                                                                     Lane *l) const {
  const FastConsts c(cfg_.mtu[port ^ 1] - (sizeof(rte_ipv4_hdr) + 8));
  // By pointer, the packets' and the lanes' (an index would be multiplied by the lane's size);
  // the caller keeps the bases, so the loop has two more registers.
  for (; pp < pe; pp++, l++) {
    uint64_t k0, k1;
    rte_mbuf *const m = *pp;
    const uint8_t kind = fast_parse(m, port, c, k0, k1);
    if (__builtin_expect(kind == 0, 0)) break;
    auto *key = reinterpret_cast<uint8_t *>(&l->p.key);
    std::memcpy(key, &k0, 8);
    asm volatile("");  // two stores: GCC would otherwise pair them through an SSE register (3)
    std::memcpy(key + 8, &k1, 8);
    l->fast = kind;
    l->m = m;
    l->hash = flows_.hash_prefetch(k0, k1);  // hashed once, its bucket on the way
  }
  return {pp, l};
}

/* Stage 3: from lane lp (to le), UDP packets whose candidate is their flow, that are
 * not the flow's first reply (marking it takes a call) and go to a next hop in the cache,
 * translated and queued in out from out.n (the caller then counts them). Returns the first
 * lane that is not (le: none) and the bytes queued. It is fast_udp() for
 * that case, with what does not change over the loop read once into locals: the loop's
 * stores into the frames may alias anything, so the compiler would otherwise read the
 * object's members again for every packet. */
template <uint16_t port>
__attribute__((noinline)) Nat44::ForwardEnd Nat44::fast_forward_run(const Lane *lp, const Lane *const le,
                                                                   FastOut &out, uint64_t now) {
  constexpr uint16_t egress = port ^ 1;
  constexpr bool from_inside = port == kPortInside;
  // The clock was tested at the burst's start (process_chunk); an ARP write since (classify's
  // ARP input, a flow's learn) moved changes(). The loop makes no call: none falls inside it.
  nh_current();
  /* The last packet's next hop and its frame's first 12 bytes (destination MAC, then source),
   * in locals: most packets go where the one before went, and ask the cache only when not.
   * At first none: 2^32 is no address. */
  uint64_t nh_last = uint64_t(1) << 32;
  uint64_t l2_lo = 0;
  uint32_t l2_hi = 0;
  const uint32_t mask = mask_[kPortOutside], net = net_[kPortOutside], gw = cfg_.gateway_out;
  FlowRecord *const rec = &flows_.record(0);
  /* The lanes by pointer, the output's two arrays by one index from one base (out), with the
   * caller keeping the counts (each lane the loop passes gives one packet): the loop has the
   * registers, and the arguments and the result fit in them. The caller starts at most at
   * the last lane (the loop stops on equality: '<' cost an instruction a packet). */
  assert(lp <= le);
  uint64_t bytes = 0;
  size_t k = out.n;
  for (; lp != le; lp++) {
    const Lane &l = *lp;
    const uint32_t c = l.cand;
    /* The candidate is the key's own entry (FlowTable::is_hit), with the offsets constant: a
     * key of the fast test has this port's direction, so its entry is this direction's (c & 1;
     * kEmpty is odd, and on the outside port tested on its own). */
    if (l.fast != Burst::kFastUdp || (c & 1) != port || (port != kPortInside && c == FlowIndex::kEmpty))
      break;
    FlowRecord &r = rec[c >> 1];
    // The lane's key is UDP's (kFastUdp) and of this port's direction (fast_parse). (Not
    // asserted: the benchmarked build keeps asserts, and this one cost 2 instructions.)
    if (!FlowTable::udp_key_of_record(r, port, l.p.key)) break;
    const uint32_t nh = from_inside ? next_hop_out(l.p.key.dst_ip, mask, net, gw) : r.st.in_ip;
    const uint8_t flags = r.st.flags;
    const bool first_reply = !(flags & kFlowReplied) && responder_inside(r.st) == from_inside;
    if (first_reply) break;
    if (__builtin_expect(nh != nh_last, 0)) {  // laid out for runs to one next hop
      const NextHop &e = nh_entry(egress, nh);
      if (e.ip != nh) break;  // not cached (nor a next hop of 0, no route): the general way
      nh_last = nh;
      std::memcpy(&l2_lo, e.l2, 8);
      std::memcpy(&l2_hi, e.l2 + 8, 4);
    }
    rte_mbuf *const m = l.m;
    uint8_t *const frame = translate_udp(r, m, from_inside, now);
    std::memcpy(frame, &l2_lo, 8);
    std::memcpy(frame + 8, &l2_hi, 4);
    out.m[k] = m;
    out.dep[k] = r.dirty_epoch;
    k++;
    bytes += rte_pktmbuf_pkt_len(m);
  }
  return {lp, bytes};
}

// process_chunk's stage 3: lane l's packet, which the fast test took or stage 1 named
// another worker's, and whose flow this table does not hold. True when it went to its owner.
__attribute__((noinline, cold)) bool Nat44::steer_away(const Lane &l, uint16_t port) {
  const unsigned o = l.fast == Burst::kHandOff ? l.to : shards_->owner(port, l.m, worker_);
  if (o == worker_) return false;
  shards_->pass(worker_, o, port, l.m);
  return true;
}

template <bool steer>
void Nat44::process_bursts(uint16_t port, rte_mbuf **pkts, uint16_t n, uint64_t now) {
  for (uint16_t base = 0; base < n; base += kBurst)
    process_chunk<steer>(port, pkts + base, static_cast<uint16_t>(n - base < kBurst ? n - base : kBurst), now);
}

void Nat44::process(uint16_t port, rte_mbuf **pkts, uint16_t n, uint64_t now) {
  process_bursts<false>(port, pkts, n, now);
}

void Nat44::receive(uint16_t port, rte_mbuf **pkts, uint16_t n, uint64_t now) {
  if (shards_ != nullptr && shards_->workers() > 1) process_bursts<true>(port, pkts, n, now);
  else process_bursts<false>(port, pkts, n, now);
}

/* Mapping events go out only from the owner of the addresses: a standby applying the
 * active's changes logs nothing, and a new active does not announce what it inherited. */
void Nat44::log_mappings(uint64_t now) {
  const bool owner = vip_owner();
  flows_.set_mapping_events(owner);
  MappingEvent ev;
  while (flows_.take_mapping_event(&ev)) {
    SessionEvent e{};
    e.unix_ms = clock_.unix_ms(now);
    e.kind = ev.created ? kMappingCreate : kMappingDelete;
    e.proto = ev.m.proto;
    e.in_ip = ev.m.in_ip;
    e.in_port = ev.m.in_port;
    e.nat_ip = ev.m.nat_ip;
    e.nat_port = ev.m.nat_port;
    e.epoch = static_cast<uint32_t>(flows_.epoch());
    events_->push(e);
  }
}

/* The packets the fast path leaves aside. Returns true when the packet goes on to the flow
 * lookup (a first fragment that passed the checks); false when it was consumed. */
bool Nat44::slow_path(rte_mbuf *m, Parsed &p, uint16_t port, uint16_t egress, uint64_t now) {
  if (p.frag == 2) {
    // No ICMP about later fragments (RFC 1812 §4.3.2.7); they follow the first.
    if (p.ip->time_to_live <= 1)
      drop(m, DropReason::TTL_EXCEEDED);
    else
      frag_follow(m, p, port, now);
    return false;
  }
  if (p.ip->time_to_live <= 1) {
    send_icmp_error(port, m, p, kIcmpTimeExceeded, 0, 0, now);
    drop(m, DropReason::TTL_EXCEEDED);
    return false;
  }
  if (p.icmp_err) {
    if (p.frag)  // its checksum covers bytes this fragment does not hold
      drop(m, DropReason::BAD_ICMP_ERROR);
    else
      icmp_error(m, p, port, now);
    return false;
  }
  if (rte_be_to_cpu_16(p.ip->total_length) > cfg_.mtu[egress]) {
    if (p.ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG)) {
      send_icmp_error(port, m, p, kIcmpDestUnreach, kIcmpFragNeeded, cfg_.mtu[egress], now);
      drop(m, DropReason::TOO_BIG);
    } else {
      drop(m, DropReason::NEEDS_FRAGMENTATION);
    }
    return false;
  }
  return true;  // a first fragment within the MTU
}

uint32_t Nat44::housekeeping(uint64_t now) {
  uint32_t work = 0;
  uint64_t req = announce_req_.load(std::memory_order_acquire);
  if (req != announce_done_) {
    announce_done_ = req;
    announce_left_ = announce_count_.load(std::memory_order_relaxed);
    announce_next_tsc_ = now;
  }
  if (announce_left_ && now >= announce_next_tsc_) {
    announce_left_--;
    announce_next_tsc_ = now + hz_ / 50;
    // With several workers only worker 0 announces: the addresses are the node's, once.
    if (vip_owner() && worker_ == 0) {
      announce();
      work++;
    }
  }
  if (n_pending_) expire_pending(now);
  if (frag_active_ && now >= frag_next_expiry_tsc_) frag_expire(now);
  if (events_) log_mappings(now);
  if (!vip_owner()) return work;
  // Expiry: one slice of the table when one is due, so a sweep never stalls packets and a
  // busy worker does not examine the table more often than the sweep period asks.
  if (now < expiry_next_tsc_) return work;
  expiry_next_tsc_ += expiry_interval_tsc_;
  return work + expire_slice(cfg_.expiry_scan_per_loop, now);
}

uint32_t Nat44::expire_slice(uint32_t slots, uint64_t now) {
  uint32_t removed = 0;
  const uint32_t cap = flows_.capacity();
  if (cap == 0) return 0;
  uint32_t cursor = expiry_cursor_;  // in a register; stored back once
  /* Seen within the shortest timeout: nothing to look up (most flows, most of the time).
   * That is now - last_seen <= min_timeout, tested as last_seen >= now - min_timeout, signed:
   * one compare against memory a slot. Free slots pass too: their stamp (kFreeSlotSeen) is
   * as far ahead as a signed value goes. So would a stamp a little ahead of this loop's now,
   * which an unsigned age would take for a great one (no path makes one today: a promotion
   * refreshes the stamps with the workers parked). The subtraction is unsigned, so defined
   * for any now; the records do not move (remove() frees the slot in place): the base is a
   * local. */
  const auto fresh_from = static_cast<int64_t>(now - min_timeout_tsc_);
  FlowRecord *const rec = &flows_.record(0);
  while (slots) {
    // The slots up to the table's end at most, then on from slot 0.
    const uint32_t end = slots < cap - cursor ? cursor + slots : cap;
    slots -= end - cursor;
#pragma GCC unroll 4
    for (FlowRecord *p = rec + cursor, *const e = rec + end; p != e; p++) {
      if (__builtin_expect(static_cast<int64_t>(p->last_seen_tsc) >= fresh_from, 1)) continue;
      FlowRecord &r = *p;
      const auto slot = static_cast<uint32_t>(p - rec);
      if (!(r.st.flags & kFlowInUse)) continue;
      const uint64_t idle = now - r.last_seen_tsc;  // above min_timeout_tsc_
      unsigned idx = r.st.proto == IPPROTO_UDP    ? kIdxUdp
                     : r.st.proto == IPPROTO_ICMP ? kIdxIcmp
                                                  : r.st.tcp_state;
      if (idx > kIdxIcmp) idx = 0;
      if (idle > timeout_tsc_[idx]) {
        auto s = static_cast<TcpState>(r.st.tcp_state);
        bump(r.st.proto == IPPROTO_TCP && (s == TcpState::CLOSED || s == TcpState::TIME_WAIT)
                 ? ctr_.flows_closed
                 : ctr_.flows_expired);
        flows_.remove(slot);
        removed++;
      }
    }
    cursor = end == cap ? 0 : end;
  }
  expiry_cursor_ = cursor;
  return removed;
}

uint32_t Nat44::expire_all(uint64_t now) {
  if (events_) log_mappings(now);
  const uint32_t removed = vip_owner() ? expire_slice(flows_.capacity(), now) : 0;
  if (events_) log_mappings(now);
  return removed;
}

}  // namespace ftpair::dp
