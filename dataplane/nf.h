/* The network function: NAT44 gateway with a connection-tracking firewall.
 * Port 0 is the inside (LAN), port 1 the outside (WAN). It runs on the worker: no
 * exceptions, no allocation, no locks, no system calls on the per-packet path. */
#pragma once

#include <atomic>
#include <cstring>
#include <cstdint>
#include <string>
#include <vector>

#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "dataplane/agent.h"
#include "dataplane/arp_table.h"
#include "dataplane/drop_reasons.h"
#include "dataplane/flow_table.h"
#include "dataplane/session_log.h"

namespace ftpair::dp {

class Shards;
class DpBeatBoard;
class ReturnRss;

// ICMP types and codes the NAT translates or originates (RFC 792, RFC 1191).
inline constexpr uint8_t kIcmpDestUnreach = 3, kIcmpTimeExceeded = 11, kIcmpParamProblem = 12;
inline constexpr uint8_t kIcmpPortUnreach = 3, kIcmpFragNeeded = 4;

inline constexpr uint16_t kPortInside = 0;
inline constexpr uint16_t kPortOutside = 1;

struct PortForward {
  uint8_t proto;          // IPPROTO_TCP or IPPROTO_UDP
  uint16_t outside_port;  // host byte order
  uint32_t inside_ip;     // network byte order
  uint16_t inside_port;   // host byte order
};

/* Idle timeouts in seconds. The defaults are the RFCs': UDP 5 min (RFC 4787 REQ-5, at least
 * 2 min), TCP established 2 h 4 min and transitory 4 min (RFC 5382 REQ-5), a RST-closed flow
 * kept for the transitory time (RFC 7857 §2.2), ICMP query 60 s (RFC 5508 REQ-1). */
struct Timeouts {
  uint32_t tcp_syn = 240;
  uint32_t tcp_established = 7440;
  uint32_t tcp_fin = 240;
  uint32_t tcp_time_wait = 240;
  uint32_t tcp_closed = 240;
  uint32_t udp = 300;
  uint32_t icmp = 60;
};
inline constexpr uint32_t kUdpTimeoutMin = 120;  // RFC 4787 REQ-5

/* Which unsolicited WAN packets a mapping admits (RFC 4787 §5, RFC 5382 REQ-3):
 * ENDPOINT: any remote; ADDRESS: remotes the inside endpoint has sent to; ADDRESS_PORT:
 * only the exact remote endpoints it has sent to. */
enum class Filtering : uint8_t { ENDPOINT, ADDRESS, ADDRESS_PORT };
const char *filtering_name(Filtering f);
bool parse_filtering(const std::string &s, Filtering *out);

struct NfConfig {
  uint32_t vip[kMaxPorts] = {0, 0};   // network byte order
  uint8_t prefix_len[kMaxPorts] = {24, 24};
  uint32_t gateway_out = 0;           // next hop on the WAN, 0 = on-link only
  rte_ether_addr vmac[kMaxPorts]{};   // shared virtual MAC per side
  rte_ether_addr own_mac[kMaxPorts]{};
  uint16_t mtu[kMaxPorts] = {1500, 1500};  // IPv4 MTU of each side
  uint16_t nat_port_min = 1024;
  uint16_t nat_port_max = 65535;
  /* Outside addresses for mappings (network order; empty = the WAN VIP alone). A LAN host
   * always maps onto the same one (paired pooling, RFC 4787 REQ-2): a hash of its address
   * picks it. Every pool address is answered for (ARP, echo) like the VIP. */
  std::vector<uint32_t> pool;
  Filtering filtering = Filtering::ADDRESS;
  /* Out-of-window TCP segments are counted; true forwards them anyway (Linux's
   * nf_conntrack_tcp_be_liberal=1), false drops them. A RST out of the window never closes
   * a flow either way, and is dropped when false. */
  bool tcp_liberal = true;
  uint32_t max_sessions_per_host = 4096;  // flows a LAN host may hold through mappings; 0 = no limit
  /* Above this occupancy (percent of the table), a new flow evicts the oldest embryonic flow
   * (no reply, or TCP handshake not completed) instead of being refused. 0 = never. */
  uint32_t evict_embryonic_pct = 90;
  uint32_t icmp_rate = 100;   // ICMP errors the gateway originates per second (token bucket)
  uint32_t icmp_burst = 50;
  Timeouts timeouts;
  std::vector<PortForward> forwards;
  /* Expiry is driven by time: the whole table is examined once every expiry_sweep_ms, in
   * slices of expiry_scan_per_loop slots spread evenly over the period (at most one slice
   * per loop, so a busy worker pays for a slice only when one is due). */
  uint32_t expiry_scan_per_loop = 64;
  uint32_t expiry_sweep_ms = 1000;
  /* The fast path (nf.cc: fast_parse, fast_udp). Off, every packet takes the general path;
   * the outcome is the same (the unit test FastPathAgreesWithTheGeneralPath compares them). */
  bool fast_path = true;
  uint32_t arp_retry_ms = 1000;
  uint32_t fragment_timeout_ms = 2000;  // a datagram's fragments wait this long for the first
  // The outside addresses mappings use: the pool, or the WAN VIP when the pool is empty.
  std::vector<uint32_t> nat_addresses() const {
    return pool.empty() ? std::vector<uint32_t>{vip[1]} : pool;
  }
};

struct alignas(64) NfCounters {
  std::atomic<uint64_t> drops[kDropReasonCount];
  std::atomic<uint64_t> forwarded[kMaxPorts];  // by ingress port
  std::atomic<uint64_t> flows_created{0}, flows_expired{0}, flows_closed{0};
  std::atomic<uint64_t> flows_evicted{0};          // embryonic flows evicted for a new one
  std::atomic<uint64_t> arp_replies{0}, arp_requests{0}, garps{0};
  std::atomic<uint64_t> icmp_time_exceeded{0};     // originated by the gateway
  std::atomic<uint64_t> icmp_frag_needed{0};       // originated by the gateway
  std::atomic<uint64_t> icmp_rate_limited{0};      // not originated: token bucket empty
  std::atomic<uint64_t> icmp_errors_translated{0}; // errors about a flow, both ways
  std::atomic<uint64_t> mss_clamped{0};
  std::atomic<uint64_t> hairpinned{0};
  std::atomic<uint64_t> tcp_out_of_window{0};      // seen (forwarded when liberal)
  std::atomic<uint64_t> tcp_rst_ignored{0};        // RST out of the window: flow kept
  std::atomic<uint64_t> fragments_forwarded{0};    // fragments after the first, translated
  std::atomic<uint64_t> fast_forwarded{0};         // of forwarded: by the fast path (fast_udp)
  // With a programmed RSS (set_return_rss), TCP/UDP mappings made: with a port whose replies
  // land on the flow's worker's queue, and with one whose replies land elsewhere (no free
  // port of the preferred class and parity steered to it).
  std::atomic<uint64_t> rss_ports_steered{0}, rss_ports_unsteered{0};
  NfCounters();
  // Adds every count to *out (several workers' NFs summed for the metrics).
  void add_to(NfCounters *out) const;
};

class Nat44 {
 public:
  Nat44(const NfConfig &cfg, FlowTable &flows, ArpTable &arp, InterfaceAgent &agent,
        rte_mempool *pool, unsigned worker);
  // Frees the packets still waiting for ARP.
  ~Nat44();

  // Reassembly contexts (datagrams whose fragments are in flight), kFragWays per set.
  static constexpr unsigned kFragContexts = 1024, kFragWays = 8;

  // Handles a burst received on port. Every mbuf is either queued for tx or freed. The
  // headers are expected on their way: InterfaceAgent::rx and the worker's hand-off loop
  // prefetch them (a caller that does not only runs slower).
  void process(uint16_t port, rte_mbuf **pkts, uint16_t n, uint64_t now_tsc);
  /* process() for a burst a worker received, with several workers (set_shards). A packet
   * that passes the fast test and finds its flow in this worker's table is this worker's
   * (shards.h) and goes on without an owner test; the others (a flow's first packet, one
   * that came to the wrong worker, and whatever the fast test leaves to classify(): ICMP,
   * ARP, fragments, IP options) are asked their owner (Shards::owner), and another
   * worker's is handed to it, in its place among the burst's packets. The worker's
   * hand-off loop calls process(): a handed packet is the taker's. */
  void receive(uint16_t port, rte_mbuf **pkts, uint16_t n, uint64_t now_tsc);
  // Periodic work between bursts: expiry scan, announcements. Returns work done.
  uint32_t housekeeping(uint64_t now_tsc);
  // Examines every slot for expiry at now_tsc at once (tests, fuzzing). Returns flows removed.
  uint32_t expire_all(uint64_t now_tsc);

  /* Several workers (shards.h): a hairpin whose target another worker holds is handed to
   * it. Set before the worker starts. */
  void set_shards(Shards *s) { shards_ = s; }
  /* The outside port's RSS is programmed (return_rss.h): a new TCP or UDP mapping gets a port
   * whose replies the NIC delivers to this worker's queue, when a free one of the range and
   * class does. Set before the worker starts. */
  void set_return_rss(const ReturnRss *r) { rss_ = r; }
  const ReturnRss *return_rss() const { return rss_; }
  // Dataplane beats: frames of EtherType 0x88B5 go to the board instead of being dropped.
  void set_dp_beats(DpBeatBoard *b) { dp_beats_ = b; }
  // Handed from another worker: a hairpin's second half, and a copy of an ARP packet.
  void hairpin_in(rte_mbuf *m, uint64_t dep_out, uint64_t now_tsc);
  void learn_arp(uint16_t port, rte_mbuf *m, uint64_t now_tsc);

  // Owner of the virtual addresses: forwards, answers ARP for VIPs, sends from vMACs.
  void set_vip_owner(bool on) { vip_owner_.store(on, std::memory_order_release); }
  bool vip_owner() const { return vip_owner_.load(std::memory_order_acquire); }
  /* Asks the worker to send gratuitous ARP for both VIPs at its next housekeeping, and
   * again count-1 times, 20 ms apart (a lost GARP must not strand a bridge). */
  void request_announce(uint32_t count = 1) {
    announce_count_.store(count, std::memory_order_relaxed);
    announce_req_.fetch_add(1, std::memory_order_release);
  }

  /* Session logging (RFC 6888 REQ-12): mapping creations and deletions go to ring, stamped
   * with clock, while this node owns the addresses. Set before the worker starts. */
  void set_session_log(SessionEventRing *ring, const TscUnixClock &clock) {
    events_ = ring;
    clock_ = clock;
  }

  const NfCounters &counters() const { return ctr_; }
  uint64_t drops(DropReason r) const {
    return ctr_.drops[static_cast<unsigned>(r)].load(std::memory_order_relaxed);
  }
  const NfConfig &config() const { return cfg_; }
  uint64_t tsc_hz() const { return hz_; }
  // Seconds a flow in this state may stay idle.
  uint32_t timeout_s(const FlowState &st) const;

 private:
  struct Parsed;
  struct Lane;
  struct Burst;
  enum class Dir : uint8_t { IN2OUT, OUT2IN };
  void drop(rte_mbuf *m, DropReason r);
  // The stages of process() and receive() (steer; see nf.cc).
  template <bool steer>
  void process_bursts(uint16_t port, rte_mbuf **pkts, uint16_t n, uint64_t now);  // in kBurst chunks
  template <bool steer>
  void process_chunk(uint16_t port, rte_mbuf **pkts, uint16_t n, uint64_t now);
  bool steer_away(const Lane &l, uint16_t port);
  struct FastConsts;  // fast_parse's constants (nf.cc)
  uint8_t fast_parse(rte_mbuf *m, uint16_t port, const FastConsts &c, uint64_t &k0, uint64_t &k1) const;
  void fill_parsed(rte_mbuf *m, Parsed &p) const;
  bool classify(rte_mbuf *m, Parsed &p, uint16_t port, uint64_t now);
  void dispatch(rte_mbuf *m, Parsed &p, uint16_t port, int32_t slot, uint64_t now);
  // A burst's fast-path output: one egress port, handed to the agent in one call.
  struct FastOut {
    rte_mbuf *m[kBurst];
    uint64_t dep[kBurst];
    uint64_t bytes = 0;
    unsigned n = 0;
  };
  bool fast_udp(rte_mbuf *m, const FlowKey &key, uint16_t port, uint32_t slot, uint64_t now, FastOut &out);
  // process_chunk's two loops without calls (see nf.cc).
  struct ClassifyEnd {  // where fast_classify_run stopped: the packet, and the next lane
    rte_mbuf **pkt;
    Lane *lane;
  };
  template <uint16_t port>
  ClassifyEnd fast_classify_run(rte_mbuf **pp, rte_mbuf **pe, Lane *lane) const;
  struct ForwardEnd {    // in two registers:
    const Lane *lane;    // where fast_forward_run stopped (each lane before gave one packet)
    uint64_t bytes;      // the bytes it queued
  };
  template <uint16_t port>
  ForwardEnd fast_forward_run(const Lane *lp, const Lane *le, FastOut &out, uint64_t now);
  void flush_fast(FastOut &out, uint16_t egress) {
    agent_.tx_burst(worker_, egress, out.m, out.dep, out.n, out.bytes);
    out.n = 0;
    out.bytes = 0;
  }
  uint32_t expire_slice(uint32_t slots, uint64_t now);
  void count(DropReason r) { bump(ctr_.drops[static_cast<unsigned>(r)]); }
  void handle_arp(uint16_t port, rte_mbuf *m, uint64_t now);
  void send_arp(uint16_t port, uint16_t op, uint32_t sip, const rte_ether_addr &sha,
                uint32_t tip, const rte_ether_addr &tha, const rte_ether_addr &dst);
  bool parse_ipv4(rte_mbuf *m, Parsed &p, uint16_t port);
  void answer_echo(rte_mbuf *m, Parsed &p, uint16_t port);
  void answer_echo_or_drop(rte_mbuf *m, Parsed &p, uint16_t port, bool echo_request);
  void inside_to_outside(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now);
  void outside_to_inside(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now);
  // The stages both directions share; false when the packet was dropped (and freed).
  bool translate_in2out(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now, uint64_t *dep);
  bool translate_out2in(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now, uint64_t *dep);
  void hairpin(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now);
  bool slow_path(rte_mbuf *m, Parsed &p, uint16_t port, uint16_t egress, uint64_t now);
  int32_t create_snat_flow(const Parsed &p, uint64_t now);
  int32_t create_inbound_flow(const Parsed &p, uint64_t now, bool hairpin);
  int32_t insert_flow(FlowState &st, uint64_t now, bool count_host);
  bool make_room(uint64_t now);
  DropReason track_tcp(uint32_t slot, FlowRecord &r, const Parsed &p, bool from_inside, uint8_t *new_state,
                       uint8_t *new_flags);
  void update_flow(uint32_t slot, uint8_t tcp_state, uint8_t flags);
  void clamp_mss(Parsed &p);
  // ICMP (nf_icmp.cc)
  void icmp_error(rte_mbuf *m, Parsed &p, uint16_t port, uint64_t now);
  bool icmp_allowed(uint64_t now);
  void send_icmp_error(uint16_t port, rte_mbuf *orig, const Parsed &p, uint8_t type, uint8_t code,
                       uint16_t mtu, uint64_t now);
  bool is_nat_address(uint32_t ip) const;
  uint32_t pool_address_for(uint32_t in_ip) const;
  // Sends m to next_hop on port (its L2 header written), or parks it for ARP (false).
  inline bool resolve_and_send(uint16_t port, rte_mbuf *m, uint32_t next_hop, uint64_t dep, uint64_t now);
  /* Writes the L2 header for next_hop on port at frame (m's data): from the next-hop cache
   * (nh_), else the ARP table's answer, cached. The caller's run of sends must have tested
   * the cache's clock with this now (nh_valid: process_chunk, hairpin_in); changes() it tests
   * itself. False when the MAC is not known: m was parked. */
  inline bool address_frame(uint16_t port, rte_mbuf *m, uint8_t *frame, uint32_t next_hop, uint64_t dep,
                            uint64_t now);
  // Caches next_hop's MAC for port; false when it is not known (m was parked for ARP).
  bool cache_next_hop(uint16_t port, rte_mbuf *m, uint32_t next_hop, uint64_t dep, uint64_t now);
  // The WAN next hop for dst: itself on the WAN's subnet, else the gateway (0: none).
  uint32_t next_hop_out(uint32_t dst) const {
    return next_hop_out(dst, mask_[kPortOutside], net_[kPortOutside], cfg_.gateway_out);
  }
  // The same with the WAN's mask, network and gateway given (fast_forward_run holds them).
  static uint32_t next_hop_out(uint32_t dst, uint32_t mask, uint32_t net, uint32_t gw) {
    return (dst & mask) == net ? dst : gw;
  }
  void announce();
  void park_for_arp(uint16_t port, rte_mbuf *m, uint32_t next_hop, uint64_t dep, uint64_t now);
  void release_pending(uint32_t ip, uint64_t now);
  void expire_pending(uint64_t now);
  bool forwarded_port(uint8_t proto, uint16_t port_host) const;
  uint16_t pick_nat_port(uint32_t nat_ip, uint8_t proto, uint16_t in_port_host, uint32_t ext_ip, uint16_t ext_port,
                         bool *steered);

  struct PendingArp {
    rte_mbuf *m;
    uint64_t dep;
    uint64_t since_tsc;
    uint32_t next_hop;
    uint16_t port;
  };
  static constexpr unsigned kPendingMax = 64;
  PendingArp pending_[kPendingMax];
  unsigned n_pending_ = 0;

  NfConfig cfg_;
  FlowTable &flows_;
  ArpTable &arp_;
  InterfaceAgent &agent_;
  rte_mempool *pool_;
  unsigned worker_;
  uint64_t hz_;
  uint64_t timeout_tsc_[9];  // TcpState 0..6, then UDP, ICMP
  uint64_t min_timeout_tsc_;  // the shortest of them, at most INT64_MAX (expire_slice's signed test)
  uint64_t arp_retry_tsc_;
  uint32_t mask_[kMaxPorts];
  uint32_t expiry_cursor_ = 0;
  uint64_t expiry_next_tsc_ = 0, expiry_interval_tsc_ = 0;
  uint32_t net_[kMaxPorts];     // vip & mask per side
  uint8_t bad_octet_[256];      // 1: a first octet never a fast-path source or destination
  /* Per ingress port, whether the fast test may take its packets at all (process_chunk tests
   * it once a burst). It then tests only one address's first octet (bad_octet_), as the other
   * is known good: the LAN's (inside: a source on the LAN, whose prefix is at least /8 and
   * whose first octet is good) and the NAT addresses' (outside: a destination among them, none
   * with a bad first octet, nor a broadcast or multicast one). */
  bool fast_port_ok_[kMaxPorts] = {};
  bool fast_mtu_ok_ = true;     // both MTUs hold the smallest packet the fast test takes
  /* The next hops' frame headers per egress port: ARP's answers, kept across bursts, so a
   * packet to a known next hop asks no table and stays in the fast loop (the gateway, and
   * on-link hosts: the LAN's, for return traffic). Direct-mapped by the low 6 bits of the
   * address's last octet (nh_entry). An empty slot s holds the address (s ^ 1) << 24, whose
   * own slot is s ^ 1: no address looked up in slot s is equal to it, 0 (no route) included.
   * The whole cache is reset when ARP's changes() moves or the clock reaches nh_until_, the
   * earliest stale_from among its answers (nh_valid). The clock is tested where a run of
   * sends begins with a new now (a burst, process_chunk; a handed hairpin packet,
   * hairpin_in), and changes() before every lookup (address_frame, and each entry of the
   * forward loop), as an ARP write between two packets of a burst moves it. */
  struct NextHop {
    uint32_t ip;
    uint8_t l2[12];  // its MAC, then the port's virtual MAC: the frame's first 12 bytes
  };
  static constexpr unsigned kNextHops = 64;
  // Port's entry for ip: nh_[port][the low 6 bits of ip's last octet], its byte offset taken
  // from ip in one mask (an index, divided back by the entry's size, measured 5 instructions
  // more a TCP packet).
  NextHop &nh_entry(uint16_t port, uint32_t ip) {
    static_assert(sizeof(NextHop) == 16 && kNextHops == 64);
    return *reinterpret_cast<NextHop *>(reinterpret_cast<char *>(nh_[port]) + ((ip >> 20) & 0x3f0));
  }
  void nh_valid(uint64_t now) {
    if (__builtin_expect(arp_.changes() != nh_changes_ || now >= nh_until_, 0)) nh_reset();
  }
  void nh_current() {  // nh_valid() without the clock, which the caller's run has tested
    if (__builtin_expect(arp_.changes() != nh_changes_, 0)) nh_reset();
  }
  void nh_reset();
  alignas(64) NextHop nh_[kMaxPorts][kNextHops];
  uint64_t nh_changes_ = 0;
  uint64_t nh_until_ = 0;
  uint64_t fwd_burst_ = 0;      // packets the fast path forwarded in this burst
  std::vector<uint32_t> nat_addrs_;
  uint32_t nat_lo_ = 0;    // the lowest of them, host order
  uint32_t nat_span_ = 0;  // the highest less the lowest: d is in the range when d - nat_lo_ <= it
  uint64_t fwd_mask_[3][1024];  // per protocol: ports never allocated (forwards), as a bitmap
  uint64_t icmp_tokens_ = 0;   // scaled by kTokenScale
  uint64_t icmp_last_tsc_ = 0;
  uint16_t mss_max_ = 1460;
  bool evicted_ = false;  // a flow was evicted in this burst: earlier hits may be stale
  bool created_ = false;  // a flow was created in this burst: earlier misses may be stale
  SessionEventRing *events_ = nullptr;
  TscUnixClock clock_;
  Shards *shards_ = nullptr;
  const ReturnRss *rss_ = nullptr;
  DpBeatBoard *dp_beats_ = nullptr;
  void log_mappings(uint64_t now);

  /* Virtual reassembly (nf_frag.cc), in the manner of VPP's shallow reassembly: the first
   * fragment is translated like any packet and its outcome (the rewritten addresses, the
   * egress and the next hop) translates every other fragment of the datagram. Fragments
   * that come before the first wait, within per-datagram and global bounds and a timeout.
   * Contexts live in a set-associative table of kFragSets x kFragWays. */
  static constexpr unsigned kFragSets = kFragContexts / kFragWays, kFragBufPerDatagram = 16;
  static constexpr unsigned kFragBufGlobal = 512;
  struct FragCtx {
    uint32_t src, dst;  // key: addresses, identification, protocol, ingress port
    uint16_t id;
    uint8_t proto;
    uint8_t port;
    uint8_t state;  // FragState
    uint8_t nbuf;
    uint16_t egress;
    uint32_t new_src, new_dst, next_hop;
    uint32_t bytes_seen, total;  // total 0 until the last fragment is seen
    uint64_t dep, born_tsc;
    rte_mbuf *buf[kFragBufPerDatagram];
  };
  std::vector<FragCtx> frag_;
  unsigned frag_active_ = 0, frag_buffered_ = 0;
  uint64_t frag_timeout_tsc_ = 0, frag_next_expiry_tsc_ = 0;
  int32_t frag_find(const Parsed &p, uint16_t port, bool create, uint64_t now);
  void frag_first(Parsed &p, uint16_t port, uint64_t now);
  void frag_follow(rte_mbuf *m, Parsed &p, uint16_t port, uint64_t now);
  int32_t frag_resolved(const Parsed &p, uint16_t egress, uint32_t next_hop, uint64_t dep);
  void frag_release(int32_t ctx, uint64_t now);
  void frag_first_done(const Parsed &p);
  void frag_send(FragCtx &c, rte_mbuf *m, uint64_t now);
  void frag_account(FragCtx &c, const Parsed &p);
  void frag_free(FragCtx &c, DropReason why);
  void frag_expire(uint64_t now);
  std::atomic<bool> vip_owner_{true};
  std::atomic<uint64_t> announce_req_{0};
  uint64_t announce_done_ = 0;
  std::atomic<uint32_t> announce_count_{1};
  uint32_t announce_left_ = 0;
  uint64_t announce_next_tsc_ = 0;
  NfCounters ctr_;
};

// Inline: a next hop in the cache needs no ARP lookup.
inline bool Nat44::address_frame(uint16_t port, rte_mbuf *m, uint8_t *frame, uint32_t next_hop,
                                 uint64_t dep, uint64_t now) {
  nh_current();
  const NextHop &e = nh_entry(port, next_hop);
  if (__builtin_expect(e.ip != next_hop, 0) && !cache_next_hop(port, m, next_hop, dep, now)) return false;
  std::memcpy(frame, e.l2, 2 * RTE_ETHER_ADDR_LEN);  // cache_next_hop filled this slot
  return true;
}

inline bool Nat44::resolve_and_send(uint16_t port, rte_mbuf *m, uint32_t next_hop, uint64_t dep,
                                    uint64_t now) {
  if (!address_frame(port, m, rte_pktmbuf_mtod(m, uint8_t *), next_hop, dep, now)) return false;
  agent_.tx(worker_, port, m, dep);
  return true;
}

}  // namespace ftpair::dp
