/* What a silence of dataplane beats means (issue 19), decided from the peer's answer to a probe.
 *
 * The dataplane beats (dataplane/dp_beat.h) say within microseconds that a peer worker stopped
 * sending. Four things look like that, and only two of them call for a failover:
 *
 *   peer's answer to the probe (fast beats, failover/monitor.h)     verdict          action
 *   ---------------------------------------------------------------------------------------------
 *   ICMP port unreachable from the peer's host: its daemon is gone   PEER_GONE        fence, promote
 *     (answered by the kernel in one round trip, no timeout waited; it must quote a datagram
 *     sent since the probe began, and hosts limit these errors: Linux sends 6, then one a
 *     second per destination, so a daemon gone for long may not be refused in time)
 *   none within dataplane_probe_us (sent 3 times), and nothing else  PEER_DEAD        fence, promote
 *     heard from the peer meanwhile: the process is dead or stopped,
 *     or its host is (or the management network is down too)
 *   none in time, but a fast beat or a dataplane beat of that worker PEER_SLOW        wait: probe
 *     arrived while we waited (a machine that paused, not a death)                    again
 *   the worker last sent more than the silence limit ago, and its     WORKER_STALLED   fence, promote
 *     thread is blocked (a lock, I/O) or stopped, at two probes          (at the second
 *     one silence limit apart                                             probe)
 *   the worker last sent more than the limit ago, but its thread is   WORKER_STARVED   wait: the peer's
 *     runnable (waiting for a CPU: a busy machine, not a stall), or                      stall detector
 *     still in its idle nap (a wake-up that came late: the same)                         decides at stall_ms
 *   the worker sent within the limit: its beats are lost on the way  BEATS_LOST       alarm (dataplane
 *     (the dataplane link between the nodes is cut or dropping)                          link down), no
 *                                                                                        promotion
 *   the peer says it is not active                                    PEER_NOT_ACTIVE  nothing
 *
 * The control-plane beats keep the other direction: while the dataplane beats of every peer
 * worker are fresh, a silence of the control-plane beats alone (the management network) does
 * not promote either. A partition of the dataplane link alone therefore makes no second
 * active, and a promotion still fences first. */
#pragma once

#include <cstdint>

#include "peer.pb.h"

namespace ftpair::fo {

enum class DpVerdict : uint8_t {
  PEER_GONE,
  PEER_DEAD,
  PEER_SLOW,
  WORKER_STALLED,
  WORKER_STARVED,
  BEATS_LOST,
  PEER_NOT_ACTIVE,
  COUNT
};
const char *dp_verdict_label(DpVerdict v);
// True for the verdicts that fence and promote.
inline bool dp_verdict_promotes(DpVerdict v) {
  return v == DpVerdict::PEER_GONE || v == DpVerdict::PEER_DEAD || v == DpVerdict::WORKER_STALLED;
}

// How the probe ended: answered; refused (ICMP port unreachable); unanswered but the peer was
// heard meanwhile (another fast beat, or a dataplane beat of the silent worker); nothing.
enum class ProbeOutcome : uint8_t { ANSWERED, REFUSED, ALIVE, NOTHING };

/* reply: the answer (ANSWERED only); worker: the peer worker found silent; limit_us: the
 * silence that counts as missed (interval x miss). A reply that does not mention the worker
 * is taken as BEATS_LOST: without word that it stopped, nothing is promoted. */
DpVerdict dp_verdict(ProbeOutcome o, const v1::Beat &reply, unsigned worker, uint64_t limit_us);

}  // namespace ftpair::fo
