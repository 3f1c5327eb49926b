/* What a peer's beat may make this node do. Beats inform, they do not command:
 *   - a generation more than kMaxGenerationJump past both ours and the newest the peer has
 *     shown is refused (promotions add one; a forged 2^40 is no promotion);
 *   - stepping down (two actives: the lower generation, then the higher node id, yields) and
 *     promoting because the active says its dataplane is unhealthy each need
 *     kCorroboratingBeats distinct beats in a row that say so, so one datagram (forged,
 *     replayed, or a glitch) moves nothing;
 *   - liveness: when both nodes have been standby for kElectAfterNs (beats from the peer all
 *     along saying so), the pair elects one: the one in sync, then the newer generation, then
 *     the lower node id. Both apply the same rule to the same facts, so exactly one promotes,
 *     without fencing (its peer is alive and says it is standby).
 * Not thread-safe: one caller (the monitor's hook thread). */
#pragma once

#include <cstdint>
#include <string>

#include "failover/role.h"
#include "peer.pb.h"

namespace ftpair::fo {

inline constexpr uint64_t kMaxGenerationJump = 1000;
inline constexpr uint32_t kCorroboratingBeats = 3;
inline constexpr int64_t kElectAfterNs = 1'000'000'000;  // both standby this long: elect one

enum class BeatVerdict {
  NOTHING,            // nothing to do beyond adopting the generation when not active
  REFUSED_JUMP,       // implausible generation: ignore the beat entirely
  STEP_DOWN,          // an active peer with a better claim, corroborated
  PROMOTE_UNHEALTHY,  // a standby in sync, the active unhealthy, corroborated
  ELECTED,            // both standby past kElectAfterNs, and this node wins the election
};

// This node's side of a beat's decision.
struct SelfView {
  Role role = Role::BOOT;
  uint64_t generation = 0;
  std::string id;
  bool in_sync = false;  // a standby's applier holds a complete cut
  int64_t now_ns = 0;    // a monotonic clock
};

class BeatPolicy {
 public:
  /* ours: this node's role and generation and id; peer_role: the beat's role. Counts the
   * beat toward a streak only when its sequence number differs from the previous one. */
  BeatVerdict on_beat(const SelfView &self, Role peer_role, const v1::Beat &b);
  // The election's rule: true when `self` beats the peer that sent b.
  static bool wins_election(const SelfView &self, const v1::Beat &b);
  // The streak behind the newest verdict (for log lines).
  uint32_t streak() const { return streak_shown_; }

 private:
  uint64_t peer_generation_seen_ = 0, last_seq_ = 0;
  bool have_seq_ = false;
  uint32_t step_down_ = 0, unhealthy_ = 0, streak_shown_ = 0;
  int64_t both_standby_since_ns_ = 0;  // 0: not both standby
  int64_t last_beat_ns_ = 0;          // while both standby
};

}  // namespace ftpair::fo
