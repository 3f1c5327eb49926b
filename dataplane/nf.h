/* The network function: NAT44 gateway with a connection-tracking firewall.
 * Port 0 is the inside (LAN), port 1 the outside (WAN). It runs on the worker: no
 * exceptions, no allocation, no locks, no system calls on the per-packet path. */
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include <rte_ether.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "dataplane/agent.h"
#include "dataplane/arp_table.h"
#include "dataplane/drop_reasons.h"
#include "dataplane/flow_table.h"

namespace ftpair::dp {

inline constexpr uint16_t kPortInside = 0;
inline constexpr uint16_t kPortOutside = 1;

struct PortForward {
  uint8_t proto;          // IPPROTO_TCP or IPPROTO_UDP
  uint16_t outside_port;  // host byte order
  uint32_t inside_ip;     // network byte order
  uint16_t inside_port;   // host byte order
};

struct Timeouts {  // seconds
  uint32_t tcp_syn = 60;
  uint32_t tcp_established = 7440;
  uint32_t tcp_fin = 120;
  uint32_t tcp_time_wait = 120;
  uint32_t tcp_closed = 10;
  uint32_t udp = 120;
  uint32_t icmp = 60;
};

struct NfConfig {
  uint32_t vip[kMaxPorts] = {0, 0};   // network byte order
  uint8_t prefix_len[kMaxPorts] = {24, 24};
  uint32_t gateway_out = 0;           // next hop on the WAN, 0 = on-link only
  rte_ether_addr vmac[kMaxPorts]{};   // shared virtual MAC per side
  rte_ether_addr own_mac[kMaxPorts]{};
  uint16_t nat_port_min = 1024;
  uint16_t nat_port_max = 65535;
  Timeouts timeouts;
  std::vector<PortForward> forwards;
  uint32_t expiry_scan_per_loop = 64;  // slots examined for expiry per loop
  uint32_t arp_retry_ms = 1000;
};

struct alignas(64) NfCounters {
  std::atomic<uint64_t> drops[kDropReasonCount];
  std::atomic<uint64_t> forwarded[kMaxPorts];  // by ingress port
  std::atomic<uint64_t> flows_created{0}, flows_expired{0}, flows_closed{0};
  std::atomic<uint64_t> arp_replies{0}, arp_requests{0}, garps{0};
  NfCounters();
};

class Nat44 {
 public:
  Nat44(const NfConfig &cfg, FlowTable &flows, ArpTable &arp, InterfaceAgent &agent,
        rte_mempool *pool, unsigned worker);
  // Frees the packets still waiting for ARP.
  ~Nat44();

  // Handles a burst received on port. Every mbuf is either queued for tx or freed.
  void process(uint16_t port, rte_mbuf **pkts, uint16_t n, uint64_t now_tsc);
  // Periodic work between bursts: expiry scan, announcements. Returns work done.
  uint32_t housekeeping(uint64_t now_tsc);

  // Owner of the virtual addresses: forwards, answers ARP for VIPs, sends from vMACs.
  void set_vip_owner(bool on) { vip_owner_.store(on, std::memory_order_release); }
  bool vip_owner() const { return vip_owner_.load(std::memory_order_acquire); }
  /* Asks the worker to send gratuitous ARP for both VIPs at its next housekeeping, and
   * again count-1 times, 20 ms apart (a lost GARP must not strand a bridge). */
  void request_announce(uint32_t count = 1) {
    announce_count_.store(count, std::memory_order_relaxed);
    announce_req_.fetch_add(1, std::memory_order_release);
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
  void drop(rte_mbuf *m, DropReason r);
  void handle_arp(uint16_t port, rte_mbuf *m, uint64_t now);
  void send_arp(uint16_t port, uint16_t op, uint32_t sip, const rte_ether_addr &sha,
                uint32_t tip, const rte_ether_addr &tha, const rte_ether_addr &dst);
  bool parse_ipv4(rte_mbuf *m, Parsed &p, uint16_t port);
  void inside_to_outside(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now);
  void outside_to_inside(rte_mbuf *m, Parsed &p, int32_t slot, uint64_t now);
  int32_t create_snat_flow(const Parsed &p, uint64_t now);
  int32_t create_forward_flow(const Parsed &p, uint64_t now);
  DropReason track_tcp(const FlowState &st, const Parsed &p, bool from_inside,
                       uint8_t *new_state, uint8_t *new_flags) const;
  void update_flow(uint32_t slot, uint8_t tcp_state, uint8_t flags);
  bool resolve_and_send(uint16_t port, rte_mbuf *m, uint32_t next_hop, uint64_t dep, uint64_t now);
  uint32_t next_hop_out(uint32_t dst) const;
  void announce();
  void park_for_arp(uint16_t port, rte_mbuf *m, uint32_t next_hop, uint64_t dep, uint64_t now);
  void release_pending(uint32_t ip, uint64_t now);
  void expire_pending(uint64_t now);
  bool forwarded_port(uint8_t proto, uint16_t port_host) const;
  uint16_t pick_nat_port(const FlowState &proto_st, uint16_t preferred_host);

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
  uint64_t forwarded_bits_[2][65536 / 64];  // tcp, udp: outside ports owned by port-forwards

  NfConfig cfg_;
  FlowTable &flows_;
  ArpTable &arp_;
  InterfaceAgent &agent_;
  rte_mempool *pool_;
  unsigned worker_;
  uint64_t hz_;
  uint64_t timeout_tsc_[9];  // TcpState 0..6, then UDP, ICMP
  uint64_t arp_retry_tsc_;
  uint32_t mask_[kMaxPorts];
  uint32_t expiry_cursor_ = 0;
  uint16_t port_hint_[3] = {0, 0, 0};
  std::atomic<bool> vip_owner_{true};
  std::atomic<uint64_t> announce_req_{0};
  uint64_t announce_done_ = 0;
  std::atomic<uint32_t> announce_count_{1};
  uint32_t announce_left_ = 0;
  uint64_t announce_next_tsc_ = 0;
  NfCounters ctr_;
};

}  // namespace ftpair::dp
