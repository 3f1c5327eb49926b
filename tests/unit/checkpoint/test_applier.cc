// The standby's applier, fed checkpoints produced from a real flow table the way the
// engine's send_capture produces them.
#include <netinet/in.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <rte_cycles.h>

#include "checkpoint/applier.h"
#include "checkpoint/capture_encoder.h"
#include "checkpoint/record_codec.h"
#include "checkpoint/sync_server.h"
#include "checkpoint/version.h"
#include "dataplane/flow_table.h"

#include "table_util.h"

namespace ftpair::ckpt {
namespace {

using testutil::dump;
using testutil::FlowMap;

std::unique_ptr<dp::FlowTable> make_table(uint32_t capacity) { return testutil::make_table(capacity, "t_ap_"); }

std::string describe(const dp::FlowState &s) {
  char buf[160];
  std::snprintf(buf, sizeof(buf), "{in %08x:%u ext %08x:%u nat %08x:%u proto %u state %u flags %#x}",
                ntohl(s.in_ip), ntohs(s.in_port), ntohl(s.ext_ip), ntohs(s.ext_port), ntohl(s.nat_ip),
                ntohs(s.nat_port), s.proto, s.tcp_state, s.flags);
  return buf;
}

::testing::AssertionResult same_flows(const FlowMap &want, const FlowMap &got) {
  for (const auto &[slot, st] : want) {
    auto it = got.find(slot);
    if (it == got.end())
      return ::testing::AssertionFailure() << "slot " << slot << " missing on the standby (want " << describe(st)
                                           << "); " << want.size() << " vs " << got.size() << " flows";
    if (!(it->second == st))
      return ::testing::AssertionFailure() << "slot " << slot << ": want " << describe(st) << ", got "
                                           << describe(it->second);
  }
  for (const auto &[slot, st] : got)
    if (!want.count(slot))
      return ::testing::AssertionFailure() << "slot " << slot << " extra on the standby: " << describe(st);
  return ::testing::AssertionSuccess();
}

v1::Hello make_hello(uint64_t generation, const VersionRange &v = local_versions(), uint32_t capacity = 0) {
  v1::Hello h;
  h.set_node_id("node-a");
  h.set_generation(generation);
  h.set_software_version("test");
  h.set_protocol_version_min(v.protocol_min);
  h.set_protocol_version_max(v.protocol_max);
  for (uint32_t f : v.record_formats) h.add_record_formats(f);
  h.set_role("active");
  h.set_flow_capacity(capacity);
  return h;
}

VersionRange range(uint32_t lo, uint32_t hi, std::vector<uint32_t> formats) {
  VersionRange v;
  v.protocol_min = lo;
  v.protocol_max = hi;
  v.record_formats = std::move(formats);
  return v;
}

/* The active side: a flow table with a single writer (this test), random operations with
 * unique keys, and checkpoints produced like Engine::send_capture. */
class Source {
 public:
  Source(dp::FlowTable &t, uint64_t seed) : t_(t), rng_(seed) {}

  dp::FlowState fresh_state() {
    static const uint8_t protos[] = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP};
    const uint32_t id = next_id_++;
    dp::FlowState s{};
    s.in_ip = htonl(0x0a000000u + id);
    s.ext_ip = htonl(0xc6336400u + (id % 251));
    s.nat_ip = htonl(0xcb007100u + (id >> 16));
    s.in_port = htons(static_cast<uint16_t>(1024 + id % 50000));
    s.ext_port = htons(static_cast<uint16_t>(rng_() % 2 ? 443 : 53));
    s.nat_port = htons(static_cast<uint16_t>(id & 0xffff));
    s.proto = protos[rng_() % 3];
    s.tcp_state = s.proto == IPPROTO_TCP ? static_cast<uint8_t>(dp::TcpState::SYN_SENT) : 0;
    s.flags = rng_() % 8 == 0 ? dp::kFlowPortForward : 0;
    return s;
  }

  int insert(const dp::FlowState &s) {
    int slot = t_.insert(s, rte_rdtsc());
    if (slot >= 0) live_.push_back(static_cast<uint32_t>(slot));
    return slot;
  }
  void insert() { EXPECT_GE(insert(fresh_state()), 0); }

  // Re-inserts the keys of a flow removed earlier (the same 5-tuple coming back, or a NAT
  // that hands the same port out again). Returns false when there is none to reuse.
  bool reinsert_removed() {
    if (removed_.empty()) return false;
    size_t i = rng_() % removed_.size();
    dp::FlowState s = removed_[i];
    removed_.erase(removed_.begin() + long(i));
    s.flags &= static_cast<uint8_t>(~dp::kFlowInUse);
    if (s.proto == IPPROTO_TCP) s.tcp_state = static_cast<uint8_t>(dp::TcpState::SYN_SENT);
    EXPECT_GE(insert(s), 0);
    return true;
  }

  void modify() {
    if (live_.empty()) return insert();
    uint32_t slot = live_[rng_() % live_.size()];
    dp::FlowRecord &r = t_.record(slot);
    t_.touch(slot);
    if (r.st.proto == IPPROTO_TCP) r.st.tcp_state = static_cast<uint8_t>(1 + rng_() % 6);
    r.st.flags ^= static_cast<uint8_t>(rng_() % 2 ? dp::kFlowReplied : dp::kFlowFinFromInside);
    r.last_seen_tsc = rte_rdtsc();
  }

  void remove() {
    if (live_.empty()) return;
    size_t i = rng_() % live_.size();
    uint32_t slot = live_[i];
    live_[i] = live_.back();
    live_.pop_back();
    removed_.push_back(t_.record(slot).st);
    if (removed_.size() > 64) removed_.erase(removed_.begin());
    t_.remove(slot);
  }

  // One random operation; the table hovers around `target` flows.
  void random_op(uint32_t target, bool reuse_keys = false) {
    const uint32_t size = t_.size();
    const unsigned r = static_cast<unsigned>(rng_() % 100);
    if (size < target / 2 || (size < target && r < 35)) {
      if (!(reuse_keys && rng_() % 3 == 0 && reinsert_removed())) insert();
    } else if (r < 70) {
      modify();
    } else {
      remove();
    }
  }

  std::mt19937_64 &rng() { return rng_; }

 private:
  dp::FlowTable &t_;
  std::mt19937_64 rng_;
  uint32_t next_id_ = 1;
  std::vector<uint32_t> live_;
  std::vector<dp::FlowState> removed_;
};

struct Produced {
  uint64_t epoch = 0;
  std::vector<v1::Checkpoint> msgs;
  FlowMap cut;  // the source table as of the flip
  size_t records = 0;
};

/* Flips the epoch and captures like the engine: flip_epoch(true, kind), then the worker's
 * capture_step until done (with `during` run between steps: the worker's own changes,
 * exercising copy-before-write), then encode the capture with the engine's encoder and
 * release it. */
Produced produce(dp::FlowTable &t, bool full, uint32_t format, uint64_t generation, size_t per,
                 const std::function<void()> &during = nullptr, uint32_t budget = 16) {
  Produced p;
  int64_t e = t.flip_epoch(true, full ? dp::CaptureKind::FULL : dp::CaptureKind::DIRTY);
  EXPECT_GT(e, 0);
  p.epoch = static_cast<uint64_t>(e);
  p.cut = dump(t);
  while (t.capture_step(budget) > 0)
    if (during) during();
  EXPECT_EQ(t.capture_done(), p.epoch);
  const auto &cap = t.captured();
  p.records = cap.size();
  CaptureHeader h;
  h.epoch = p.epoch;
  h.generation = generation;
  h.full = full;
  h.format = format;
  h.chunk_records = per;
  h.now_tsc = rte_rdtsc();
  h.tsc_hz = rte_get_tsc_hz();
  std::vector<v1::SyncMessage> msgs;
  Status st = encode_capture(cap.data(), cap.size(), h, &msgs);
  EXPECT_TRUE(st.ok()) << st.str();
  for (auto &m : msgs) p.msgs.push_back(std::move(*m.mutable_checkpoint()));
  t.capture_release();
  return p;
}

class ApplierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    a_ = make_table(1024);
    b_ = make_table(1024);
    ASSERT_TRUE(a_ && b_);
    ap_ = std::make_unique<Applier>(*b_, mu_, "node-b");
    src_ = std::make_unique<Source>(*a_, 1234);
  }

  void hello(uint64_t generation = 5, uint64_t local_generation = 5, const VersionRange &v = local_versions()) {
    ap_->begin_stream();
    v1::Hello reply;
    Status st = ap_->on_hello(make_hello(generation, v), local_generation, &reply);
    ASSERT_TRUE(st.ok()) << st.message();
    format_ = reply.chosen_record_format();
    generation_ = generation;
  }

  // Feeds every message; all must be accepted and only the last acknowledged.
  void deliver_ok(const Produced &p) {
    for (size_t i = 0; i < p.msgs.size(); i++) {
      bool ack = true;
      v1::Ack a;
      Status st = ap_->on_checkpoint(p.msgs[i], &ack, &a);
      ASSERT_TRUE(st.ok()) << "epoch " << p.epoch << " message " << i << ": " << st.message();
      if (i + 1 < p.msgs.size()) {
        ASSERT_FALSE(ack) << "chunk " << i << " acknowledged before the last chunk";
      } else {
        ASSERT_TRUE(ack);
        EXPECT_EQ(a.epoch(), p.epoch);
        EXPECT_EQ(a.flows(), b_->size());
      }
    }
    EXPECT_EQ(ap_->applied_epoch(), p.epoch);
    EXPECT_TRUE(ap_->in_sync());
  }

  Status deliver(const v1::Checkpoint &c, bool *ack = nullptr) {
    bool dummy;
    v1::Ack a;
    return ap_->on_checkpoint(c, ack ? ack : &dummy, &a);
  }

  Produced produce(bool full, size_t per = 32768, const std::function<void()> &during = nullptr) {
    return ckpt::produce(*a_, full, format_, generation_, per, during);
  }

  FlowMap b_flows() {
    std::lock_guard<std::mutex> g(mu_);
    return dump(*b_);
  }

  void fill(unsigned n) {
    for (unsigned i = 0; i < n; i++) src_->insert();
  }

  // Hello, fill, full sync, a few incrementals: the standby is in sync at the returned epoch.
  uint64_t synced(unsigned flows = 200) {
    hello();
    fill(flows);
    Produced p = produce(true);
    deliver_ok(p);
    EXPECT_TRUE(same_flows(p.cut, b_flows()));
    return p.epoch;
  }

  std::unique_ptr<dp::FlowTable> a_, b_;
  std::mutex mu_;
  std::unique_ptr<Applier> ap_;
  std::unique_ptr<Source> src_;
  uint32_t format_ = kRecordFormatNewest;
  uint64_t generation_ = 5;
};

// ---------------------------------------------------------------- hello

TEST_F(ApplierTest, HelloNegotiates) {
  v1::Hello reply;
  Status st = ap_->on_hello(make_hello(7, local_versions(), 1024), 3, &reply);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(reply.chosen_protocol_version(), kProtocolVersionMax);
  EXPECT_EQ(reply.chosen_record_format(), kRecordFormatNewest);
  EXPECT_EQ(reply.node_id(), "node-b");
  EXPECT_EQ(reply.generation(), 3u);
  EXPECT_EQ(reply.role(), "standby");
  EXPECT_EQ(reply.flow_capacity(), 1024u);
  EXPECT_EQ(ap_->record_format(), kRecordFormatNewest);
  EXPECT_EQ(ap_->peer_node(), "node-a");
  EXPECT_FALSE(ap_->in_sync());
}

TEST_F(ApplierTest, HelloFromPreviousReleaseChoosesFormat1) {
  v1::Hello reply;
  Status st = ap_->on_hello(make_hello(1, range(1, 1, {1})), 1, &reply);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(reply.chosen_record_format(), 1u);
  format_ = 1;
  generation_ = 1;
  fill(50);
  Produced p = produce(true);
  deliver_ok(p);
  EXPECT_TRUE(same_flows(p.cut, b_flows()));
  // A batch in a format other than the negotiated one is refused.
  src_->modify();
  format_ = 2;
  Produced q = produce(false);
  Status r = deliver(q.msgs[0]);
  EXPECT_EQ(r.code(), Code::INVALID_ARGUMENT) << r.message();
  EXPECT_NE(r.message().find("format 2"), std::string::npos) << r.message();
}

TEST_F(ApplierTest, HelloIncompatibleVersionsRefused) {
  v1::Hello reply;
  Status st = ap_->on_hello(make_hello(1, range(2, 3, {2, 1})), 1, &reply);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(st.message().find("protocol 2..3"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("protocol 1..1"), std::string::npos) << st.message();
  st = ap_->on_hello(make_hello(1, range(1, 1, {5})), 1, &reply);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(st.message().find("record formats [5]"), std::string::npos) << st.message();
  EXPECT_EQ(ap_->stats().rejected_version.load(), 2u);
  // No hello was accepted: checkpoints are still refused.
  fill(3);
  Produced p = produce(true);
  EXPECT_EQ(deliver(p.msgs[0]).code(), Code::FAILED_PRECONDITION);
  EXPECT_TRUE(b_flows().empty());
}

TEST_F(ApplierTest, HelloFromOlderGenerationRefused) {
  v1::Hello reply;
  Status st = ap_->on_hello(make_hello(3), 4, &reply);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(st.message().find("generation 3"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("4"), std::string::npos) << st.message();
  generation_ = 3;
  fill(3);
  Produced p = produce(true);
  EXPECT_EQ(deliver(p.msgs[0]).code(), Code::FAILED_PRECONDITION);
  EXPECT_TRUE(b_flows().empty());
  // Same or newer generation: fine.
  EXPECT_TRUE(ap_->on_hello(make_hello(4), 4, &reply).ok());
  EXPECT_TRUE(ap_->on_hello(make_hello(9), 4, &reply).ok());
}

/* A standby in sync that refuses a live active's stream (a stale generation, here) no longer
 * follows that active: it says it is out of sync, so it is neither promoted on a copy that
 * has stopped moving nor counted as protection. */
TEST_F(ApplierTest, ARefusedHelloLeavesTheStandbyOutOfSync) {
  hello(5, 5);
  fill(3);
  deliver_ok(produce(true));
  ASSERT_TRUE(ap_->in_sync());
  ap_->end_stream();
  EXPECT_TRUE(ap_->in_sync());  // a stream that ends (the active died) keeps the copy it had
  ap_->begin_stream();
  v1::Hello reply;
  EXPECT_EQ(ap_->on_hello(make_hello(5), 6, &reply).code(), Code::FAILED_PRECONDITION);
  EXPECT_FALSE(ap_->in_sync());
}

/* A node that took the active role and turns standby again holds its own table, not a copy
 * of the new active's: it is out of sync until a full sync (and its scrub has nothing to
 * compare meanwhile). A standby that only refused checkpoints for a while keeps its copy. */
TEST_F(ApplierTest, ANodeThatWasActiveIsOutOfSyncWhenItTurnsStandby) {
  hello(5, 5);
  fill(3);
  deliver_ok(produce(true));
  ASSERT_TRUE(ap_->in_sync());
  ap_->set_accepting(true);
  EXPECT_TRUE(ap_->in_sync()) << "accepting again while accepting changes nothing";
  ap_->set_accepting(false);  // promoted: the worker now writes the table
  ap_->set_accepting(true);   // demoted
  EXPECT_FALSE(ap_->in_sync());
  EXPECT_TRUE(ap_->scrub_step(1000).ok()) << "out of sync: nothing to scrub";
}

TEST_F(ApplierTest, HelloFromLargerTableRefused) {
  v1::Hello reply;
  Status st = ap_->on_hello(make_hello(1, local_versions(), 4096), 1, &reply);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(st.message().find("4096"), std::string::npos) << st.message();
}

TEST_F(ApplierTest, CheckpointBeforeHelloRefused) {
  fill(10);
  Produced p = produce(true);
  Status st = deliver(p.msgs[0]);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(st.message().find("hello"), std::string::npos) << st.message();
  EXPECT_TRUE(b_flows().empty());
  // A new stream forgets the previous hello.
  hello();
  ap_->end_stream();
  ap_->begin_stream();
  EXPECT_EQ(deliver(p.msgs[0]).code(), Code::FAILED_PRECONDITION);
  EXPECT_TRUE(b_flows().empty());
}

TEST_F(ApplierTest, CheckpointFromOlderGenerationThanHelloRefused) {
  hello(6, 6);
  fill(10);
  generation_ = 5;
  Produced p = produce(true);
  EXPECT_EQ(deliver(p.msgs[0]).code(), Code::FAILED_PRECONDITION);
  EXPECT_TRUE(b_flows().empty());
}

// ---------------------------------------------------------------- full sync and incrementals

TEST_F(ApplierTest, FullSyncOneChunkThenIncrementals) {
  hello();
  fill(300);
  Produced p = produce(true);
  ASSERT_EQ(p.msgs.size(), 1u);
  EXPECT_EQ(p.records, 300u);
  deliver_ok(p);
  EXPECT_TRUE(same_flows(p.cut, b_flows()));
  EXPECT_EQ(ap_->stats().full_syncs.load(), 1u);
  EXPECT_DOUBLE_EQ(ap_->full_sync_progress(), 1.0);
  for (int round = 0; round < 20; round++) {
    for (int i = 0; i < 30; i++) src_->random_op(300);
    Produced q = produce(false);
    deliver_ok(q);
    ASSERT_TRUE(same_flows(q.cut, b_flows())) << "round " << round;
  }
  // An empty epoch still moves the standby forward.
  Produced e = produce(false);
  EXPECT_EQ(e.records, 0u);
  deliver_ok(e);
}

TEST_F(ApplierTest, FullSyncInSeveralChunksThenIncrementals) {
  hello();
  fill(300);
  Produced p = produce(true, 64);
  ASSERT_EQ(p.msgs.size(), 5u);
  deliver_ok(p);
  EXPECT_TRUE(same_flows(p.cut, b_flows()));
  for (int round = 0; round < 10; round++) {
    for (int i = 0; i < 50; i++) src_->random_op(300);
    Produced q = produce(false, 16);  // several batches in one message
    deliver_ok(q);
    ASSERT_TRUE(same_flows(q.cut, b_flows())) << "round " << round;
  }
}

// The session log's sequence at the cut: taken when the epoch is acknowledged, not before.
TEST_F(ApplierTest, LogSequenceOfTheNewestAppliedEpoch) {
  uint32_t seq = 1;
  EXPECT_FALSE(ap_->log_sequence(&seq));
  hello();
  fill(100);
  Produced p = produce(true, 40);
  ASSERT_EQ(p.msgs.size(), 3u);
  for (auto &m : p.msgs) m.set_log_sequence(77);
  for (size_t i = 0; i + 1 < p.msgs.size(); i++) {
    bool ack = true;
    v1::Ack a;
    ASSERT_TRUE(ap_->on_checkpoint(p.msgs[i], &ack, &a).ok());
    EXPECT_FALSE(ap_->log_sequence(&seq)) << "chunk " << i << " of an unfinished full sync";
  }
  bool ack = false;
  v1::Ack a;
  ASSERT_TRUE(ap_->on_checkpoint(p.msgs.back(), &ack, &a).ok());
  ASSERT_TRUE(ack);
  ASSERT_TRUE(ap_->log_sequence(&seq));
  EXPECT_EQ(seq, 77u);
  for (int i = 0; i < 10; i++) src_->random_op(100);
  Produced q = produce(false);
  q.msgs[0].set_log_sequence(0xFFFFFFFFu);
  deliver_ok(q);
  ASSERT_TRUE(ap_->log_sequence(&seq));
  EXPECT_EQ(seq, 0xFFFFFFFFu);
  Produced r = produce(false);  // an active that stopped logging (or an older one)
  deliver_ok(r);
  EXPECT_FALSE(ap_->log_sequence(&seq));
  // A refused checkpoint changes nothing.
  Produced dup = r;
  dup.msgs[0].set_log_sequence(5);
  ack = false;
  EXPECT_FALSE(ap_->on_checkpoint(dup.msgs[0], &ack, &a).ok());
  EXPECT_FALSE(ap_->log_sequence(&seq));
}

TEST_F(ApplierTest, FullSyncReplacesWhatTheStandbyHad) {
  synced(100);
  // The standby had stale state: a new stream's full sync must leave exactly the cut.
  for (int i = 0; i < 200; i++) src_->random_op(150);
  hello();
  Produced p = produce(true, 40);
  deliver_ok(p);
  EXPECT_TRUE(same_flows(p.cut, b_flows()));
}

TEST_F(ApplierTest, FullSyncOfEmptyTable) {
  hello();
  Produced p = produce(true);
  ASSERT_EQ(p.msgs.size(), 1u);
  deliver_ok(p);
  EXPECT_TRUE(b_flows().empty());
}

// ---------------------------------------------------------------- refusals

TEST_F(ApplierTest, GapRefusedTableUnchanged) {
  uint64_t e0 = synced();
  src_->modify();
  src_->remove();
  Produced skipped = produce(false);
  src_->insert();
  src_->modify();
  Produced next = produce(false);
  ASSERT_EQ(next.epoch, e0 + 2);
  FlowMap before = b_flows();
  Status st = deliver(next.msgs[0]);
  EXPECT_EQ(st.code(), Code::INVALID_ARGUMENT);
  EXPECT_NE(st.message().find("gap"), std::string::npos) << st.message();
  EXPECT_TRUE(same_flows(before, b_flows()));
  EXPECT_EQ(ap_->applied_epoch(), e0);
  EXPECT_EQ(ap_->stats().rejected_gap.load(), 1u);
  // The refusal changed nothing: the epochs in order still apply.
  deliver_ok(skipped);
  EXPECT_TRUE(same_flows(skipped.cut, b_flows()));
  deliver_ok(next);
  EXPECT_TRUE(same_flows(next.cut, b_flows()));
}

TEST_F(ApplierTest, DuplicateRefusedTableUnchanged) {
  uint64_t e0 = synced();
  src_->modify();
  Produced p = produce(false);
  deliver_ok(p);
  FlowMap before = b_flows();
  Status st = deliver(p.msgs[0]);
  EXPECT_EQ(st.code(), Code::INVALID_ARGUMENT);
  EXPECT_NE(st.message().find("duplicate"), std::string::npos) << st.message();
  EXPECT_TRUE(same_flows(before, b_flows()));
  EXPECT_EQ(ap_->applied_epoch(), e0 + 1);
  EXPECT_EQ(ap_->stats().rejected_duplicate.load(), 1u);
  // An even older epoch is a duplicate too.
  v1::Checkpoint old = p.msgs[0];
  old.set_epoch(e0 - 1);
  EXPECT_NE(deliver(old).message().find("duplicate"), std::string::npos);
}

TEST_F(ApplierTest, CorruptBatchRefusedTableUnchanged) {
  uint64_t e0 = synced();
  for (int i = 0; i < 40; i++) src_->random_op(200);
  Produced p = produce(false, 8);
  ASSERT_GT(p.msgs[0].batches_size(), 2);
  FlowMap before = b_flows();
  {
    // A flipped byte in the last batch: the earlier, good batches must not be applied either.
    v1::Checkpoint bad = p.msgs[0];
    v1::RecordBatch *b = bad.mutable_batches(bad.batches_size() - 1);
    std::string rec = b->records();
    rec[rec.size() / 2] = static_cast<char>(rec[rec.size() / 2] ^ 0x40);
    b->set_records(rec);
    Status st = deliver(bad);
    EXPECT_EQ(st.code(), Code::DATA_LOSS) << st.message();
    EXPECT_NE(st.message().find("CRC"), std::string::npos) << st.message();
  }
  {
    v1::Checkpoint bad = p.msgs[0];
    bad.mutable_batches(0)->set_count(bad.batches(0).count() + 1);
    EXPECT_EQ(deliver(bad).code(), Code::DATA_LOSS);
  }
  {
    // Valid CRC, a field out of range.
    v1::Checkpoint bad = p.msgs[0];
    v1::RecordBatch *b = bad.mutable_batches(1);
    std::string rec = b->records();
    rec[4] = 2;  // in_use 2
    b->set_records(rec);
    b->set_crc32c(crc32c(rec.data(), rec.size()));
    EXPECT_EQ(deliver(bad).code(), Code::DATA_LOSS);
  }
  EXPECT_TRUE(same_flows(before, b_flows()));
  EXPECT_EQ(ap_->applied_epoch(), e0);
  EXPECT_EQ(ap_->stats().rejected_corrupt.load(), 3u);
  // The intact message still applies.
  deliver_ok(p);
  EXPECT_TRUE(same_flows(p.cut, b_flows()));
}

TEST_F(ApplierTest, IncrementalBeforeFullSyncRefused) {
  hello();
  fill(20);
  (void)produce(false);  // epoch 1: nothing has reached the standby
  src_->modify();
  Produced p = produce(false);
  Status st = deliver(p.msgs[0]);
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION) << st.message();
  EXPECT_NE(st.message().find("full sync"), std::string::npos) << st.message();
  EXPECT_TRUE(b_flows().empty());
  EXPECT_FALSE(ap_->in_sync());
}

TEST_F(ApplierTest, IncrementalDuringFullSyncRefused) {
  synced();
  hello();
  for (int i = 0; i < 100; i++) src_->random_op(200);
  Produced full = produce(true, 50);
  ASSERT_GE(full.msgs.size(), 2u);
  ASSERT_TRUE(deliver(full.msgs[0]).ok());
  src_->modify();
  Produced inc = produce(false);
  EXPECT_FALSE(deliver(inc.msgs[0]).ok());
}

TEST_F(ApplierTest, FullSyncChunkOutOfOrderRefused) {
  hello();
  fill(200);
  Produced p = produce(true, 40);
  ASSERT_EQ(p.msgs.size(), 5u);
  // A chunk other than 0 without a full sync in progress.
  Status st = deliver(p.msgs[1]);
  EXPECT_EQ(st.code(), Code::INVALID_ARGUMENT);
  EXPECT_NE(st.message().find("out of order"), std::string::npos) << st.message();
  EXPECT_TRUE(b_flows().empty());
  ASSERT_TRUE(deliver(p.msgs[0]).ok());
  FlowMap after0 = b_flows();
  EXPECT_EQ(after0.size(), 40u);
  st = deliver(p.msgs[2]);  // skips chunk 1
  EXPECT_EQ(st.code(), Code::INVALID_ARGUMENT) << st.message();
  EXPECT_NE(st.message().find("expected chunk 1"), std::string::npos) << st.message();
  EXPECT_TRUE(same_flows(after0, b_flows()));
  ASSERT_TRUE(deliver(p.msgs[1]).ok());
  st = deliver(p.msgs[1]);  // repeats chunk 1
  EXPECT_EQ(st.code(), Code::INVALID_ARGUMENT) << st.message();
  // A chunk of another epoch.
  v1::Checkpoint other = p.msgs[2];
  other.set_epoch(p.epoch + 1);
  EXPECT_EQ(deliver(other).code(), Code::INVALID_ARGUMENT);
  EXPECT_FALSE(ap_->in_sync());
  // The remaining chunks in order complete it.
  for (size_t i = 2; i < p.msgs.size(); i++) {
    bool ack = false;
    ASSERT_TRUE(deliver(p.msgs[i], &ack).ok());
    EXPECT_EQ(ack, i + 1 == p.msgs.size());
  }
  EXPECT_TRUE(ap_->in_sync());
  EXPECT_TRUE(same_flows(p.cut, b_flows()));
}

TEST_F(ApplierTest, FullSyncCountMismatchIsDataLoss) {
  hello();
  fill(100);
  Produced p = produce(true, 30);
  for (auto &m : p.msgs) m.set_flows_at_cut(101);
  for (size_t i = 0; i + 1 < p.msgs.size(); i++) ASSERT_TRUE(deliver(p.msgs[i]).ok());
  bool ack = true;
  Status st = deliver(p.msgs.back(), &ack);
  EXPECT_EQ(st.code(), Code::DATA_LOSS);
  EXPECT_NE(st.message().find("101"), std::string::npos) << st.message();
  EXPECT_FALSE(ack);
  EXPECT_FALSE(ap_->in_sync());
  // Nothing incremental can follow.
  src_->modify();
  Produced q = produce(false);
  EXPECT_FALSE(deliver(q.msgs[0]).ok());
}

TEST_F(ApplierTest, StreamEndingMidFullSyncLeavesStandbyOutOfSync) {
  synced();
  hello();
  Produced p = produce(true, 50);
  ASSERT_GE(p.msgs.size(), 2u);
  ASSERT_TRUE(deliver(p.msgs[0]).ok());
  ap_->end_stream();
  EXPECT_FALSE(ap_->in_sync());
  // The next stream must start over with a full sync.
  hello();
  src_->modify();
  Produced q = produce(false);
  EXPECT_FALSE(deliver(q.msgs[0]).ok());
  Produced f = produce(true, 50);
  deliver_ok(f);
  EXPECT_TRUE(same_flows(f.cut, b_flows()));
}

/* Regression: while a second full sync is being applied, the standby's table is cleared and
 * half filled; in_sync() must say false, or a failover in that window would promote it. */
TEST_F(ApplierTest, NotInSyncWhileFullSyncInProgress) {
  synced();
  hello();
  Produced p = produce(true, 50);
  ASSERT_GE(p.msgs.size(), 2u);
  ASSERT_TRUE(deliver(p.msgs[0]).ok());
  EXPECT_LT(b_flows().size(), p.cut.size());
  EXPECT_FALSE(ap_->in_sync());
}

/* Regression: within one epoch a flow's keys can move to another slot whose record comes
 * earlier in the batch (a NAT port handed out again, a 5-tuple coming back). The applier
 * must free every slot whose flow changes before adding any, or the earlier slot's add
 * finds the keys still held (-EEXIST, DATA_LOSS, a forced full resync). */
TEST_F(ApplierTest, KeysMovingToAnEarlierDirtySlotInOneEpoch) {
  hello();
  dp::FlowState v = src_->fresh_state(), z = src_->fresh_state(), w = src_->fresh_state();
  int sv = src_->insert(v);  // slot 0
  int sz = src_->insert(z);  // slot 1
  ASSERT_GE(sv, 0);
  ASSERT_GE(sz, 0);
  Produced p = produce(true);
  deliver_ok(p);
  // Epoch: remove V (slot 0, dirty first), remove Z (slot 1), insert W (takes slot 1, the
  // free head), insert Z again (takes slot 0). Records: slot 0 = Z, slot 1 = W, in that order.
  a_->remove(static_cast<uint32_t>(sv));
  a_->remove(static_cast<uint32_t>(sz));
  ASSERT_EQ(a_->insert(w, rte_rdtsc()), sz);
  ASSERT_EQ(a_->insert(z, rte_rdtsc()), sv);
  Produced q = produce(false);
  deliver_ok(q);
  EXPECT_TRUE(same_flows(q.cut, b_flows()));
}

// ---------------------------------------------------------------- the property

class ApplierProperty : public ApplierTest, public ::testing::WithParamInterface<uint64_t> {};

/* Random flow operations on the active interleaved with checkpoints at random points,
 * sometimes with changes made while the capture is still being copied (copy-before-write),
 * sometimes a new stream with a full sync in chunks. After every acknowledged epoch the
 * standby equals the active as of that epoch's cut. */
void run_property(Source &src, dp::FlowTable &a, Applier &ap, std::mutex &mu,
                  dp::FlowTable &b, uint64_t seed, bool reuse_keys) {
  std::mt19937_64 rng(seed * 7919 + 1);
  src.rng().seed(seed);
  const uint32_t format = seed % 4 == 1 ? kRecordFormatV1 : seed % 4 == 2 ? kRecordFormatV2
                          : seed % 4 == 3 ? kRecordFormatV3 : kRecordFormatV4;
  const uint64_t generation = 3;
  auto hello = [&] {
    ap.begin_stream();
    v1::Hello reply;
    VersionRange v = local_versions();
    if (format == kRecordFormatV1) v.record_formats = {1};
    if (format == kRecordFormatV2) v.record_formats = {2, 1};
    if (format == kRecordFormatV3) v.record_formats = {3, 2, 1};
    Status st = ap.on_hello(make_hello(generation, v), generation, &reply);
    ASSERT_TRUE(st.ok()) << st.message();
    ASSERT_EQ(reply.chosen_record_format(), format);
  };
  auto apply_all = [&](const Produced &p, const char *what) {
    for (size_t i = 0; i < p.msgs.size(); i++) {
      bool ack = false;
      v1::Ack a_msg;
      Status st = ap.on_checkpoint(p.msgs[i], &ack, &a_msg);
      ASSERT_TRUE(st.ok()) << what << " epoch " << p.epoch << " message " << i << ": " << st.message();
      ASSERT_EQ(ack, i + 1 == p.msgs.size());
      if (ack) {
        ASSERT_EQ(a_msg.epoch(), p.epoch);
      }
    }
    ASSERT_EQ(ap.applied_epoch(), p.epoch);
    FlowMap got;
    {
      std::lock_guard<std::mutex> g(mu);
      got = dump(b);
    }
    ASSERT_TRUE(same_flows(p.cut, got)) << what << " epoch " << p.epoch << " (seed " << seed << ")";
  };
  const uint32_t target = 400;
  auto during_ops = [&] {
    unsigned k = static_cast<unsigned>(rng() % 4);
    for (unsigned i = 0; i < k; i++) src.random_op(target, reuse_keys);
  };

  hello();
  for (int i = 0; i < 150; i++) src.random_op(target, reuse_keys);
  apply_all(produce(a, true, format, generation, 64, during_ops, 8), "first full sync");
  unsigned checkpoints = 0, fulls = 1, with_cow = 0;
  const uint64_t cow_before = a.stats().capture_cow;
  for (int op = 0; op < 2000; op++) {
    src.random_op(target, reuse_keys);
    if (rng() % 10 != 0) continue;
    checkpoints++;
    const bool full = rng() % 25 == 0;
    const bool cow = rng() % 3 == 0;
    with_cow += cow;
    if (full) {
      fulls++;
      hello();
    }
    Produced p = produce(a, full, format, generation, full ? 37 : 25, cow ? std::function<void()>(during_ops) : nullptr,
                         static_cast<uint32_t>(1 + rng() % 8));
    apply_all(p, full ? "full sync" : "incremental");
    if (::testing::Test::HasFatalFailure()) return;
  }
  EXPECT_GE(checkpoints, 150u);
  EXPECT_GE(with_cow, 20u);
  EXPECT_GT(a.stats().capture_cow, cow_before) << "copy-before-write never happened";
  EXPECT_EQ(ap.stats().full_syncs.load(), fulls);
  ::testing::Test::RecordProperty("checkpoints", static_cast<int>(checkpoints));
}

TEST_P(ApplierProperty, StandbyEqualsActiveAtEveryAcknowledgedCut) {
  run_property(*src_, *a_, *ap_, mu_, *b_, GetParam(), false);
}

INSTANTIATE_TEST_SUITE_P(Seeds, ApplierProperty, ::testing::Values(1, 2, 3, 4, 5, 6, 7, 99));

/* The same property with keys that come back (see the regression above). */
class ApplierPropertyReuse : public ApplierTest, public ::testing::WithParamInterface<uint64_t> {};
TEST_P(ApplierPropertyReuse, StandbyEqualsActiveWithKeyReuse) {
  run_property(*src_, *a_, *ap_, mu_, *b_, GetParam(), true);
}
INSTANTIATE_TEST_SUITE_P(Seeds, ApplierPropertyReuse, ::testing::Values(1, 2, 3));

}  // namespace
}  // namespace ftpair::ckpt

// The standby's scrub follows time, not the epoch rate: 2,048 slots a millisecond since the
// previous scrub, never fewer than the floor, never more than 2,048 at once.
TEST(ScrubBudget, FollowsTimeBetweenTheFloorAndTheCap) {
  EXPECT_EQ(ftpair::ckpt::scrub_budget(0, 256), 256u);
  EXPECT_EQ(ftpair::ckpt::scrub_budget(-5, 256), 256u);                // a clock that went back: the floor
  EXPECT_EQ(ftpair::ckpt::scrub_budget(100000, 256), 256u);            // 0.1 ms: 204 by time, the floor wins
  EXPECT_EQ(ftpair::ckpt::scrub_budget(500000, 256), 1024u);           // 0.5 ms
  EXPECT_EQ(ftpair::ckpt::scrub_budget(1000000, 256), 2048u);          // 1 ms
  EXPECT_EQ(ftpair::ckpt::scrub_budget(int64_t(60) * 1000000000, 256), 2048u);  // an idle minute: still one slice
  EXPECT_EQ(ftpair::ckpt::scrub_budget(100000, 4096), 2048u);          // a floor above the cap is the cap
  EXPECT_EQ(ftpair::ckpt::scrub_budget(100000, 2048), 2048u);
}
