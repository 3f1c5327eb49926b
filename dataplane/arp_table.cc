#include "dataplane/arp_table.h"

#include <rte_hash_crc.h>

namespace ftpair::dp {

namespace {
constexpr uint32_t kWays = 4;
}

ArpTable::ArpTable(uint32_t capacity, uint64_t timeout_tsc) : timeout_tsc_(timeout_tsc) {
  uint32_t n = kWays;
  while (n < capacity) n <<= 1;
  entries_.resize(n);
  set_mask_ = n / kWays - 1;
}

const ArpEntry *ArpTable::find(uint32_t ip) const {
  uint32_t set = rte_hash_crc_4byte(ip, 0) & set_mask_;
  const ArpEntry *e = &entries_[set * kWays];
  for (uint32_t w = 0; w < kWays; w++)
    if (e[w].ip == ip) return &e[w];
  return nullptr;
}

ArpEntry *ArpTable::find(uint32_t ip) {
  return const_cast<ArpEntry *>(static_cast<const ArpTable *>(this)->find(ip));
}

ArpEntry *ArpTable::claim(uint32_t ip) {
  uint32_t set = rte_hash_crc_4byte(ip, 0) & set_mask_;
  ArpEntry *e = &entries_[set * kWays];
  ArpEntry *victim = &e[0];
  for (uint32_t w = 0; w < kWays; w++) {
    if (e[w].ip == 0) {
      victim = &e[w];
      break;
    }
    if (e[w].confirmed_tsc < victim->confirmed_tsc) victim = &e[w];
  }
  if (victim->ip != 0) evictions_++;
  *victim = ArpEntry{};
  victim->ip = ip;
  return victim;
}

const rte_ether_addr *ArpTable::lookup(uint32_t ip, uint64_t now_tsc) const {
  const ArpEntry *e = find(ip);
  if (e == nullptr || !e->valid) return nullptr;
  if (now_tsc - e->confirmed_tsc > timeout_tsc_) return nullptr;
  return &e->mac;
}

void ArpTable::learn(uint32_t ip, const rte_ether_addr &mac, uint8_t port, uint64_t now_tsc) {
  if (ip == 0) return;
  ArpEntry *e = find(ip);
  if (e == nullptr) e = claim(ip);
  e->mac = mac;
  e->valid = 1;
  e->port = port;
  e->confirmed_tsc = now_tsc;
}

bool ArpTable::should_request(uint32_t ip, uint8_t port, uint64_t now_tsc, uint64_t retry_tsc) {
  ArpEntry *e = find(ip);
  if (e == nullptr) {
    e = claim(ip);
    e->port = port;
    e->confirmed_tsc = now_tsc;  // keeps a fresh pending entry from being the next victim
  } else if (e->requested_tsc != 0 && now_tsc - e->requested_tsc < retry_tsc) {
    return false;
  }
  e->requested_tsc = now_tsc;
  return true;
}

uint32_t ArpTable::valid_count(uint64_t now_tsc) const {
  uint32_t n = 0;
  for (const auto &e : entries_)
    if (e.ip && e.valid && now_tsc - e.confirmed_tsc <= timeout_tsc_) n++;
  return n;
}

}  // namespace ftpair::dp
