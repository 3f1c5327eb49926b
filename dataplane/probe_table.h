/* A small open-addressing table for the flow table's derived indexes (flow_table.cc): the
 * mappings by their inside and outside endpoints, the flows a mapping sends toward each
 * remote address, and the mapped flows of each LAN host.
 *
 * Entries are stored inline, as few bytes as each index needs (8 or 12); an all-zero entry
 * is empty. Linear probing from the home position of the entry's 32-bit hash (the hash
 * scaled to the table's size, so any size works). A removal shifts the entries after the
 * hole back toward their homes, so there are no tombstones and probe runs stay as short as
 * the load makes them.
 *
 * Sizing: room for max_entries at a load of at most 8/9. The owner knows the largest number
 * of entries its index can need (one per flow slot, or two), so an insert never fails, and
 * the table's memory is that bound's, fixed at creation. The hashes are keyed with the flow
 * index's secret (flow_index.h), so which keys share a run is not known in advance.
 *
 * The entry type E provides: bool empty() const; uint32_t hash(const Hasher &) const, the
 * same hash its key was looked up with (an entry that keeps its hash returns it).
 *
 * Threading: one thread at a time (the flow table's writer). */
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>

namespace ftpair::dp {

template <typename E, typename Hasher> class ProbeTable {
 public:
  // Room for max_entries. Returns false when memory cannot be had.
  bool init(uint32_t max_entries) {
    max_ = max_entries;
    n_ = max_entries + max_entries / 8 + 1;
    e_.reset(new (std::nothrow) E[n_]());
    used_ = 0;
    return bool(e_);
  }
  size_t memory_bytes() const { return size_t(n_) * sizeof(E); }
  uint32_t size() const { return used_; }

  // The entry on h's probe run for which match(entry) holds, or nullptr.
  template <typename M> E *find(uint32_t h, M &&match) {
    for (uint32_t i = home(h);;) {
      E &e = e_[i];
      if (e.empty()) return nullptr;
      if (match(e)) return &e;
      if (++i == n_) i = 0;
    }
  }
  template <typename M> const E *find(uint32_t h, M &&match) const {
    return const_cast<ProbeTable *>(this)->find(h, match);
  }

  /* An empty entry on h's probe run, for the caller to fill with a key that hashes to h and
   * is not in the table. nullptr only past max_entries (an owner's bug, not a load). */
  E *claim(uint32_t h) {
    if (used_ >= max_) return nullptr;
    uint32_t i = home(h);
    while (!e_[i].empty())
      if (++i == n_) i = 0;
    used_++;
    return &e_[i];
  }

  // Removes the entry e points at (from find). Pointers into the table are stale after.
  void erase(E *e, const Hasher &hs) {
    uint32_t hole = static_cast<uint32_t>(e - e_.get());
    uint32_t j = hole;
    for (;;) {
      if (++j == n_) j = 0;
      if (e_[j].empty()) break;
      const uint32_t k = home(e_[j].hash(hs));
      // Entry j stays when its home lies cyclically in (hole, j]: its run does not cross
      // the hole. Otherwise it moves into the hole, and its old place is the new hole.
      const bool stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
      if (stays) continue;
      e_[hole] = e_[j];
      hole = j;
    }
    e_[hole] = E{};
    used_--;
  }

  // Where h's probe run starts: for a prefetch ahead of a find or claim.
  const E *home_entry(uint32_t h) const { return &e_[home(h)]; }

  void clear() {
    for (uint32_t i = 0; i < n_; i++) e_[i] = E{};
    used_ = 0;
  }

 private:
  uint32_t home(uint32_t h) const { return static_cast<uint32_t>((uint64_t(h) * n_) >> 32); }
  std::unique_ptr<E[]> e_;
  uint32_t n_ = 0, max_ = 0, used_ = 0;
};

}  // namespace ftpair::dp
