// The flow key index (dataplane/flow_index.h): every key found after any sequence of adds
// and removes, chains dense, and the overflow pool enough for the worst case (every key
// in one bucket), checked against a reference map.
#include "dataplane/flow_index.h"

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

namespace ftpair::dp {
namespace {

// Values that are in the index under hash h (the caller's "verify" accepts any value in want).
std::set<uint32_t> found(const FlowIndex &ix, uint32_t h, const std::set<uint32_t> &want) {
  std::set<uint32_t> out;
  for (uint32_t v : want)
    if (ix.find(h, [&](uint32_t c) { return c == v; }) == v) out.insert(v);
  return out;
}

TEST(FlowIndex, EveryKeyInOneChainFitsAndIsFound) {
  constexpr uint32_t kMax = 700;  // keys; 100 overflow buckets + 1
  FlowIndex ix;
  ASSERT_TRUE(ix.init(kMax, 1, 2));
  const uint32_t h = 0xdeadbeef;
  std::set<uint32_t> in;
  for (uint32_t v = 0; v < kMax; v++) {
    ASSERT_EQ(ix.add(h, v), 0) << v;
    in.insert(v);
  }
  EXPECT_EQ(found(ix, h, in), in);
  EXPECT_EQ(ix.overflow_in_use(), (kMax - 1) / FlowIndex::kWays);
  // Remove in random order: every remaining key still found, emptied buckets returned.
  std::vector<uint32_t> order(in.begin(), in.end());
  std::mt19937 rng(3);
  std::shuffle(order.begin(), order.end(), rng);
  for (size_t i = 0; i < order.size(); i++) {
    ASSERT_TRUE(ix.remove(h, order[i]));
    in.erase(order[i]);
    EXPECT_FALSE(ix.remove(h, order[i])) << "removed twice";
    if (i % 50 == 0) {
      EXPECT_EQ(found(ix, h, in), in) << "after " << i + 1 << " removals";
    }
    const uint32_t n = static_cast<uint32_t>(in.size());
    EXPECT_EQ(ix.overflow_in_use(), n <= FlowIndex::kWays ? 0 : (n - 1) / FlowIndex::kWays) << "chain not dense";
  }
  EXPECT_EQ(ix.overflow_in_use(), 0u);
  // Full again after churn: the pool came back whole.
  for (uint32_t v = 0; v < kMax; v++) ASSERT_EQ(ix.add(h, v + 5000), 0);
}

TEST(FlowIndex, RandomChurnAgainstAReference) {
  constexpr uint32_t kMax = 4096;
  FlowIndex ix;
  ASSERT_TRUE(ix.init(kMax, 7, 8));
  std::mt19937 rng(11);
  std::map<uint32_t, uint32_t> ref;  // value -> hash
  uint32_t next = 0;
  for (int step = 0; step < 200000; step++) {
    const bool add = ref.size() < kMax && (ref.empty() || rng() % 100 < 55);
    if (add) {
      // Few distinct hashes, so chains and false matches are common.
      const uint32_t h = (rng() % 64) * 0x10001u + (rng() % 3);
      ASSERT_EQ(ix.add(h, next), 0);
      ref[next++] = h;
    } else {
      auto it = ref.begin();
      std::advance(it, rng() % ref.size());
      ASSERT_TRUE(ix.remove(it->second, it->first));
      ref.erase(it);
    }
    if (step % 997 == 0) {
      for (auto &[v, h] : ref) ASSERT_EQ(ix.find(h, [&](uint32_t c) { return c == v; }), v);
    }
  }
  ix.clear();
  EXPECT_EQ(ix.overflow_in_use(), 0u);
  for (auto &[v, h] : ref) EXPECT_EQ(ix.find(h, [&](uint32_t c) { return c == v; }), FlowIndex::kEmpty);
}

}  // namespace
}  // namespace ftpair::dp
