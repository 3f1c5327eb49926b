#include "dataplane/arp_table.h"

#include <cstring>
#include <thread>

#include <rte_hash_crc.h>
#include <rte_pause.h>

namespace ftpair::dp {

namespace {
constexpr uint32_t kWays = 4;
constexpr uint64_t kMacMask = (uint64_t(1) << 48) - 1;
constexpr uint64_t kValidBit = uint64_t(1) << 48;
constexpr unsigned kPortShift = 56;

uint64_t pack(const rte_ether_addr &mac, uint8_t valid, uint8_t port) {
  uint64_t v = 0;
  std::memcpy(&v, mac.addr_bytes, RTE_ETHER_ADDR_LEN);  // the low 48 bits, on this host
  return (v & kMacMask) | (valid ? kValidBit : 0) | (uint64_t(port) << kPortShift);
}
rte_ether_addr mac_of(uint64_t link) {
  rte_ether_addr m;
  const uint64_t v = link & kMacMask;
  std::memcpy(m.addr_bytes, &v, RTE_ETHER_ADDR_LEN);
  return m;
}
constexpr auto kRelaxed = std::memory_order_relaxed;
// Fields are stored with release inside a write section and loaded with acquire by readers
// (no standalone fences, which TSan cannot model); on x86 both are plain movs.
constexpr auto kPublish = std::memory_order_release;
constexpr auto kCopy = std::memory_order_acquire;
}  // namespace

ArpTable::ArpTable(uint32_t capacity, uint64_t timeout_tsc) : timeout_tsc_(timeout_tsc) {
  uint32_t n = kWays;
  while (n < capacity) n <<= 1;
  slots_ = std::make_unique<Slot[]>(n);
  n_ = n;
  set_mask_ = n / kWays - 1;
}

// ---------------------------------------------------------------- the seqlock

/* The seqlock with release field stores and acquire field loads: a reader that copies any
 * field of a write section also sees that section's odd sequence when it loads the sequence
 * again after the copy, so it retries; a copy between two sections is whole. */
void ArpTable::write_begin(Slot &s) { s.seq.store(s.seq.load(kRelaxed) + 1, kRelaxed); }

void ArpTable::write_end(Slot &s) { s.seq.store(s.seq.load(kRelaxed) + 1, std::memory_order_release); }

void ArpTable::read(const Slot &s, ArpEntry *out) {
  for (unsigned spins = 0;; spins++) {
    const uint32_t before = s.seq.load(std::memory_order_acquire);
    if ((before & 1) == 0) {
      const uint32_t ip = s.ip.load(kCopy);
      const uint64_t link = s.link.load(kCopy);
      const uint64_t confirmed = s.confirmed_tsc.load(kCopy);
      const uint64_t requested = s.requested_tsc.load(kCopy);
      if (s.seq.load(kRelaxed) == before) {
        out->ip = ip;
        out->mac = mac_of(link);
        out->valid = (link & kValidBit) ? 1 : 0;
        out->port = static_cast<uint8_t>(link >> kPortShift);
        out->confirmed_tsc = confirmed;
        out->requested_tsc = requested;
        return;
      }
    }
    // The worker is inside a few stores; on a shared CPU it may have lost its core there.
    if (spins < 64)
      rte_pause();
    else
      std::this_thread::yield();
  }
}

// ---------------------------------------------------------------- lookups

uint32_t ArpTable::set_of(uint32_t ip) const { return rte_hash_crc_4byte(ip, 0) & set_mask_; }

// Worker: its own writes need no sequence check. Other threads use read() on the result.
ArpTable::Slot *ArpTable::find_slot(uint32_t ip) const {
  Slot *e = &slots_[set_of(ip) * kWays];
  for (uint32_t w = 0; w < kWays; w++)
    if (e[w].ip.load(kRelaxed) == ip) return &e[w];
  return nullptr;
}

bool ArpTable::lookup(uint32_t ip, uint64_t now_tsc, rte_ether_addr *mac, uint64_t *stale_from) const {
  const Slot *e = find_slot(ip);
  if (e == nullptr) return false;
  const uint64_t link = e->link.load(kRelaxed);
  if (!(link & kValidBit)) return false;
  const uint64_t confirmed = e->confirmed_tsc.load(kRelaxed);
  if (now_tsc - confirmed > timeout_tsc_) return false;
  if (mac) *mac = mac_of(link);
  // Fresh while now - confirmed <= timeout: stale from the tick after (the sum saturates).
  if (stale_from) {
    const uint64_t s = confirmed + timeout_tsc_ + 1;
    *stale_from = s <= confirmed ? UINT64_MAX : s;
  }
  return true;
}

bool ArpTable::find(uint32_t ip, ArpEntry *out) const {
  if (ip == 0) return false;
  const Slot *e = &slots_[set_of(ip) * kWays];
  for (uint32_t w = 0; w < kWays; w++) {
    ArpEntry c;
    read(e[w], &c);
    if (c.ip == ip) {
      *out = c;
      return true;
    }
  }
  return false;
}

uint32_t ArpTable::valid_count(uint64_t now_tsc) const {
  uint32_t n = 0;
  for (uint32_t i = 0; i < n_; i++) {
    ArpEntry e;
    read(slots_[i], &e);
    if (e.ip && e.valid && now_tsc - e.confirmed_tsc <= timeout_tsc_) n++;
  }
  return n;
}

// ---------------------------------------------------------------- the worker's writes

ArpTable::Slot *ArpTable::claim(uint32_t ip) {
  Slot *e = &slots_[set_of(ip) * kWays];
  Slot *victim = &e[0];
  for (uint32_t w = 0; w < kWays; w++) {
    if (e[w].ip.load(kRelaxed) == 0) {
      victim = &e[w];
      break;
    }
    if (e[w].confirmed_tsc.load(kRelaxed) < victim->confirmed_tsc.load(kRelaxed)) victim = &e[w];
  }
  if (victim->ip.load(kRelaxed) != 0) {
    evictions_++;
    changes_++;  // the address it held has no answer now
  }
  write_begin(*victim);
  victim->ip.store(ip, kPublish);
  victim->link.store(0, kPublish);
  victim->confirmed_tsc.store(0, kPublish);
  victim->requested_tsc.store(0, kPublish);
  return victim;
}

void ArpTable::learn(uint32_t ip, const rte_ether_addr &mac, uint8_t port, uint64_t now_tsc) {
  if (ip == 0) return;
  Slot *e = find_slot(ip);
  const uint64_t link = pack(mac, 1, port);
  if (e == nullptr) {
    e = claim(ip);
  } else {
    // A new MAC or port for an address lookup() answered for. A pending entry that becomes
    // valid answered nothing (it was claimed, and any answer its address had went then).
    const uint64_t old = e->link.load(kRelaxed);
    if ((old & kValidBit) && old != link) changes_++;
    write_begin(*e);
  }
  e->link.store(link, kPublish);
  e->confirmed_tsc.store(now_tsc, kPublish);
  write_end(*e);
}

bool ArpTable::should_request(uint32_t ip, uint8_t port, uint64_t now_tsc, uint64_t retry_tsc) {
  Slot *e = find_slot(ip);
  if (e == nullptr) {
    e = claim(ip);
    e->link.store(pack(rte_ether_addr{}, 0, port), kPublish);
    e->confirmed_tsc.store(now_tsc, kPublish);  // keeps a fresh pending entry from being the next victim
  } else {
    const uint64_t last = e->requested_tsc.load(kRelaxed);
    if (last != 0 && now_tsc - last < retry_tsc) return false;
    write_begin(*e);
  }
  e->requested_tsc.store(now_tsc, kPublish);
  write_end(*e);
  return true;
}

}  // namespace ftpair::dp
