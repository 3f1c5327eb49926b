// The persisted generation: store/load, the reservation a standby makes ahead of a
// promotion, and refusal of a corrupt file. Real files in a temporary directory.
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "failover/role.h"

namespace ftpair::fo {
namespace {

class GenerationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ftpair-gen-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void write(const std::string &name, const std::string &text) { std::ofstream(dir_ + "/" + name) << text; }
  std::string dir_;
};

TEST_F(GenerationTest, StartsAtZeroAndPersists) {
  Generation g(dir_);
  ASSERT_TRUE(g.load().ok());
  EXPECT_EQ(g.value(), 0u);
  ASSERT_TRUE(g.store(3).ok());
  EXPECT_FALSE(g.store(2).ok()) << "a generation never goes back";
  Generation again(dir_);
  ASSERT_TRUE(again.load().ok());
  EXPECT_EQ(again.value(), 3u);
  EXPECT_FALSE(again.unflushed());
}

TEST_F(GenerationTest, ReservationIsTakenWithoutIoAndSurvivesRestart) {
  Generation g(dir_);
  ASSERT_TRUE(g.load().ok());
  ASSERT_TRUE(g.store(4).ok());
  ASSERT_TRUE(g.reserve(5).ok());
  EXPECT_EQ(g.value(), 4u) << "reserving does not change the generation";
  EXPECT_FALSE(g.take_reserved(6)) << "a peer at 5 needs 6: the reservation is too old";
  // Make the directory unwritable by removing it: take_reserved must still work (no I/O).
  std::filesystem::remove_all(dir_);
  EXPECT_TRUE(g.take_reserved(5));
  EXPECT_EQ(g.value(), 5u);
  EXPECT_TRUE(g.unflushed());
  EXPECT_FALSE(g.take_reserved(5)) << "used once";
  // A reservation is not a used generation: a restarted standby must not come back with it
  // (the active would refuse it as newer than itself). Flushing makes the step permanent.
  std::filesystem::create_directories(dir_);
  ASSERT_TRUE(g.reserve(6).ok());
  {
    Generation again(dir_);
    ASSERT_TRUE(again.load().ok());
    EXPECT_EQ(again.value(), 0u) << "the generation file was lost with the directory";
    EXPECT_EQ(again.reserved(), 6u);
  }
  ASSERT_TRUE(g.store(5).ok());
  EXPECT_FALSE(g.unflushed());
  Generation again(dir_);
  ASSERT_TRUE(again.load().ok());
  EXPECT_EQ(again.value(), 5u);
}

// Stores from several threads (the beat thread, a switchover, a promotion) race; the file
// must end with the newest value, never an older one written last.
TEST_F(GenerationTest, ConcurrentStoresLeaveTheNewestOnDisk) {
  for (int round = 0; round < 20; round++) {
    SCOPED_TRACE(round);
    Generation g(dir_);
    ASSERT_TRUE(g.load().ok());
    const uint64_t base = g.value();
    std::vector<std::thread> ts;
    std::atomic<bool> go{false};
    for (uint64_t i = 1; i <= 8; i++)
      ts.emplace_back([&, i] {
        while (!go.load()) {
        }
        (void)g.store(base + i);  // an older value may be refused: that is fine
      });
    go = true;
    for (auto &t : ts) t.join();
    EXPECT_EQ(g.value(), base + 8);
    Generation again(dir_);
    ASSERT_TRUE(again.load().ok());
    EXPECT_EQ(again.value(), base + 8) << "an older store landed after a newer one";
  }
}

TEST_F(GenerationTest, FlushWritesAnUnflushedValueAndNeverGoesBack) {
  Generation g(dir_);
  ASSERT_TRUE(g.load().ok());
  ASSERT_TRUE(g.store(2).ok());
  ASSERT_TRUE(g.reserve(5).ok());
  ASSERT_TRUE(g.take_reserved(5));
  EXPECT_TRUE(g.unflushed());
  ASSERT_TRUE(g.flush().ok());
  EXPECT_FALSE(g.unflushed());
  Generation again(dir_);
  ASSERT_TRUE(again.load().ok());
  EXPECT_EQ(again.value(), 5u);
  ASSERT_TRUE(g.flush().ok());  // nothing to do
}

TEST_F(GenerationTest, CorruptFilesAreRefused) {
  write("generation", "12abc\n");
  Generation g(dir_);
  Status st = g.load();
  EXPECT_EQ(st.code(), Code::DATA_LOSS);
  EXPECT_NE(st.message().find("not a number"), std::string::npos) << st.message();
  write("generation", "7\n");
  write("generation.reserved", "99999999999999999999999\n");  // overflows 64 bits
  EXPECT_EQ(g.load().code(), Code::DATA_LOSS);
  write("generation.reserved", "9\n");
  ASSERT_TRUE(g.load().ok());
  EXPECT_EQ(g.value(), 7u);
  EXPECT_EQ(g.reserved(), 9u);
}

}  // namespace
}  // namespace ftpair::fo
