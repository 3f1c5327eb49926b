// Flow-table snapshots on disk: round trip, corruption, usability rules, restore.
#include <netinet/in.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <rte_cycles.h>

#include "checkpoint/snapshot.h"

#include "table_util.h"

namespace ftpair::ckpt {
namespace {

using testutil::dump;
using testutil::FlowMap;

std::unique_ptr<dp::FlowTable> make_table(uint32_t capacity) { return testutil::make_table(capacity, "t_snap_"); }

int64_t unix_ns_now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string read_all(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_all(const std::string &path, const std::string &data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

constexpr size_t kHeaderSize = 128;

class SnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ftpair-snap-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/flows.snap";
    a_ = make_table(2048);
    ASSERT_TRUE(a_);
    // Random flows with unique keys; some removed again so the slots are scattered.
    std::mt19937_64 rng(77);
    const uint64_t now = rte_rdtsc(), hz = rte_get_tsc_hz();
    std::vector<uint32_t> slots;
    for (uint32_t id = 1; id <= 600; id++) {
      dp::FlowState s{};
      static const uint8_t protos[] = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP};
      s.in_ip = htonl(0x0a000000u + id);
      s.ext_ip = htonl(0xc6336400u + id % 200);
      s.nat_ip = htonl(0xcb007101u);
      s.in_port = htons(static_cast<uint16_t>(2000 + id));
      s.ext_port = htons(443);
      s.nat_port = htons(static_cast<uint16_t>(10000 + id));
      s.proto = protos[rng() % 3];
      s.tcp_state = s.proto == IPPROTO_TCP ? static_cast<uint8_t>(1 + rng() % 6) : 0;
      s.flags = static_cast<uint8_t>(rng() % 2 ? dp::kFlowReplied : 0);
      // Seen between 0 and 20 s ago.
      int slot = a_->insert(s, now - rng() % (20 * hz));
      ASSERT_GE(slot, 0);
      slots.push_back(static_cast<uint32_t>(slot));
    }
    for (size_t i = 0; i < slots.size(); i += 3) a_->remove(slots[i]);
    // Capture every in-use slot, as the daemon does before writing a snapshot.
    ASSERT_GT(a_->flip_epoch(true, dp::CaptureKind::FULL), 0);
    while (a_->capture_step(256) > 0) {
    }
    records_ = a_->captured();
    a_->capture_release();
    ASSERT_EQ(records_.size(), a_->size());
    meta_.generation = 12;
    meta_.epoch = 3456;
    meta_.software_version = "0.1.0-test";
    meta_.node_id = "node-a";
    meta_.clean_shutdown = true;
    meta_.record_format = kRecordFormatV2;
    meta_.count = records_.size();
    meta_.created_unix_ns = unix_ns_now();
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  Status write() { return write_snapshot(path_, meta_, records_, rte_rdtsc(), rte_get_tsc_hz()); }
  Status read(SnapshotMeta *m, std::vector<WireRecord> *r, uint32_t capacity = 2048) {
    return read_snapshot(path_, capacity, m, r);
  }

  std::string dir_, path_;
  std::unique_ptr<dp::FlowTable> a_;
  std::vector<dp::CapturedSlot> records_;
  SnapshotMeta meta_;
};

TEST_F(SnapshotTest, RoundTripPreservesMetaAndRecords) {
  for (uint32_t format : {kRecordFormatV1, kRecordFormatV2}) {
    SCOPED_TRACE("format " + std::to_string(format));
    meta_.record_format = format;
    ASSERT_TRUE(write().ok());
    for (const auto &e : std::filesystem::directory_iterator(dir_))  // no temporary file left beside it
      EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
    EXPECT_EQ(std::filesystem::file_size(path_), kHeaderSize + records_.size() * record_size(format));
    SnapshotMeta m;
    std::vector<WireRecord> r;
    Status st = read(&m, &r);
    ASSERT_TRUE(st.ok()) << st.message();
    EXPECT_EQ(m.generation, meta_.generation);
    EXPECT_EQ(m.epoch, meta_.epoch);
    EXPECT_EQ(m.software_version, meta_.software_version);
    EXPECT_EQ(m.node_id, meta_.node_id);
    EXPECT_EQ(m.clean_shutdown, meta_.clean_shutdown);
    EXPECT_EQ(m.record_format, format);
    EXPECT_EQ(m.count, records_.size());
    EXPECT_EQ(m.created_unix_ns, meta_.created_unix_ns);
    ASSERT_EQ(r.size(), records_.size());
    for (size_t i = 0; i < r.size(); i++) {
      EXPECT_EQ(r[i].slot.slot, records_[i].slot);
      EXPECT_EQ(r[i].slot.in_use, 1);
      EXPECT_TRUE(r[i].slot.st == records_[i].st);
      if (format == kRecordFormatV2)
        EXPECT_LE(r[i].idle_ms, 21000u);
      else
        EXPECT_EQ(r[i].idle_ms, 0u);
    }
  }
  // Unclean shutdown flag and a long node id survive too (the id is cut to 32 bytes).
  meta_.clean_shutdown = false;
  meta_.node_id = std::string(40, 'n');
  ASSERT_TRUE(write().ok());
  SnapshotMeta m;
  std::vector<WireRecord> r;
  ASSERT_TRUE(read(&m, &r).ok());
  EXPECT_FALSE(m.clean_shutdown);
  EXPECT_EQ(m.node_id, std::string(32, 'n'));
}

TEST_F(SnapshotTest, EmptySnapshot) {
  records_.clear();
  meta_.count = 0;
  ASSERT_TRUE(write().ok());
  SnapshotMeta m;
  std::vector<WireRecord> r;
  ASSERT_TRUE(read(&m, &r).ok());
  EXPECT_EQ(m.count, 0u);
  EXPECT_TRUE(r.empty());
}

TEST_F(SnapshotTest, CorruptRecordByteIsDataLoss) {
  ASSERT_TRUE(write().ok());
  std::string all = read_all(path_);
  for (size_t off : {kHeaderSize, kHeaderSize + 9, all.size() - 1}) {
    std::string bad = all;
    bad[off] = static_cast<char>(bad[off] ^ 0x10);
    write_all(path_, bad);
    SnapshotMeta m;
    std::vector<WireRecord> r;
    Status st = read(&m, &r);
    EXPECT_EQ(st.code(), Code::DATA_LOSS) << "offset " << off;
    EXPECT_NE(st.message().find("CRC"), std::string::npos) << st.message();
  }
}

TEST_F(SnapshotTest, CorruptHeaderByteIsDataLoss) {
  ASSERT_TRUE(write().ok());
  std::string all = read_all(path_);
  // Every header byte, magic and checksum included.
  for (size_t off = 0; off < kHeaderSize; off++) {
    std::string bad = all;
    bad[off] = static_cast<char>(bad[off] ^ 0x01);
    write_all(path_, bad);
    SnapshotMeta m;
    std::vector<WireRecord> r;
    Status st = read(&m, &r);
    EXPECT_EQ(st.code(), Code::DATA_LOSS) << "offset " << off << ": " << st.message();
  }
  // The generation field specifically: the header checksum catches it.
  std::string bad = all;
  bad[16] = static_cast<char>(bad[16] + 1);
  write_all(path_, bad);
  SnapshotMeta m;
  std::vector<WireRecord> r;
  Status st = read(&m, &r);
  EXPECT_EQ(st.code(), Code::DATA_LOSS);
  EXPECT_NE(st.message().find("header checksum"), std::string::npos) << st.message();
}

TEST_F(SnapshotTest, TruncatedFileIsDataLoss) {
  ASSERT_TRUE(write().ok());
  std::string all = read_all(path_);
  for (size_t len : {all.size() - 1, all.size() - 40, kHeaderSize + 5, kHeaderSize, kHeaderSize - 1, size_t(10),
                     size_t(0)}) {
    write_all(path_, all.substr(0, len));
    SnapshotMeta m;
    std::vector<WireRecord> r;
    Status st = read(&m, &r);
    EXPECT_EQ(st.code(), Code::DATA_LOSS) << "length " << len << ": " << st.message();
  }
  // Trailing garbage is not a valid snapshot either.
  write_all(path_, all + "xx");
  SnapshotMeta m;
  std::vector<WireRecord> r;
  EXPECT_EQ(read(&m, &r).code(), Code::DATA_LOSS);
}

TEST_F(SnapshotTest, MissingIsNotFound) {
  SnapshotMeta m;
  std::vector<WireRecord> r;
  Status st = read(&m, &r);
  EXPECT_EQ(st.code(), Code::NOT_FOUND);
  EXPECT_NE(st.message().find(path_), std::string::npos) << st.message();
}

TEST_F(SnapshotTest, MoreFlowsThanCapacityIsDataLoss) {
  ASSERT_TRUE(write().ok());
  SnapshotMeta m;
  std::vector<WireRecord> r;
  EXPECT_EQ(read(&m, &r, 64).code(), Code::DATA_LOSS);
}

TEST_F(SnapshotTest, WriteErrors) {
  meta_.record_format = 9;
  EXPECT_EQ(write().code(), Code::INVALID_ARGUMENT);
  meta_.record_format = kRecordFormatV2;
  Status st = write_snapshot(dir_ + "/no/such/dir/flows.snap", meta_, records_, rte_rdtsc(), rte_get_tsc_hz());
  EXPECT_EQ(st.code(), Code::INTERNAL);
  EXPECT_NE(st.message().find("no/such/dir"), std::string::npos) << st.message();
}

TEST_F(SnapshotTest, RewriteReplacesAtomically) {
  ASSERT_TRUE(write().ok());
  meta_.epoch = 9999;
  records_.resize(10);
  ASSERT_TRUE(write().ok());
  SnapshotMeta m;
  std::vector<WireRecord> r;
  ASSERT_TRUE(read(&m, &r).ok());
  EXPECT_EQ(m.epoch, 9999u);
  EXPECT_EQ(r.size(), 10u);
}

// ---------------------------------------------------------------- usable

TEST(SnapshotUsable, Rules) {
  const int64_t now = unix_ns_now();
  const int64_t s = 1'000'000'000;
  SnapshotMeta good;
  good.generation = 7;
  good.clean_shutdown = true;
  good.record_format = kRecordFormatV2;
  good.created_unix_ns = now - 30 * s;
  EXPECT_TRUE(snapshot_usable(good, 7, 600, now).ok());
  EXPECT_TRUE(snapshot_usable(good, 6, 600, now).ok());  // newer than persisted
  {
    SnapshotMeta m = good;
    m.record_format = kRecordFormatV1;
    EXPECT_TRUE(snapshot_usable(m, 7, 600, now).ok());
  }
  {
    SnapshotMeta m = good;
    m.clean_shutdown = false;
    Status st = snapshot_usable(m, 7, 600, now);
    EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
    EXPECT_NE(st.message().find("clean shutdown"), std::string::npos) << st.message();
  }
  {
    Status st = snapshot_usable(good, 8, 600, now);
    EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
    EXPECT_NE(st.message().find("generation 7"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("8"), std::string::npos) << st.message();
  }
  {
    Status st = snapshot_usable(good, 7, 10, now);
    EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
    EXPECT_NE(st.message().find("30 s old"), std::string::npos) << st.message();
  }
  {
    SnapshotMeta m = good;
    m.created_unix_ns = now + 60 * s;
    Status st = snapshot_usable(m, 7, 600, now);
    EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
    EXPECT_NE(st.message().find("future"), std::string::npos) << st.message();
  }
  {
    // A record format this build does not read.
    SnapshotMeta m = good;
    m.record_format = 9;
    EXPECT_EQ(snapshot_usable(m, 7, 600, now).code(), Code::FAILED_PRECONDITION);
  }
}

// ---------------------------------------------------------------- restore

TEST_F(SnapshotTest, RestoreIntoEmptyTableReproducesSlotsAndStates) {
  ASSERT_TRUE(write().ok());
  SnapshotMeta m;
  std::vector<WireRecord> r;
  ASSERT_TRUE(read(&m, &r).ok());
  auto b = make_table(2048);
  ASSERT_TRUE(b);
  const uint64_t now = rte_rdtsc(), hz = rte_get_tsc_hz();
  Status st = restore_snapshot(r, *b, now, hz);
  ASSERT_TRUE(st.ok()) << st.message();
  FlowMap want = dump(*a_), got = dump(*b);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_TRUE(want == got);
  EXPECT_EQ(b->size(), a_->size());
  // Idle time carried over: the restored flow looks idle as long as the original did.
  for (const auto &w : r) {
    const uint64_t idle_ticks = uint64_t(w.idle_ms) * hz / 1000;
    EXPECT_EQ(b->record(w.slot.slot).last_seen_tsc, now - idle_ticks);
  }
  // Both directions of every flow resolve to its slot.
  for (const auto &[slot, s] : got) {
    EXPECT_EQ(b->lookup(dp::inside_key(s)), static_cast<int>(slot));
    EXPECT_EQ(b->lookup(dp::outside_key(s)), static_cast<int>(slot));
  }
  // The restored table keeps working: the next insert does not collide with a restored slot.
  dp::FlowState s{};
  s.in_ip = htonl(0x0a0a0a0a);
  s.ext_ip = htonl(0x01010101);
  s.nat_ip = htonl(0xcb007101);
  s.in_port = htons(1);
  s.ext_port = htons(2);
  s.nat_port = htons(3);
  s.proto = IPPROTO_UDP;
  int slot = b->insert(s, now);
  ASSERT_GE(slot, 0);
  EXPECT_EQ(got.count(static_cast<uint32_t>(slot)), 0u);
}

TEST_F(SnapshotTest, RestoreSkipsDeletionsAndReportsConflicts) {
  std::vector<WireRecord> r;
  WireRecord del{};
  del.slot.slot = 5;
  del.slot.in_use = 0;
  r.push_back(del);
  auto b = make_table(64);
  ASSERT_TRUE(b);
  ASSERT_TRUE(restore_snapshot(r, *b, rte_rdtsc(), rte_get_tsc_hz()).ok());
  EXPECT_EQ(b->size(), 0u);
  // Two records with the same keys in different slots cannot both be restored.
  WireRecord x{};
  x.slot.slot = 1;
  x.slot.in_use = 1;
  x.slot.st = records_[0].st;
  WireRecord y = x;
  y.slot.slot = 2;
  r = {x, y};
  Status st = restore_snapshot(r, *b, rte_rdtsc(), rte_get_tsc_hz());
  EXPECT_EQ(st.code(), Code::INTERNAL);
  EXPECT_NE(st.message().find("slot 2"), std::string::npos) << st.message();
}

}  // namespace
}  // namespace ftpair::ckpt
