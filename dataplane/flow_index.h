/* The flow table's key index: FlowKey -> (slot << 1 | direction), two keys per flow.
 *
 * A bucketised hash in the manner of VPP's bihash, but without the keys: a bucket is one
 * cache line of seven entries, each the key's 32-bit hash and its value. The key itself is
 * in the flow record, which the caller reads next anyway, so the record verifies a match
 * (one line per lookup instead of a key array line and a record line).
 *
 * A bucket that fills chains to overflow buckets from a preallocated pool. Chains are
 * kept dense: an insert goes into the first empty entry, and a removal moves the chain's
 * last entry into the hole and returns an emptied overflow bucket to the pool. So a scan
 * stops at the first empty entry, and the buckets in use never exceed keys / 7: a pool of
 * that size means an insert never fails, whatever the distribution of the keys (rte_hash's
 * extendable table gives the same guarantee).
 *
 * The hash is CRC32-C over the 16-byte key (two crc32q) after adding a 64-bit secret, drawn
 * at creation, to each half. CRC alone is linear: with only a seed, which keys collide could
 * be worked out offline. The carries of the additions make that depend on the secret. This
 * is a hardening, not a cryptographic guarantee (a keyed PRF such as SipHash would be).
 *
 * Threading: one thread at a time (the flow table's writer); no concurrent readers. */
#pragma once

#include <nmmintrin.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>

namespace ftpair::dp {

class FlowIndex {
 public:
  static constexpr unsigned kWays = 7;
  static constexpr uint32_t kEmpty = UINT32_MAX;
  static constexpr uint32_t kNone = UINT32_MAX;

  struct alignas(64) Bucket {
    uint32_t sig[8];  // sig[7] unused (kept 0)
    uint32_t val[kWays];
    uint32_t next;    // overflow bucket index, or kNone
  };
  static_assert(sizeof(Bucket) == 64);

  // Room for max_keys keys. Returns false when memory cannot be had.
  bool init(uint32_t max_keys, uint64_t secret0, uint64_t secret1);
  size_t memory_bytes() const { return size_t(nb_ + pool_n_) * sizeof(Bucket) + size_t(pool_n_) * 4; }

  // 16-byte keys only (FlowKey).
  uint32_t hash(const void *key) const {
    uint64_t a, b;
    std::memcpy(&a, key, 8);
    std::memcpy(&b, static_cast<const char *>(key) + 8, 8);
    return hash(a, b);
  }
  // The same for a key given as its two 8-byte halves.
  uint32_t hash(uint64_t lo, uint64_t hi) const {
    return static_cast<uint32_t>(_mm_crc32_u64(_mm_crc32_u64(seed_, lo + secret_[0]), hi + secret_[1]));
  }
  const Bucket *bucket_of(uint32_t h) const { return &b_[h & mask_]; }

  /* Candidate entries of a bucket for hash h, as a bit mask over kWays (may include
   * false matches; the caller verifies). */
  static inline unsigned match(const Bucket &b, uint32_t h) {
    const __m128i v = _mm_set1_epi32(static_cast<int>(h));
    const __m128i lo = _mm_cmpeq_epi32(_mm_load_si128(reinterpret_cast<const __m128i *>(&b.sig[0])), v);
    const __m128i hi = _mm_cmpeq_epi32(_mm_load_si128(reinterpret_cast<const __m128i *>(&b.sig[4])), v);
    return static_cast<unsigned>(_mm_movemask_ps(_mm_castsi128_ps(lo)) |
                                 (_mm_movemask_ps(_mm_castsi128_ps(hi)) << 4)) & 0x7f;
  }
  // True when the bucket is full (its chain may go on).
  static inline bool full(const Bucket &b) { return b.val[kWays - 1] != kEmpty; }

  /* The value whose key hashes to h and satisfies eq(value), or kEmpty. */
  template <typename Eq> uint32_t find(uint32_t h, Eq &&eq) const {
    const Bucket *b = &b_[h & mask_];
    for (;;) {
      for (unsigned m = match(*b, h); m; m &= m - 1) {
        const uint32_t v = b->val[__builtin_ctz(m)];
        if (v != kEmpty && eq(v)) return v;
      }
      if (!full(*b) || b->next == kNone) return kEmpty;
      b = &b_[b->next];
    }
  }

  // Adds (h, val); the caller has checked the key is absent. 0 or -ENOSPC (cannot happen
  // while the keys stay within max_keys).
  int add(uint32_t h, uint32_t val);
  // Removes the entry (h, val). Returns false when it is not there.
  bool remove(uint32_t h, uint32_t val);
  // Empties the index.
  void clear();
  uint32_t overflow_in_use() const { return pool_n_ - pool_free_n_; }

 private:
  uint32_t alloc_overflow();
  std::unique_ptr<Bucket[]> b_;  // nb_ main buckets, then pool_n_ overflow buckets
  uint32_t nb_ = 0, mask_ = 0, seed_ = 0;
  uint64_t secret_[2] = {0, 0};
  uint32_t pool_n_ = 0;
  std::unique_ptr<uint32_t[]> pool_free_;
  uint32_t pool_free_n_ = 0;
};

}  // namespace ftpair::dp
