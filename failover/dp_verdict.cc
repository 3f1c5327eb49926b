#include "failover/dp_verdict.h"

namespace ftpair::fo {

const char *dp_verdict_label(DpVerdict v) {
  switch (v) {
    case DpVerdict::PEER_GONE: return "peer_gone";
    case DpVerdict::PEER_DEAD: return "peer_dead";
    case DpVerdict::PEER_SLOW: return "peer_slow";
    case DpVerdict::WORKER_STALLED: return "worker_stalled";
    case DpVerdict::WORKER_STARVED: return "worker_starved";
    case DpVerdict::BEATS_LOST: return "beats_lost";
    case DpVerdict::PEER_NOT_ACTIVE: return "peer_not_active";
    case DpVerdict::COUNT: break;
  }
  return "unknown";
}

DpVerdict dp_verdict(ProbeOutcome o, const v1::Beat &reply, unsigned worker, uint64_t limit_us) {
  if (o == ProbeOutcome::REFUSED) return DpVerdict::PEER_GONE;
  if (o == ProbeOutcome::NOTHING) return DpVerdict::PEER_DEAD;
  if (o == ProbeOutcome::ALIVE) return DpVerdict::PEER_SLOW;
  if (reply.role_state() != v1::ROLE_STATE_ACTIVE) return DpVerdict::PEER_NOT_ACTIVE;
  for (const auto &w : reply.dataplane_workers()) {
    if (w.worker() != worker) continue;
    if (w.last_beat_age_us() <= limit_us) return DpVerdict::BEATS_LOST;
    return w.runnable() ? DpVerdict::WORKER_STARVED : DpVerdict::WORKER_STALLED;
  }
  return DpVerdict::BEATS_LOST;
}

}  // namespace ftpair::fo
