/* The worker loop: short and flat. Each worker has its own cache-aligned context. */
#pragma once

#include <atomic>
#include <cstdint>

#include "dataplane/agent.h"
#include "dataplane/dp_beat.h"
#include "dataplane/flow_table.h"
#include "dataplane/nf.h"
#include "dataplane/shards.h"

namespace ftpair::dp {

struct alignas(64) WorkerContext {
  unsigned id = 0;
  InterfaceAgent *agent = nullptr;
  Nat44 *nf = nullptr;
  FlowTable *flows = nullptr;
  Shards *shards = nullptr;  // several workers: steering and hand-off (nullptr: one worker)
  const std::atomic<bool> *quit = nullptr;
  uint32_t idle_sleep_max_us = 100;  // adaptive back-off ceiling when no packets arrive
  uint32_t capture_budget = 256;     // records copied per loop while a capture is pending
  /* Dataplane beats (dataplane/dp_beat.h): this worker sends one on beat_port every interval.
   * beat_next_tsc is UINT64_MAX without beats, so the loop's check is one compare. */
  DpBeatBoard *beats = nullptr;
  rte_mempool *pool = nullptr;
  uint16_t beat_port = 0;
  uint64_t beat_next_tsc = UINT64_MAX;
  std::atomic<uint64_t> idle_sleeps{0};
  std::atomic<int> tid{0};  // the worker thread's kernel id, once it runs (stall diagnosis)
  // True while the idle loop naps (nanosleep): a probe's answer tells a nap from a block
  // without asking the kernel, which may wait for the thread to leave its CPU.
  std::atomic<bool> napping{false};
};

/* The idle loop's nap after `idle` loops in a row found nothing (0: none, spin): 64 spins, then
 * 16 naps each of 1, 2, 4, ... us, doubling up to max_us (worker.idle_sleep_max_us, up to 100 ms;
 * 0: never nap). */
inline uint32_t idle_nap_us(uint32_t idle, uint32_t max_us) {
  if (idle < 64 || max_us == 0) return 0;
  const uint32_t step = (idle - 64) / 16;
  const uint32_t us = step < 17 ? 1u << step : 1u << 17;
  return us < max_us ? us : max_us;
}

// Runs until *ctx->quit. Usable with rte_eal_remote_launch (arg = WorkerContext*).
int worker_main(void *ctx);
// One iteration (tests and benchmarks drive the loop by hand). Returns packets handled.
uint32_t worker_iteration(WorkerContext &ctx);

}  // namespace ftpair::dp
