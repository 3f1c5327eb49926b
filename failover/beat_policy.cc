#include "failover/beat_policy.h"

#include <algorithm>

namespace ftpair::fo {

namespace {
bool active(Role r) { return r == Role::ACTIVE || r == Role::DRAINING; }
}  // namespace

BeatVerdict BeatPolicy::on_beat(Role ours, uint64_t our_generation, const std::string &our_id, Role peer_role,
                                const v1::Beat &b) {
  const uint64_t reference = std::max(our_generation, peer_generation_seen_);
  if (reference != 0 && b.generation() > reference + kMaxGenerationJump) {
    step_down_ = unhealthy_ = 0;
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
  return BeatVerdict::NOTHING;
}

}  // namespace ftpair::fo
