// The role manager (control/roles.h) on a real node: null ports, the worker running, an engine
// without a peer, an applier that is not in sync, no fencer.
#include "control/roles.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "control/config.h"
#include "control/node.h"
#include "virt/fence_process.h"

namespace ftpair {
namespace {

const char *kNode = R"YAML(
node: {id: b}
flows: {capacity: 1024}
dpdk: {mbufs: 2047}
ports:
  inside: {device: "net_null0,no-rx=1", vip: 198.18.1.1/24}
  outside: {device: "net_null1,no-rx=1", vip: 198.18.2.1/24}
)YAML";

// One node for the whole suite: a closed null port cannot be probed again in this process.
class Roles : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    Status st = parse_config(kNode, {}, &cfg_);
    ASSERT_TRUE(st.ok()) << st.message();
    node_ = Node::create(cfg_, &st).release();
    ASSERT_NE(node_, nullptr) << st.message();
    applier_ = new ckpt::Applier(node_->flows(), table_mu_, "b");
    ckpt::EngineConfig ec;
    ec.node_id = "b";
    engine_ = new ckpt::Engine(ec, node_->flows(), node_->agent());
    sync_ = new ckpt::SyncService(*applier_, ckpt::SyncHooks{});
    st = node_->start();
    ASSERT_TRUE(st.ok()) << st.message();
  }
  static void TearDownTestSuite() {
    delete sync_;
    delete engine_;
    delete applier_;
    delete node_;  // stops the worker
  }

  void SetUp() override {
    ASSERT_NE(node_, nullptr);
    char tmpl[] = "/tmp/ftpair-roles-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_NO_FATAL_FAILURE(make_roles(nullptr));
  }
  // A role manager over the shared node; without a fencer, as failover.fence: none leaves it.
  void make_roles(fo::Fencer *fencer) {
    roles_ = std::make_unique<RoleManager>("b", dir_);
    RoleManager::Parts p;
    p.node = node_;
    p.engine = engine_;
    p.applier = applier_;
    p.sync = sync_;
    p.table_mu = &table_mu_;
    p.fencer = fencer;
    if (!fencer) p.fencer_status = FailedPrecondition("failover.fence: none");
    p.fence_timeout_ms = &fence_timeout_ms_;
    p.garp_count = &garp_count_;
    p.handing_over = [this] { return handing_over_; };
    roles_->attach(std::move(p));
    ASSERT_TRUE(roles_->load_generation().ok());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  /* Runs a transition while the worker is stalled (it leaves the park of the last transition
   * and stalls on its next round), so the transition's park fails. */
  template <typename F> Status with_worker_stalled(F transition) {
    node_->agent().set_stall(true);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    Status st = transition();
    node_->agent().set_stall(false);
    return st;
  }

  uint64_t generation_on_disk() {
    std::ifstream f(dir_ + "/generation");
    uint64_t g = 0;
    f >> g;
    return g;
  }

  static Config cfg_;
  static Node *node_;
  static ckpt::Applier *applier_;
  static ckpt::Engine *engine_;
  static ckpt::SyncService *sync_;
  static std::mutex table_mu_;
  std::atomic<uint32_t> fence_timeout_ms_{100}, garp_count_{1};
  bool handing_over_ = false;
  std::string dir_;
  std::unique_ptr<RoleManager> roles_;
};

Config Roles::cfg_;
Node *Roles::node_ = nullptr;
ckpt::Applier *Roles::applier_ = nullptr;
ckpt::Engine *Roles::engine_ = nullptr;
ckpt::SyncService *Roles::sync_ = nullptr;
std::mutex Roles::table_mu_;

TEST_F(Roles, ActiveOwnsTheAddressesAndBumpsThePersistedGeneration) {
  EXPECT_EQ(roles_->role(), fo::Role::BOOT);
  ASSERT_TRUE(roles_->become_active("test", true).ok());
  EXPECT_EQ(roles_->role(), fo::Role::ACTIVE);
  EXPECT_EQ(roles_->generation(), 1u);
  EXPECT_EQ(generation_on_disk(), 1u);
  EXPECT_TRUE(node_->nf().vip_owner());
  EXPECT_TRUE(engine_->replicating());

  ASSERT_TRUE(roles_->become_standby("test").ok());
  EXPECT_EQ(roles_->role(), fo::Role::STANDBY_SYNCING);  // the applier is not in sync
  EXPECT_FALSE(node_->nf().vip_owner());
  EXPECT_FALSE(engine_->replicating());
  EXPECT_EQ(roles_->generation(), 1u);
}

TEST_F(Roles, TheSyncStreamMovesOnlyBetweenStandbyStates) {
  ASSERT_TRUE(roles_->become_standby("test").ok());
  roles_->set_standby_state(true, "test");
  EXPECT_EQ(roles_->role(), fo::Role::STANDBY_READY);
  roles_->set_standby_state(false, "test");
  EXPECT_EQ(roles_->role(), fo::Role::STANDBY_SYNCING);
  ASSERT_TRUE(roles_->become_active("test", false).ok());
  roles_->set_standby_state(true, "a late stream");
  EXPECT_EQ(roles_->role(), fo::Role::ACTIVE);
  ASSERT_TRUE(roles_->drain("test").ok());
  EXPECT_EQ(roles_->role(), fo::Role::DRAINING);
  EXPECT_FALSE(node_->nf().vip_owner());
  roles_->set_standby_state(false, "a late stream");
  EXPECT_EQ(roles_->role(), fo::Role::DRAINING);
  ASSERT_TRUE(roles_->resume_active("test").ok());
  EXPECT_EQ(roles_->role(), fo::Role::ACTIVE);
  EXPECT_TRUE(node_->nf().vip_owner());
  ASSERT_TRUE(roles_->become_standby("test").ok());
}

/* A switchover's drain whose workers cannot park (here: stalled) changes nothing: the node is
 * still ACTIVE and owns the VIPs, and says why, so the switchover stops before the standby
 * takes over beside a node that still forwards (two actives). */
TEST_F(Roles, ADrainTheWorkersCannotParkForChangesNothing) {
  ASSERT_TRUE(roles_->become_active("test", false).ok());
  Status st = with_worker_stalled([&] { return roles_->drain("test"); });
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("did not park"), std::string::npos) << st.message();
  EXPECT_EQ(roles_->role(), fo::Role::ACTIVE);
  EXPECT_TRUE(node_->nf().vip_owner());
  // And the other way: a resume that cannot park leaves it DRAINING, without the VIPs.
  ASSERT_TRUE(roles_->drain("test").ok());
  st = with_worker_stalled([&] { return roles_->resume_active("test"); });
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(roles_->role(), fo::Role::DRAINING);
  EXPECT_FALSE(node_->nf().vip_owner());
  ASSERT_TRUE(roles_->resume_active("test").ok());
  ASSERT_TRUE(roles_->become_standby("test").ok());
}

/* A worker that misses one park (off its CPU for longer than kParkWait on a busy machine) does
 * not fail the takeover: the park is tried again once the others have gone back to work. */
TEST_F(Roles, ATakeoverWhoseWorkerMissesOneParkIsRetriedAndGoesThrough) {
  ASSERT_TRUE(roles_->become_standby("test").ok());
  const uint64_t timeouts0 = engine_->stats().park_timeouts.load();
  const uint64_t rolled0 = roles_->transitions_rolled_back();
  node_->agent().set_stall(true);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // the worker reaches its stall
  std::thread release([timeouts0] {
    // Once the first park has timed out (whatever the machine's delays), not before.
    while (engine_->stats().park_timeouts.load() == timeouts0)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    node_->agent().set_stall(false);
  });
  Status st = roles_->become_active("test: a worker late for one park", true);
  release.join();
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(roles_->role(), fo::Role::ACTIVE);
  EXPECT_TRUE(node_->nf().vip_owner());
  EXPECT_GE(engine_->stats().park_timeouts.load() - timeouts0, 1u) << "the first park timed out";
  EXPECT_LT(engine_->stats().park_timeouts.load() - timeouts0, uint64_t(ckpt::Engine::kParkAttempts));
  EXPECT_EQ(roles_->transitions_rolled_back(), rolled0);
  ASSERT_TRUE(roles_->become_standby("test").ok());
}

/* Taking the active role is one transaction: when the workers do not park, or the new
 * generation cannot be stored, nothing changes. The node is still the standby it was, still
 * taking its active's checkpoints, at its old generation (so the active's stream is not
 * refused as stale afterwards), without the VIPs; and the rollback is counted. */
TEST_F(Roles, ATakeoverThatCannotPrepareChangesNothing) {
  ASSERT_TRUE(roles_->become_standby("test").ok());
  roles_->set_standby_state(true, "test");
  ASSERT_EQ(roles_->role(), fo::Role::STANDBY_READY);
  ASSERT_TRUE(roles_->adopt_generation(4, "test").ok());

  const uint64_t timeouts0 = engine_->stats().park_timeouts.load();
  Status st = with_worker_stalled([&] { return roles_->become_active("test: workers stalled", true); });
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("did not park within 100 ms, 3 times in a row (worker 0 the last time)"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(engine_->stats().park_timeouts.load() - timeouts0, ckpt::Engine::kParkAttempts);
  EXPECT_EQ(roles_->role(), fo::Role::STANDBY_READY);
  EXPECT_EQ(roles_->generation(), 4u);
  EXPECT_EQ(generation_on_disk(), 4u);
  EXPECT_TRUE(applier_->accepting());
  EXPECT_FALSE(node_->nf().vip_owner());
  EXPECT_FALSE(engine_->replicating());
  EXPECT_EQ(roles_->transitions_rolled_back(), 1u);

  // The generation cannot be written (a file stands where its directory was): the same.
  std::filesystem::remove_all(dir_);
  std::ofstream(dir_) << "not a directory\n";
  st = roles_->become_active("test: no state directory", true);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("cannot store generation 5"), std::string::npos) << st.message();
  EXPECT_EQ(roles_->role(), fo::Role::STANDBY_READY);
  EXPECT_EQ(roles_->generation(), 4u);
  EXPECT_TRUE(applier_->accepting());
  EXPECT_FALSE(node_->nf().vip_owner());
  EXPECT_EQ(roles_->transitions_rolled_back(), 2u);

  // Once it can, it does, and only then stops taking checkpoints.
  std::filesystem::remove(dir_);
  std::filesystem::create_directories(dir_);
  ASSERT_TRUE(roles_->become_active("test", true).ok());
  EXPECT_EQ(roles_->role(), fo::Role::ACTIVE);
  EXPECT_EQ(roles_->generation(), 5u);
  EXPECT_EQ(generation_on_disk(), 5u);
  EXPECT_FALSE(applier_->accepting());
  EXPECT_TRUE(node_->nf().vip_owner());
  ASSERT_TRUE(roles_->become_standby("test").ok());
  EXPECT_TRUE(applier_->accepting());
}

/* Stepping down the same way: a release the workers cannot park for leaves the node ACTIVE,
 * replicating and owning the VIPs. */
TEST_F(Roles, AStepDownThatCannotPrepareChangesNothing) {
  ASSERT_TRUE(roles_->become_active("test", false).ok());
  Status st = with_worker_stalled([&] { return roles_->become_standby("test: workers stalled"); });
  EXPECT_FALSE(st.ok());
  EXPECT_EQ(roles_->role(), fo::Role::ACTIVE);
  EXPECT_TRUE(node_->nf().vip_owner());
  EXPECT_TRUE(engine_->replicating());
  EXPECT_FALSE(applier_->accepting());
  EXPECT_EQ(roles_->transitions_rolled_back(), 1u);
  ASSERT_TRUE(roles_->become_standby("test").ok());
}

TEST_F(Roles, AGenerationIsAdoptedOnlyForwardAndPersisted) {
  ASSERT_TRUE(roles_->adopt_generation(7, "test").ok());
  EXPECT_EQ(roles_->generation(), 7u);
  EXPECT_EQ(generation_on_disk(), 7u);
  ASSERT_TRUE(roles_->adopt_generation(3, "test").ok());
  EXPECT_EQ(roles_->generation(), 7u);
  // Taking the active role goes past it.
  ASSERT_TRUE(roles_->become_active("test", true).ok());
  EXPECT_EQ(roles_->generation(), 8u);
  ASSERT_TRUE(roles_->become_standby("test").ok());
}

TEST_F(Roles, PromotionIsRefusedAndCountedWithoutSyncOrFencer) {
  ASSERT_TRUE(roles_->become_standby("test").ok());
  Status st = roles_->promote("test", false);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(st.message().find("not in sync"), std::string::npos) << st.message();
  EXPECT_EQ(roles_->promotions_refused(), 1u);
  roles_->set_standby_state(true, "test");
  st = roles_->promote("test", false);
  EXPECT_NE(st.message().find("no usable fencer (failover.fence: none)"), std::string::npos) << st.message();
  EXPECT_EQ(roles_->promotions_refused(), 2u);
  st = roles_->promote("test", true);  // forced: still no fencing, no promotion
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_EQ(roles_->role(), fo::Role::STANDBY_READY);
  handing_over_ = true;
  st = roles_->promote("test", true);
  EXPECT_NE(st.message().find("handing its role"), std::string::npos) << st.message();
  EXPECT_EQ(roles_->promotions_refused(), 3u);  // an upgrade's refusal is not counted
  EXPECT_EQ(roles_->fence_failures(), 0u);
  EXPECT_FALSE(roles_->can_fence());
}

/* Two detectors that fire together (the dataplane watch and the control-plane beats, lab_dp_beats
 * step 5) both call promote: the one that made the node active counts its cause, the other,
 * finding it active, counts nothing. The fencer is the real process fencer with the peer's
 * pidfile already gone (the lab's way of saying the peer is stopped). */
TEST_F(Roles, APromotionIsCountedOnceWhenTwoDetectorsFire) {
  Status fst;
  std::unique_ptr<fo::Fencer> fencer =
      virt::make_process_fencer(dir_ + "/peer.pid", /*missing_ok=*/true, &fst);
  ASSERT_NE(fencer, nullptr) << fst.message();
  ASSERT_NO_FATAL_FAILURE(make_roles(fencer.get()));
  ASSERT_TRUE(roles_->become_standby("test").ok());
  roles_->set_standby_state(true, "test");
  ASSERT_EQ(roles_->role(), fo::Role::STANDBY_READY);
  Status st = roles_->promote("the dataplane watch", false, "dp_silent");
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_TRUE(is_active(roles_->role()));
  st = roles_->promote("missed heartbeats", false, "peer_silent");
  EXPECT_TRUE(st.ok()) << "already active: nothing to do, not an error";
  EXPECT_EQ(roles_->failovers("dp_silent"), 1u);
  EXPECT_EQ(roles_->failovers("peer_silent"), 0u) << "the second detector found the node active: not a failover";
  ASSERT_TRUE(roles_->become_standby("test").ok());  // as the fixture's other tests leave it
}

TEST_F(Roles, TakeoverNeedsSyncUnlessForcedAndCountsItsReason) {
  ASSERT_TRUE(roles_->become_standby("test").ok());
  std::string msg;
  Status st = roles_->takeover("a", 4, 10, false, &msg);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(msg.find("not in sync"), std::string::npos) << msg;
  EXPECT_EQ(roles_->failovers("switchover"), 0u);
  st = roles_->takeover("a", 4, 10, true, &msg);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(roles_->role(), fo::Role::ACTIVE);
  EXPECT_EQ(roles_->generation(), 5u);  // past the peer's
  EXPECT_EQ(msg, "node b is active at generation 5");
  EXPECT_EQ(roles_->failovers("forced"), 1u);
  st = roles_->takeover("a", 4, 10, true, &msg);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_EQ(msg, "node b is already active");
  ASSERT_TRUE(roles_->become_standby("test").ok());
}

}  // namespace
}  // namespace ftpair
