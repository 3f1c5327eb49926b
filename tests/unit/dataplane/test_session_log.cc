// The session-event ring (dataplane/session_log.h): order, wrap, overflow, and one producer
// thread against one consumer thread.
#include "dataplane/session_log.h"

#include <netinet/in.h>

#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace ftpair::dp {
namespace {

SessionEvent ev(uint64_t n) {
  SessionEvent e{};
  e.unix_ms = n;
  e.kind = (n & 1) ? kSessionCreate : kMappingCreate;
  e.proto = IPPROTO_UDP;
  e.in_ip = uint32_t(n * 7);
  e.nat_ip = uint32_t(n * 11);
  e.ext_ip = uint32_t(n * 13);
  e.in_port = uint16_t(n);
  e.nat_port = uint16_t(n + 1);
  e.ext_port = uint16_t(n + 2);
  return e;
}

void expect_same(const SessionEvent &a, const SessionEvent &b) {
  EXPECT_EQ(a.unix_ms, b.unix_ms);
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.proto, b.proto);
  EXPECT_EQ(a.in_ip, b.in_ip);
  EXPECT_EQ(a.nat_ip, b.nat_ip);
  EXPECT_EQ(a.ext_ip, b.ext_ip);
  EXPECT_EQ(a.in_port, b.in_port);
  EXPECT_EQ(a.nat_port, b.nat_port);
  EXPECT_EQ(a.ext_port, b.ext_port);
}

TEST(SessionEventRing, CapacityRoundsUpToPowerOfTwoAtLeastTwo) {
  EXPECT_EQ(SessionEventRing(0).capacity(), 2u);
  EXPECT_EQ(SessionEventRing(2).capacity(), 2u);
  EXPECT_EQ(SessionEventRing(3).capacity(), 4u);
  EXPECT_EQ(SessionEventRing(1000).capacity(), 1024u);
  EXPECT_EQ(SessionEventRing(4096).capacity(), 4096u);
}

TEST(SessionEventRing, PopsInOrderAndHonoursMax) {
  SessionEventRing r(8);
  SessionEvent out[8];
  EXPECT_EQ(r.pop_bulk(out, 8), 0u) << "empty";
  for (uint64_t i = 0; i < 5; i++) ASSERT_TRUE(r.push(ev(i)));
  EXPECT_EQ(r.size(), 5u);
  EXPECT_EQ(r.pop_bulk(out, 2), 2u);
  expect_same(out[0], ev(0));
  expect_same(out[1], ev(1));
  EXPECT_EQ(r.pop_bulk(out, 0), 0u);
  EXPECT_EQ(r.pop_bulk(out, 8), 3u);
  for (uint64_t i = 0; i < 3; i++) expect_same(out[i], ev(i + 2));
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.pushed(), 5u);
  EXPECT_EQ(r.overflows(), 0u);
}

TEST(SessionEventRing, FullRingRefusesAndCountsThenAcceptsAgain) {
  SessionEventRing r(4);
  for (uint64_t i = 0; i < 4; i++) ASSERT_TRUE(r.push(ev(i)));
  EXPECT_FALSE(r.push(ev(100)));
  EXPECT_FALSE(r.push(ev(101)));
  EXPECT_EQ(r.overflows(), 2u);
  EXPECT_EQ(r.pushed(), 4u);
  SessionEvent out[4];
  ASSERT_EQ(r.pop_bulk(out, 1), 1u);
  expect_same(out[0], ev(0));
  EXPECT_TRUE(r.push(ev(4))) << "one slot freed";
  EXPECT_FALSE(r.push(ev(102)));
  EXPECT_EQ(r.overflows(), 3u);
  ASSERT_EQ(r.pop_bulk(out, 4), 4u);
  // The refused events never appear.
  for (uint64_t i = 0; i < 4; i++) expect_same(out[i], ev(i + 1));
}

TEST(SessionEventRing, WrapsAroundTheArrayManyTimes) {
  SessionEventRing r(8);
  SessionEvent out[8];
  uint64_t next_in = 0, next_out = 0;
  // Push 5, pop 3 or 5 at a time: the read run crosses the end of the array in both halves.
  for (int round = 0; round < 100; round++) {
    while (r.size() + 1 <= r.capacity() && next_in < next_out + 5) ASSERT_TRUE(r.push(ev(next_in++)));
    const size_t n = r.pop_bulk(out, (round & 1) ? 3 : 8);
    ASSERT_GT(n, 0u);
    for (size_t i = 0; i < n; i++) expect_same(out[i], ev(next_out++));
  }
  EXPECT_GT(next_out, 8u * 20) << "went round the array many times";
  EXPECT_EQ(r.overflows(), 0u);
}

TEST(TscUnixClock, ConvertsWithoutOverflow) {
  TscUnixClock c{1000, 1'700'000'000'000ull, 3'000'000'000ull};
  EXPECT_EQ(c.unix_ms(1000), 1'700'000'000'000ull);
  EXPECT_EQ(c.unix_ms(1000 + 3'000'000'000ull), 1'700'000'001'000ull);
  EXPECT_EQ(c.unix_ms(1000 + 4'500'000'000ull), 1'700'000'001'500ull);
  // A year of 3 GHz ticks: (tsc - tsc0) * 1000 would overflow 64 bits.
  const uint64_t year = 365ull * 86400;
  EXPECT_EQ(c.unix_ms(1000 + year * 3'000'000'000ull), 1'700'000'000'000ull + year * 1000);
}

// One producer pushing as fast as it can (no retry, as a worker would) against one consumer
// draining in bulk: every accepted event arrives once, in order, intact; every refused one
// is counted; accepted + refused = offered.
TEST(SessionEventRing, TwoThreadsLoseNothingUncounted) {
  constexpr uint64_t kOffered = 400'000;
  SessionEventRing r(256);
  std::atomic<bool> done{false};
  std::vector<uint64_t> accepted;
  accepted.reserve(kOffered);
  std::thread producer([&] {
    for (uint64_t i = 1; i <= kOffered; i++)
      if (r.push(ev(i))) accepted.push_back(i);
    done.store(true, std::memory_order_release);
  });
  std::vector<uint64_t> got;
  got.reserve(kOffered);
  SessionEvent out[64];
  bool intact = true;
  for (;;) {
    const bool finished = done.load(std::memory_order_acquire);
    const size_t n = r.pop_bulk(out, 64);
    for (size_t i = 0; i < n; i++) {
      const SessionEvent want = ev(out[i].unix_ms);
      intact = intact && out[i].in_ip == want.in_ip && out[i].nat_ip == want.nat_ip && out[i].ext_ip == want.ext_ip &&
               out[i].in_port == want.in_port && out[i].nat_port == want.nat_port &&
               out[i].ext_port == want.ext_port && out[i].kind == want.kind;
      got.push_back(out[i].unix_ms);
    }
    if (n == 0 && finished) break;
    if (n == 0) std::this_thread::yield();
  }
  producer.join();
  EXPECT_TRUE(intact) << "a slot was read before the producer finished writing it";
  EXPECT_EQ(got, accepted);
  EXPECT_EQ(got.size() + r.overflows(), kOffered);
  EXPECT_EQ(r.pushed(), got.size());
}

// The same with a producer that retries: nothing may be lost at all, the ring only delays.
TEST(SessionEventRing, TwoThreadsWithRetryDeliverEverything) {
  constexpr uint64_t kOffered = 200'000;
  SessionEventRing r(64);
  std::thread producer([&] {
    for (uint64_t i = 1; i <= kOffered; i++)
      while (!r.push(ev(i))) std::this_thread::yield();
  });
  uint64_t expect = 1;
  bool in_order = true;
  SessionEvent out[16];
  while (expect <= kOffered) {
    const size_t n = r.pop_bulk(out, 16);
    for (size_t i = 0; i < n; i++) in_order = in_order && out[i].unix_ms == expect++;
    if (n == 0) std::this_thread::yield();
  }
  producer.join();
  EXPECT_TRUE(in_order);
  EXPECT_EQ(r.size(), 0u);
  EXPECT_EQ(r.pushed(), kOffered);
}

}  // namespace
}  // namespace ftpair::dp
