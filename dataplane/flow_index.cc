#include "dataplane/flow_index.h"

#include <new>

namespace ftpair::dp {

namespace {
void bucket_reset(FlowIndex::Bucket &b) {
  for (unsigned i = 0; i < 8; i++) b.sig[i] = 0;
  for (unsigned i = 0; i < FlowIndex::kWays; i++) b.val[i] = FlowIndex::kEmpty;
  b.next = FlowIndex::kNone;
}
}  // namespace

bool FlowIndex::init(uint32_t max_keys, uint64_t secret0, uint64_t secret1) {
  /* Main buckets: a power of two with at most 6 keys per bucket on average when every key
   * is in (7 ways; a table runs below its capacity, and at 80% of it a bucket holds 2.4 to
   * 4.8 keys on average, so chains are rare). The pool covers the worst case: every key in
   * one chain. */
  uint32_t nb = 1;
  while (uint64_t(nb) * 6 < max_keys) nb <<= 1;
  const uint32_t pool = max_keys / kWays + 1;
  b_.reset(new (std::nothrow) Bucket[size_t(nb) + pool]);
  pool_free_.reset(new (std::nothrow) uint32_t[pool]);
  if (!b_ || !pool_free_) return false;
  nb_ = nb;
  mask_ = nb - 1;
  seed_ = static_cast<uint32_t>(secret0 ^ (secret1 >> 32));
  secret_[0] = secret0;
  secret_[1] = secret1;
  pool_n_ = pool;
  clear();
  return true;
}

void FlowIndex::clear() {
  for (uint32_t i = 0; i < nb_ + pool_n_; i++) bucket_reset(b_[i]);
  pool_free_n_ = 0;
  for (uint32_t i = pool_n_; i-- > 0;) pool_free_[pool_free_n_++] = nb_ + i;
}

uint32_t FlowIndex::alloc_overflow() {
  if (pool_free_n_ == 0) return kNone;
  const uint32_t i = pool_free_[--pool_free_n_];
  bucket_reset(b_[i]);
  return i;
}

int FlowIndex::add(uint32_t h, uint32_t val) {
  Bucket *b = &b_[h & mask_];
  for (;;) {
    for (unsigned i = 0; i < kWays; i++)
      if (b->val[i] == kEmpty) {
        b->sig[i] = h;
        b->val[i] = val;
        return 0;
      }
    if (b->next == kNone) {
      const uint32_t n = alloc_overflow();
      if (n == kNone) return -ENOSPC;
      b->next = n;
    }
    b = &b_[b->next];
  }
}

bool FlowIndex::remove(uint32_t h, uint32_t val) {
  Bucket *head = &b_[h & mask_];
  Bucket *hole_b = nullptr;
  unsigned hole_i = 0;
  // Find the entry, and the chain's last entry (the chain is dense).
  Bucket *prev = nullptr, *b = head, *last_b = nullptr, *last_prev = nullptr;
  unsigned last_i = 0;
  for (;;) {
    unsigned i = 0;
    for (; i < kWays && b->val[i] != kEmpty; i++)
      if (hole_b == nullptr && b->val[i] == val && b->sig[i] == h) {
        hole_b = b;
        hole_i = i;
      }
    if (i > 0) {
      last_b = b;
      last_i = i - 1;
      last_prev = prev;
    }
    if (i < kWays || b->next == kNone) break;
    prev = b;
    b = &b_[b->next];
  }
  if (hole_b == nullptr) return false;
  hole_b->sig[hole_i] = last_b->sig[last_i];
  hole_b->val[hole_i] = last_b->val[last_i];
  last_b->sig[last_i] = 0;
  last_b->val[last_i] = kEmpty;
  if (last_i == 0 && last_b != head) {
    // An emptied overflow bucket goes back to the pool.
    const uint32_t idx = static_cast<uint32_t>(last_b - b_.get());
    last_prev->next = kNone;
    pool_free_[pool_free_n_++] = idx;
  }
  return true;
}

}  // namespace ftpair::dp
