#include "dataplane/port_pool.h"

#include <rte_hash_crc.h>

namespace ftpair::dp {

uint8_t host_bucket(uint32_t in_ip) {
  // Not secret: both nodes and every worker count must agree on it.
  return static_cast<uint8_t>(rte_hash_crc_4byte(in_ip, 0x6a09e667) & (kBuckets - 1));
}

PortPool::PortPool(const std::vector<uint32_t> &addrs)
    : addrs_(addrs),
      bits_(new std::atomic<uint64_t>[addrs.size() * 3 * 1024]),
      owner_(new std::atomic<uint8_t>[addrs.size() * 3 * 65536]) {
  for (size_t i = 0; i < addrs.size() * 3 * 1024; i++) bits_[i].store(0, std::memory_order_relaxed);
  for (size_t i = 0; i < addrs.size() * 3 * 65536; i++) owner_[i].store(0, std::memory_order_relaxed);
}

}  // namespace ftpair::dp
