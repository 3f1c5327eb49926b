// The flow table (dataplane/flow_table.h): keys, capacity, port refcounts, dirty tracking,
// copy-before-write capture and the standby's apply().
#include "dataplane/flow_table.h"

#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>
#include <rte_byteorder.h>

#include "tests/unit/dataplane/pktgen.h"

namespace ftpair::dp {
namespace {

std::unique_ptr<FlowTable> make_table(uint32_t capacity) {
  FlowTableConfig cfg;
  cfg.capacity = capacity;
  cfg.name = test::unique_name("ft");
  std::string err;
  auto t = FlowTable::create(cfg, &err);
  EXPECT_NE(t, nullptr) << err;
  return t;
}

// A distinct TCP flow per i: inside host 10.0.x.y:1000+i to 192.0.2.1:80 via nat port 20000+i.
FlowState flow(uint32_t i, uint8_t proto = IPPROTO_TCP) {
  FlowState s{};
  s.in_ip = rte_cpu_to_be_32(0x0a000000 + (i >> 8) * 256 + (i & 0xff) + 1);
  s.ext_ip = rte_cpu_to_be_32(0xc0000201);
  s.nat_ip = rte_cpu_to_be_32(0xc6120201);
  s.in_port = rte_cpu_to_be_16(static_cast<uint16_t>(1000 + i));
  s.ext_port = rte_cpu_to_be_16(80);
  s.nat_port = rte_cpu_to_be_16(static_cast<uint16_t>(20000 + i));
  s.proto = proto;
  s.tcp_state = proto == IPPROTO_TCP ? static_cast<uint8_t>(TcpState::SYN_SENT) : 0;
  return s;
}

FlowState in_use(FlowState s) {
  s.flags |= kFlowInUse;
  return s;
}

std::map<uint32_t, FlowState> snapshot(const FlowTable &t) {
  std::map<uint32_t, FlowState> m;
  t.for_each([&](uint32_t slot, const FlowRecord &r) { m[slot] = r.st; });
  return m;
}

TEST(FlowTable, CreateRejectsBadCapacity) {
  std::string err;
  FlowTableConfig cfg;
  cfg.capacity = 8;
  cfg.name = test::unique_name("ft");
  EXPECT_EQ(FlowTable::create(cfg, &err), nullptr);
  EXPECT_NE(err.find("capacity"), std::string::npos) << err;
}

/* Two workers' tables under one node-wide limit of 10: each could hold 64, but inserts stop
 * at 10 across both, a removal gives one back, and a replicated flow (apply) is counted
 * without being refused. */
TEST(FlowTable, ASharedBudgetLimitsTheTablesTogether) {
  auto a = make_table(64), b = make_table(64);
  auto budget = std::make_shared<FlowBudget>(10);
  a->share_budget(budget);
  b->share_budget(budget);
  std::vector<int> in_a;
  for (uint32_t i = 0; i < 6; i++) in_a.push_back(a->insert(flow(i), 1));
  for (uint32_t i = 6; i < 10; i++) ASSERT_GE(b->insert(flow(i), 1), 0) << i;
  for (int slot : in_a) ASSERT_GE(slot, 0);
  EXPECT_EQ(a->occupancy(), 10u);
  EXPECT_EQ(b->limit(), 10u);
  EXPECT_EQ(b->insert(flow(10), 1), -ENOSPC) << "the node is full, though this table is not";
  EXPECT_EQ(a->insert(flow(11), 1), -ENOSPC);
  EXPECT_EQ(a->stats().insert_full + b->stats().insert_full, 2u);
  a->remove(uint32_t(in_a[0]));
  EXPECT_EQ(b->occupancy(), 9u);
  EXPECT_GE(b->insert(flow(10), 1), 0);
  // A standby's apply takes what the active held: counted, never refused.
  const FlowState extra = in_use(flow(20));
  EXPECT_EQ(b->apply(30, &extra, 1), 0);
  EXPECT_EQ(a->occupancy(), 11u);
  b->clear();
  a->clear();
  EXPECT_EQ(a->occupancy(), 0u) << "every flow gone gives its share back";
}

TEST(FlowTable, InsertLookupBothKeysRemove) {
  auto t = make_table(64);
  ASSERT_TRUE(t);
  const FlowState a = flow(1), b = flow(2);
  const int sa = t->insert(a, 100);
  const int sb = t->insert(b, 100);
  ASSERT_GE(sa, 0);
  ASSERT_GE(sb, 0);
  EXPECT_NE(sa, sb);
  EXPECT_EQ(t->size(), 2u);
  EXPECT_EQ(t->lookup(inside_key(a)), sa);
  EXPECT_EQ(t->lookup(outside_key(a)), sa);
  EXPECT_EQ(t->lookup(inside_key(b)), sb);
  EXPECT_EQ(t->lookup(outside_key(b)), sb);
  EXPECT_EQ(t->record(sa).st, in_use(a));
  EXPECT_EQ(t->record(sa).last_seen_tsc, 100u);
  // The two directions are distinct keys: an inside key with dir 1 is not found.
  FlowKey k = inside_key(a);
  k.dir = 1;
  EXPECT_EQ(t->lookup(k), -ENOENT);
  FlowKey other = inside_key(flow(3));
  EXPECT_EQ(t->lookup(other), -ENOENT);

  t->remove(static_cast<uint32_t>(sa));
  EXPECT_EQ(t->size(), 1u);
  EXPECT_EQ(t->lookup(inside_key(a)), -ENOENT);
  EXPECT_EQ(t->lookup(outside_key(a)), -ENOENT);
  EXPECT_FALSE(t->record(sa).st.flags & kFlowInUse);
  EXPECT_EQ(t->lookup(inside_key(b)), sb);
  // Removing a free or out-of-range slot is harmless.
  t->remove(static_cast<uint32_t>(sa));
  t->remove(t->capacity() + 5);
  EXPECT_EQ(t->size(), 1u);
  EXPECT_EQ(t->stats().inserts, 2u);
  EXPECT_EQ(t->stats().removes, 1u);
}

TEST(FlowTable, LookupBulk) {
  auto t = make_table(128);
  ASSERT_TRUE(t);
  std::vector<int> slot(40);
  for (uint32_t i = 0; i < 40; i++) {
    slot[i] = t->insert(flow(i), 1);
    ASSERT_GE(slot[i], 0);
  }
  std::vector<FlowKey> keys(64);
  std::vector<int32_t> want(64);
  for (unsigned i = 0; i < 64; i++) {
    if (i % 3 == 2 || i / 2 >= 40) {
      keys[i] = inside_key(flow(1000 + i));  // absent
      want[i] = -1;
    } else {
      keys[i] = i % 2 ? outside_key(flow(i / 2)) : inside_key(flow(i / 2));
      want[i] = slot[i / 2];
    }
  }
  std::vector<const FlowKey *> ptrs(64);
  for (unsigned i = 0; i < 64; i++) ptrs[i] = &keys[i];
  std::vector<int32_t> got(64, 12345);
  t->lookup_bulk(ptrs.data(), 64, got.data());
  EXPECT_EQ(got, want);
  // A short burst.
  t->lookup_bulk(ptrs.data(), 3, got.data());
  EXPECT_EQ(got[0], want[0]);
  EXPECT_EQ(got[1], want[1]);
  EXPECT_EQ(got[2], -1);
}

TEST(FlowTable, DuplicateKeysAreRefused) {
  auto t = make_table(16);
  ASSERT_TRUE(t);
  const FlowState a = flow(1);
  ASSERT_GE(t->insert(a, 1), 0);
  EXPECT_EQ(t->insert(a, 1), -EEXIST);
  FlowState same_inside = a;  // same inside view, other NAT port
  same_inside.nat_port = rte_cpu_to_be_16(30000);
  EXPECT_EQ(t->insert(same_inside, 1), -EEXIST);
  FlowState same_outside = a;  // other inside host, same outside view
  same_outside.in_ip = rte_cpu_to_be_32(0x0a0000fe);
  EXPECT_EQ(t->insert(same_outside, 1), -EEXIST);
  EXPECT_EQ(t->size(), 1u);
  EXPECT_EQ(t->stats().inserts, 1u);
  EXPECT_EQ(t->stats().insert_full, 0u);
  // Refused inserts leak nothing: the rest of the table still fills up.
  for (uint32_t i = 2; i <= 16; i++) ASSERT_GE(t->insert(flow(i), 1), 0) << i;
  EXPECT_EQ(t->size(), 16u);
}

TEST(FlowTable, FullTableRefusesAndNeverEvicts) {
  auto t = make_table(16);
  ASSERT_TRUE(t);
  std::vector<int> slots;
  for (uint32_t i = 0; i < 16; i++) {
    FlowState s = flow(i);
    s.tcp_state = static_cast<uint8_t>(TcpState::ESTABLISHED);
    int rc = t->insert(s, 1);
    ASSERT_GE(rc, 0);
    slots.push_back(rc);
  }
  EXPECT_EQ(t->size(), 16u);
  for (int k = 0; k < 3; k++) EXPECT_EQ(t->insert(flow(100 + k), 2), -ENOSPC);
  EXPECT_EQ(t->stats().insert_full, 3u);
  EXPECT_EQ(t->size(), 16u);
  for (uint32_t i = 0; i < 16; i++) {
    EXPECT_EQ(t->lookup(inside_key(flow(i))), slots[i]) << "flow " << i << " evicted";
    EXPECT_EQ(t->record(slots[i]).st.tcp_state, static_cast<uint8_t>(TcpState::ESTABLISHED));
  }
  // One removal makes room for exactly one.
  t->remove(static_cast<uint32_t>(slots[7]));
  EXPECT_EQ(t->insert(flow(200), 3), slots[7]);
  EXPECT_EQ(t->insert(flow(201), 3), -ENOSPC);
  EXPECT_EQ(t->stats().insert_full, 4u);
}

TEST(FlowTable, PortsInUseRefcounts) {
  auto t = make_table(64);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->ports_in_use(IPPROTO_TCP), 0u);
  FlowState a = flow(1), b = flow(2), c = flow(3), u = flow(4, IPPROTO_UDP), i = flow(5, IPPROTO_ICMP);
  b.in_ip = a.in_ip;                          // a's inside endpoint toward another
  b.in_port = a.in_port;                      // destination: a's mapping, a's NAT port
  b.nat_port = a.nat_port;
  b.ext_ip = rte_cpu_to_be_32(0xc0000202);
  u.nat_port = a.nat_port;                    // same number, other protocol
  const int sa = t->insert(a, 1), sb = t->insert(b, 1), sc = t->insert(c, 1);
  ASSERT_GE(sa, 0);
  ASSERT_GE(sb, 0);
  ASSERT_GE(sc, 0);
  ASSERT_GE(t->insert(u, 1), 0);
  ASSERT_GE(t->insert(i, 1), 0);
  EXPECT_EQ(t->mappings(), 4u) << "a and b share one";
  // No port overloading: another inside endpoint cannot take a's outside endpoint.
  FlowState x = flow(6);
  x.nat_port = a.nat_port;
  EXPECT_EQ(t->insert(x, 1), -EEXIST);
  // Nor can an inside endpoint hold two outside endpoints.
  FlowState y = a;
  y.ext_ip = rte_cpu_to_be_32(0xc0000203);
  y.nat_port = static_cast<uint16_t>(a.nat_port + 1);
  EXPECT_EQ(t->insert(y, 1), -EEXIST);
  EXPECT_EQ(t->ports_in_use(IPPROTO_TCP), 2u);
  EXPECT_EQ(t->ports_in_use(IPPROTO_UDP), 1u);
  EXPECT_EQ(t->ports_in_use(IPPROTO_ICMP), 1u);
  EXPECT_EQ(t->ports_in_use(IPPROTO_GRE), 0u);
  t->remove(static_cast<uint32_t>(sa));
  EXPECT_EQ(t->ports_in_use(IPPROTO_TCP), 2u) << "b still uses the port";
  t->remove(static_cast<uint32_t>(sb));
  EXPECT_EQ(t->ports_in_use(IPPROTO_TCP), 1u);
  t->remove(static_cast<uint32_t>(sc));
  EXPECT_EQ(t->ports_in_use(IPPROTO_TCP), 0u);
  EXPECT_EQ(t->ports_in_use(IPPROTO_UDP), 1u);
  t->clear();
  EXPECT_EQ(t->size(), 0u);
  EXPECT_EQ(t->ports_in_use(IPPROTO_UDP), 0u);
  EXPECT_EQ(t->ports_in_use(IPPROTO_ICMP), 0u);
}

/* The NAT's indexes (probe_table.h) are sized for their worst case: every flow from its own
 * LAN host, on its own mapping, toward its own remote, or port-forwarded on its own outside
 * endpoint. A full table of such flows is never refused, every query answers, and after
 * every flow goes the indexes are empty and take a full table again. */
TEST(FlowTable, TheNatIndexesHoldTheirWorstCaseAndEmptyAgain) {
  constexpr uint32_t kCap = 512;
  auto t = make_table(kCap);
  ASSERT_TRUE(t);
  auto worst = [](uint32_t i, uint32_t round) {
    FlowState s = flow(i, IPPROTO_UDP);
    s.in_ip = rte_cpu_to_be_32(0x0a100000 + round * 0x10000 + i);
    s.ext_ip = rte_cpu_to_be_32(0xc0000000 + round * 0x10000 + i);
    s.nat_port = rte_cpu_to_be_16(static_cast<uint16_t>(20000 + round * 1000 + i));
    if (i % 2 && round == 0) s.flags = kFlowPortForward;
    return s;
  };
  for (uint32_t round = 0; round < 2; round++) {
    std::vector<uint32_t> slots;
    for (uint32_t i = 0; i < kCap; i++) {
      const int rc = t->insert(worst(i, round), 1);
      ASSERT_GE(rc, 0) << "round " << round << " flow " << i;
      slots.push_back(static_cast<uint32_t>(rc));
    }
    EXPECT_EQ(t->insert(worst(kCap, round), 1), -ENOSPC);
    EXPECT_EQ(t->mappings(), round == 0 ? kCap / 2 : kCap);
    EXPECT_EQ(t->ports_in_use(IPPROTO_UDP), kCap);
    for (uint32_t i = 0; i < kCap; i++) {
      const FlowState s = worst(i, round);
      const bool fwd = s.flags & kFlowPortForward;
      const Mapping *in = t->mapping_inside(s.in_ip, s.in_port, s.proto);
      const Mapping *out = t->mapping_outside(s.nat_ip, s.nat_port, s.proto);
      ASSERT_EQ(in != nullptr, !fwd) << i;
      ASSERT_EQ(out, in) << i;
      if (in) {
        EXPECT_EQ(in->nat_port, s.nat_port);
        EXPECT_EQ(in->flows, 1u);
      }
      EXPECT_EQ(t->endpoint_flows(s.nat_ip, s.nat_port, s.proto), 1u) << i;
      EXPECT_EQ(t->flows_toward(s.ext_ip, s.nat_ip, s.nat_port, s.proto), fwd ? 0u : 1u) << i;
      EXPECT_EQ(t->host_flows(s.in_ip), fwd ? 0u : 1u) << i;
    }
    // A mapped flow on a forwarded endpoint, and a forwarded flow on a mapping's, are refused.
    if (round == 0) {
      ASSERT_EQ(t->size(), kCap);
      t->remove(slots[2]);
      FlowState onto_fwd = worst(2, 0);
      onto_fwd.nat_port = worst(1, 0).nat_port;
      EXPECT_EQ(t->insert(onto_fwd, 1), -EEXIST);
      FlowState onto_map = worst(3, 0);
      onto_map.in_ip = rte_cpu_to_be_32(0x0a7f0001);
      onto_map.nat_port = worst(4, 0).nat_port;
      EXPECT_EQ(t->insert(onto_map, 1), -EEXIST);
      const int rc = t->insert(worst(2, 0), 1);
      ASSERT_GE(rc, 0);
      slots[2] = static_cast<uint32_t>(rc);
    }
    std::mt19937 rng(round + 5);
    std::shuffle(slots.begin(), slots.end(), rng);
    for (uint32_t slot : slots) t->remove(slot);
    EXPECT_EQ(t->size(), 0u);
    EXPECT_EQ(t->mappings(), 0u);
    EXPECT_EQ(t->ports_in_use(IPPROTO_UDP), 0u);
    for (uint32_t i = 0; i < kCap; i++) {
      const FlowState s = worst(i, round);
      EXPECT_EQ(t->mapping_outside(s.nat_ip, s.nat_port, s.proto), nullptr) << i;
      EXPECT_EQ(t->endpoint_flows(s.nat_ip, s.nat_port, s.proto), 0u) << i;
      EXPECT_EQ(t->flows_toward(s.ext_ip, s.nat_ip, s.nat_port, s.proto), 0u) << i;
      EXPECT_EQ(t->host_flows(s.in_ip), 0u) << i;
    }
  }
}

TEST(FlowTable, TouchMarksDirtyOncePerEpoch) {
  auto t = make_table(64);
  ASSERT_TRUE(t);
  const uint64_t e1 = t->epoch();
  EXPECT_EQ(t->dirty_count(), 0u);
  const int a = t->insert(flow(1), 1);
  const int b = t->insert(flow(2), 1);
  EXPECT_EQ(t->dirty_count(), 2u) << "inserts are dirty";
  t->touch(static_cast<uint32_t>(a));
  t->touch(static_cast<uint32_t>(a));
  EXPECT_EQ(t->dirty_count(), 2u);
  EXPECT_EQ(t->record(a).dirty_epoch, e1);
  EXPECT_EQ(t->flip_epoch(false), static_cast<int64_t>(e1));
  EXPECT_EQ(t->epoch(), e1 + 1);
  EXPECT_EQ(t->dirty_count(), 0u);
  t->touch(static_cast<uint32_t>(b));
  t->touch(static_cast<uint32_t>(b));
  EXPECT_EQ(t->dirty_count(), 1u);
  EXPECT_EQ(t->record(b).dirty_epoch, e1 + 1);
  EXPECT_EQ(t->record(a).dirty_epoch, e1);
  t->remove(static_cast<uint32_t>(a));
  EXPECT_EQ(t->dirty_count(), 2u) << "a removal is dirty";
  EXPECT_EQ(t->flip_epoch(false), static_cast<int64_t>(e1 + 1));
  EXPECT_EQ(t->dirty_count(), 0u) << "the list of two epochs ago is reused, empty";
}

// Drives capture_step to completion in small steps; returns the number of steps.
unsigned finish_capture(FlowTable &t, uint32_t budget) {
  unsigned steps = 0;
  while (t.capture_pending()) {
    t.capture_step(budget);
    steps++;
    if (steps > 1'000'000) break;
  }
  return steps;
}

std::map<uint32_t, CapturedSlot> captured_map(const FlowTable &t) {
  std::map<uint32_t, CapturedSlot> m;
  for (const auto &c : t.captured()) {
    EXPECT_EQ(m.count(c.slot), 0u) << "slot " << c.slot << " captured twice";
    m[c.slot] = c;
  }
  return m;
}

TEST(FlowTable, DirtyCaptureHoldsStateAtTheCut) {
  auto t = make_table(64);
  ASSERT_TRUE(t);
  // Epoch 1: five flows; then a flip without capture so the next epoch starts clean.
  std::vector<int> s;
  for (uint32_t i = 0; i < 5; i++) s.push_back(t->insert(flow(i), 1));
  ASSERT_GE(t->flip_epoch(false), 0);
  // Epoch 2: change s0 and s1, remove s2, insert x. s3, s4 untouched.
  t->touch(s[0]);
  t->record(s[0]).st.tcp_state = static_cast<uint8_t>(TcpState::ESTABLISHED);
  t->touch(s[1]);
  t->record(s[1]).st.tcp_state = static_cast<uint8_t>(TcpState::SYN_RECV);
  const int x = t->insert(flow(10), 2);
  ASSERT_GE(x, 0);
  t->remove(s[2]);
  const auto cut = snapshot(*t);
  const uint32_t dirty = t->dirty_count();
  EXPECT_EQ(dirty, 4u);
  const int64_t e = t->flip_epoch(true);
  ASSERT_EQ(e, 2);
  EXPECT_TRUE(t->capture_pending());
  EXPECT_EQ(t->capture_done(), 0u);
  EXPECT_EQ(t->capture_kind(), CaptureKind::DIRTY);

  // After the flip, before the capture copies anything: change everything again.
  t->touch(s[0]);
  t->record(s[0]).st.tcp_state = static_cast<uint8_t>(TcpState::FIN_WAIT);  // copy-before-write
  const int y = t->insert(flow(11), 3);  // reuses s2's slot, a deletion at the cut
  ASSERT_EQ(y, s[2]);
  t->remove(s[1]);                                                           // copy-before-write
  t->touch(s[3]);                                                            // not dirty at the cut
  t->record(s[3]).st.tcp_state = static_cast<uint8_t>(TcpState::CLOSED);
  EXPECT_EQ(t->stats().capture_cow, 3u);  // s0, s1, s2 (s3 was clean at the cut)

  finish_capture(*t, 1);
  EXPECT_FALSE(t->capture_pending());
  EXPECT_EQ(t->capture_done(), 2u);
  auto cap = captured_map(*t);
  EXPECT_EQ(cap.size(), dirty);
  std::set<uint32_t> want_slots = {uint32_t(s[0]), uint32_t(s[1]), uint32_t(s[2]), uint32_t(x)};
  std::set<uint32_t> got_slots;
  for (auto &[slot, c] : cap) got_slots.insert(slot);
  EXPECT_EQ(got_slots, want_slots);
  for (auto &[slot, c] : cap) {
    auto it = cut.find(slot);
    if (it == cut.end()) {
      EXPECT_EQ(c.in_use, 0) << "slot " << slot << " was free at the cut";
    } else {
      EXPECT_EQ(c.in_use, 1) << "slot " << slot;
      EXPECT_EQ(c.st, it->second) << "slot " << slot << " not as at the cut";
    }
  }
  EXPECT_EQ(cap[s[0]].st.tcp_state, static_cast<uint8_t>(TcpState::ESTABLISHED));
  EXPECT_EQ(cap[s[2]].in_use, 0) << "a deletion is captured as free";
  t->capture_release();
}

TEST(FlowTable, FullCaptureHoldsEveryInUseSlotAtTheCut) {
  auto t = make_table(64);
  ASSERT_TRUE(t);
  std::vector<int> s;
  for (uint32_t i = 0; i < 20; i++) s.push_back(t->insert(flow(i), 1));
  t->remove(s[5]);
  t->remove(s[6]);
  ASSERT_GE(t->flip_epoch(false), 0);  // nothing dirty now; FULL must not care
  const auto cut = snapshot(*t);
  ASSERT_GE(t->flip_epoch(true, CaptureKind::FULL), 0);
  EXPECT_EQ(t->capture_kind(), CaptureKind::FULL);
  // Changes after the cut, interleaved with capture steps.
  t->capture_step(3);
  t->touch(s[0]);
  t->record(s[0]).st.tcp_state = static_cast<uint8_t>(TcpState::CLOSED);
  t->remove(s[19]);
  t->touch(s[18]);
  t->record(s[18]).st.tcp_state = static_cast<uint8_t>(TcpState::ESTABLISHED);
  ASSERT_GE(t->insert(flow(50), 2), 0);
  ASSERT_GE(t->insert(flow(51), 2), 0);
  t->capture_step(7);
  t->remove(s[10]);
  finish_capture(*t, 5);
  auto cap = captured_map(*t);
  EXPECT_EQ(cap.size(), cut.size());
  for (auto &[slot, st] : cut) {
    ASSERT_EQ(cap.count(slot), 1u) << "slot " << slot << " missing";
    EXPECT_EQ(cap[slot].in_use, 1);
    EXPECT_EQ(cap[slot].st, st) << "slot " << slot;
  }
  t->capture_release();
}

// The room prepare_capture makes is the room the full capture copies into: the worker never
// reallocates (nor faults in) the buffer; while a capture is held it changes nothing.
TEST(FlowTable, APreparedCaptureBufferIsTheOneTheFullCaptureFills) {
  auto t = make_table(256);
  ASSERT_TRUE(t);
  for (uint32_t i = 0; i < 100; i++) ASSERT_GE(t->insert(flow(i), 1), 0);
  t->prepare_capture(150);
  EXPECT_GE(t->captured().capacity(), 150u);
  EXPECT_TRUE(t->captured().empty());
  const CapturedSlot *room = t->captured().data();
  ASSERT_GE(t->flip_epoch(true, CaptureKind::FULL), 0);
  t->prepare_capture(4096);  // held: no effect
  EXPECT_LT(t->captured().capacity(), 4096u);
  finish_capture(*t, 16);
  EXPECT_EQ(t->captured().size(), 100u);
  EXPECT_EQ(t->captured().data(), room) << "the capture reallocated its buffer";
  t->capture_release();
}

/* Upgrade join: one capture serves a joiner's full sync and the in-sync standby's epoch.
 * FULL_AND_DELETIONS holds every in-use slot at the cut plus the slots freed in the captured
 * epoch (as deletions), and nothing freed earlier. */
TEST(FlowTable, FullAndDeletionsCaptureAlsoHoldsTheEpochsDeletions) {
  auto t = make_table(64);
  ASSERT_TRUE(t);
  std::vector<int> s;
  for (uint32_t i = 0; i < 20; i++) s.push_back(t->insert(flow(i), 1));
  t->remove(s[5]);  // freed in an earlier epoch: already shipped, not captured again
  ASSERT_GE(t->flip_epoch(false), 0);
  t->remove(s[6]);  // freed in the captured epoch
  t->remove(s[7]);
  t->touch(s[1]);
  t->record(s[1]).st.tcp_state = static_cast<uint8_t>(TcpState::ESTABLISHED);
  const auto cut = snapshot(*t);
  ASSERT_GE(t->flip_epoch(true, CaptureKind::FULL_AND_DELETIONS), 0);
  t->capture_step(4);
  // After the cut: slot 6 reused, slot 8 freed, slot 2 changed (copy-before-write).
  ASSERT_GE(t->insert(flow(40), 2), 0);
  t->remove(s[8]);
  t->touch(s[2]);
  t->record(s[2]).st.tcp_state = static_cast<uint8_t>(TcpState::CLOSED);
  finish_capture(*t, 5);
  auto cap = captured_map(*t);
  EXPECT_EQ(cap.size(), cut.size() + 2);
  for (auto &[slot, st] : cut) {
    ASSERT_EQ(cap.count(slot), 1u) << "slot " << slot << " missing";
    EXPECT_EQ(cap[slot].in_use, 1);
    EXPECT_EQ(cap[slot].st, st) << "slot " << slot;
  }
  for (int f : {s[6], s[7]}) {
    ASSERT_EQ(cap.count(uint32_t(f)), 1u) << "deletion of slot " << f << " missing";
    EXPECT_EQ(cap[uint32_t(f)].in_use, 0);
  }
  EXPECT_EQ(cap.count(uint32_t(s[5])), 0u) << "a slot freed before the epoch is not a change of it";
  t->capture_release();
}

TEST(FlowTable, FlipWhileCaptureHeldIsBusy) {
  auto t = make_table(32);
  ASSERT_TRUE(t);
  t->insert(flow(1), 1);
  const int64_t e = t->flip_epoch(true);
  ASSERT_GT(e, 0);
  EXPECT_EQ(t->flip_epoch(true), -EBUSY);
  EXPECT_EQ(t->flip_epoch(false), -EBUSY);
  EXPECT_EQ(t->epoch(), uint64_t(e) + 1) << "a refused flip changes nothing";
  finish_capture(*t, 100);
  EXPECT_EQ(t->capture_done(), uint64_t(e));
  EXPECT_EQ(t->flip_epoch(false), -EBUSY) << "still held until released";
  t->capture_release();
  EXPECT_EQ(t->flip_epoch(false), e + 1);
  EXPECT_EQ(t->flip_epoch(true), e + 2);
  t->capture_step(1000);
  t->capture_release();
}

TEST(FlowTable, ApplyEdgeCases) {
  auto t = make_table(16);
  ASSERT_TRUE(t);
  const FlowState a = in_use(flow(1));
  EXPECT_EQ(t->apply(16, &a, 1), -EINVAL);
  EXPECT_EQ(t->apply(1u << 30, &a, 1), -EINVAL);
  EXPECT_EQ(t->apply(16, nullptr, 1), -EINVAL);
  const FlowState not_in_use = flow(1);
  EXPECT_EQ(t->apply(3, &not_in_use, 1), -EINVAL);
  EXPECT_EQ(t->size(), 0u);

  // Set a free slot in the middle of the free list.
  ASSERT_EQ(t->apply(7, &a, 5), 0);
  EXPECT_EQ(t->lookup(inside_key(a)), 7);
  EXPECT_EQ(t->lookup(outside_key(a)), 7);
  EXPECT_EQ(t->record(7).last_seen_tsc, 5u);
  EXPECT_EQ(t->size(), 1u);
  // Same flow, new state.
  FlowState a2 = a;
  a2.tcp_state = static_cast<uint8_t>(TcpState::ESTABLISHED);
  ASSERT_EQ(t->apply(7, &a2, 6), 0);
  EXPECT_EQ(t->record(7).st, a2);
  EXPECT_EQ(t->size(), 1u);
  EXPECT_EQ(t->ports_in_use(IPPROTO_TCP), 1u);
  // Idempotent.
  ASSERT_EQ(t->apply(7, &a2, 6), 0);
  EXPECT_EQ(t->size(), 1u);
  // Another slot with a key of slot 7's flow.
  EXPECT_EQ(t->apply(9, &a2, 6), -EEXIST);
  EXPECT_FALSE(t->record(9).st.flags & kFlowInUse);
  EXPECT_EQ(t->size(), 1u);
  // Replace with another flow: the old keys go.
  const FlowState b = in_use(flow(2));
  ASSERT_EQ(t->apply(7, &b, 7), 0);
  EXPECT_EQ(t->lookup(inside_key(a)), -ENOENT);
  EXPECT_EQ(t->lookup(inside_key(b)), 7);
  EXPECT_EQ(t->size(), 1u);
  EXPECT_EQ(t->ports_in_use(IPPROTO_TCP), 1u);
  // Free.
  ASSERT_EQ(t->apply(7, nullptr, 8), 0);
  ASSERT_EQ(t->apply(7, nullptr, 8), 0);
  EXPECT_EQ(t->size(), 0u);
  EXPECT_EQ(t->lookup(inside_key(b)), -ENOENT);
  EXPECT_EQ(t->ports_in_use(IPPROTO_TCP), 0u);

  // The free list stays intact after applies into arbitrary slots: inserts fill the rest.
  for (uint32_t slot : {0u, 15u, 8u}) {
    FlowState s = in_use(flow(100 + slot));
    ASSERT_EQ(t->apply(slot, &s, 1), 0);
  }
  std::set<int> got;
  for (uint32_t i = 0; i < 13; i++) {
    int rc = t->insert(flow(200 + i), 1);
    ASSERT_GE(rc, 0) << i;
    EXPECT_TRUE(rc != 0 && rc != 15 && rc != 8) << "insert reused applied slot " << rc;
    got.insert(rc);
  }
  EXPECT_EQ(got.size(), 13u);
  EXPECT_EQ(t->insert(flow(300), 1), -ENOSPC);
  EXPECT_EQ(t->size(), 16u);
}

/* apply() is a writer like any other: while a capture is pending, a record it changes must be
 * captured with its state at the cut (copy-before-write), not the applied one. */
TEST(FlowTable, ApplyDuringCaptureKeepsTheCutState) {
  auto t = make_table(16);
  ASSERT_TRUE(t);
  const FlowState a = in_use(flow(1));
  ASSERT_EQ(t->apply(4, &a, 1), 0);  // dirty in the current epoch
  ASSERT_GE(t->flip_epoch(true), 0);
  FlowState a2 = a;
  a2.tcp_state = static_cast<uint8_t>(TcpState::ESTABLISHED);
  ASSERT_EQ(t->apply(4, &a2, 2), 0);
  finish_capture(*t, 100);
  auto cap = captured_map(*t);
  ASSERT_EQ(cap.count(4), 1u);
  EXPECT_EQ(cap[4].st, a) << "the capture must hold the state at the cut";
  t->capture_release();
}

TEST(FlowTable, RefreshAll) {
  auto t = make_table(16);
  ASSERT_TRUE(t);
  const int a = t->insert(flow(1), 1), b = t->insert(flow(2), 2);
  t->refresh_all(99);
  EXPECT_EQ(t->record(a).last_seen_tsc, 99u);
  EXPECT_EQ(t->record(b).last_seen_tsc, 99u);
}

/* Applies a completed capture to a replica the way a standby must: frees first, then any slot
 * whose flow changes identity, then the new states (a flow may move to another slot within an
 * epoch, so its keys must be free before it lands). Returns false on any apply error. */
bool apply_capture(FlowTable &replica, const FlowTable &src) {
  bool ok = true;
  if (src.capture_kind() == CaptureKind::FULL) replica.clear();
  for (const auto &c : src.captured())
    if (!c.in_use) ok &= replica.apply(c.slot, nullptr, 1) == 0;
  for (const auto &c : src.captured()) {
    if (!c.in_use) continue;
    const FlowState &cur = replica.record(c.slot).st;
    if ((cur.flags & kFlowInUse) &&
        !(inside_key(cur) == inside_key(c.st) && outside_key(cur) == outside_key(c.st)))
      ok &= replica.apply(c.slot, nullptr, 1) == 0;
  }
  for (const auto &c : src.captured()) {
    if (!c.in_use) continue;
    int rc = replica.apply(c.slot, &c.st, 1);
    EXPECT_EQ(rc, 0) << "apply slot " << c.slot;
    ok &= rc == 0;
  }
  return ok;
}

void expect_replica_equals(const FlowTable &replica, const std::map<uint32_t, FlowState> &cut,
                           const char *what) {
  auto got = snapshot(replica);
  ASSERT_EQ(got.size(), cut.size()) << what;
  EXPECT_EQ(replica.size(), cut.size()) << what;
  for (auto &[slot, st] : cut) {
    auto it = got.find(slot);
    ASSERT_NE(it, got.end()) << what << ": slot " << slot << " missing in the replica";
    EXPECT_EQ(it->second, st) << what << ": slot " << slot;
    EXPECT_EQ(replica.lookup(inside_key(st)), static_cast<int>(slot)) << what;
    EXPECT_EQ(replica.lookup(outside_key(st)), static_cast<int>(slot)) << what;
  }
}

/* A flow leaves its slot and comes back in another one within an epoch while the slot it lands
 * in held another flow: applying "frees first, then states in capture order" is not enough;
 * apply_capture's identity-change pass is. */
TEST(FlowTable, FlowMovingSlotsWithinAnEpochReplicates) {
  auto src = make_table(16), replica = make_table(16);
  ASSERT_TRUE(src && replica);
  const int y = src->insert(flow(1), 1);  // Y
  const int x = src->insert(flow(2), 1);  // X
  ASSERT_GE(src->flip_epoch(true, CaptureKind::FULL), 0);
  finish_capture(*src, 100);
  ASSERT_TRUE(apply_capture(*replica, *src));
  src->capture_release();
  // Next epoch: Y and X change, both go, Z takes X's slot and X returns in Y's slot.
  src->touch(y);
  src->record(y).st.flags |= kFlowReplied;
  src->touch(x);
  src->record(x).st.flags |= kFlowReplied;
  src->remove(y);
  src->remove(x);
  ASSERT_EQ(src->insert(flow(3), 2), x);  // Z (the free list is LIFO)
  ASSERT_EQ(src->insert(flow(2), 2), y);  // X again
  const auto cut = snapshot(*src);
  ASSERT_GE(src->flip_epoch(true), 0);
  finish_capture(*src, 100);
  // The capture lists Y's slot (now X) before X's old slot (now Z).
  ASSERT_EQ(src->captured().size(), 2u);
  EXPECT_EQ(src->captured()[0].slot, static_cast<uint32_t>(y));
  // In capture order, X's keys still belong to the replica's old X slot.
  {
    auto probe = make_table(16);
    ASSERT_TRUE(probe);
    for (auto &[slot, st] : snapshot(*replica)) ASSERT_EQ(probe->apply(slot, &st, 1), 0);
    EXPECT_EQ(probe->apply(src->captured()[0].slot, &src->captured()[0].st, 1), -EEXIST)
        << "naive in-order apply hits the moved flow's old keys";
  }
  ASSERT_TRUE(apply_capture(*replica, *src));
  expect_replica_equals(*replica, cut, "after a slot move");
  src->capture_release();
}

/* Randomized: inserts, updates (touch, then change state) and removals, with epoch flips and
 * capture steps at random points. After every completed capture the replica, with the capture
 * applied, equals the source as it was at the flip (the cut). */
TEST(FlowTable, RandomizedCaptureApplyReplicates) {
  constexpr uint32_t kCap = 256;
  auto src = make_table(kCap), replica = make_table(kCap);
  ASSERT_TRUE(src && replica);
  std::mt19937 rng(20240601);
  auto rand_flow = [&]() {
    // A small key space so duplicates (-EEXIST) and re-use of keys in new slots happen.
    FlowState s{};
    const uint8_t protos[3] = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP};
    s.proto = protos[rng() % 3];
    s.in_ip = rte_cpu_to_be_32(0x0a000001 + rng() % 64);
    s.ext_ip = rte_cpu_to_be_32(0xc0000201 + rng() % 4);
    s.nat_ip = rte_cpu_to_be_32(0xc6120201);
    s.in_port = rte_cpu_to_be_16(static_cast<uint16_t>(1000 + rng() % 8));
    s.ext_port = s.proto == IPPROTO_ICMP ? 0 : rte_cpu_to_be_16(static_cast<uint16_t>(80 + rng() % 2));
    s.nat_port = rte_cpu_to_be_16(static_cast<uint16_t>(20000 + rng() % 512));
    s.tcp_state = s.proto == IPPROTO_TCP ? static_cast<uint8_t>(TcpState::SYN_SENT) : 0;
    return s;
  };
  std::vector<uint32_t> live;  // in-use slots
  auto refresh_live = [&] {
    live.clear();
    src->for_each([&](uint32_t slot, const FlowRecord &) { live.push_back(slot); });
  };

  std::map<uint32_t, FlowState> cut;
  uint32_t dirty_at_cut = 0;
  bool capturing = false, need_full = true;
  unsigned captures = 0, full_captures = 0, eexist = 0, fp_checks = 0;
  bool fp_should_be_valid = true;
  uint64_t now = 1;
  for (int op = 0; op < 100000; op++) {
    now++;
    const unsigned r = rng() % 100;
    if (r < 30) {  // insert
      int rc = src->insert(rand_flow(), now);
      if (rc == -EEXIST) {
        eexist++;
      } else if (rc != -ENOSPC) {
        ASSERT_GE(rc, 0);
      }
    } else if (r < 55) {  // update
      refresh_live();
      if (!live.empty()) {
        uint32_t slot = live[rng() % live.size()];
        src->touch(slot);
        FlowRecord &rec = src->record(slot);
        rec.st.tcp_state = static_cast<uint8_t>(rng() % 7);
        // Any flags but kFlowPortForward: that one says which indexes hold the flow, and
        // the NF never changes it on a flow in use (an update that did would leave the
        // indexes describing another flow than the record).
        rec.st.flags = static_cast<uint8_t>(kFlowInUse | (rec.st.flags & kFlowPortForward) | ((rng() % 16) << 2));
      }
    } else if (r < 78) {  // remove
      refresh_live();
      if (!live.empty()) src->remove(live[rng() % live.size()]);
    } else if (r < 90) {  // capture progress
      if (capturing) src->capture_step(1 + rng() % 16);
    } else {  // flip
      if (capturing) {
        ASSERT_EQ(src->flip_epoch(true), -EBUSY);
        continue;
      }
      if (!need_full && rng() % 20 == 0) {
        // A flip without capture loses that epoch's dirty set: a full sync must follow.
        ASSERT_GE(src->flip_epoch(false), 0);
        need_full = true;
        fp_should_be_valid = false;
        continue;
      }
      const bool full = need_full || rng() % 10 == 0;
      cut = snapshot(*src);
      dirty_at_cut = src->dirty_count();
      ASSERT_GE(src->flip_epoch(true, full ? CaptureKind::FULL : CaptureKind::DIRTY), 0);
      if (full) fp_should_be_valid = true;
      capturing = true;
      need_full = false;
    }
    if (capturing && !src->capture_pending()) {
      // Complete: check the capture, apply it, compare with the cut.
      const uint64_t e = src->epoch() - 1;
      ASSERT_EQ(src->capture_done(), e);
      auto cap = captured_map(*src);
      if (src->capture_kind() == CaptureKind::DIRTY) {
        EXPECT_EQ(cap.size(), dirty_at_cut) << "a DIRTY capture holds exactly the dirty slots";
      } else {
        EXPECT_EQ(cap.size(), cut.size()) << "a FULL capture holds every in-use slot";
        full_captures++;
      }
      for (auto &[slot, c] : cap) {
        auto it = cut.find(slot);
        if (it == cut.end()) {
          ASSERT_EQ(c.in_use, 0) << "op " << op << " slot " << slot;
        } else {
          ASSERT_EQ(c.in_use, 1) << "op " << op << " slot " << slot;
          ASSERT_EQ(c.st, it->second) << "op " << op << " slot " << slot << " not as at the cut";
        }
      }
      ASSERT_TRUE(apply_capture(*replica, *src)) << "op " << op;
      expect_replica_equals(*replica, cut, "replica after capture");
      // The fingerprint: the active's at the cut (kept per captured slot) and the replica's
      // (kept per applied record) are the sum over the cut's flows; the active's is valid
      // unless a flip without capture came after the last full capture.
      uint64_t want_fp = 0;
      for (const auto &[slot, st] : cut) want_fp += flow_fingerprint(st);
      bool fp_valid = false;
      const uint64_t cut_fp = src->cut_fingerprint(&fp_valid);
      EXPECT_EQ(fp_valid, fp_should_be_valid) << "op " << op;
      if (fp_valid) {
        EXPECT_EQ(cut_fp, want_fp) << "op " << op << ": the active's fingerprint at the cut";
      }
      EXPECT_EQ(replica->applied_fingerprint(), want_fp) << "op " << op << ": the replica's fingerprint";
      fp_checks += fp_valid;
      ASSERT_FALSE(HasFailure()) << "op " << op << ", capture " << captures;
      src->capture_release();
      capturing = false;
      captures++;
    }
  }
  EXPECT_GT(captures, 500u);
  EXPECT_GT(full_captures, 20u);
  EXPECT_GT(fp_checks, 500u);
  EXPECT_GT(eexist, 0u);
  EXPECT_GT(src->stats().capture_cow, 0u);
}

}  // namespace
}  // namespace ftpair::dp

namespace ftpair::dp {
namespace {

/* The record's keys read in place: key_of_record() is the full key's test, and
 * udp_key_of_record() (the NF's fast loop) the same for a UDP key of direction d, so it must
 * refuse a record of another protocol with the same addresses and ports, and any one field
 * changed. */
TEST(FlowTable, KeysAreReadOutOfTheRecordInPlace) {
  std::mt19937 rng(20261207);
  for (int round = 0; round < 2000; round++) {
    FlowRecord r{};
    r.st.in_ip = rng();
    r.st.ext_ip = rng();
    r.st.nat_ip = rng();
    r.st.in_port = static_cast<uint16_t>(rng());
    r.st.ext_port = static_cast<uint16_t>(rng());
    r.st.nat_port = static_cast<uint16_t>(rng());
    const uint8_t protos[] = {IPPROTO_UDP, IPPROTO_TCP, IPPROTO_ICMP};
    r.st.proto = protos[rng() % 3];
    for (unsigned d = 0; d < 2; d++) {
      const FlowKey own = d == 0 ? inside_key(r.st) : outside_key(r.st);
      EXPECT_TRUE(FlowTable::key_of_record(r, d, own));
      EXPECT_FALSE(FlowTable::key_of_record(r, d ^ 1, own)) << "the other direction's";
      // The same key as UDP's: the UDP test takes it exactly when the record is UDP's.
      FlowKey as_udp = own;
      as_udp.proto = IPPROTO_UDP;
      EXPECT_EQ(FlowTable::udp_key_of_record(r, d, as_udp), r.st.proto == IPPROTO_UDP);
      EXPECT_EQ(FlowTable::udp_key_of_record(r, d, as_udp), FlowTable::key_of_record(r, d, as_udp));
      // Any one byte of the addresses or ports changed: neither takes it.
      for (unsigned byte = 0; byte < 12; byte++) {
        FlowKey k = as_udp;
        reinterpret_cast<uint8_t *>(&k)[byte] ^= static_cast<uint8_t>(1 + rng() % 255);
        EXPECT_FALSE(FlowTable::udp_key_of_record(r, d, k)) << "byte " << byte;
        EXPECT_FALSE(FlowTable::key_of_record(r, d, k)) << "byte " << byte;
      }
    }
  }
}

}  // namespace
}  // namespace ftpair::dp
