/* Clocks. Wall time only for what a person or another node reads (ages, timestamps on the
 * wire); every interval and deadline uses the monotonic clock. */
#pragma once

#include <chrono>
#include <cstdint>

namespace ftpair {

// Nanoseconds since the Unix epoch (CLOCK_REALTIME).
inline int64_t unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch()).count();
}

// Nanoseconds on the monotonic clock (CLOCK_MONOTONIC), for intervals.
inline int64_t mono_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Seconds between an earlier unix_ns() stamp and now; -1 when the stamp is 0 (never).
inline double age_seconds(int64_t stamp_unix_ns) {
  return stamp_unix_ns ? double(unix_ns() - stamp_unix_ns) / 1e9 : -1.0;
}

}  // namespace ftpair
