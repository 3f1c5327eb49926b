// The derived indexes' table (dataplane/probe_table.h): after any sequence of claims and
// erasures every entry is found from its home and nothing else is, checked against a
// reference map. Hashes are drawn from a small set, so runs collide, merge and wrap around
// the table's end, which is where a backward-shift erase goes wrong if it does.
#include "dataplane/probe_table.h"

#include <functional>
#include <map>
#include <random>

#include <gtest/gtest.h>

namespace ftpair::dp {
namespace {

struct Hasher {};

// An entry that keeps its hash, as the mapping index's does.
struct E {
  uint32_t h;
  uint32_t key;  // 0: empty
  bool empty() const { return key == 0; }
  uint32_t hash(const Hasher &) const { return h; }
};

using Table = ProbeTable<E, Hasher>;

E *find(Table &t, uint32_t h, uint32_t key) {
  return t.find(h, [&](const E &e) { return e.key == key; });
}

void expect_matches(Table &t, const std::map<uint32_t, uint32_t> &ref, uint32_t key_space,
                    const std::function<uint32_t(uint32_t)> &hash_of, const char *when) {
  ASSERT_EQ(t.size(), ref.size()) << when;
  for (uint32_t k = 1; k <= key_space; k++) {
    const E *e = find(t, hash_of(k), k);
    if (ref.count(k)) {
      ASSERT_NE(e, nullptr) << when << ": key " << k << " lost";
      EXPECT_EQ(e->h, ref.at(k));
    } else {
      ASSERT_EQ(e, nullptr) << when << ": key " << k << " found after its erase";
    }
  }
}

void churn(uint32_t max, uint32_t key_space, const std::function<uint32_t(uint32_t)> &hash_of,
           unsigned seed) {
  Table t;
  ASSERT_TRUE(t.init(max));
  Hasher hs;
  std::map<uint32_t, uint32_t> ref;
  std::mt19937 rng(seed);
  for (int op = 0; op < 40000; op++) {
    const uint32_t k = 1 + rng() % key_space;
    E *e = find(t, hash_of(k), k);
    ASSERT_EQ(e != nullptr, ref.count(k) == 1) << "op " << op;
    if (e) {
      t.erase(e, hs);
      ref.erase(k);
    } else if (ref.size() < max) {
      E *c = t.claim(hash_of(k));
      ASSERT_NE(c, nullptr) << "refused below its size, op " << op;
      *c = E{hash_of(k), k};
      ref[k] = hash_of(k);
    } else {
      EXPECT_EQ(t.claim(hash_of(k)), nullptr) << "claimed past its size";
    }
    if (op % 997 == 0) expect_matches(t, ref, key_space, hash_of, "churn");
  }
  expect_matches(t, ref, key_space, hash_of, "end");
  // Emptied one by one, in key order: nothing left, and full again to the last entry.
  for (auto it = ref.begin(); it != ref.end(); it = ref.erase(it)) t.erase(find(t, it->second, it->first), hs);
  EXPECT_EQ(t.size(), 0u);
  for (uint32_t k = 1; k <= max; k++) {
    E *c = t.claim(hash_of(k));
    ASSERT_NE(c, nullptr) << k;
    *c = E{hash_of(k), k};
  }
  for (uint32_t k = 1; k <= max; k++) ASSERT_NE(find(t, hash_of(k), k), nullptr) << k;
}

TEST(ProbeTable, RandomHashesAgainstAReference) {
  churn(500, 1200, [](uint32_t k) { return k * 2654435761u; }, 1);
}

TEST(ProbeTable, FewHashesMakeLongRunsThatWrapAround) {
  // Eight distinct hashes, two of them homed at the table's last positions.
  churn(300, 700, [](uint32_t k) { return (k % 8) < 2 ? 0xffffffffu - (k % 8) : (k % 8) * 0x1f000000u; }, 2);
}

TEST(ProbeTable, EveryKeyOnOneHashFitsAndIsFound) {
  churn(200, 400, [](uint32_t) { return 0x80000000u; }, 3);
}

}  // namespace
}  // namespace ftpair::dp
