/* The interface agent: the only code that calls rte_eth_rx_burst and rte_eth_tx_burst.
 *
 * Quiesce is a barrier. The control side asks, every worker finishes its burst and parks
 * at barrier_point(), and while the request stands rx() answers "no packets" whatever is
 * waiting: packets stay in the port's ring and none is dropped while the pause is shorter
 * than the ring. resume() lets the workers go.
 *
 * Output commit (strict mode): a packet whose output depends on flow state changed in an
 * epoch the standby has not acknowledged is held, and released in order once it is. A
 * packet that depends only on acknowledged state leaves at once. */
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include <rte_mbuf.h>

namespace ftpair::dp {

inline constexpr unsigned kMaxPorts = 2;
inline constexpr unsigned kMaxWorkers = 8;
inline constexpr uint16_t kBurst = 32;

enum class HoldFallback : uint8_t {
  DROP,     // strict to the end: a packet that cannot be held is dropped (counted in hold_full)
  RELAXED,  // availability first: a packet that cannot be held leaves at once
};

struct AgentConfig {
  uint16_t nb_ports = 2;
  uint16_t port_ids[kMaxPorts] = {0, 1};  // DPDK port id of inside (0) and outside (1)
  uint16_t queue_of_worker[kMaxWorkers] = {0, 1, 2, 3, 4, 5, 6, 7};
  uint16_t nb_workers = 1;
  bool strict = false;
  uint32_t hold_capacity = 8192;  // packets held for output commit, per worker
  HoldFallback fallback = HoldFallback::DROP;
};

// One worker's counts for one port (each worker has its own: no shared cache line).
struct alignas(64) PortCounters {
  std::atomic<uint64_t> rx_packets{0}, rx_bytes{0}, tx_packets{0}, tx_bytes{0}, tx_dropped{0};
};
// A port's counts summed over the workers.
struct PortTotals {
  uint64_t rx_packets = 0, rx_bytes = 0, tx_packets = 0, tx_bytes = 0, tx_dropped = 0;
};

/* How long held packets waited, as a log-linear histogram: bucket 4*e + s holds waits in
 * [2^e + s*2^(e-2), 2^e + (s+1)*2^(e-2)) ns (values below 4 ns have their own buckets), so
 * a percentile read from it is within 25% of the exact one. */
inline constexpr unsigned kHoldWaitBuckets = 160;
inline unsigned hold_wait_bucket(uint64_t ns) {
  if (ns < 4) return static_cast<unsigned>(ns);
  const unsigned e = 63u - static_cast<unsigned>(__builtin_clzll(ns));
  const unsigned b = 4 * e + static_cast<unsigned>((ns >> (e - 2)) & 3);
  return b < kHoldWaitBuckets ? b : kHoldWaitBuckets - 1;
}
// The exclusive upper bound of a bucket, in ns.
inline uint64_t hold_wait_bucket_upper_ns(unsigned b) {
  if (b < 4) return b + 1;
  const unsigned e = b / 4, s = b % 4;
  return (uint64_t(1) << e) + (uint64_t(s) + 1) * (uint64_t(1) << (e - 2));
}

struct alignas(64) AgentWorkerCounters {
  std::atomic<uint64_t> parks{0};
  std::atomic<uint64_t> held{0};          // packets ever held
  std::atomic<uint64_t> released{0};      // held packets later sent
  std::atomic<uint64_t> hold_full{0};     // could not hold: dropped or sent per fallback
  std::atomic<uint64_t> held_now{0};
  std::atomic<uint64_t> hold_wait_ns_sum{0};  // total time held packets waited
  std::atomic<uint64_t> hold_wait_hist[kHoldWaitBuckets] = {};
  // When the oldest packet still held was held (InterfaceAgent::clock_ns); 0 = none held.
  std::atomic<uint64_t> oldest_held_ns{0};
  std::atomic<uint64_t> newest_held_ns{0};  // when the newest packet was held (clock_ns)
  // Releases: the acknowledgement published (set_acked_epoch) until this worker sent what it
  // released, summed over releases.
  std::atomic<uint64_t> release_lag_ns_sum{0};
  std::atomic<uint64_t> releases{0};
};

// Relaxed single-writer increment (compiles to a plain add).
inline void bump(std::atomic<uint64_t> &c, uint64_t n = 1) {
  c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

class InterfaceAgent {
 public:
  explicit InterfaceAgent(const AgentConfig &cfg);
  ~InterfaceAgent();

  // ---- worker side (never blocks, never allocates) ----
  // Receives up to n packets; returns 0 while a quiesce is requested.
  uint16_t rx(unsigned worker, uint16_t port, rte_mbuf **pkts, uint16_t n);
  // Queues one packet for port. dep_epoch: the newest flow-state epoch it depends on.
  // Inline: a packet that need not wait (relaxed mode, or state already acknowledged) is
  // queued here; holding for output commit is out of line.
  inline void tx(unsigned worker, uint16_t port, rte_mbuf *m, uint64_t dep_epoch);
  /* Queues n (at most kBurst) packets for port in order, dep[i] the epoch packet i depends on
   * and bytes the sum of their lengths: one copy for the burst when none has to wait (relaxed
   * mode, or in strict mode the newest dep already acknowledged), else tx() for each. The NF's
   * fast path sends a burst's output through this. */
  inline void tx_burst(unsigned worker, uint16_t port, rte_mbuf *const *m, const uint64_t *dep,
                       unsigned n, uint64_t bytes);
  // Sends what tx() queued and releases held packets the standby has acknowledged.
  void flush(unsigned worker);
  // Parks here while a quiesce is requested. Returns true if the worker parked.
  bool barrier_point(unsigned worker);
  // The loop counter the health check reads; bumped by the worker each iteration.
  void heartbeat(unsigned worker) { bump(loops_[worker].v); }

  // ---- control side ----
  // Blocks until every worker is parked. Returns 0, or -ETIMEDOUT after withdrawing
  // the request (the workers go on; nothing is left parked) and naming in *late the first
  // worker that had not parked.
  int quiesce(std::chrono::nanoseconds timeout, unsigned *late = nullptr);
  void resume();
  bool quiesced() const { return quiesce_req_.load(std::memory_order_relaxed); }
  // Nanoseconds the workers were parked during the last quiesce/resume (any thread).
  uint64_t last_pause_ns() const { return last_pause_ns_.load(std::memory_order_relaxed); }

  // Output commit. acked: newest epoch the standby has acknowledged.
  void set_acked_epoch(uint64_t acked) {
    if (acked_.load(std::memory_order_relaxed) == acked) return;
    acked_at_ns_.store(clock_ns(), std::memory_order_relaxed);
    acked_.store(acked, std::memory_order_release);
  }
  // The workers' clock (TSC, in ns): held packets are stamped with it.
  static uint64_t clock_ns();
  // The oldest packet held on any worker (clock_ns), 0 when none is.
  uint64_t oldest_held_ns() const;
  // The newest packet held on any worker (clock_ns), 0 when none ever was.
  uint64_t newest_held_ns() const;
  /* Strict mode's wake-up for the checkpoint thread: the first packet a worker holds after
   * a cut (mark_cut) bumps the hold signal and, when the checkpoint thread is waiting on it,
   * wakes it (a futex wake: at most one system call per worker and epoch, never a wait). The checkpoint thread reads hold_signal(), then
   * waits until it changes or timeout passes; so output that waits closes its epoch at
   * once, without the thread polling for it. */
  void mark_cut() { cut_seq_.fetch_add(1, std::memory_order_relaxed); }
  uint32_t hold_signal() const { return hold_signal_.load(std::memory_order_acquire); }
  void wait_hold_signal(uint32_t seen, std::chrono::nanoseconds timeout) const;
  // Futex wakes the workers made (tests: none while nothing waits).
  uint64_t hold_wakes() const { return hold_wakes_.load(std::memory_order_relaxed); }
  uint64_t acked_epoch() const { return acked_.load(std::memory_order_acquire); }
  void set_strict(bool on) { strict_.store(on, std::memory_order_release); }
  bool strict() const { return strict_.load(std::memory_order_relaxed); }

  uint64_t loops(unsigned worker) const { return loops_[worker].v.load(std::memory_order_relaxed); }
  // Any thread: a port's counts over every worker (each count exact, the set not one instant's).
  PortTotals port_counters(uint16_t port) const {
    PortTotals t;
    for (unsigned w = 0; w < cfg_.nb_workers; w++) {
      const PortCounters &c = port_ctr_[w][port];
      t.rx_packets += c.rx_packets.load(std::memory_order_relaxed);
      t.rx_bytes += c.rx_bytes.load(std::memory_order_relaxed);
      t.tx_packets += c.tx_packets.load(std::memory_order_relaxed);
      t.tx_bytes += c.tx_bytes.load(std::memory_order_relaxed);
      t.tx_dropped += c.tx_dropped.load(std::memory_order_relaxed);
    }
    return t;
  }
  const PortCounters &worker_port_counters(unsigned w, uint16_t port) const { return port_ctr_[w][port]; }
  const AgentWorkerCounters &worker_counters(unsigned w) const { return wctr_[w]; }
  // One of the workers' counts summed, e.g. worker_total(&AgentWorkerCounters::held_now).
  uint64_t worker_total(std::atomic<uint64_t> AgentWorkerCounters::*c) const {
    uint64_t n = 0;
    for (unsigned w = 0; w < cfg_.nb_workers; w++) n += (wctr_[w].*c).load(std::memory_order_relaxed);
    return n;
  }
  uint64_t loops_total() const {
    uint64_t n = 0;
    for (unsigned w = 0; w < cfg_.nb_workers; w++) n += loops(w);
    return n;
  }
  uint16_t nb_workers() const { return cfg_.nb_workers; }
  uint16_t nb_ports() const { return cfg_.nb_ports; }
  // Test hook: while set, the worker's loop stalls inside barrier_point (health tests).
  void set_stall(bool on) {
    stall_.store(on, std::memory_order_release);
    if (!on) stall_.notify_all();
  }

 private:
  struct Held {
    rte_mbuf *m;
    uint64_t dep;
    uint64_t since_ns;
    uint16_t port;
  };
  struct alignas(64) TxQueue {
    rte_mbuf *pkts[kBurst * 4];
    uint16_t n = 0;
    uint64_t bytes = 0;  // the queued packets' lengths, summed as they are queued
  };
  struct alignas(64) WorkerState {
    TxQueue txq[kMaxPorts];
    std::vector<Held> hold;  // reserved at start; FIFO, compacted on release
    uint64_t acked_seen = 0;
    uint32_t signalled_cut = UINT32_MAX;  // the cut whose first hold woke the checkpoint thread
  };
  struct alignas(64) Loops {
    std::atomic<uint64_t> v{0};
  };
  struct alignas(64) Parked {
    std::atomic<uint64_t> gen{0};
  };

  void send_now(unsigned worker, uint16_t port, rte_mbuf *m);
  void tx_hold(unsigned worker, uint16_t port, rte_mbuf *m, uint64_t dep_epoch);
  void drain_port(unsigned worker, uint16_t port);
  void release_held(unsigned worker, uint64_t acked);

  AgentConfig cfg_;
  std::atomic<bool> strict_{false};
  std::atomic<uint64_t> acked_{0};
  std::atomic<uint64_t> acked_at_ns_{0};  // clock_ns() when acked_ last changed
  alignas(64) std::atomic<uint32_t> cut_seq_{0};  // control side, with the workers parked
  alignas(64) mutable std::atomic<uint32_t> hold_signal_{0};  // futex word
  mutable std::atomic<uint32_t> hold_waiters_{0};  // threads in wait_hold_signal
  std::atomic<uint64_t> hold_wakes_{0};
  alignas(64) std::atomic<bool> quiesce_req_{false};
  std::atomic<uint64_t> quiesce_gen_{0};
  std::atomic<bool> stall_{false};
  Parked parked_[kMaxWorkers];
  Loops loops_[kMaxWorkers];
  PortCounters port_ctr_[kMaxWorkers][kMaxPorts];
  AgentWorkerCounters wctr_[kMaxWorkers];
  WorkerState ws_[kMaxWorkers];
  // Control side; status and the engine read the last pause on other threads.
  std::atomic<uint64_t> pause_start_ns_{0};
  std::atomic<uint64_t> last_pause_ns_{0};
};

inline void InterfaceAgent::tx(unsigned worker, uint16_t port, rte_mbuf *m, uint64_t dep_epoch) {
  WorkerState &ws = ws_[worker];
  // acked_seen is read once per flush, so a packet never overtakes an older held packet
  // of its own flow: that packet's dependency is no newer, so it was released already.
  if (__builtin_expect(dep_epoch > ws.acked_seen, 0) && strict_.load(std::memory_order_relaxed))
    return tx_hold(worker, port, m, dep_epoch);
  TxQueue &q = ws.txq[port];
  if (__builtin_expect(q.n == sizeof(q.pkts) / sizeof(q.pkts[0]), 0)) drain_port(worker, port);
  q.pkts[q.n++] = m;
  q.bytes += rte_pktmbuf_pkt_len(m);
}

inline void InterfaceAgent::tx_burst(unsigned worker, uint16_t port, rte_mbuf *const *m,
                                     const uint64_t *dep, unsigned n, uint64_t bytes) {
  WorkerState &ws = ws_[worker];
  if (__builtin_expect(strict_.load(std::memory_order_relaxed), 0)) {
    // Only strict mode needs the newest dependency: found here, not per packet by the caller.
    uint64_t max_dep = 0;
    for (unsigned i = 0; i < n; i++) max_dep = dep[i] > max_dep ? dep[i] : max_dep;
    if (max_dep > ws.acked_seen) {
      for (unsigned i = 0; i < n; i++) tx(worker, port, m[i], dep[i]);
      return;
    }
  }
  TxQueue &q = ws.txq[port];
  static_assert(sizeof(q.pkts) / sizeof(q.pkts[0]) >= kBurst, "an empty queue takes a burst");
  if (__builtin_expect(q.n + n > sizeof(q.pkts) / sizeof(q.pkts[0]), 0)) drain_port(worker, port);
  std::memcpy(&q.pkts[q.n], m, n * sizeof(m[0]));
  q.n = static_cast<uint16_t>(q.n + n);
  q.bytes += bytes;
}

}  // namespace ftpair::dp
