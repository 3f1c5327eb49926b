#include "dataplane/worker.h"

#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>

#include <rte_cycles.h>

namespace ftpair::dp {

/* Packets other workers handed to this one, in the order they were handed: runs of
 * received packets go through the NF a port's run at a time. */
static uint32_t take_handed_burst(WorkerContext &c, uint64_t now) {
  HandoffItem items[kBurst];
  rte_mbuf *run[kBurst];
  const unsigned k = c.shards->take(c.id, items, kBurst);
  unsigned n = 0;
  uint16_t run_port = 0;
  for (unsigned i = 0; i < k; i++) {
    const uint16_t port = items[i].meta & 1;
    const auto kind = Handed((items[i].meta >> 1) & 0x7f);
    if (n && (kind != Handed::RX || port != run_port)) {
      c.nf->process(run_port, run, static_cast<uint16_t>(n), now);
      n = 0;
    }
    switch (kind) {
      case Handed::RX:
        run_port = port;
        run[n++] = items[i].m;
        rte_prefetch0(rte_pktmbuf_mtod(items[i].m, void *));  // as InterfaceAgent::rx does
        break;
      case Handed::HAIRPIN: c.nf->hairpin_in(items[i].m, items[i].meta >> 8, now); break;
      case Handed::ARP_COPY: c.nf->learn_arp(port, items[i].m, now); break;
    }
  }
  if (n) c.nf->process(run_port, run, static_cast<uint16_t>(n), now);
  return k;
}

// Up to four bursts: the other workers together can hand over more than one per loop.
static uint32_t take_handed(WorkerContext &c, uint64_t now) {
  uint32_t got = 0;
  for (int i = 0; i < 4; i++) {
    const uint32_t k = take_handed_burst(c, now);
    got += k;
    if (k < kBurst) break;
  }
  return got;
}

// The worker's dataplane beat, sent like any output but never held (it depends on no epoch).
static void send_beat(WorkerContext &c, uint64_t now) {
  c.beat_next_tsc = now + c.beats->interval_tsc();
  if (rte_mbuf *m = c.beats->make(c.id, c.pool, now)) c.agent->tx(c.id, c.beat_port, m, 0);
}

uint32_t worker_iteration(WorkerContext &c) {
  rte_mbuf *pkts[kBurst];
  c.agent->heartbeat(c.id);
  c.agent->barrier_point(c.id);
  const uint64_t now = rte_rdtsc();
  if (__builtin_expect(now >= c.beat_next_tsc, 0)) send_beat(c, now);
  uint32_t handled = 0;
  const bool steer = c.shards != nullptr && c.shards->workers() > 1;
  for (uint16_t port = 0; port < c.agent->nb_ports(); port++) {
    const uint16_t n = c.agent->rx(c.id, port, pkts, kBurst);
    if (n) {
      handled += n;
      // Several workers: packets another worker owns go to it (the NF asks only of those
      // whose flow it does not hold); the rest stay.
      c.nf->receive(port, pkts, n, now);
    }
  }
  if (steer && !c.agent->quiesced()) handled += take_handed(c, now);
  c.agent->flush(c.id);
  uint32_t work = c.nf->housekeeping(now);
  if (c.flows->capture_pending())
    work += c.flows->capture_step(handled ? c.capture_budget : c.capture_budget * 16) + 1;
  return handled + work;
}

int worker_main(void *arg) {
  auto &c = *static_cast<WorkerContext *>(arg);
  c.tid.store(static_cast<int>(syscall(SYS_gettid)), std::memory_order_release);
  uint32_t idle = 0;
  while (!c.quit->load(std::memory_order_relaxed)) {
    if (worker_iteration(c)) {
      idle = 0;
      continue;
    }
    // Adaptive back-off: spin a while, then sleep longer and longer up to the ceiling, so
    // an idle daemon leaves the (shared) core to others.
    if (idle < UINT32_MAX) idle++;
    const uint32_t us = idle_nap_us(idle, c.idle_sleep_max_us);
    if (us == 0) continue;
    timespec ts{static_cast<time_t>(us / 1000000), static_cast<long>(us % 1000000) * 1000};
    c.napping.store(true, std::memory_order_relaxed);
    nanosleep(&ts, nullptr);
    c.napping.store(false, std::memory_order_relaxed);
    bump(c.idle_sleeps);
  }
  c.agent->flush(c.id);
  return 0;
}

}  // namespace ftpair::dp
