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

SelfView me(Role role, uint64_t gen, const std::string &id, bool in_sync = true, int64_t now_ns = 1) {
  SelfView v;
  v.role = role;
  v.generation = gen;
  v.id = id;
  v.in_sync = in_sync;
  v.now_ns = now_ns;
  return v;
}

TEST(BeatPolicy, AFarGenerationJumpIsRefused) {
  BeatPolicy p;
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 3, "a"), Role::STANDBY_READY, beat(1, 3)), BeatVerdict::NOTHING);
  for (uint64_t s = 2; s < 12; s++)
    EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 3, "a"), Role::ACTIVE, beat(s, 1ull << 40)), BeatVerdict::REFUSED_JUMP) << s;
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 3, "a"), Role::ACTIVE, beat(20, 3 + kMaxGenerationJump + 1)),
            BeatVerdict::REFUSED_JUMP);
  // A plausible newer active (one promotion ahead) is obeyed once corroborated.
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 3, "a"), Role::ACTIVE, beat(21, 4)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 3, "a"), Role::ACTIVE, beat(22, 4)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 3, "a"), Role::ACTIVE, beat(23, 4)), BeatVerdict::STEP_DOWN);
}

TEST(BeatPolicy, AFreshNodeTakesAnyGenerationFirst) {
  BeatPolicy p;  // generation 0 and nothing seen: no reference to jump from
  EXPECT_EQ(p.on_beat(me(Role::STANDBY_SYNCING, 0, "b"), Role::ACTIVE, beat(1, 50'000)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::STANDBY_SYNCING, 0, "b"), Role::ACTIVE, beat(2, 50'001 + kMaxGenerationJump)),
            BeatVerdict::REFUSED_JUMP);
}

TEST(BeatPolicy, SteppingDownNeedsThreeDistinctBeatsInARow) {
  BeatPolicy p;
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 5, "a"), Role::ACTIVE, beat(1, 6)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 5, "a"), Role::ACTIVE, beat(1, 6)), BeatVerdict::NOTHING) << "the same beat twice";
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 5, "a"), Role::ACTIVE, beat(1, 6)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 5, "a"), Role::STANDBY_READY, beat(2, 5)), BeatVerdict::NOTHING) << "breaks the run";
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 5, "a"), Role::ACTIVE, beat(3, 6)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 5, "a"), Role::ACTIVE, beat(4, 6)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::ACTIVE, 5, "a"), Role::ACTIVE, beat(5, 6)), BeatVerdict::STEP_DOWN);
  EXPECT_EQ(p.streak(), kCorroboratingBeats);
  // Equal generations: the lower node id keeps the role.
  BeatPolicy q;
  for (uint64_t s = 1; s <= 5; s++)
    EXPECT_EQ(q.on_beat(me(Role::ACTIVE, 5, "a"), Role::ACTIVE, beat(s, 5, true, "b")), BeatVerdict::NOTHING);
  EXPECT_EQ(q.on_beat(me(Role::ACTIVE, 5, "b"), Role::ACTIVE, beat(6, 5, true, "a")), BeatVerdict::NOTHING);
  EXPECT_EQ(q.on_beat(me(Role::ACTIVE, 5, "b"), Role::ACTIVE, beat(7, 5, true, "a")), BeatVerdict::NOTHING);
  EXPECT_EQ(q.on_beat(me(Role::ACTIVE, 5, "b"), Role::ACTIVE, beat(8, 5, true, "a")), BeatVerdict::STEP_DOWN);
  // An older active peer never makes this one yield, however often it says so.
  BeatPolicy r;
  for (uint64_t s = 1; s <= 10; s++)
    EXPECT_EQ(r.on_beat(me(Role::ACTIVE, 5, "a"), Role::ACTIVE, beat(s, 4)), BeatVerdict::NOTHING);
}

TEST(BeatPolicy, UnhealthyNeedsThreeDistinctBeatsAndAReadyStandby) {
  BeatPolicy p;
  EXPECT_EQ(p.on_beat(me(Role::STANDBY_READY, 5, "b"), Role::ACTIVE, beat(1, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::STANDBY_READY, 5, "b"), Role::ACTIVE, beat(2, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::STANDBY_READY, 5, "b"), Role::ACTIVE, beat(3, 5, true)), BeatVerdict::NOTHING) << "healthy again";
  EXPECT_EQ(p.on_beat(me(Role::STANDBY_READY, 5, "b"), Role::ACTIVE, beat(4, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::STANDBY_READY, 5, "b"), Role::ACTIVE, beat(4, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::STANDBY_READY, 5, "b"), Role::ACTIVE, beat(5, 5, false)), BeatVerdict::NOTHING);
  EXPECT_EQ(p.on_beat(me(Role::STANDBY_READY, 5, "b"), Role::ACTIVE, beat(6, 5, false)), BeatVerdict::PROMOTE_UNHEALTHY);
  // A syncing standby never promotes on it, nor does an unhealthy standby peer count.
  BeatPolicy q;
  for (uint64_t s = 1; s <= 6; s++)
    EXPECT_EQ(q.on_beat(me(Role::STANDBY_SYNCING, 5, "b"), Role::ACTIVE, beat(s, 5, false)), BeatVerdict::NOTHING);
  BeatPolicy r;
  for (uint64_t s = 1; s <= 6; s++)
    EXPECT_EQ(r.on_beat(me(Role::STANDBY_READY, 5, "b"), Role::STANDBY_READY, beat(s, 5, false)), BeatVerdict::NOTHING);
}

v1::Beat standby_beat(uint64_t seq, uint64_t gen, bool in_sync, const std::string &id) {
  v1::Beat b = beat(seq, gen, true, id);
  b.set_in_sync(in_sync);
  return b;
}

// Both standby: after kElectAfterNs of beats saying so, exactly one side elects itself.
TEST(BeatPolicy, BothStandbyElectsExactlyOneAfterTheWait) {
  struct Case {
    bool a_sync, b_sync;
    uint64_t a_gen, b_gen;
    const char *winner;
  } cases[] = {
      {false, false, 0, 0, "a"},  // all equal: the lower node id
      {false, true, 5, 5, "b"},   // in sync first
      {true, false, 4, 9, "a"},   // in sync beats a newer generation
      {true, true, 4, 9, "b"},    // then the newer generation
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.winner);
    BeatPolicy pa, pb;
    int a_elected = 0, b_elected = 0;
    int64_t t = 1'000;
    const int64_t step = 5'000'000;  // a beat every 5 ms
    for (uint64_t s = 1; t < 2 * kElectAfterNs; s++, t += step) {
      const Role ra = a_elected ? Role::ACTIVE : Role::STANDBY_SYNCING;
      const Role rb = b_elected ? Role::ACTIVE : Role::STANDBY_READY;
      BeatVerdict va = pa.on_beat(me(ra, c.a_gen, "a", c.a_sync, t), rb, standby_beat(s, c.b_gen, c.b_sync, "b"));
      BeatVerdict vb = pb.on_beat(me(rb, c.b_gen, "b", c.b_sync, t), ra, standby_beat(s, c.a_gen, c.a_sync, "a"));
      if (va == BeatVerdict::ELECTED) {
        EXPECT_GE(t - 1'000, kElectAfterNs - step) << "elected before the wait";
        a_elected++;
      }
      if (vb == BeatVerdict::ELECTED) b_elected++;
    }
    EXPECT_EQ(a_elected, std::string(c.winner) == "a" ? 1 : 0);
    EXPECT_EQ(b_elected, std::string(c.winner) == "b" ? 1 : 0);
  }
}

TEST(BeatPolicy, NoElectionWhileThePeerIsActiveOrAfterAGapInTheBeats) {
  BeatPolicy p;
  for (int64_t t = 1; t < 3 * kElectAfterNs; t += 5'000'000)
    EXPECT_EQ(p.on_beat(me(Role::STANDBY_READY, 1, "a", true, t), Role::ACTIVE, beat(uint64_t(t), 1)),
              BeatVerdict::NOTHING);
  // Both standby, but the beats come with a gap longer than a quarter of the wait each time.
  BeatPolicy q;
  for (int64_t t = 1, s = 1; t < 5 * kElectAfterNs; t += kElectAfterNs / 3, s++)
    EXPECT_EQ(q.on_beat(me(Role::STANDBY_READY, 1, "a", true, t), Role::STANDBY_READY, standby_beat(s, 1, true, "b")),
              BeatVerdict::NOTHING);
}

}  // namespace
}  // namespace ftpair::fo
