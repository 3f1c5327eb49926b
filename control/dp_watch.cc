#include "control/dp_watch.h"

#include <time.h>

#include <cerrno>
#include <cstring>

#include <rte_cycles.h>

#include "common/log.h"
#include "common/realtime.h"
#include "failover/role.h"

namespace ftpair {

namespace {
auto &L = log::component("dpbeat");
constexpr int64_t kRecheckNs = 100'000'000;  // after a verdict that promoted nothing: ask again in 100 ms
constexpr int64_t kLinkDownNs = 50'000'000;  // beats lost this long while the peer's workers send: link down
}  // namespace

DpWatch::DpWatch(dp::DpBeatBoard &board, uint32_t probe_us, uint32_t arm_ms, bool realtime, Hooks hooks)
    : board_(board),
      probe_timeout_(probe_us),
      arm_ns_(int64_t(arm_ms) * 1'000'000),
      want_realtime_(realtime),
      hooks_(std::move(hooks)) {}

DpWatch::~DpWatch() { stop(); }

void DpWatch::start() {
  if (running_.exchange(true)) return;
  thread_ = std::thread([this] { loop(); });
}

void DpWatch::stop() {
  if (!running_.exchange(false)) return;
  if (thread_.joinable()) thread_.join();
}

bool DpWatch::peer_fresh() const {
  const dp::DpPeerView v = board_.peer(rte_rdtsc());
  return v.heard && v.workers > 0 && v.silence_tsc[v.worst] <= board_.silence_limit_tsc();
}

double DpWatch::worst_silence_s() const {
  const dp::DpPeerView v = board_.peer(rte_rdtsc());
  if (!v.heard || v.workers == 0) return -1;
  return double(v.silence_tsc[v.worst]) / double(rte_get_tsc_hz());
}

void DpWatch::loop() {
  if (want_realtime_) {
    const bool ok = make_thread_realtime(kRealtimePriorityBeats);
    realtime_ok_.store(ok);
    if (!ok) L.warn("dataplane beat watch: no real-time priority here ({}); normal priority", std::strerror(errno));
  }
  const int64_t tick_ns = std::max<int64_t>(50'000, int64_t(board_.config().interval_us) * 1000 / 2);
  const uint64_t hz = rte_get_tsc_hz();
  const uint64_t limit_us = uint64_t(board_.config().interval_us) * board_.config().miss;
  timespec next{};
  clock_gettime(CLOCK_MONOTONIC, &next);
  int64_t quiet_until = 0;  // monotonic ns: no probe before
  /* A worker the peer says is not runnable is only suspected at first: an idle worker sleeps
   * between bursts (worker.idle_sleep_max_us), and a vCPU the hypervisor holds back or a timer
   * that fires late leaves it asleep and silent for milliseconds without anything wrong. A stall
   * is confirmed by a second probe one miss window later, with the worker still silent (its
   * sequence unchanged) and still not runnable. */
  struct {
    bool on = false;
    unsigned worker = 0;
    uint64_t sequence = 0;
  } suspect;
  uint64_t last_lost_log = 0;
  int64_t arm_from = 0;          // monotonic ns: the first fresh beats as a standby in sync (0: not yet)
  bool unarmed_silence = false;  // this silence was counted in silences_unarmed_
  while (running_.load(std::memory_order_relaxed)) {
    next.tv_nsec += tick_ns;
    while (next.tv_nsec >= 1'000'000'000) next.tv_nsec -= 1'000'000'000, next.tv_sec++;
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);
    timespec now_ts{};
    clock_gettime(CLOCK_MONOTONIC, &now_ts);
    const int64_t now_ns = int64_t(now_ts.tv_sec) * 1'000'000'000 + now_ts.tv_nsec;
    if (now_ns - (int64_t(next.tv_sec) * 1'000'000'000 + next.tv_nsec) > 10 * tick_ns) next = now_ts;  // no catch-up burst
    if (hooks_.publish_local) hooks_.publish_local(board_);
    const bool may = hooks_.may_promote && hooks_.may_promote();
    const dp::DpPeerView v = board_.peer(rte_rdtsc());
    const bool heard = v.heard && v.workers > 0;
    const uint64_t silent_us = heard ? dp::tsc_to_us(v.silence_tsc[v.worst], hz) : UINT64_MAX;
    const bool fresh = silent_us <= limit_us;
    // Arming: arm_ms after this node, a standby in sync, first heard the peer's workers.
    if (!may) {
      arm_from = 0;
      if (armed_.exchange(false)) L.info("dataplane beats' watch disarmed: this node is no longer a standby in sync");
    } else if (!armed_.load(std::memory_order_relaxed)) {
      /* The delay runs from the first beat heard as a standby in sync. A gap meanwhile does not
       * restart it: beats that cross a busy host's bridges miss a 3 ms deadline now and then,
       * and a standby that waited for a gap-free stretch might never arm. It arms between
       * silences, so the first silence it probes starts after the delay. */
      if (arm_from == 0 && (arm_ns_ == 0 || fresh)) arm_from = now_ns;
      if (arm_from != 0 && (arm_ns_ == 0 || fresh) && now_ns - arm_from >= arm_ns_) {
        armed_.store(true);
        if (arm_ns_ == 0)
          L.info("dataplane beats' watch armed (no arm delay): a silence of {} us is probed and can fail over", limit_us);
        else
          L.info("dataplane beats' watch armed: peer {} heard for {} ms as a standby in sync; a silence of {} us "
                 "is now probed and can fail over",
                 v.node_id, arm_ns_ / 1'000'000, limit_us);
      }
    }
    if (!heard) continue;
    if (fresh) {
      suspect.on = false;
      if (link_down_.exchange(false)) L.warn("dataplane beats from peer {} heard again: the dataplane link is up", v.node_id);
      quiet_until = 0;
      unarmed_silence = false;
      continue;
    }
    if (v.role != static_cast<uint8_t>(fo::Role::ACTIVE) || now_ns < quiet_until) continue;
    if (!may) continue;
    if (!armed_.load(std::memory_order_relaxed)) {
      if (!unarmed_silence) {
        unarmed_silence = true;
        silences_unarmed_.fetch_add(1, std::memory_order_relaxed);
        L.warn("dataplane beats of peer {} worker {} silent for {} us before the watch is armed: no probe; the "
               "control-plane beats decide",
               v.node_id, v.worst, silent_us);
      }
      continue;
    }
    v1::Beat reply;
    const uint64_t p0 = rte_rdtsc();
    fo::ProbeOutcome outcome = hooks_.probe ? hooks_.probe(probe_timeout_, &reply) : fo::ProbeOutcome::NOTHING;
    const uint64_t probe_us = dp::tsc_to_us(rte_rdtsc() - p0, hz);
    // No answer (or a refusal, which is not authenticated), but the silent worker's dataplane
    // beats came back while we waited: alive.
    if ((outcome == fo::ProbeOutcome::NOTHING || outcome == fo::ProbeOutcome::REFUSED) &&
        board_.peer(rte_rdtsc()).sequence[v.worst] != v.sequence[v.worst])
      outcome = fo::ProbeOutcome::ALIVE;
    const bool answered = outcome == fo::ProbeOutcome::ANSWERED;
    const fo::DpVerdict verdict = fo::dp_verdict(outcome, reply, v.worst, limit_us);
    {
      uint64_t age = UINT64_MAX;
      bool runnable = false;
      for (const auto &w : reply.dataplane_workers())
        if (w.worker() == v.worst) age = w.last_beat_age_us(), runnable = w.runnable();
      L.debug("probe after {} us of dataplane silence from peer {} worker {}: {} in {} us (its last beat {} us ago{}): {}",
             silent_us, v.node_id, v.worst, answered ? "answered" : "not answered", probe_us,
             age == UINT64_MAX ? std::string("?") : std::to_string(age), runnable ? ", runnable" : "",
             fo::dp_verdict_label(verdict));
    }
    verdicts_[static_cast<size_t>(verdict)].fetch_add(1, std::memory_order_relaxed);
    const std::string what = "dataplane beats of peer " + v.node_id + " worker " + std::to_string(v.worst) +
                             " silent for " + std::to_string(silent_us / 1000) + "." +
                             std::to_string(silent_us / 100 % 10) + " ms";
    if (verdict == fo::DpVerdict::WORKER_STALLED &&
        !(suspect.on && suspect.worker == v.worst && suspect.sequence == v.sequence[v.worst])) {
      suspect = {true, v.worst, v.sequence[v.worst]};
      quiet_until = now_ns + int64_t(limit_us) * 1000;  // look again one miss window later
      continue;
    }
    // Another verdict in between (starved, slow, beats lost) leaves the suspicion standing: only
    // the worker's beats moving (above, and the sequence compared) clear it.
    switch (verdict) {
      case fo::DpVerdict::PEER_GONE:
      case fo::DpVerdict::PEER_DEAD:
      case fo::DpVerdict::WORKER_STALLED: {
        NormalPriority normal;  // promotion waits on other threads (fencing, the engine)
        hooks_.promote(what + (verdict == fo::DpVerdict::PEER_GONE ? ", and its host refused a probe (port unreachable)"
                               : verdict == fo::DpVerdict::PEER_DEAD
                                   ? ", and no answer to a probe in " + std::to_string(probe_timeout_.count()) + " us"
                                   : ", and its thread is not runnable (stalled) at two probes " +
                                         std::to_string(limit_us / 1000) + " ms apart"),
                       verdict);
        quiet_until = now_ns + kRecheckNs;
        break;
      }
      case fo::DpVerdict::BEATS_LOST:
        /* A gap of a few intervals while the peer's worker sends is a frame late or a worker of
         * ours starved of the CPU: counted (the probes' verdict), no alarm. Still silent at the
         * next look, kLinkDownNs on, the link itself is down. */
        if (silent_us * 1000 < uint64_t(kLinkDownNs)) {
          quiet_until = now_ns + kLinkDownNs;
          break;
        }
        if (!link_down_.exchange(true) || verdicts(verdict) - last_lost_log >= 100) {
          last_lost_log = verdicts(verdict);
          L.error("{}, but the peer says the worker still sends: the dataplane link between the nodes is down "
                  "(no promotion: the control-plane beats still hear the peer)",
                  what);
        }
        quiet_until = now_ns + kRecheckNs;
        break;
      case fo::DpVerdict::WORKER_STARVED:
      case fo::DpVerdict::PEER_SLOW:
        quiet_until = now_ns + tick_ns * 2;
        break;
      case fo::DpVerdict::PEER_NOT_ACTIVE:
      case fo::DpVerdict::COUNT:
        quiet_until = now_ns + kRecheckNs;
        break;
    }
  }
}

}  // namespace ftpair
