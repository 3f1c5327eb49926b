/* A bounded ARP table: 4-way set associative, keyed by IPv4 address.
 * A full set replaces its least recently confirmed entry; nothing ever grows. */
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include <rte_ether.h>

namespace ftpair::dp {

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

  // MAC for ip if known and fresh, else nullptr.
  const rte_ether_addr *lookup(uint32_t ip, uint64_t now_tsc) const;
  // Records ip -> mac (from ARP traffic). Returns 0, or -ENOSPC never: it evicts.
  void learn(uint32_t ip, const rte_ether_addr &mac, uint8_t port, uint64_t now_tsc);
  /* True when an ARP request for ip should go out now (none in the last retry_tsc).
   * Creates a pending entry, so the question is asked once per retry interval. */
  bool should_request(uint32_t ip, uint8_t port, uint64_t now_tsc, uint64_t retry_tsc);

  uint32_t capacity() const { return static_cast<uint32_t>(entries_.size()); }
  uint32_t valid_count(uint64_t now_tsc) const;
  uint64_t evictions() const { return evictions_; }
  template <typename F> void for_each(F &&f) const {
    for (const auto &e : entries_)
      if (e.ip && e.valid) f(e);
  }

 private:
  ArpEntry *find(uint32_t ip);
  const ArpEntry *find(uint32_t ip) const;
  ArpEntry *claim(uint32_t ip);

  std::vector<ArpEntry> entries_;
  uint32_t set_mask_;
  uint64_t timeout_tsc_;
  uint64_t evictions_ = 0;
};

}  // namespace ftpair::dp
