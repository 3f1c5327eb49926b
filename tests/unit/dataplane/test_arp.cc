// The bounded ARP table (dataplane/arp_table.h).
#include "dataplane/arp_table.h"

#include <atomic>
#include <chrono>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "tests/unit/dataplane/pktgen.h"

namespace ftpair::dp {
namespace {

using test::ip4;
using test::mac;

constexpr uint64_t kT0 = 1'000'000;  // nonzero: 0 means "never" for requested_tsc
constexpr uint64_t kTimeout = 5000;

TEST(ArpTable, CapacityRoundsUpToPowerOfTwoAtLeastFour) {
  EXPECT_EQ(ArpTable(0, kTimeout).capacity(), 4u);
  EXPECT_EQ(ArpTable(1, kTimeout).capacity(), 4u);
  EXPECT_EQ(ArpTable(4, kTimeout).capacity(), 4u);
  EXPECT_EQ(ArpTable(5, kTimeout).capacity(), 8u);
  EXPECT_EQ(ArpTable(1000, kTimeout).capacity(), 1024u);
}

TEST(ArpTable, LearnLookupUpdate) {
  ArpTable t(64, kTimeout);
  const uint32_t a = ip4("198.18.1.10"), b = ip4("198.18.1.11");
  EXPECT_FALSE(t.lookup(a, kT0));
  t.learn(a, mac(2, 0, 0, 0, 0, 0xa), 0, kT0);
  rte_ether_addr m;
  ASSERT_TRUE(t.lookup(a, kT0, &m));
  EXPECT_TRUE(test::mac_eq(m, mac(2, 0, 0, 0, 0, 0xa)));
  EXPECT_FALSE(t.lookup(b, kT0));
  EXPECT_EQ(t.valid_count(kT0), 1u);
  // Re-learning replaces the MAC and does not add an entry.
  t.learn(a, mac(2, 0, 0, 0, 0, 0xb), 1, kT0 + 10);
  ASSERT_TRUE(t.lookup(a, kT0 + 10, &m));
  EXPECT_TRUE(test::mac_eq(m, mac(2, 0, 0, 0, 0, 0xb)));
  EXPECT_EQ(t.valid_count(kT0 + 10), 1u);
  unsigned seen = 0;
  t.for_each([&](const ArpEntry &e) {
    seen++;
    EXPECT_EQ(e.ip, a);
    EXPECT_EQ(e.port, 1);
  });
  EXPECT_EQ(seen, 1u);
  // Address 0 is never learnt.
  t.learn(0, mac(2, 0, 0, 0, 0, 0xc), 0, kT0);
  EXPECT_EQ(t.valid_count(kT0 + 10), 1u);
}

TEST(ArpTable, EntriesTimeOut) {
  ArpTable t(64, kTimeout);
  const uint32_t a = ip4("198.18.2.10");
  t.learn(a, mac(2, 0, 0, 0, 0, 1), 1, kT0);
  EXPECT_TRUE(t.lookup(a, kT0 + kTimeout)) << "fresh up to the timeout";
  EXPECT_FALSE(t.lookup(a, kT0 + kTimeout + 1)) << "stale after it";
  EXPECT_EQ(t.valid_count(kT0 + kTimeout + 1), 0u);
  // Confirmation refreshes it.
  t.learn(a, mac(2, 0, 0, 0, 0, 1), 1, kT0 + kTimeout + 2);
  EXPECT_TRUE(t.lookup(a, kT0 + kTimeout + 2));
}

/* changes() moves exactly when an answer lookup() gave may stop holding before its
 * stale_from (the NF's next-hop cache rests on it): a valid entry's new MAC or port, a slot
 * taken from another address (by learn() or should_request()); not for a new address, a
 * pending entry resolved, or a confirmation. */
TEST(ArpTable, ChangesMoveWhenAnAnswerMayNoLongerHold) {
  ArpTable t(4, kTimeout);  // one set of 4 ways
  const uint32_t a = ip4("10.0.0.1"), b = ip4("10.0.0.2"), c = ip4("10.0.0.3"), d = ip4("10.0.0.4");
  uint64_t n = t.changes();
  t.learn(a, mac(2, 0, 0, 0, 0, 1), 1, kT0);
  EXPECT_EQ(t.changes(), n) << "a new address";
  uint64_t until = 0;
  ASSERT_TRUE(t.lookup(a, kT0 + 10, nullptr, &until));
  EXPECT_EQ(until, kT0 + kTimeout + 1) << "the first tick at which lookup() no longer answers";
  EXPECT_TRUE(t.lookup(a, until - 1));
  EXPECT_FALSE(t.lookup(a, until));
  t.learn(a, mac(2, 0, 0, 0, 0, 1), 1, kT0 + 100);
  EXPECT_EQ(t.changes(), n) << "confirmed again";
  ASSERT_TRUE(t.lookup(a, kT0 + 100, nullptr, &until));
  EXPECT_EQ(until, kT0 + 100 + kTimeout + 1);
  t.learn(a, mac(2, 0, 0, 0, 0, 9), 1, kT0 + 200);
  EXPECT_EQ(t.changes(), ++n) << "a new MAC";
  t.learn(a, mac(2, 0, 0, 0, 0, 9), 0, kT0 + 300);
  EXPECT_EQ(t.changes(), ++n) << "a new port";
  for (uint32_t ip : {b, c, d}) t.learn(ip, mac(2, 0, 0, 0, 0, 2), 0, kT0 + 300);
  EXPECT_EQ(t.changes(), n) << "new addresses in free ways";
  t.learn(ip4("10.0.0.5"), mac(2, 0, 0, 0, 0, 5), 0, kT0 + 400);
  EXPECT_EQ(t.changes(), ++n) << "a slot taken from another address";
  EXPECT_TRUE(t.should_request(ip4("10.0.0.6"), 0, kT0 + 500, 1000));
  EXPECT_EQ(t.changes(), ++n) << "a slot taken for a pending entry";
  EXPECT_TRUE(t.should_request(ip4("10.0.0.6"), 0, kT0 + 2000, 1000));
  EXPECT_EQ(t.changes(), n) << "asked again: nothing answered changed";
  t.learn(ip4("10.0.0.6"), mac(2, 0, 0, 0, 0, 6), 0, kT0 + 2100);
  EXPECT_EQ(t.changes(), n) << "the pending entry resolved";
  EXPECT_TRUE(t.lookup(ip4("10.0.0.6"), kT0 + 2100));
  uint64_t far = 0;
  ArpTable long_lived(4, UINT64_MAX - 5);
  long_lived.learn(a, mac(2, 0, 0, 0, 0, 1), 1, kT0);
  ASSERT_TRUE(long_lived.lookup(a, kT0, nullptr, &far));
  EXPECT_EQ(far, UINT64_MAX) << "saturates";
  ArpTable forever(4, UINT64_MAX);  // confirmed + timeout + 1 is confirmed itself, wrapped
  forever.learn(a, mac(2, 0, 0, 0, 0, 1), 1, kT0);
  ASSERT_TRUE(forever.lookup(a, kT0, nullptr, &far));
  EXPECT_EQ(far, UINT64_MAX);
}

TEST(ArpTable, BoundedWithLeastRecentlyConfirmedEviction) {
  // Capacity 4 = one set of 4 ways: the fifth address evicts the least recently confirmed.
  ArpTable t(4, 1'000'000);
  const uint32_t ips[5] = {ip4("10.0.0.1"), ip4("10.0.0.2"), ip4("10.0.0.3"), ip4("10.0.0.4"),
                           ip4("10.0.0.5")};
  for (int i = 0; i < 4; i++) t.learn(ips[i], mac(2, 0, 0, 0, 0, uint8_t(i)), 0, kT0 + 100 - i * 10);
  // ips[3] has the oldest confirmation (kT0 + 70).
  EXPECT_EQ(t.evictions(), 0u);
  t.learn(ips[4], mac(2, 0, 0, 0, 0, 4), 0, kT0 + 200);
  EXPECT_EQ(t.evictions(), 1u);
  EXPECT_FALSE(t.lookup(ips[3], kT0 + 200));
  for (int i : {0, 1, 2, 4}) EXPECT_TRUE(t.lookup(ips[i], kT0 + 200)) << i;
  EXPECT_EQ(t.valid_count(kT0 + 200), 4u);

  // A large table under many addresses never grows and keeps at most capacity entries.
  ArpTable big(64, 1'000'000);
  for (uint32_t i = 1; i <= 1000; i++) big.learn(rte_cpu_to_be_32(0x0a000000 + i), mac(2, 0, 0, 0, 0, 1), 0, kT0 + i);
  EXPECT_EQ(big.capacity(), 64u);
  EXPECT_LE(big.valid_count(kT0 + 1000), 64u);
  EXPECT_GE(big.evictions(), 1000u - 64u);
  // The most recent address is always present.
  EXPECT_TRUE(big.lookup(rte_cpu_to_be_32(0x0a000000 + 1000), kT0 + 1000));
}

TEST(ArpTable, ShouldRequestIsRateLimited) {
  ArpTable t(64, kTimeout);
  const uint32_t a = ip4("198.18.2.20"), b = ip4("198.18.2.21");
  const uint64_t retry = 1000;
  EXPECT_TRUE(t.should_request(a, 1, kT0, retry));
  EXPECT_FALSE(t.should_request(a, 1, kT0 + 1, retry));
  EXPECT_FALSE(t.should_request(a, 1, kT0 + retry - 1, retry));
  EXPECT_TRUE(t.should_request(b, 1, kT0 + 1, retry)) << "limits are per address";
  EXPECT_TRUE(t.should_request(a, 1, kT0 + retry, retry)) << "asks again after the interval";
  EXPECT_FALSE(t.should_request(a, 1, kT0 + retry + 1, retry));
  // A pending entry is not a valid mapping.
  EXPECT_FALSE(t.lookup(a, kT0 + retry));
  EXPECT_EQ(t.valid_count(kT0 + retry), 0u);
  // The answer makes it valid.
  t.learn(a, mac(2, 0, 0, 0, 0, 9), 1, kT0 + retry + 2);
  EXPECT_TRUE(t.lookup(a, kT0 + retry + 2));
}

TEST(ArpTable, PendingEntryIsNotTheNextVictim) {
  ArpTable t(4, 1'000'000);
  for (uint32_t i = 1; i <= 3; i++) t.learn(rte_cpu_to_be_32(0x0a000000 + i), mac(2, 0, 0, 0, 0, 1), 0, kT0 + i);
  const uint32_t pending = rte_cpu_to_be_32(0x0a0000ff);
  EXPECT_TRUE(t.should_request(pending, 0, kT0 + 50, 1000));
  // The set is full; the next learn evicts the oldest confirmed entry, not the pending one.
  t.learn(rte_cpu_to_be_32(0x0a000004), mac(2, 0, 0, 0, 0, 1), 0, kT0 + 60);
  EXPECT_FALSE(t.lookup(rte_cpu_to_be_32(0x0a000001), kT0 + 60));
  EXPECT_FALSE(t.should_request(pending, 0, kT0 + 61, 1000)) << "pending entry survived";
}

TEST(ArpTable, FindCopiesAnyEntryPendingOrResolved) {
  ArpTable t(64, kTimeout);
  const uint32_t a = ip4("198.18.2.30"), b = ip4("198.18.2.31");
  ArpEntry e;
  EXPECT_FALSE(t.find(a, &e));
  EXPECT_FALSE(t.find(0, &e)) << "0 is the empty address, never an entry";
  ASSERT_TRUE(t.should_request(a, 1, kT0, 1000));
  ASSERT_TRUE(t.find(a, &e));
  EXPECT_EQ(e.ip, a);
  EXPECT_EQ(e.valid, 0);
  EXPECT_EQ(e.port, 1);
  EXPECT_EQ(e.requested_tsc, kT0);
  t.learn(b, mac(2, 0, 0, 0, 0, 0x31), 0, kT0 + 5);
  ASSERT_TRUE(t.find(b, &e));
  EXPECT_EQ(e.valid, 1);
  EXPECT_EQ(e.port, 0);
  EXPECT_EQ(e.confirmed_tsc, kT0 + 5);
  EXPECT_TRUE(test::mac_eq(e.mac, mac(2, 0, 0, 0, 0, 0x31)));
}

/* The worker writes while another thread reads (metrics, status): every copy a reader gets
 * is one the writer wrote whole. The writer learns each address with a MAC and a port that
 * encode the address and the time, so a torn copy shows. */
TEST(ArpTable, ReadersOnAnotherThreadSeeWholeEntries) {
  ArpTable t(16, ~uint64_t(0) / 2);
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> checked{0};
  auto mac_for = [](uint32_t ip, uint64_t now) {
    return mac(2, uint8_t(ip), uint8_t(ip >> 8), uint8_t(now), uint8_t(now >> 8), uint8_t(now >> 16));
  };
  std::thread reader([&] {
    uint64_t n = 0;
    while (!stop.load(std::memory_order_acquire)) {
      t.for_each([&](const ArpEntry &e) {
        EXPECT_TRUE(test::mac_eq(e.mac, mac_for(e.ip, e.confirmed_tsc))) << "torn entry for " << e.ip;
        EXPECT_EQ(e.port, uint8_t(e.confirmed_tsc & 1));
        n++;
      });
      EXPECT_LE(t.valid_count(~uint64_t(0) / 4), t.capacity());
    }
    checked.store(n);
  });
  uint64_t now = 1;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
  while (std::chrono::steady_clock::now() < until)
    for (uint32_t i = 1; i <= 64; i++, now++) {
      const uint32_t ip = rte_cpu_to_be_32(0x0a000000 + i);
      t.learn(ip, mac_for(ip, now), uint8_t(now & 1), now);
    }
  stop.store(true, std::memory_order_release);
  reader.join();
  EXPECT_GT(checked.load(), 0u);
  EXPECT_GT(t.evictions(), 0u);
}

}  // namespace
}  // namespace ftpair::dp
