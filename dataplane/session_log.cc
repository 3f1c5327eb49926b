// The session-event ring (dataplane/session_log.h).
#include "dataplane/session_log.h"

#include <algorithm>
#include <cstring>

namespace ftpair::dp {

namespace {
size_t round_up_pow2(size_t n) {
  size_t c = 2;
  while (c < n) c <<= 1;
  return c;
}
}  // namespace

SessionEventRing::SessionEventRing(size_t capacity)
    : mask_(round_up_pow2(capacity) - 1), slots_(new SessionEvent[mask_ + 1]()) {}

size_t SessionEventRing::pop_bulk(SessionEvent *out, size_t max) {
  const uint64_t tail = tail_.load(std::memory_order_relaxed);
  if (head_seen_ - tail < max) head_seen_ = head_.load(std::memory_order_acquire);
  const size_t n = size_t(std::min<uint64_t>(head_seen_ - tail, max));
  if (n == 0) return 0;
  // At most two runs: up to the end of the array, then from its start.
  const size_t first = tail & mask_;
  const size_t run = std::min(n, size_t(mask_ + 1 - first));
  std::memcpy(out, &slots_[first], run * sizeof(SessionEvent));
  if (run < n) std::memcpy(out + run, &slots_[0], (n - run) * sizeof(SessionEvent));
  tail_.store(tail + n, std::memory_order_release);
  return n;
}

size_t SessionEventRing::pop_bulk_through(SessionEvent *out, size_t max, uint32_t through) {
  const uint64_t tail = tail_.load(std::memory_order_relaxed);
  if (head_seen_ - tail < max) head_seen_ = head_.load(std::memory_order_acquire);
  const size_t avail = size_t(std::min<uint64_t>(head_seen_ - tail, max));
  size_t n = 0;
  while (n < avail) {
    const SessionEvent &e = slots_[(tail + n) & mask_];
    if (static_cast<int32_t>(e.epoch - through) > 0) break;
    out[n++] = e;
  }
  if (n) tail_.store(tail + n, std::memory_order_release);
  return n;
}

}  // namespace ftpair::dp
