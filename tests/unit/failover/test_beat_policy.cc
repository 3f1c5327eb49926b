// What a peer's beat may make a node do (failover/beat_policy.h): the forged beats
// ("ACTIVE with generation 2^40", "my dataplane is unhealthy") move nothing on their own.
#include "failover/beat_policy.h"

#include <gtest/gtest.h>

namespace ftpair::fo {
namespace {

v1::Beat beat(uint64_t seq, uint64_t gen, bool healthy = true, const std::string &id = "b") {
  v1::Beat b;
  b.set_node_id(id);
  b.set_sequence(seq);
  b.set_generation(gen);
  b.set_dataplane_healthy(healthy);
  return b;
}

TEST(BeatPolicy, AFarGenerationJumpIsRefused) {
  BeatPolicy p;
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 3, "a", Role::STANDBY_READY, beat(1, 3)), BeatVerdict::NOTHING);
  for (uint64_t s = 2; s < 12; s++)
    EXPECT_EQ(p.on_beat(Role::ACTIVE, 3, "a", Role::ACTIVE, beat(s, 1ull << 40)), BeatVerdict::REFUSED_JUMP) << s;
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 3, "a", Role::ACTIVE, beat(20, 3 + kMaxGenerationJump + 1)),
            BeatVerdict::REFUSED_JUMP);
  // A plausible newer active (one promotion ahead) is obeyed once corroborated.
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 3, "a", Role::ACTIVE, beat(21, 4)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 3, "a", Role::ACTIVE, beat(22, 4)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 3, "a", Role::ACTIVE, beat(23, 4)), BeatVerdict::STEP_DOWN);
}

TEST(BeatPolicy, AFreshNodeTakesAnyGenerationFirst) {
  BeatPolicy p;  // generation 0 and nothing seen: no reference to jump from
  EXPECT_EQ(p.on_beat(Role::STANDBY_SYNCING, 0, "b", Role::ACTIVE, beat(1, 50'000)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::STANDBY_SYNCING, 0, "b", Role::ACTIVE, beat(2, 50'001 + kMaxGenerationJump)),
            BeatVerdict::REFUSED_JUMP);
}

TEST(BeatPolicy, SteppingDownNeedsThreeDistinctBeatsInARow) {
  BeatPolicy p;
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 5, "a", Role::ACTIVE, beat(1, 6)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 5, "a", Role::ACTIVE, beat(1, 6)), BeatVerdict::NOTHING) << "the same beat twice";
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 5, "a", Role::ACTIVE, beat(1, 6)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 5, "a", Role::STANDBY_READY, beat(2, 5)), BeatVerdict::NOTHING) << "breaks the run";
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 5, "a", Role::ACTIVE, beat(3, 6)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 5, "a", Role::ACTIVE, beat(4, 6)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::ACTIVE, 5, "a", Role::ACTIVE, beat(5, 6)), BeatVerdict::STEP_DOWN);
  EXPECT_EQ(p.streak(), kCorroboratingBeats);
  // Equal generations: the lower node id keeps the role.
  BeatPolicy q;
  for (uint64_t s = 1; s <= 5; s++)
    EXPECT_EQ(q.on_beat(Role::ACTIVE, 5, "a", Role::ACTIVE, beat(s, 5, true, "b")), BeatVerdict::NOTHING);
  EXPECT_EQ(q.on_beat(Role::ACTIVE, 5, "b", Role::ACTIVE, beat(6, 5, true, "a")), BeatVerdict::NOTHING);
  EXPECT_EQ(q.on_beat(Role::ACTIVE, 5, "b", Role::ACTIVE, beat(7, 5, true, "a")), BeatVerdict::NOTHING);
  EXPECT_EQ(q.on_beat(Role::ACTIVE, 5, "b", Role::ACTIVE, beat(8, 5, true, "a")), BeatVerdict::STEP_DOWN);
  // An older active peer never makes this one yield, however often it says so.
  BeatPolicy r;
  for (uint64_t s = 1; s <= 10; s++)
    EXPECT_EQ(r.on_beat(Role::ACTIVE, 5, "a", Role::ACTIVE, beat(s, 4)), BeatVerdict::NOTHING);
}

TEST(BeatPolicy, UnhealthyNeedsThreeDistinctBeatsAndAReadyStandby) {
  BeatPolicy p;
  EXPECT_EQ(p.on_beat(Role::STANDBY_READY, 5, "b", Role::ACTIVE, beat(1, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::STANDBY_READY, 5, "b", Role::ACTIVE, beat(2, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::STANDBY_READY, 5, "b", Role::ACTIVE, beat(3, 5, true)), BeatVerdict::NOTHING) << "healthy again";
  EXPECT_EQ(p.on_beat(Role::STANDBY_READY, 5, "b", Role::ACTIVE, beat(4, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::STANDBY_READY, 5, "b", Role::ACTIVE, beat(4, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::STANDBY_READY, 5, "b", Role::ACTIVE, beat(5, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(Role::STANDBY_READY, 5, "b", Role::ACTIVE, beat(6, 5, false)), BeatVerdict::PROMOTE_UNHEALTHY);
  // A syncing standby never promotes on it, nor does an unhealthy standby peer count.
  BeatPolicy q;
  for (uint64_t s = 1; s <= 6; s++)
    EXPECT_EQ(q.on_beat(Role::STANDBY_SYNCING, 5, "b", Role::ACTIVE, beat(s, 5, false)), BeatVerdict::NOTHING);
  BeatPolicy r;
  for (uint64_t s = 1; s <= 6; s++)
    EXPECT_EQ(r.on_beat(Role::STANDBY_READY, 5, "b", Role::STANDBY_READY, beat(s, 5, false)), BeatVerdict::NOTHING);
}

}  // namespace
}  // namespace ftpair::fo
