// The decision table of failover/dp_verdict.h, row by row.
#include <gtest/gtest.h>

#include "failover/dp_verdict.h"

namespace ftpair::fo {
namespace {

v1::Beat reply(v1::RoleState role, uint64_t age_us, bool runnable, unsigned worker = 1) {
  v1::Beat b;
  b.set_role_state(role);
  for (unsigned w = 0; w < 2; w++) {
    auto *d = b.add_dataplane_workers();
    d->set_worker(w);
    d->set_beats_sent(1000);
    d->set_last_beat_age_us(w == worker ? age_us : 100);
    d->set_runnable(w == worker ? runnable : false);
  }
  return b;
}

TEST(DpVerdict, NoAnswerIsADeadPeer) {
  EXPECT_EQ(dp_verdict(ProbeOutcome::NOTHING, v1::Beat{}, 0, 3000), DpVerdict::PEER_DEAD);
  EXPECT_TRUE(dp_verdict_promotes(DpVerdict::PEER_DEAD));
}

TEST(DpVerdict, APortUnreachableIsAGoneDaemon) {
  EXPECT_EQ(dp_verdict(ProbeOutcome::REFUSED, v1::Beat{}, 0, 3000), DpVerdict::PEER_GONE);
  EXPECT_TRUE(dp_verdict_promotes(DpVerdict::PEER_GONE));
}

// No answer in time, but the peer was heard while we waited: a machine that paused, not a death.
TEST(DpVerdict, NoAnswerButHeardMeanwhileIsASlowPeer) {
  EXPECT_EQ(dp_verdict(ProbeOutcome::ALIVE, v1::Beat{}, 0, 3000), DpVerdict::PEER_SLOW);
  EXPECT_FALSE(dp_verdict_promotes(DpVerdict::PEER_SLOW));
}

TEST(DpVerdict, AWorkerThatStoppedSendingAndIsNotRunnableIsStalled) {
  EXPECT_EQ(dp_verdict(ProbeOutcome::ANSWERED, reply(v1::ROLE_STATE_ACTIVE, 9000, false), 1, 3000), DpVerdict::WORKER_STALLED);
  EXPECT_TRUE(dp_verdict_promotes(DpVerdict::WORKER_STALLED));
}

TEST(DpVerdict, ARunnableWorkerWaitingForACpuIsStarvedNotStalled) {
  EXPECT_EQ(dp_verdict(ProbeOutcome::ANSWERED, reply(v1::ROLE_STATE_ACTIVE, 9000, true), 1, 3000), DpVerdict::WORKER_STARVED);
  EXPECT_FALSE(dp_verdict_promotes(DpVerdict::WORKER_STARVED));
}

TEST(DpVerdict, AWorkerThatStillSendsMeansTheBeatsAreLostOnTheWay) {
  EXPECT_EQ(dp_verdict(ProbeOutcome::ANSWERED, reply(v1::ROLE_STATE_ACTIVE, 500, false), 1, 3000), DpVerdict::BEATS_LOST);
  // The silent worker's own row decides, not another worker's.
  EXPECT_EQ(dp_verdict(ProbeOutcome::ANSWERED, reply(v1::ROLE_STATE_ACTIVE, 9000, false), 0, 3000), DpVerdict::BEATS_LOST);
  // A reply that does not mention the worker promotes nothing.
  EXPECT_EQ(dp_verdict(ProbeOutcome::ANSWERED, reply(v1::ROLE_STATE_ACTIVE, 9000, false), 5, 3000), DpVerdict::BEATS_LOST);
  EXPECT_FALSE(dp_verdict_promotes(DpVerdict::BEATS_LOST));
}

TEST(DpVerdict, APeerThatSaysItIsNotActiveIsLeftAlone) {
  EXPECT_EQ(dp_verdict(ProbeOutcome::ANSWERED, reply(v1::ROLE_STATE_STANDBY_READY, 9000, false), 1, 3000), DpVerdict::PEER_NOT_ACTIVE);
  EXPECT_EQ(dp_verdict(ProbeOutcome::ANSWERED, reply(v1::ROLE_STATE_DRAINING, 9000, false), 1, 3000), DpVerdict::PEER_NOT_ACTIVE);
  EXPECT_STREQ(dp_verdict_label(DpVerdict::PEER_NOT_ACTIVE), "peer_not_active");
}

}  // namespace
}  // namespace ftpair::fo
