/* A bounded ARP table: 4-way set associative, keyed by IPv4 address.
 * A full set replaces its least recently confirmed entry; nothing ever grows.
 *
 * Threading: one writer, the worker that owns the table (learn, should_request, and its own
 * lookups). Any other thread (metrics, status, a dump) may read it while the worker runs:
 * find, for_each, valid_count and evictions. Each entry is a seqlock over atomics: the
 * writer bumps the entry's sequence to odd, writes (release stores), and bumps it to even; a
 * reader copies the entry (acquire loads) and retries when the sequence moved. The worker
 * never waits for a reader; on x86 every one of these is a plain mov, so its extra cost per
 * entry written is two stores of the sequence. */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include <rte_ether.h>

#include "common/single_writer.h"

namespace ftpair::dp {

// A copy of one entry, consistent as of one instant.
struct ArpEntry {
  uint32_t ip = 0;  // network byte order; 0 = empty
  rte_ether_addr mac{};
  uint8_t valid = 0;          // MAC known
  uint8_t port = 0;           // side it was learnt on
  uint64_t confirmed_tsc = 0;
  uint64_t requested_tsc = 0; // last ARP request we sent for it
};

class ArpTable {
 public:
  // capacity is rounded up to a power of two, at least 4.
  ArpTable(uint32_t capacity, uint64_t timeout_tsc);

  // ---- the owning worker ----
  /* True when ip's MAC is known and fresh; *mac receives it (when not null), and *stale_from
   * the first tick at which this answer no longer holds, unless the entry changes first (when
   * not null). */
  bool lookup(uint32_t ip, uint64_t now_tsc, rte_ether_addr *mac = nullptr, uint64_t *stale_from = nullptr) const;
  /* Moves whenever an answer lookup() gave may stop holding before its stale_from: a valid
   * entry's MAC or port changed, or a slot was taken from another address. Not when an entry
   * is only confirmed again (its answer holds longer), nor when an address gets its first
   * MAC, new or pending (no answer was given for it). A cache of lookup()'s answers (the NF's
   * next hops) is good while this stays and the clock is before the earliest stale_from it
   * holds. */
  uint64_t changes() const { return changes_; }
  // Records ip -> mac (from ARP traffic). Never fails: a full set evicts.
  void learn(uint32_t ip, const rte_ether_addr &mac, uint8_t port, uint64_t now_tsc);
  /* True when an ARP request for ip should go out now (none in the last retry_tsc).
   * Creates a pending entry, so the question is asked once per retry interval. */
  bool should_request(uint32_t ip, uint8_t port, uint64_t now_tsc, uint64_t retry_tsc);

  // ---- any thread ----
  uint32_t capacity() const { return n_; }
  // Entries with a MAC that is still fresh at now_tsc.
  uint32_t valid_count(uint64_t now_tsc) const;
  uint64_t evictions() const { return evictions_.get(); }
  // A consistent copy of ip's entry, pending or resolved, fresh or not; false when absent.
  bool find(uint32_t ip, ArpEntry *out) const;
  // f(const ArpEntry &) for a copy of every entry with a MAC (fresh or not).
  template <typename F> void for_each(F &&f) const {
    for (uint32_t i = 0; i < n_; i++) {
      ArpEntry e;
      read(slots_[i], &e);
      if (e.ip && e.valid) f(e);
    }
  }

 private:
  struct alignas(32) Slot {
    std::atomic<uint32_t> seq{0};  // odd while the worker writes the entry
    std::atomic<uint32_t> ip{0};
    std::atomic<uint64_t> link{0};  // the MAC in the low 48 bits, valid at bit 48, port from bit 56
    std::atomic<uint64_t> confirmed_tsc{0};
    std::atomic<uint64_t> requested_tsc{0};
  };
  static_assert(sizeof(Slot) == 32);

  uint32_t set_of(uint32_t ip) const;
  Slot *find_slot(uint32_t ip) const;
  Slot *claim(uint32_t ip);  // inside a write section
  static void write_begin(Slot &s);
  static void write_end(Slot &s);
  static void read(const Slot &s, ArpEntry *out);

  std::unique_ptr<Slot[]> slots_;
  uint32_t n_ = 0;
  uint32_t set_mask_ = 0;
  uint64_t timeout_tsc_;
  SingleWriter<uint64_t> evictions_{0};
  uint64_t changes_ = 0;  // the owning worker's alone (changes())
};

}  // namespace ftpair::dp
