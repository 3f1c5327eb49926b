/* Session logging (RFC 6888 REQ-12): the NAT's mapping and session events, handed from a
 * worker to the exporter thread through a single-producer single-consumer ring.
 *
 * The worker pushes: no lock, no allocation, no syscall, never a wait. A full ring refuses
 * the event and counts it, so a slow or absent exporter costs the worker one compare. The
 * exporter thread (control/ipfix.h) drains each ring in bulk. One ring per worker.
 *
 * Each event carries the epoch it happened in, so the exporter can hold it until the standby
 * has acknowledged that epoch (the log's output commit), and the count of events pushed at a
 * cut is the IPFIX sequence number the standby continues from. */
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <type_traits>

namespace ftpair::dp {

/* What happened. The values are RFC 8158's natEvent codes (IANA "NAT Event Type"), so the
 * exporter copies them onto the wire unchanged. A mapping is the NAT44 BIB entry (inside
 * address and port <-> outside address and port); a session adds the external endpoint. */
enum SessionEventKind : uint8_t {
  kSessionCreate = 1,   // NAT44 session create
  kSessionDelete = 2,   // NAT44 session delete
  kMappingCreate = 6,   // NAT44 BIB create
  kMappingDelete = 7,   // NAT44 BIB delete
};

// True for the two session kinds (they carry ext_ip/ext_port), false for mapping kinds.
inline bool is_session_kind(uint8_t kind) { return kind == kSessionCreate || kind == kSessionDelete; }
// True for the four kinds above.
inline bool is_known_kind(uint8_t kind) { return is_session_kind(kind) || kind == kMappingCreate || kind == kMappingDelete; }

// One event. Addresses and ports in network byte order; ext_* are 0 for mapping events.
struct SessionEvent {
  uint64_t unix_ms;   // wall time of the event, milliseconds since the Unix epoch
  uint32_t in_ip;     // inside (pre-NAT) source
  uint32_t nat_ip;    // outside (post-NAT) source
  uint32_t ext_ip;    // the external peer (sessions only)
  uint16_t in_port;
  uint16_t nat_port;
  uint16_t ext_port;
  uint8_t kind;       // SessionEventKind
  uint8_t proto;      // IPPROTO_TCP, _UDP, _ICMP (ports are the ICMP query id then)
  uint32_t epoch;     // low 32 bits of the flow-table epoch the event belongs to
};
static_assert(std::is_trivially_copyable_v<SessionEvent> && std::is_standard_layout_v<SessionEvent>);
static_assert(sizeof(SessionEvent) == 32, "two events per cache line");

/* Wall-clock milliseconds from the TSC without a syscall on the worker: the control plane
 * samples (tsc, unix_ms) once and hands the anchor to the worker. It drifts from NTP time at
 * the TSC's accuracy; re-anchor (between bursts, e.g. during a quiesce) to bound the drift. */
struct TscUnixClock {
  uint64_t tsc0 = 0;
  uint64_t unix_ms0 = 0;
  uint64_t hz = 1;
  uint64_t unix_ms(uint64_t tsc) const {
    const uint64_t d = tsc - tsc0;
    return unix_ms0 + (d / hz) * 1000 + (d % hz) * 1000 / hz;
  }
};

class SessionEventRing {
 public:
  // capacity is rounded up to a power of two, at least 2. Allocates once, here.
  explicit SessionEventRing(size_t capacity);
  SessionEventRing(const SessionEventRing &) = delete;
  SessionEventRing &operator=(const SessionEventRing &) = delete;

  size_t capacity() const { return mask_ + 1; }

  // Producer only. Copies e in; false (and one more overflow) when the ring is full.
  bool push(const SessionEvent &e) {
    const uint64_t head = head_.load(std::memory_order_relaxed);
    if (head - tail_seen_ > mask_) {
      tail_seen_ = tail_.load(std::memory_order_acquire);
      if (head - tail_seen_ > mask_) {
        overflows_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
    }
    slots_[head & mask_] = e;
    head_.store(head + 1, std::memory_order_release);
    return true;
  }

  // Consumer only. Moves up to max events, oldest first, into out; returns how many.
  size_t pop_bulk(SessionEvent *out, size_t max);
  /* Consumer only. The same, but stops before the first event of an epoch after `through`
   * (compared mod 2^32): events leave in epoch order, as the producer pushed them. */
  size_t pop_bulk_through(SessionEvent *out, size_t max, uint32_t through);

  // Events waiting (a snapshot; exact only when neither side is moving).
  size_t size() const {
    return size_t(head_.load(std::memory_order_acquire) - tail_.load(std::memory_order_acquire));
  }
  // Events refused because the ring was full, since construction. Any thread.
  uint64_t overflows() const { return overflows_.load(std::memory_order_relaxed); }
  // Events accepted since construction. Any thread.
  uint64_t pushed() const { return head_.load(std::memory_order_relaxed); }

 private:
  // Producer's line: what it writes, and its stale copy of the consumer's position.
  alignas(64) std::atomic<uint64_t> head_{0};
  uint64_t tail_seen_ = 0;
  std::atomic<uint64_t> overflows_{0};
  // Consumer's line.
  alignas(64) std::atomic<uint64_t> tail_{0};
  uint64_t head_seen_ = 0;
  // Shared, read-only after construction.
  alignas(64) uint64_t mask_;
  std::unique_ptr<SessionEvent[]> slots_;
};

}  // namespace ftpair::dp
