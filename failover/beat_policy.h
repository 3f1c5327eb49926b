/* What a peer's beat may make this node do. Beats inform, they do not command:
 *   - a generation more than kMaxGenerationJump past both ours and the newest the peer has
 *     shown is refused (promotions add one; a forged 2^40 is no promotion);
 *   - stepping down (two actives: the lower generation, then the higher node id, yields) and
 *     promoting because the active says its dataplane is unhealthy each need
 *     kCorroboratingBeats distinct beats in a row that say so, so one datagram (forged,
 *     replayed, or a glitch) moves nothing.
 * Not thread-safe: one caller (the monitor's hook thread). */
#pragma once

#include <cstdint>
#include <string>

#include "failover/role.h"
#include "peer.pb.h"

namespace ftpair::fo {

inline constexpr uint64_t kMaxGenerationJump = 1000;
inline constexpr uint32_t kCorroboratingBeats = 3;

enum class BeatVerdict {
  NOTHING,            // nothing to do beyond adopting the generation when not active
  REFUSED_JUMP,       // implausible generation: ignore the beat entirely
  STEP_DOWN,          // an active peer with a better claim, corroborated
  PROMOTE_UNHEALTHY,  // a standby in sync, the active unhealthy, corroborated
};

class BeatPolicy {
 public:
  /* ours: this node's role and generation and id; peer_role: the beat's role. Counts the
   * beat toward a streak only when its sequence number differs from the previous one. */
  BeatVerdict on_beat(Role ours, uint64_t our_generation, const std::string &our_id, Role peer_role,
                      const v1::Beat &b);
  // The streak behind the newest verdict (for log lines).
  uint32_t streak() const { return streak_shown_; }

 private:
  uint64_t peer_generation_seen_ = 0, last_seq_ = 0;
  bool have_seq_ = false;
  uint32_t step_down_ = 0, unhealthy_ = 0, streak_shown_ = 0;
};

}  // namespace ftpair::fo
