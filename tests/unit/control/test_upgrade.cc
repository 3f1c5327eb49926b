// The upgrade's state machine (control/upgrade_stage.h) and the coordinator's status and
// metrics around it, with a host that has a real flow table, applier and engine (not started).
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/sha256.h"
#include "control/upgrade.h"
#include "dataplane/agent.h"
#include "dataplane/flow_table.h"

namespace ftpair {
namespace {

using S = UpgradeStage;

// The labels of ftpair_upgrade_stage{stage} that dashboards and tools match, in order.
const std::vector<std::string> kLabels = {"idle",         "staged",  "starting",  "syncing", "in_sync",
                                          "handing_over", "retired", "took_over", "aborted", "failed"};

std::vector<S> all_stages() {
  std::vector<S> v;
  for (size_t i = 0; i < kUpgradeStageCount; i++) v.push_back(static_cast<S>(i));
  return v;
}

TEST(UpgradeStage, NamesAreTheMetricLabels) {
  ASSERT_EQ(kUpgradeStageCount, kLabels.size());
  for (size_t i = 0; i < kUpgradeStageCount; i++) {
    EXPECT_EQ(upgrade_stage_name(static_cast<S>(i)), kLabels[i]);
    S back = S::COUNT;
    ASSERT_TRUE(upgrade_stage_from_name(kLabels[i], &back)) << kLabels[i];
    EXPECT_EQ(back, static_cast<S>(i));
  }
  S unused;
  EXPECT_FALSE(upgrade_stage_from_name("retiring", &unused));
  EXPECT_FALSE(upgrade_stage_from_name("", &unused));
}

TEST(UpgradeStage, EventNamesAreDistinct) {
  std::set<std::string> seen;
  for (size_t i = 0; i < kUpgradeEventCount; i++) {
    const std::string n = upgrade_event_name(static_cast<UpgradeEvent>(i));
    EXPECT_NE(n, "?");
    EXPECT_TRUE(seen.insert(n).second) << n;
  }
  EXPECT_EQ(upgrade_event_name(UpgradeEvent::ILLEGAL_TRANSITION), std::string("illegal_transition"));
  EXPECT_EQ(upgrade_event_name(UpgradeEvent::JOINER_ADDED), std::string("joiner_added"));
}

// Every path the lab's upgrade and rollback take.
TEST(UpgradeStage, TheUpgradePathsAreAllowed) {
  const std::vector<std::vector<S>> paths = {
      // the old instance of the standby
      {S::IDLE, S::STAGED, S::STARTING, S::SYNCING, S::IN_SYNC, S::HANDING_OVER, S::RETIRED},
      // the new instance beside it: reports, joins (syncing again), takes over, later rolls back
      {S::IDLE, S::SYNCING, S::SYNCING, S::TOOK_OVER, S::STAGED, S::STARTING},
      {S::TOOK_OVER, S::STARTING},  // rollback without staging
      // a failed start, a failed handover, and the retry
      {S::STAGED, S::STARTING, S::FAILED, S::STARTING},
      {S::IN_SYNC, S::HANDING_OVER, S::FAILED, S::FAILED, S::HANDING_OVER},
      {S::FAILED, S::ABORTED, S::STAGED},
      {S::IDLE, S::STARTING},  // rollback on a node that never staged
  };
  for (const auto &p : paths)
    for (size_t i = 1; i < p.size(); i++)
      EXPECT_TRUE(upgrade_move_allowed(p[i - 1], p[i]))
          << upgrade_stage_name(p[i - 1]) << " -> " << upgrade_stage_name(p[i]);
  // An abort is possible until the handover starts.
  for (S s : {S::IDLE, S::STAGED, S::STARTING, S::SYNCING, S::IN_SYNC, S::TOOK_OVER, S::ABORTED, S::FAILED})
    EXPECT_TRUE(upgrade_move_allowed(s, S::ABORTED)) << upgrade_stage_name(s);
}

TEST(UpgradeStage, IllegalMovesAreRefused) {
  const std::vector<std::pair<S, S>> refused = {
      {S::IDLE, S::HANDING_OVER},   {S::IDLE, S::IN_SYNC},     {S::IDLE, S::RETIRED},
      {S::STAGED, S::IN_SYNC},      {S::STARTING, S::IN_SYNC}, {S::STARTING, S::STARTING},
      {S::SYNCING, S::STAGED},      {S::SYNCING, S::RETIRED},  {S::SYNCING, S::HANDING_OVER},
      {S::IN_SYNC, S::STAGED},      {S::IN_SYNC, S::TOOK_OVER}, {S::HANDING_OVER, S::ABORTED},
      {S::HANDING_OVER, S::HANDING_OVER}, {S::TOOK_OVER, S::TOOK_OVER}, {S::TOOK_OVER, S::SYNCING},
      {S::ABORTED, S::IN_SYNC},     {S::FAILED, S::RETIRED},   {S::FAILED, S::IDLE},
  };
  for (const auto &[from, to] : refused)
    EXPECT_FALSE(upgrade_move_allowed(from, to)) << upgrade_stage_name(from) << " -> " << upgrade_stage_name(to);
  // Retired is the end, and nothing goes back to idle.
  for (S s : all_stages()) {
    EXPECT_FALSE(upgrade_move_allowed(S::RETIRED, s)) << upgrade_stage_name(s);
    EXPECT_FALSE(upgrade_move_allowed(s, S::IDLE)) << upgrade_stage_name(s);
  }
  EXPECT_FALSE(upgrade_move_allowed(S::COUNT, S::IDLE));
  EXPECT_FALSE(upgrade_move_allowed(S::IDLE, S::COUNT));
}

TEST(UpgradeMachine, ARefusedMoveChangesNothingAndIsCounted) {
  UpgradeMachine m;
  EXPECT_EQ(m.stage(), S::IDLE);
  EXPECT_EQ(m.view().age_seconds, 0);
  ASSERT_TRUE(m.move(S::STAGED, "version 2").ok());
  Status st = m.move(S::HANDING_OVER, "a handover out of turn");
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(st.message().find("staged"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("handing_over"), std::string::npos) << st.message();
  EXPECT_EQ(m.stage(), S::STAGED);
  EXPECT_EQ(m.view().message, "version 2");
  EXPECT_EQ(m.events(UpgradeEvent::ILLEGAL_TRANSITION), 1u);
  EXPECT_FALSE(m.may_move(S::RETIRED));
  EXPECT_TRUE(m.may_move(S::STARTING));
}

TEST(UpgradeMachine, MoveFromOnlyFromThatStage) {
  UpgradeMachine m;
  ASSERT_TRUE(m.move(S::STAGED, "staged").ok());
  ASSERT_TRUE(m.move(S::STARTING, "starting").ok());
  ASSERT_TRUE(m.move(S::FAILED, "it did not start").ok());
  EXPECT_FALSE(m.move_from(S::SYNCING, S::IN_SYNC, "in sync").ok());
  EXPECT_EQ(m.stage(), S::FAILED);
  EXPECT_EQ(m.events(UpgradeEvent::ILLEGAL_TRANSITION), 0u);  // another stage is not an illegal move
  ASSERT_TRUE(m.move(S::STARTING, "again").ok());
  ASSERT_TRUE(m.move(S::SYNCING, "runs").ok());
  EXPECT_TRUE(m.move_from(S::SYNCING, S::IN_SYNC, "in sync").ok());
  EXPECT_EQ(m.view().stage, S::IN_SYNC);
  EXPECT_EQ(m.view().message, "in sync");
}

TEST(UpgradeMachine, RestatingAStageKeepsItsClock) {
  UpgradeMachine m;
  ASSERT_TRUE(m.move(S::SYNCING, "started").ok());
  usleep(20000);
  ASSERT_TRUE(m.move(S::SYNCING, "joined").ok());
  const auto v = m.view();
  EXPECT_EQ(v.message, "joined");
  EXPECT_GE(v.age_seconds, 0.015);
}

// ------------------------------------------------------------------ the coordinator

class FakeHost final : public UpgradeHost {
 public:
  FakeHost() {
    dp::FlowTableConfig c;
    c.capacity = 64;
    static int n = 0;
    c.name = "t_up_" + std::to_string(n++);
    std::string err;
    flows = dp::FlowTable::create(c, &err);
    EXPECT_NE(flows, nullptr) << err;
    dp::AgentConfig ac;
    ac.nb_ports = 2;
    ac.nb_workers = 1;
    agent = std::make_unique<dp::InterfaceAgent>(ac);
    applier_ = std::make_unique<ckpt::Applier>(*flows, table_mu, "node-b");
    ckpt::EngineConfig ec;
    ec.node_id = "node-b";
    engine_ = std::make_unique<ckpt::Engine>(ec, *flows, *agent);
  }
  fo::Role role() const override { return role_; }
  ckpt::Engine &engine() override { return *engine_; }
  ckpt::Applier &applier() override { return *applier_; }
  Status become_standby(const std::string &) override { return Status::Ok(); }
  std::string peer_node_id() const override { return ""; }
  bool beside() const override { return beside_; }
  void set_beside(bool on) override { beside_ = on; }
  bool retiring() const override { return retiring_; }
  void set_retiring(bool on) override { retiring_ = on; }
  void stop_monitor() override {}
  void start_monitor() override {}
  Status listen_configured_grpc() override { return Unavailable("no ports in this test"); }
  Status serve_configured_metrics() override { return Status::Ok(); }
  void release_ports() override {}
  uint16_t grpc_port() const override { return 0; }
  void write_pidfile() override {}
  std::shared_ptr<grpc::Channel> channel(const std::string &addr) override {
    return grpc::CreateChannel(addr, grpc::InsecureChannelCredentials());
  }
  void request_exit() override { exit_ = true; }
  bool exit_requested() const override { return exit_; }
  std::string self_sha256() const override { return ""; }
  bool test_hooks() const override { return false; }
  void set_worker_stall(bool) override {}

  fo::Role role_ = fo::Role::STANDBY_READY;
  bool beside_ = false, retiring_ = false, exit_ = false;
  std::mutex table_mu;
  std::unique_ptr<dp::FlowTable> flows;
  std::unique_ptr<dp::InterfaceAgent> agent;
  std::unique_ptr<ckpt::Applier> applier_;
  std::unique_ptr<ckpt::Engine> engine_;
};

class Coordinator : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ftpair-upgrade-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    cfg_.node_id = "node-b";
    cfg_.state_dir = dir_;
    script_ = "#!/bin/sh\necho 9.9.9-test\n";
    cfg_.upgrade_allowed_sha256 = {sha256_hex(script_)};
    auto h = std::make_unique<FakeHost>();
    host_ = h.get();
    up_ = std::make_unique<UpgradeCoordinator>(cfg_, UpgradeLaunch{}, std::move(h));
  }
  void TearDown() override {
    up_.reset();
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  // The value of one sample line of /metrics ("" when absent).
  std::string metric(const std::string &line_start) {
    Exposition x;
    up_->expose(x);
    std::istringstream is(x.text());
    for (std::string l; std::getline(is, l);)
      if (l.rfind(line_start + " ", 0) == 0) return l.substr(line_start.size() + 1);
    return "";
  }
  std::string stage_now() {
    v1::UpgradeStatus u;
    up_->fill(&u);
    return u.stage();
  }

  std::string dir_, script_;
  Config cfg_;
  FakeHost *host_ = nullptr;
  std::unique_ptr<UpgradeCoordinator> up_;
};

TEST_F(Coordinator, TheMetricTakesEveryStageName) {
  for (size_t i = 0; i < kUpgradeStageCount; i++)
    EXPECT_EQ(metric("ftpair_upgrade_stage{stage=\"" + kLabels[i] + "\"}"), i == 0 ? "1" : "0") << kLabels[i];
  EXPECT_EQ(stage_now(), "idle");
}

TEST_F(Coordinator, StagesACheckedBinary) {
  v1::UpgradeReply rep;
  ASSERT_TRUE(up_->stage(script_, "", &rep).ok()) << rep.message();
  EXPECT_EQ(rep.version(), "9.9.9-test");
  EXPECT_EQ(rep.upgrade().stage(), "staged");
  EXPECT_EQ(rep.upgrade().staged_version(), "9.9.9-test");
  struct stat sb {};
  EXPECT_EQ(::stat((dir_ + "/upgrade/ftpaird-" + rep.sha256().substr(0, 16)).c_str(), &sb), 0);
  EXPECT_EQ(metric("ftpair_upgrade_stage{stage=\"staged\"}"), "1");
  EXPECT_EQ(metric("ftpair_upgrade_events_total{event=\"staged\"}"), "1");
}

TEST_F(Coordinator, RefusesABinaryNotAllowedAndCountsIt) {
  v1::UpgradeReply rep;
  Status st = up_->stage("#!/bin/sh\necho other\n", "", &rep);
  EXPECT_EQ(st.code(), Code::PERMISSION_DENIED);
  EXPECT_NE(rep.message().find("not in upgrade.allowed_sha256"), std::string::npos) << rep.message();
  EXPECT_EQ(stage_now(), "idle");
  EXPECT_EQ(metric("ftpair_upgrade_events_total{event=\"refused\"}"), "1");
}

TEST_F(Coordinator, RefusesToStageWhileAnUpgradeRuns) {
  ASSERT_TRUE(up_->machine().move(S::SYNCING, "a new instance runs").ok());
  v1::UpgradeReply rep;
  Status st = up_->stage(script_, "", &rep);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(rep.message().find("under way"), std::string::npos) << rep.message();
  EXPECT_EQ(stage_now(), "syncing");
  EXPECT_EQ(metric("ftpair_upgrade_events_total{event=\"illegal_transition\"}"), "");  // refused before moving
}

TEST_F(Coordinator, AnIllegalMoveShowsInTheMetric) {
  EXPECT_FALSE(up_->machine().move(S::RETIRED, "out of turn").ok());
  EXPECT_EQ(metric("ftpair_upgrade_events_total{event=\"illegal_transition\"}"), "1");
  EXPECT_EQ(metric("ftpair_upgrade_stage{stage=\"idle\"}"), "1");
}

TEST_F(Coordinator, HandoverNeedsANewInstanceAndAbortKeepsTheRole) {
  v1::UpgradeRequest req;
  req.set_action(v1::UpgradeRequest::HANDOVER);
  v1::UpgradeReply rep;
  EXPECT_EQ(up_->request(req, &rep).code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(rep.message().find("no new instance"), std::string::npos) << rep.message();
  EXPECT_FALSE(host_->retiring_);
  req.set_action(v1::UpgradeRequest::ABORT);
  rep.Clear();
  EXPECT_TRUE(up_->request(req, &rep).ok()) << rep.message();
  EXPECT_TRUE(rep.ok());
  EXPECT_EQ(rep.upgrade().stage(), "aborted");
  EXPECT_FALSE(host_->exit_);
  EXPECT_EQ(metric("ftpair_upgrade_events_total{event=\"aborted\"}"), "1");
}

TEST_F(Coordinator, ANewInstanceThatIsAbortedExits) {
  host_->beside_ = true;
  v1::UpgradeRequest req;
  req.set_action(v1::UpgradeRequest::ABORT);
  v1::UpgradeReply rep;
  EXPECT_TRUE(up_->request(req, &rep).ok());
  EXPECT_EQ(rep.upgrade().stage(), "aborted");
  EXPECT_TRUE(host_->exit_);
}

TEST_F(Coordinator, StartBesideIsRefusedOnTheActive) {
  host_->role_ = fo::Role::ACTIVE;
  v1::UpgradeRequest req;
  req.set_action(v1::UpgradeRequest::START_BESIDE);
  v1::UpgradeReply rep;
  EXPECT_EQ(up_->request(req, &rep).code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(rep.message().find("is active"), std::string::npos) << rep.message();
  EXPECT_EQ(rep.upgrade().stage(), "idle");
}

}  // namespace
}  // namespace ftpair
