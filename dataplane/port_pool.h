/* The outside ports in use, per pool address and protocol, and which flow bucket holds each.
 *
 * With one worker a table has a pool of its own. With several, every worker's table shares
 * one pool: a port is claimed with one atomic OR, so two workers never hand out the same
 * outside endpoint, and the owner byte tells any worker which bucket (and so which worker)
 * holds the flows of an outside endpoint. That is how a WAN packet finds its worker (see
 * shards.h).
 *
 * Threading: any thread. Bits and owner bytes are relaxed atomics: a claim is exact (the OR
 * returns the old word); an owner read may be a moment old, which only means a packet racing
 * the creation of its own flow's mapping is handled as if it came a moment earlier. */
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include <netinet/in.h>

namespace ftpair::dp {

// The flows of a LAN host live in one of kBuckets buckets; a bucket belongs to one worker.
inline constexpr unsigned kBuckets = 64;
static_assert((kBuckets & (kBuckets - 1)) == 0);
// The bucket of a LAN host (in_ip, network order): a fixed hash, the same on both nodes.
uint8_t host_bucket(uint32_t in_ip);

inline int proto_slot(uint8_t proto) {
  return proto == IPPROTO_TCP ? 0 : proto == IPPROTO_UDP ? 1 : proto == IPPROTO_ICMP ? 2 : -1;
}

class PortPool {
 public:
  explicit PortPool(const std::vector<uint32_t> &addrs);

  const std::vector<uint32_t> &addresses() const { return addrs_; }
  // Index of a pool address (network order), or -1.
  int index(uint32_t nat_ip) const {
    for (size_t i = 0; i < addrs_.size(); i++)
      if (addrs_[i] == nat_ip) return static_cast<int>(i);
    return -1;
  }
  // Word w (ports 64w..64w+63) of the used-port bitmap.
  uint64_t word(int a, int pi, unsigned w) const {
    return bits_[(size_t(a) * 3 + pi) * 1024 + w].load(std::memory_order_relaxed);
  }
  // Marks port (host order) used; true when it was free (the caller now holds it).
  // Acquire, release: a claim that finds the bit cleared comes after the release's owner
  // store, so the releaser cannot wipe the owner byte the new holder is about to write.
  bool claim(int a, int pi, uint16_t port) {
    const uint64_t bit = 1ull << (port % 64);
    return !(bits_[(size_t(a) * 3 + pi) * 1024 + port / 64].fetch_or(bit, std::memory_order_acquire) & bit);
  }
  void release(int a, int pi, uint16_t port) {
    owner_[(size_t(a) * 3 + pi) * 65536 + port].store(0, std::memory_order_relaxed);
    bits_[(size_t(a) * 3 + pi) * 1024 + port / 64].fetch_and(~(1ull << (port % 64)), std::memory_order_release);
  }
  // Records which bucket holds the flows of (address, protocol, port).
  void set_owner(int a, int pi, uint16_t port, uint8_t bucket) {
    owner_[(size_t(a) * 3 + pi) * 65536 + port].store(static_cast<uint8_t>(bucket + 1), std::memory_order_relaxed);
  }
  // The bucket of an outside endpoint (port in host order), or -1 when no flow holds it.
  int owner(int a, int pi, uint16_t port) const {
    return int(owner_[(size_t(a) * 3 + pi) * 65536 + port].load(std::memory_order_relaxed)) - 1;
  }
  // Bytes this pool takes (for the memory accounting in BENCHMARKS).
  size_t bytes() const { return addrs_.size() * 3 * (1024 * 8 + 65536); }

 private:
  std::vector<uint32_t> addrs_;
  std::unique_ptr<std::atomic<uint64_t>[]> bits_;
  std::unique_ptr<std::atomic<uint8_t>[]> owner_;
};

}  // namespace ftpair::dp
