// The dataplane beats' watch (control/dp_watch.h, issue 19): it acts on a silence only once
// armed: dataplane_arm_ms after this node, a standby in sync, first heard every peer worker,
// and between silences. Two boards stand for the nodes; a feeder thread passes the
// active's beats (worker 0, every 1 ms) to the standby's board as bytes, with the real TSC,
// and the watch runs its own thread on the real clock. The hooks stand in for the daemon:
// the probe never gets an answer (a dead peer), and the promotion is counted.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include <rte_cycles.h>
#include <rte_mbuf.h>

#include "control/dp_watch.h"
#include "failover/role.h"
#include "tests/unit/dataplane/pktgen.h"

namespace ftpair {
namespace {

using namespace std::chrono_literals;
const dp::DpBeatKey kKey{7, std::string(32, 'k')};

dp::DpBeatConfig board_cfg(const char *node, uint8_t mac_last) {
  dp::DpBeatConfig c;
  c.node_id = node;
  c.workers = 1;
  c.keys = {kKey};
  c.interval_us = 1000;
  c.miss = 10;  // 10 ms: the feeder thread's hiccups on a busy machine are not silences
  c.tsc_hz = rte_get_tsc_hz();
  c.src_mac = {{0x02, 0, 0, 0, 0, mac_last}};
  return c;
}

template <class F>
bool wait_until(F f, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return f();
}

class DpWatchTest : public ::testing::Test {
 protected:
  DpWatchTest() : active_(board_cfg("a", 1)), standby_(board_cfg("b", 2)) {
    active_.set_local(static_cast<uint8_t>(fo::Role::ACTIVE), 1);
  }
  ~DpWatchTest() override {
    if (watch_) watch_->stop();
    feeding_ = false;
    running_ = false;
    if (feeder_.joinable()) feeder_.join();
  }

  void start(uint32_t arm_ms) {
    DpWatch::Hooks h;
    h.publish_local = [](dp::DpBeatBoard &b) { b.set_local(static_cast<uint8_t>(fo::Role::STANDBY_READY), 1); };
    h.may_promote = [this] { return may_.load(); };
    h.probe = [this](std::chrono::microseconds, v1::Beat *) {
      probes_++;
      return fo::ProbeOutcome::NOTHING;
    };
    h.promote = [this](const std::string &, fo::DpVerdict) { promotions_++; };
    watch_ = std::make_unique<DpWatch>(standby_, 1000, arm_ms, false, std::move(h));
    feeder_ = std::thread([this] {
      while (running_) {
        if (feeding_) {
          rte_mbuf *m = active_.make(0, test::test_pool(), rte_rdtsc());
          if (m != nullptr) {
            if (first_fed_.load() == std::chrono::steady_clock::time_point{}) first_fed_ = std::chrono::steady_clock::now();
            standby_.receive(rte_pktmbuf_mtod(m, uint8_t *), rte_pktmbuf_data_len(m), rte_rdtsc());
            rte_pktmbuf_free(m);
          }
        }
        std::this_thread::sleep_for(1ms);
      }
    });
    watch_->start();
  }

  dp::DpBeatBoard active_, standby_;
  std::unique_ptr<DpWatch> watch_;
  std::atomic<bool> may_{true}, feeding_{true}, running_{true};
  std::atomic<int> probes_{0}, promotions_{0};
  std::atomic<std::chrono::steady_clock::time_point> first_fed_{};  // the first beat the standby's board got
  std::thread feeder_;
};

TEST_F(DpWatchTest, ASilenceBeforeTheArmDelayIsCountedAndLeftToTheControlPlane) {
  start(300);
  ASSERT_TRUE(wait_until([&] { return standby_.heard() > 0; }, 2000ms));
  const auto fed = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(50ms);
  EXPECT_FALSE(watch_->armed()) << "armed before 300 ms of beats";
  feeding_ = false;  // the active falls silent 50 ms into the arm delay
  ASSERT_TRUE(wait_until([&] { return watch_->silences_unarmed() >= 1; }, 2000ms)) << "the silence is counted";
  const uint64_t counted = watch_->silences_unarmed();
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(watch_->silences_unarmed(), counted) << "once per silence, however long it lasts";
  EXPECT_FALSE(watch_->armed());
  EXPECT_EQ(probes_.load(), 0) << "no probe before the watch is armed";
  EXPECT_EQ(promotions_.load(), 0) << "no promotion before the watch is armed";

  // Still silent 300 ms after the first beat: not armed in the middle of a silence.
  std::this_thread::sleep_for(std::chrono::duration_cast<std::chrono::milliseconds>(
      std::max(std::chrono::steady_clock::duration(0), fed + 400ms - std::chrono::steady_clock::now())));
  EXPECT_FALSE(watch_->armed()) << "armed while the peer is silent";
  EXPECT_EQ(probes_.load(), 0);
  // Beats again: armed at once (the delay ran during the silence), and then a silence fails over.
  feeding_ = true;
  ASSERT_TRUE(wait_until([&] { return watch_->armed(); }, 2000ms));
  const uint64_t unarmed = watch_->silences_unarmed();
  feeding_ = false;
  ASSERT_TRUE(wait_until([&] { return promotions_.load() >= 1; }, 2000ms)) << "an armed watch promotes on a dead peer";
  EXPECT_GE(probes_.load(), 1) << "after a probe";
  EXPECT_EQ(watch_->silences_unarmed(), unarmed) << "a silence while armed is not an unarmed one";
}

TEST_F(DpWatchTest, AGapWhileArmingDoesNotRestartTheDelay) {
  start(1000);
  ASSERT_TRUE(wait_until([&] { return standby_.heard() > 0; }, 2000ms));
  const auto first = first_fed_.load();
  std::this_thread::sleep_until(first + 600ms);
  feeding_ = false;  // a 40 ms gap late in the delay: beats across a busy host's bridges miss a deadline now and then
  ASSERT_TRUE(wait_until([&] { return watch_->silences_unarmed() >= 1; }, 2000ms)) << "the watch saw the gap";
  std::this_thread::sleep_until(first + 640ms);
  feeding_ = true;
  ASSERT_TRUE(wait_until([&] { return watch_->armed(); }, 10000ms));
  const auto armed_after = std::chrono::steady_clock::now() - first;
  EXPECT_GE(armed_after, 999ms) << "the delay runs from the first beat heard";
  EXPECT_LT(armed_after, 1500ms) << "the gap restarted the delay (that would arm at 1,640 ms or later)";
  EXPECT_EQ(probes_.load(), 0) << "the gap before arming was not probed";
}

TEST_F(DpWatchTest, NotAStandbyInSyncDisarmsAndTheDelayStartsAgain) {
  start(200);
  ASSERT_TRUE(wait_until([&] { return watch_->armed(); }, 10000ms));
  const uint64_t unarmed = watch_->silences_unarmed();
  may_ = false;  // e.g. syncing again, or handing over
  ASSERT_TRUE(wait_until([&] { return !watch_->armed(); }, 2000ms));
  const int probes = probes_.load(), promotions = promotions_.load();
  feeding_ = false;
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(probes_.load(), probes) << "a node that may not promote does not probe";
  EXPECT_EQ(promotions_.load(), promotions);
  EXPECT_EQ(watch_->silences_unarmed(), unarmed) << "only a standby in sync counts a silence it leaves alone";
  feeding_ = true;
  const auto again = std::chrono::steady_clock::now();
  may_ = true;
  ASSERT_TRUE(wait_until([&] { return watch_->armed(); }, 10000ms));
  EXPECT_GE(std::chrono::steady_clock::now() - again, 200ms);
}

TEST_F(DpWatchTest, ArmDelayZeroActsAsSoonAsAStandbyInSync) {
  feeding_ = false;
  start(0);
  ASSERT_TRUE(wait_until([&] { return watch_->armed(); }, 2000ms)) << "armed without waiting for beats";
  feeding_ = true;
  ASSERT_TRUE(wait_until([&] { return standby_.heard() > 0; }, 2000ms));
  feeding_ = false;
  ASSERT_TRUE(wait_until([&] { return promotions_.load() >= 1; }, 2000ms));
  EXPECT_EQ(watch_->silences_unarmed(), 0u);
}

}  // namespace
}  // namespace ftpair
