// The interface agent (dataplane/agent.h) on ring-backed ports: quiesce/resume, counters,
// transmit drops, the output-commit hold, and no loss or duplication under quiesce cycles.
#include "dataplane/agent.h"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <rte_cycles.h>
#include <rte_memcpy.h>
#include <rte_pause.h>

#include "tests/unit/dataplane/pktgen.h"

namespace ftpair::dp {
namespace {

using namespace std::chrono_literals;

rte_mbuf *seq_pkt(uint64_t seq) {
  rte_mbuf *m = rte_pktmbuf_alloc(test::test_pool());
  if (m == nullptr) return nullptr;
  char *d = rte_pktmbuf_append(m, 64);
  if (d == nullptr) {
    rte_pktmbuf_free(m);
    return nullptr;
  }
  uint8_t payload[64] = {};
  std::memcpy(payload, &seq, sizeof(seq));
  rte_memcpy(d, payload, sizeof(payload));
  return m;
}

uint64_t seq_of(const rte_mbuf *m) {
  uint64_t s;
  std::memcpy(&s, rte_pktmbuf_mtod(m, const char *), sizeof(s));
  return s;
}

AgentConfig two_ports(const test::RingPort &p0, const test::RingPort &p1) {
  AgentConfig c;
  c.nb_ports = 2;
  c.port_ids[0] = p0.id();
  c.port_ids[1] = p1.id();
  c.nb_workers = 1;
  return c;
}

// A stand-in worker: parks when asked, otherwise spins.
class ParkingWorker {
 public:
  explicit ParkingWorker(InterfaceAgent &a) : a_(a), t_([this] {
    while (!stop_.load(std::memory_order_acquire)) {
      a_.barrier_point(0);
      std::this_thread::yield();
    }
  }) {}
  ~ParkingWorker() {
    stop_.store(true, std::memory_order_release);
    t_.join();
  }

 private:
  InterfaceAgent &a_;
  std::atomic<bool> stop_{false};
  std::thread t_;
};

TEST(Agent, RxReturnsNothingWhileQuiescedAndPacketsStayInTheRing) {
  test::RingPort p0, p1;
  ASSERT_TRUE(p0.ok() && p1.ok());
  const unsigned avail = rte_mempool_avail_count(test::test_pool());
  {
    InterfaceAgent agent(two_ports(p0, p1));
    std::vector<rte_mbuf *> sent;
    for (uint64_t i = 0; i < 5; i++) {
      rte_mbuf *m = seq_pkt(i);
      ASSERT_NE(m, nullptr);
      ASSERT_TRUE(p0.inject(m));
      sent.push_back(m);
    }
    rte_mbuf *pkts[kBurst];
    {
      ParkingWorker w(agent);
      ASSERT_EQ(agent.quiesce(2s), 0);
      EXPECT_TRUE(agent.quiesced());
      for (int k = 0; k < 3; k++) EXPECT_EQ(agent.rx(0, 0, pkts, kBurst), 0) << "rx while quiesced";
      EXPECT_EQ(p0.rx_pending(), 5u) << "the packets wait in the ring";
      EXPECT_EQ(agent.port_counters(0).rx_packets, 0u);
      agent.resume();
      EXPECT_FALSE(agent.quiesced());
      EXPECT_GE(agent.worker_counters(0).parks.load(), 1u);
    }
    const uint16_t n = agent.rx(0, 0, pkts, kBurst);
    ASSERT_EQ(n, 5);
    for (uint16_t i = 0; i < n; i++) {
      EXPECT_EQ(pkts[i], sent[i]) << "same packets, same order";
      rte_pktmbuf_free(pkts[i]);
    }
    EXPECT_EQ(agent.port_counters(0).rx_packets, 5u);
    EXPECT_EQ(agent.port_counters(0).rx_bytes, 5u * 64);
  }
  EXPECT_EQ(rte_mempool_avail_count(test::test_pool()), avail);
}

TEST(Agent, QuiesceWithoutAWorkerTimesOutAndLeavesNothingParked) {
  test::RingPort p0, p1;
  ASSERT_TRUE(p0.ok() && p1.ok());
  InterfaceAgent agent(two_ports(p0, p1));
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(agent.quiesce(5ms), -ETIMEDOUT);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 5ms) << "waited for the timeout";
  EXPECT_FALSE(agent.quiesced()) << "the request is withdrawn";
  // A worker arriving late does not park.
  EXPECT_FALSE(agent.barrier_point(0));
  EXPECT_EQ(agent.worker_counters(0).parks.load(), 0u);
  rte_mbuf *m = seq_pkt(1);
  ASSERT_TRUE(p0.inject(m));
  rte_mbuf *pkts[kBurst];
  ASSERT_EQ(agent.rx(0, 0, pkts, kBurst), 1);
  EXPECT_EQ(pkts[0], m);
  rte_pktmbuf_free(pkts[0]);
}

TEST(Agent, BarrierPointParksOnlyWhileRequested) {
  test::RingPort p0, p1;
  ASSERT_TRUE(p0.ok() && p1.ok());
  InterfaceAgent agent(two_ports(p0, p1));
  EXPECT_FALSE(agent.barrier_point(0));
  std::atomic<int> parked{-1};
  std::thread ctl([&] {
    // The main thread acts as the worker below; quiesce from here.
    int rc = agent.quiesce(2s);
    parked.store(rc);
    agent.resume();
  });
  bool did_park = false;
  while (!did_park && parked.load() == -1) did_park = agent.barrier_point(0);
  ctl.join();
  EXPECT_EQ(parked.load(), 0);
  EXPECT_TRUE(did_park);
  EXPECT_EQ(agent.worker_counters(0).parks.load(), 1u);
  EXPECT_GT(agent.last_pause_ns(), 0u);
}

TEST(Agent, TxCountsAndTxRingFullDrops) {
  test::RingPort p0, p1(8);  // 7 usable slots
  ASSERT_TRUE(p0.ok() && p1.ok());
  const unsigned avail = rte_mempool_avail_count(test::test_pool());
  {
    InterfaceAgent agent(two_ports(p0, p1));
    for (uint64_t i = 0; i < 10; i++) agent.tx(0, 1, seq_pkt(i), 0);
    EXPECT_EQ(p1.tx_count(), 0u) << "queued until flush";
    agent.flush(0);
    EXPECT_EQ(p1.tx_count(), 7u);
    EXPECT_EQ(agent.port_counters(1).tx_packets, 7u);
    EXPECT_EQ(agent.port_counters(1).tx_bytes, 7u * 64);
    EXPECT_EQ(agent.port_counters(1).tx_dropped, 3u);
    EXPECT_EQ(agent.port_counters(0).tx_packets, 0u);
    auto out = p1.take();
    ASSERT_EQ(out.size(), 7u);
    for (size_t i = 0; i < out.size(); i++) {
      EXPECT_EQ(seq_of(out[i]), i);
      rte_pktmbuf_free(out[i]);
    }
    // More than a queue's worth before a flush: drained on the way, nothing lost.
    test::RingPort big0, big1(1024);
    InterfaceAgent agent2(two_ports(big0, big1));
    for (uint64_t i = 0; i < 300; i++) agent2.tx(0, 1, seq_pkt(i), 0);
    agent2.flush(0);
    auto out2 = big1.take();
    ASSERT_EQ(out2.size(), 300u);
    for (size_t i = 0; i < out2.size(); i++) {
      EXPECT_EQ(seq_of(out2[i]), i);
      rte_pktmbuf_free(out2[i]);
    }
  }
  EXPECT_EQ(rte_mempool_avail_count(test::test_pool()), avail) << "dropped packets are freed";
}

TEST(Agent, StrictHoldsUntilAckedInOrder) {
  test::RingPort p0, p1;
  ASSERT_TRUE(p0.ok() && p1.ok());
  AgentConfig c = two_ports(p0, p1);
  c.strict = true;
  InterfaceAgent agent(c);
  EXPECT_TRUE(agent.strict());
  agent.tx(0, 1, seq_pkt(0), 0);  // depends on nothing: leaves
  agent.tx(0, 1, seq_pkt(1), 3);
  agent.tx(0, 0, seq_pkt(2), 4);
  agent.tx(0, 1, seq_pkt(3), 3);
  agent.tx(0, 1, seq_pkt(4), 5);
  agent.flush(0);
  auto out = p1.take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(seq_of(out[0]), 0u);
  rte_pktmbuf_free(out[0]);
  EXPECT_EQ(agent.worker_counters(0).held.load(), 4u);
  agent.set_acked_epoch(3);
  EXPECT_EQ(agent.acked_epoch(), 3u);
  agent.flush(0);
  out = p1.take();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(seq_of(out[0]), 1u);
  EXPECT_EQ(seq_of(out[1]), 3u);
  for (auto *m : out) rte_pktmbuf_free(m);
  EXPECT_EQ(p0.tx_count(), 0u);
  EXPECT_EQ(agent.worker_counters(0).held_now.load(), 2u);
  // A new packet at an acknowledged epoch passes at once; the later ones still wait.
  agent.tx(0, 1, seq_pkt(5), 2);
  agent.flush(0);
  out = p1.take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(seq_of(out[0]), 5u);
  rte_pktmbuf_free(out[0]);
  agent.set_acked_epoch(10);
  agent.flush(0);
  out = p1.take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(seq_of(out[0]), 4u);
  rte_pktmbuf_free(out[0]);
  out = p0.take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(seq_of(out[0]), 2u);
  rte_pktmbuf_free(out[0]);
  EXPECT_EQ(agent.worker_counters(0).released.load(), 4u);
  EXPECT_EQ(agent.worker_counters(0).held_now.load(), 0u);
}

// tx_burst (the NF fast path's output): a burst nobody has to wait for is queued whole, in
// order, behind what was queued before; in strict mode a burst with a newer dependency holds
// each packet on its own epoch, so the ones already acknowledged still leave at once; a burst
// larger than the queue's room drains the queue first and loses nothing.
TEST(Agent, TxBurstQueuesInOrderAndHoldsEachPacketOnItsOwnEpoch) {
  test::RingPort p0, p1;
  ASSERT_TRUE(p0.ok() && p1.ok());
  AgentConfig c = two_ports(p0, p1);
  c.strict = true;
  InterfaceAgent agent(c);
  agent.set_acked_epoch(2);
  agent.flush(0);  // the worker sees the acknowledgement
  agent.tx(0, 1, seq_pkt(0), 0);
  rte_mbuf *b[3] = {seq_pkt(1), seq_pkt(2), seq_pkt(3)};
  const uint64_t dep_old[3] = {1, 2, 0};
  agent.tx_burst(0, 1, b, dep_old, 3, 3 * 64);
  agent.flush(0);
  auto out = p1.take();
  ASSERT_EQ(out.size(), 4u);
  for (uint64_t i = 0; i < 4; i++) EXPECT_EQ(seq_of(out[i]), i);
  for (auto *m : out) rte_pktmbuf_free(m);
  EXPECT_EQ(agent.worker_counters(0).held.load(), 0u);

  rte_mbuf *h[3] = {seq_pkt(4), seq_pkt(5), seq_pkt(6)};
  const uint64_t dep_new[3] = {2, 5, 1};
  agent.tx_burst(0, 1, h, dep_new, 3, 3 * 64);
  agent.flush(0);
  out = p1.take();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(seq_of(out[0]), 4u);
  EXPECT_EQ(seq_of(out[1]), 6u);
  for (auto *m : out) rte_pktmbuf_free(m);
  EXPECT_EQ(agent.worker_counters(0).held_now.load(), 1u);
  agent.set_acked_epoch(5);
  agent.flush(0);
  out = p1.take();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(seq_of(out[0]), 5u);
  for (auto *m : out) rte_pktmbuf_free(m);

  // The queue holds kBurst * 4; fill it to within 10 and send a burst of kBurst.
  const unsigned before = kBurst * 4 - 10;
  for (unsigned i = 0; i < before; i++) agent.tx(0, 0, seq_pkt(100 + i), 0);
  std::vector<rte_mbuf *> big(kBurst);
  std::vector<uint64_t> deps(kBurst, 0);
  for (unsigned i = 0; i < kBurst; i++) big[i] = seq_pkt(100 + before + i);
  agent.tx_burst(0, 0, big.data(), deps.data(), kBurst, kBurst * 64);
  agent.flush(0);
  out = p0.take();
  ASSERT_EQ(out.size(), before + kBurst);
  for (unsigned i = 0; i < out.size(); i++) EXPECT_EQ(seq_of(out[i]), 100u + i);
  for (auto *m : out) rte_pktmbuf_free(m);
  EXPECT_EQ(agent.port_counters(0).tx_dropped, 0u);
  // Bytes are counted as packets are queued, whichever way they came.
  EXPECT_EQ(agent.port_counters(0).tx_packets, before + kBurst);
  EXPECT_EQ(agent.port_counters(0).tx_bytes, (before + kBurst) * 64u);
  EXPECT_EQ(agent.port_counters(1).tx_packets, 7u);
  EXPECT_EQ(agent.port_counters(1).tx_bytes, 7u * 64u);
}

// Strict mode's wake-up: the first packet held after a cut bumps the hold signal and wakes a
// waiting checkpoint thread; more held packets in the same cut do not; the next cut re-arms
// it; with nothing waiting, no wake-up is made (no system call on the worker). The oldest and newest held stamps and the release lag follow the hold.
TEST(Agent, TheFirstHeldPacketAfterACutWakesTheCheckpointThread) {
  test::RingPort p0, p1;
  ASSERT_TRUE(p0.ok() && p1.ok());
  AgentConfig c = two_ports(p0, p1);
  c.strict = true;
  InterfaceAgent agent(c);
  EXPECT_EQ(agent.oldest_held_ns(), 0u);
  const uint32_t s0 = agent.hold_signal();
  // A waiter that nothing wakes waits out its timeout.
  auto t0 = std::chrono::steady_clock::now();
  agent.wait_hold_signal(s0, 20ms);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 15ms);
  // A waiter woken by the first held packet.
  std::atomic<bool> woke{false};
  std::thread waiter([&] {
    agent.wait_hold_signal(s0, 10s);
    woke.store(true);
  });
  std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(woke.load());
  const uint64_t before = InterfaceAgent::clock_ns();
  agent.tx(0, 1, seq_pkt(1), 1);
  waiter.join();
  EXPECT_TRUE(woke.load());
  EXPECT_EQ(agent.hold_signal(), s0 + 1);
  EXPECT_EQ(agent.hold_wakes(), 1u);
  const uint64_t first = agent.oldest_held_ns();
  EXPECT_GE(first, before);
  agent.tx(0, 1, seq_pkt(2), 1);
  EXPECT_EQ(agent.hold_signal(), s0 + 1) << "a second held packet in the same cut signalled again";
  EXPECT_EQ(agent.oldest_held_ns(), first);
  EXPECT_GE(agent.newest_held_ns(), first);
  // With the signal already moved on, a wait returns at once.
  t0 = std::chrono::steady_clock::now();
  agent.wait_hold_signal(s0, 10s);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  agent.mark_cut();
  agent.tx(0, 1, seq_pkt(3), 2);
  EXPECT_EQ(agent.hold_signal(), s0 + 2) << "the next cut's first held packet did not signal";
  EXPECT_EQ(agent.hold_wakes(), 1u) << "a wake-up was made with nothing waiting";
  // Released: the oldest stamp moves to what is still held, then clears; the lag is counted.
  agent.set_acked_epoch(1);
  agent.flush(0);
  EXPECT_GT(agent.oldest_held_ns(), first);
  EXPECT_EQ(agent.worker_counters(0).releases.load(), 1u);
  agent.set_acked_epoch(2);
  agent.flush(0);
  EXPECT_EQ(agent.oldest_held_ns(), 0u);
  EXPECT_EQ(agent.worker_counters(0).releases.load(), 2u);
  for (auto *m : p1.take()) rte_pktmbuf_free(m);
}

TEST(Agent, HoldFullDropsOrSendsPerFallback) {
  test::RingPort p0, p1;
  ASSERT_TRUE(p0.ok() && p1.ok());
  const unsigned avail = rte_mempool_avail_count(test::test_pool());
  for (HoldFallback fb : {HoldFallback::DROP, HoldFallback::RELAXED}) {
    AgentConfig c = two_ports(p0, p1);
    c.strict = true;
    c.hold_capacity = 2;
    c.fallback = fb;
    InterfaceAgent agent(c);
    for (uint64_t i = 0; i < 3; i++) agent.tx(0, 1, seq_pkt(i), 7);
    agent.flush(0);
    EXPECT_EQ(agent.worker_counters(0).hold_full.load(), 1u);
    auto out = p1.take();
    if (fb == HoldFallback::DROP) {
      EXPECT_TRUE(out.empty()) << "strict to the end";
    } else {
      ASSERT_EQ(out.size(), 1u) << "availability first";
      EXPECT_EQ(seq_of(out[0]), 2u);
    }
    for (auto *m : out) rte_pktmbuf_free(m);
    agent.set_acked_epoch(7);
    agent.flush(0);
    out = p1.take();
    ASSERT_EQ(out.size(), 2u);
    EXPECT_EQ(seq_of(out[0]), 0u);
    EXPECT_EQ(seq_of(out[1]), 1u);
    for (auto *m : out) rte_pktmbuf_free(m);
  }
  EXPECT_EQ(rte_mempool_avail_count(test::test_pool()), avail);
}

TEST(Agent, DestructorFreesHeldAndQueuedPackets) {
  test::RingPort p0, p1;
  ASSERT_TRUE(p0.ok() && p1.ok());
  const unsigned avail = rte_mempool_avail_count(test::test_pool());
  {
    AgentConfig c = two_ports(p0, p1);
    c.strict = true;
    InterfaceAgent agent(c);
    for (uint64_t i = 0; i < 5; i++) agent.tx(0, 1, seq_pkt(i), 9);  // held
    for (uint64_t i = 0; i < 5; i++) agent.tx(0, 0, seq_pkt(i), 0);  // queued, not flushed
    EXPECT_LT(rte_mempool_avail_count(test::test_pool()), avail);
  }
  EXPECT_EQ(rte_mempool_avail_count(test::test_pool()), avail);
  EXPECT_EQ(p0.tx_count() + p1.tx_count(), 0u);
}

/* A worker-like loop forwards port 0 to port 1 while the main thread feeds N numbered packets
 * and quiesces/resumes 1,000 times. Every packet arrives exactly once, in order, and nothing
 * moves while the worker is parked. Before each quiesce the main thread waits until the worker
 * has left the previous barrier (its loop counter moved), so every cycle really interrupts a
 * forwarding worker (back-to-back cycles are BackToBackResumeQuiesceDoesNotTimeOut). */
TEST(Agent, NoPacketLostOrDuplicatedAcrossQuiesceCycles) {
  test::RingPort p0(1024), p1(16384);  // the tx ring outsizes the pool: it never overflows
  ASSERT_TRUE(p0.ok() && p1.ok());
  const unsigned avail = rte_mempool_avail_count(test::test_pool());
  InterfaceAgent agent(two_ports(p0, p1));
  std::atomic<bool> stop{false};
  std::thread worker([&] {
    rte_mbuf *pkts[kBurst];
    while (!stop.load(std::memory_order_acquire)) {
      agent.heartbeat(0);
      agent.barrier_point(0);
      uint16_t n = agent.rx(0, 0, pkts, kBurst);
      for (uint16_t i = 0; i < n; i++) agent.tx(0, 1, pkts[i], 0);
      agent.flush(0);
    }
    agent.flush(0);
  });

  constexpr uint64_t N = 100000;
  constexpr unsigned kCycles = 1000;
  uint64_t next = 0, received = 0, expect_seq = 0;
  unsigned cycles = 0, ok_cycles = 0, timeouts = 0, moved_while_parked = 0, rx_while_parked = 0;
  bool order_ok = true, dup_or_gap = false;
  rte_mbuf *pending = nullptr;  // a packet that did not fit in the ring yet
  uint64_t loops_at_park = UINT64_MAX;

  auto feed = [&](unsigned max) {
    for (unsigned k = 0; k < max && (pending || next < N); k++) {
      if (!pending) {
        pending = seq_pkt(next);
        if (!pending) return;  // pool empty: drain first
        next++;
      }
      if (!p0.inject(pending)) return;  // ring full: retry later
      pending = nullptr;
    }
  };
  auto drain = [&] {
    void *objs[256];
    unsigned n;
    while ((n = rte_ring_dequeue_burst(p1.tx_ring(), objs, 256, nullptr)) > 0) {
      for (unsigned i = 0; i < n; i++) {
        auto *m = static_cast<rte_mbuf *>(objs[i]);
        uint64_t s = seq_of(m);
        if (s != expect_seq) {
          order_ok = false;
          dup_or_gap = true;
        }
        expect_seq = s + 1;
        received++;
        rte_pktmbuf_free(m);
      }
    }
  };

  while (next < N || pending || cycles < kCycles) {
    feed(64);
    drain();
    // Spread the cycles over the feed.
    if (cycles < kCycles && (next * kCycles >= uint64_t(cycles) * N || (next == N && !pending))) {
      // The worker must be past the last barrier (its heartbeat moved since it parked).
      const auto wait_until = std::chrono::steady_clock::now() + 2s;
      while (agent.loops(0) == loops_at_park && std::chrono::steady_clock::now() < wait_until)
        std::this_thread::yield();
      cycles++;
      if (agent.quiesce(1s) == 0) {
        loops_at_park = agent.loops(0);
        ok_cycles++;
        const uint64_t before = received + p1.tx_count();
        const unsigned ring_before = p0.rx_pending();
        feed(8);  // arrivals while parked stay in the ring
        rte_mbuf *probe[kBurst];
        if (agent.rx(0, 0, probe, kBurst) != 0) rx_while_parked++;
        for (int k = 0; k < 200; k++) rte_pause();
        if (received + p1.tx_count() != before) moved_while_parked++;
        if (p0.rx_pending() < ring_before) moved_while_parked++;
        agent.resume();
      } else {
        timeouts++;
      }
    }
  }
  // Let the worker finish what is in flight.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (received < N && std::chrono::steady_clock::now() < deadline) {
    drain();
    std::this_thread::yield();
  }
  stop.store(true, std::memory_order_release);
  worker.join();
  drain();

  EXPECT_EQ(cycles, kCycles);
  EXPECT_EQ(received, N) << "lost or duplicated packets";
  EXPECT_EQ(expect_seq, N);
  EXPECT_TRUE(order_ok && !dup_or_gap) << "out of order, duplicated or missing sequence numbers";
  EXPECT_EQ(rx_while_parked, 0u);
  EXPECT_EQ(moved_while_parked, 0u) << "packets moved while the worker was parked";
  EXPECT_EQ(agent.port_counters(0).rx_packets, N);
  EXPECT_EQ(agent.port_counters(1).tx_packets, N);
  EXPECT_EQ(agent.port_counters(1).tx_dropped, 0u);
  EXPECT_GT(agent.loops(0), 0u);
  EXPECT_EQ(p0.rx_pending(), 0u);
  EXPECT_EQ(ok_cycles, kCycles);
  EXPECT_EQ(timeouts, 0u);
  EXPECT_EQ(rte_mempool_avail_count(test::test_pool()), avail);
}

/* resume() immediately followed by quiesce(): a worker still spinning in barrier_point from the
 * first request has been parked all along, so the second quiesce must succeed, not time out. */
TEST(Agent, BackToBackResumeQuiesceDoesNotTimeOut) {
  test::RingPort p0, p1;
  ASSERT_TRUE(p0.ok() && p1.ok());
  InterfaceAgent agent(two_ports(p0, p1));
  ParkingWorker w(agent);
  ASSERT_EQ(agent.quiesce(2s), 0);
  unsigned timeouts = 0, i = 0;
  for (; i < 200 && timeouts == 0; i++) {
    agent.resume();
    if (agent.quiesce(2s) != 0) timeouts++;
  }
  agent.resume();
  EXPECT_EQ(timeouts, 0u) << "quiesce timed out at cycle " << i << " although the worker was parked";
}

}  // namespace
}  // namespace ftpair::dp
