#include "dataplane/agent.h"

#include <linux/futex.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <cerrno>
#include <thread>

#include <rte_cycles.h>
#include <rte_debug.h>
#include <rte_ethdev.h>
#include <rte_pause.h>

#include "common/realtime.h"
#include "dataplane/mbuf.h"

namespace ftpair::dp {

namespace {
uint64_t mono_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(
          std::chrono::steady_clock::now().time_since_epoch())
          .count());
}
}  // namespace

uint64_t InterfaceAgent::clock_ns() {
  static const double ns_per_tick = 1e9 / static_cast<double>(rte_get_tsc_hz());
  return static_cast<uint64_t>(static_cast<double>(rte_rdtsc()) * ns_per_tick);
}

void InterfaceAgent::wait_hold_signal(uint32_t seen, std::chrono::nanoseconds timeout) const {
  if (timeout.count() <= 0) return;
  timespec ts{};
  ts.tv_sec = time_t(timeout.count() / 1000000000);
  ts.tv_nsec = long(timeout.count() % 1000000000);
  /* Say so before looking (both sides sequentially consistent, as in Dekker's): either the
   * worker's bump comes first and the look below sees it, or the worker sees the waiter and
   * wakes it. The futex checks the word again itself, so a bump between the look and the wait
   * ends the wait at once. */
  hold_waiters_.fetch_add(1, std::memory_order_seq_cst);
  if (hold_signal_.load(std::memory_order_seq_cst) == seen)
    // EINTR, EAGAIN and ETIMEDOUT alike end the wait.
    syscall(SYS_futex, &hold_signal_, FUTEX_WAIT_PRIVATE, seen, &ts, nullptr, 0);
  hold_waiters_.fetch_sub(1, std::memory_order_relaxed);
}

uint64_t InterfaceAgent::newest_held_ns() const {
  uint64_t newest = 0;
  for (unsigned w = 0; w < cfg_.nb_workers; w++)
    newest = std::max(newest, wctr_[w].newest_held_ns.load(std::memory_order_relaxed));
  return newest;
}

uint64_t InterfaceAgent::oldest_held_ns() const {
  uint64_t oldest = 0;
  for (unsigned w = 0; w < cfg_.nb_workers; w++) {
    const uint64_t t = wctr_[w].oldest_held_ns.load(std::memory_order_relaxed);
    if (t && (!oldest || t < oldest)) oldest = t;
  }
  return oldest;
}

InterfaceAgent::InterfaceAgent(const AgentConfig &cfg) : cfg_(cfg) {
  strict_.store(cfg.strict);
  for (unsigned w = 0; w < cfg.nb_workers && w < kMaxWorkers; w++)
    ws_[w].hold.reserve(cfg.hold_capacity);
}

InterfaceAgent::~InterfaceAgent() {
  for (unsigned w = 0; w < cfg_.nb_workers && w < kMaxWorkers; w++) {
    for (auto &h : ws_[w].hold) mbuf_free(h.m);
    ws_[w].hold.clear();
    for (unsigned p = 0; p < cfg_.nb_ports; p++) {
      TxQueue &q = ws_[w].txq[p];
      mbuf_free_bulk(q.pkts, q.n);
      q.n = 0;
      q.bytes = 0;
    }
  }
}

uint16_t InterfaceAgent::rx(unsigned worker, uint16_t port, rte_mbuf **pkts, uint16_t n) {
  // While a quiesce stands, answer "nothing waiting": packets stay in the ring.
  if (quiesce_req_.load(std::memory_order_acquire)) return 0;
  uint16_t got = rte_eth_rx_burst(cfg_.port_ids[port], cfg_.queue_of_worker[worker], pkts, n);
  if (got) {
    uint64_t bytes = 0;
#pragma GCC unroll 4
    for (uint16_t i = 0; i < got; i++) {
      tsan_acquire(pkts[i]);  // handed over through the port's ring (dataplane/mbuf.h)
      bytes += rte_pktmbuf_pkt_len(pkts[i]);
      // The headers are read next by the NF: on their way while the burst is counted.
      rte_prefetch0(rte_pktmbuf_mtod(pkts[i], void *));
    }
    bump(port_ctr_[worker][port].rx_packets, got);
    bump(port_ctr_[worker][port].rx_bytes, bytes);
  }
  return got;
}

void InterfaceAgent::drain_port(unsigned worker, uint16_t port) {
  TxQueue &q = ws_[worker].txq[port];
  if (q.n == 0) return;
  // Lengths were summed as the packets were queued: a sent mbuf belongs to the port (and,
  // over a ring, to whoever reads it, who may already have freed it); the ones not sent are
  // still ours.
  uint64_t bytes = q.bytes;
  q.bytes = 0;
#ifdef FTPAIR_TSAN
  // TSan builds read every queued mbuf once more before the hand-off (a packet freed and
  // reused while queued races with this read) and check the sum kept at queueing.
  uint64_t walked = 0;
  for (uint16_t i = 0; i < q.n; i++) {
    walked += rte_pktmbuf_pkt_len(q.pkts[i]);
    tsan_release(q.pkts[i]);  // to the port's ring (dataplane/mbuf.h)
  }
  RTE_VERIFY(walked == bytes);
#endif
  uint16_t sent = rte_eth_tx_burst(cfg_.port_ids[port], cfg_.queue_of_worker[worker], q.pkts, q.n);
  for (uint16_t i = sent; i < q.n; i++) {
    tsan_acquire(q.pkts[i]);
    bytes -= rte_pktmbuf_pkt_len(q.pkts[i]);
  }
  bump(port_ctr_[worker][port].tx_packets, sent);
  bump(port_ctr_[worker][port].tx_bytes, bytes);
  if (sent < q.n) {
    bump(port_ctr_[worker][port].tx_dropped, q.n - sent);
    mbuf_free_bulk(&q.pkts[sent], q.n - sent);
  }
  q.n = 0;
}

void InterfaceAgent::send_now(unsigned worker, uint16_t port, rte_mbuf *m) {
  TxQueue &q = ws_[worker].txq[port];
  if (q.n == sizeof(q.pkts) / sizeof(q.pkts[0])) drain_port(worker, port);
  q.pkts[q.n++] = m;
  q.bytes += rte_pktmbuf_pkt_len(m);
}

void InterfaceAgent::release_held(unsigned worker, uint64_t acked) {
  WorkerState &ws = ws_[worker];
  if (ws.hold.empty()) return;
  uint64_t now = clock_ns();
  size_t keep = 0;
  uint64_t released = 0, waited = 0;
  for (size_t i = 0; i < ws.hold.size(); i++) {
    Held &h = ws.hold[i];
    if (h.dep <= acked) {
      send_now(worker, h.port, h.m);
      released++;
      const uint64_t w = now - h.since_ns;
      waited += w;
      bump(wctr_[worker].hold_wait_hist[hold_wait_bucket(w)]);
    } else {
      ws.hold[keep++] = h;
    }
  }
  ws.hold.resize(keep);
  bump(wctr_[worker].released, released);
  bump(wctr_[worker].hold_wait_ns_sum, waited);
  wctr_[worker].held_now.store(keep, std::memory_order_relaxed);
  wctr_[worker].oldest_held_ns.store(keep ? ws.hold[0].since_ns : 0, std::memory_order_relaxed);
  if (released) {
    const uint64_t at = acked_at_ns_.load(std::memory_order_relaxed);
    bump(wctr_[worker].release_lag_ns_sum, now > at ? now - at : 0);
    bump(wctr_[worker].releases);
  }
}

// tx() when the packet may have to wait for its state's acknowledgement (strict mode).
void InterfaceAgent::tx_hold(unsigned worker, uint16_t port, rte_mbuf *m, uint64_t dep_epoch) {
  WorkerState &ws = ws_[worker];
  if (ws.hold.size() < cfg_.hold_capacity) {
    const uint64_t now = clock_ns();
    if (ws.hold.empty()) wctr_[worker].oldest_held_ns.store(now, std::memory_order_relaxed);
    ws.hold.push_back(Held{m, dep_epoch, now, port});
    wctr_[worker].newest_held_ns.store(now, std::memory_order_relaxed);
    const uint32_t cut = cut_seq_.load(std::memory_order_relaxed);
    if (ws.signalled_cut != cut) {
      ws.signalled_cut = cut;
      hold_signal_.fetch_add(1, std::memory_order_seq_cst);
      // The system call only when the checkpoint thread sleeps on the word (wait_hold_signal).
      if (hold_waiters_.load(std::memory_order_seq_cst) != 0) {
        syscall(SYS_futex, &hold_signal_, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
        hold_wakes_.fetch_add(1, std::memory_order_relaxed);
      }
    }
    bump(wctr_[worker].held);
    wctr_[worker].held_now.store(ws.hold.size(), std::memory_order_relaxed);
    return;
  }
  bump(wctr_[worker].hold_full);
  if (cfg_.fallback == HoldFallback::DROP) {
    mbuf_free(m);
    return;
  }
  send_now(worker, port, m);
}

void InterfaceAgent::flush(unsigned worker) {
  WorkerState &ws = ws_[worker];
  uint64_t acked = acked_.load(std::memory_order_acquire);
  if (acked != ws.acked_seen) {
    ws.acked_seen = acked;
    release_held(worker, acked);
  }
  for (uint16_t p = 0; p < cfg_.nb_ports; p++) drain_port(worker, p);
}

namespace {
// Spins (rte_pause, tens of ns each) before a parked worker starts yielding its CPU.
constexpr unsigned kSpinsBeforeYield = 2048;
}  // namespace

bool InterfaceAgent::barrier_point(unsigned worker) {
  // Blocked, as a deadlocked worker would be (a futex wait, not a nap: the stall detector and
  // the probe's answer tell a nap that wakes late from a stuck thread).
  while (stall_.load(std::memory_order_acquire)) stall_.wait(true, std::memory_order_acquire);
  if (!quiesce_req_.load(std::memory_order_acquire)) return false;
  // Finish the burst's output first, so held state stays per epoch.
  for (uint16_t p = 0; p < cfg_.nb_ports; p++) drain_port(worker, p);
  bump(wctr_[worker].parks);
  // Publish the generation we are parked for on every spin: a resume() followed at once by
  // a new quiesce() may never show us the request dropping, and the new request must still
  // see this worker as parked (it is: it has not left this loop).
  for (unsigned spins = 0; quiesce_req_.load(std::memory_order_acquire); spins++) {
    const uint64_t gen = quiesce_gen_.load(std::memory_order_acquire);
    if (parked_[worker].gen.load(std::memory_order_relaxed) != gen)
      parked_[worker].gen.store(gen, std::memory_order_release);
    // Parked on request is not a stall: the control plane holding the barrier (a Flows dump
    // of a large table, a snapshot) must not make the health check fail the node over.
    heartbeat(worker);
    // A pause is microseconds; past that, give the CPU away while waiting: where workers share
    // CPUs with each other and the control plane (a small VM), a worker yet to park or the
    // thread that ends the barrier may be waiting for this one's CPU. On a core of its own the
    // yield returns at once.
    if (spins < kSpinsBeforeYield)
      rte_pause();
    else
      sched_yield();
  }
  return true;
}

int InterfaceAgent::quiesce(std::chrono::nanoseconds timeout, unsigned *late) {
  uint64_t gen = quiesce_gen_.load(std::memory_order_relaxed) + 1;
  uint64_t start = mono_ns();
  pause_start_ns_.store(start, std::memory_order_relaxed);
  // Request first, generation second: a worker that publishes this generation has read it
  // after the request was up, so it is parked for this request and not a withdrawn one.
  quiesce_req_.store(true, std::memory_order_seq_cst);
  quiesce_gen_.store(gen, std::memory_order_seq_cst);
  uint64_t deadline = start + static_cast<uint64_t>(timeout.count());
  unsigned spins = 0;
  // A real-time caller that must wait longer than the spins waits at normal priority: a
  // worker yet to park may need this CPU, and sched_yield() gives it only to real-time threads.
  std::optional<NormalPriority> normal;
  for (unsigned w = 0; w < cfg_.nb_workers; w++) {
    while (parked_[w].gen.load(std::memory_order_acquire) != gen) {
      if (mono_ns() > deadline && parked_[w].gen.load(std::memory_order_acquire) != gen) {
        quiesce_req_.store(false, std::memory_order_release);
        if (late) *late = w;
        return -ETIMEDOUT;
      }
      if (spins++ < kSpinsBeforeYield) {
        rte_pause();
        continue;
      }
      if (!normal) normal.emplace();
      sched_yield();
    }
  }
  return 0;
}

void InterfaceAgent::resume() {
  quiesce_req_.store(false, std::memory_order_release);
  last_pause_ns_.store(mono_ns() - pause_start_ns_.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace ftpair::dp
