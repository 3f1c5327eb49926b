#include "failover/beat_policy.h"

#include <algorithm>

namespace ftpair::fo {

namespace {
bool active(Role r) { return r == Role::ACTIVE || r == Role::DRAINING; }
}  // namespace

bool BeatPolicy::wins_election(const SelfView &self, const v1::Beat &b) {
  if (self.in_sync != b.in_sync()) return self.in_sync;
  if (self.generation != b.generation()) return self.generation > b.generation();
  return self.id < b.node_id();
}

BeatVerdict BeatPolicy::on_beat(const SelfView &self, Role peer_role, const v1::Beat &b) {
  const Role ours = self.role;
  const uint64_t our_generation = self.generation;
  const std::string &our_id = self.id;
  const uint64_t reference = std::max(our_generation, peer_generation_seen_);
  if (reference != 0 && b.generation() > reference + kMaxGenerationJump) {
    step_down_ = unhealthy_ = 0;
    both_standby_since_ns_ = 0;
    return BeatVerdict::REFUSED_JUMP;
  }
  peer_generation_seen_ = std::max(peer_generation_seen_, b.generation());
  const bool fresh = !have_seq_ || b.sequence() != last_seq_;
  have_seq_ = true;
  last_seq_ = b.sequence();
  // A DRAINING peer is handing over: it yields, it does not compete.
  const bool yield = active(ours) && peer_role == Role::ACTIVE &&
                     (b.generation() > our_generation || (b.generation() == our_generation && b.node_id() < our_id));
  step_down_ = yield ? step_down_ + (fresh ? 1 : 0) : 0;
  const bool unhealthy = !active(ours) && active(peer_role) && !b.dataplane_healthy();
  unhealthy_ = unhealthy ? unhealthy_ + (fresh ? 1 : 0) : 0;
  if (step_down_ >= kCorroboratingBeats) {
    streak_shown_ = step_down_;
    step_down_ = 0;
    return BeatVerdict::STEP_DOWN;
  }
  if (ours == Role::STANDBY_READY && unhealthy_ >= kCorroboratingBeats) {
    streak_shown_ = unhealthy_;
    unhealthy_ = 0;
    return BeatVerdict::PROMOTE_UNHEALTHY;
  }
  const auto standby = [](Role r) { return r == Role::STANDBY_READY || r == Role::STANDBY_SYNCING; };
  if (!standby(ours) || !standby(peer_role)) {
    both_standby_since_ns_ = 0;
    return BeatVerdict::NOTHING;
  }
  // "All along": a gap in the beats starts the wait again.
  if (both_standby_since_ns_ == 0 || self.now_ns - last_beat_ns_ > kElectAfterNs / 4)
    both_standby_since_ns_ = self.now_ns;
  last_beat_ns_ = self.now_ns;
  if (self.now_ns - both_standby_since_ns_ >= kElectAfterNs && wins_election(self, b)) {
    both_standby_since_ns_ = 0;
    return BeatVerdict::ELECTED;
  }
  return BeatVerdict::NOTHING;
}

}  // namespace ftpair::fo
