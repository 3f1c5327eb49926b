/* Many workers: which worker owns a packet, and the hand-off rings between workers.
 *
 * Each worker has its own flow table, NAT and ARP table (a shard); nothing on the packet
 * path is shared but the port pool (port_pool.h). A LAN host's flows all live in the shard
 * of its bucket (host_bucket(in_ip) % workers), in the manner of VPP's NAT44-ED, which keeps
 * sessions per thread:
 *  - a LAN packet belongs to the worker of its source address's bucket;
 *  - a WAN packet to an outside endpoint belongs to the worker whose bucket holds that
 *    endpoint, read from the pool's owner byte (an ICMP error: the endpoint of the packet
 *    inside it; a static port-forward without a flow yet: its inside host's bucket);
 *  - an ARP packet is every worker's business: the receiving worker answers it, the others
 *    get a copy to learn from;
 *  - anything else stays where it came in (it is answered or dropped with its reason there).
 * Because the owner follows the LAN host's address and the endpoint's byte, not the worker
 * count, a node with another number of workers finds the same flows where it expects them.
 * It also means a flow in worker w's table is w's. So the NF (Nat44::receive) asks owner()
 * of a packet that passes its fast test (plain TCP or UDP) only when its flow is not in the
 * table; such a packet of an established flow that reaches its owner, as every one does
 * where RSS delivers flows to their owners, costs no owner test. Every other packet (ICMP,
 * ARP, fragments, IP options, what the fast test leaves to classify()) is asked first.
 *
 * Where the outside port's RSS key and redirection table can be programmed, a new TCP/UDP
 * mapping takes a port whose replies the NIC puts on the owner's queue (return_rss.h). The
 * lab's PMDs cannot be programmed so. Wherever the NIC does not deliver a packet to its
 * owner (those PMDs; LAN packets, which RSS spreads by their own tuple; ICMP; fragments;
 * replies from another endpoint to an endpoint-independent mapping), the packet is handed
 * to its owner through that worker's ring (multi-producer, single consumer) and counted
 * (ftpair_worker_handoffs_total).
 *
 * Known gaps: a WAN fragment after the first carries no port and is processed where it
 * arrives, so when that is not its flow's worker it waits there for a first fragment that
 * never comes (frag_timeout); a hairpin between two workers' hosts is handed over whole,
 * but not when it is a fragment (dropped as frag_cross_worker). */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <rte_mbuf.h>
#include <rte_ring.h>

#include "common/tsan.h"
#include "dataplane/agent.h"
#include "dataplane/port_pool.h"

namespace ftpair::dp {

struct PortForward;

// What a handed-off packet is to its new worker (HandoffItem::meta bits 1-7).
enum class Handed : uint8_t {
  RX = 0,        // a received packet, to be processed as if received on its port
  HAIRPIN = 1,   // the second half of a hairpin: translated on the way out by the sender
  ARP_COPY = 2,  // a copy of an ARP packet, to learn from (the receiver answered it)
};

// One hand-off ring entry: the packet, and dep_epoch << 8 | kind << 1 | port.
struct HandoffItem {
  rte_mbuf *m;
  uint64_t meta;
};
static_assert(sizeof(HandoffItem) == 16);
inline uint64_t handoff_meta(Handed kind, uint16_t port, uint64_t dep = 0) {
  return dep << 8 | uint64_t(kind) << 1 | (port & 1);
}

struct alignas(64) ShardCounters {
  std::atomic<uint64_t> handoffs{0};       // packets this worker handed to another
  std::atomic<uint64_t> handed_in{0};      // packets other workers handed to this one
  std::atomic<uint64_t> handoff_full{0};   // dropped: the owner's ring was full
  std::atomic<uint64_t> arp_copies{0};     // ARP copies made for the other workers
};

inline constexpr unsigned kEveryWorker = ~0u;

class Shards {
 public:
  /* workers (1..kMaxWorkers) sharing pool. nat_vip: the WAN VIP (network order) that static
   * forwards are on. ring_size: entries per worker's ring (a power of two). nullptr and
   * *err when a ring cannot be made. */
  static std::unique_ptr<Shards> create(unsigned workers, std::shared_ptr<PortPool> pool,
                                        uint32_t nat_vip, const std::vector<PortForward> &forwards,
                                        uint32_t ring_size, std::string *err);
  ~Shards();

  unsigned workers() const { return n_; }
  PortPool &pool() const { return *pool_; }
  const std::shared_ptr<PortPool> &pool_ptr() const { return pool_; }
  unsigned worker_of_bucket(unsigned bucket) const { return bucket_worker_[bucket]; }
  unsigned worker_of_host(uint32_t in_ip) const { return bucket_worker_[host_bucket(in_ip)]; }
  // The worker whose shard holds an outside endpoint (port network order), or -1.
  int endpoint_worker(uint32_t nat_ip, uint8_t proto, uint16_t port_be) const;

  // The owner of a frame received on port: a worker, kEveryWorker (ARP), or self.
  unsigned owner(uint16_t port, const rte_mbuf *m, unsigned self) const;
  /* Steering, the NF's (Nat44::receive): a received packet that worker `to` owns, not self,
   * goes to it, or is freed and counted (handoff_full) when its ring is full. Worker self only. */
  void pass(unsigned self, unsigned to, uint16_t port, rte_mbuf *m);
  // An ARP packet (kEveryWorker): a copy to every worker but self to learn from; self answers m.
  void copy_to_others(unsigned self, uint16_t port, const rte_mbuf *m);
  // Hands m to worker `to`; false when its ring is full (the caller still owns m).
  bool hand(unsigned from, unsigned to, rte_mbuf *m, uint64_t meta);
  // Worker self takes up to max handed items.
  unsigned take(unsigned self, HandoffItem *items, unsigned max) {
    const unsigned k = rte_ring_dequeue_burst_elem(rings_[self], items, sizeof(HandoffItem), max, nullptr);
    for (unsigned i = 0; i < k; i++) tsan_acquire(items[i].m);
    if (k) bump(ctr_[self].handed_in, k);
    return k;
  }
  const ShardCounters &counters(unsigned w) const { return ctr_[w]; }
  // Packets waiting in worker w's ring (any thread).
  unsigned backlog(unsigned w) const { return rings_[w] ? rte_ring_count(rings_[w]) : 0; }
  // A packet worker w could not hand over was dropped.
  void count_full(unsigned w) { bump(ctr_[w].handoff_full); }

 private:
  Shards() = default;
  unsigned n_ = 1;
  uint8_t bucket_worker_[kBuckets] = {};  // bucket % workers, without a division per packet
  std::shared_ptr<PortPool> pool_;
  uint32_t fwd_vip_ = 0;
  // Per protocol slot (TCP, UDP) and outside port: 1 + the bucket of a static forward's
  // inside host, 0 for none.
  std::vector<uint8_t> fwd_bucket_;
  rte_ring *rings_[kMaxWorkers] = {};
  ShardCounters ctr_[kMaxWorkers];
};

}  // namespace ftpair::dp
