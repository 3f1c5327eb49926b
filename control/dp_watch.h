/* The dataplane beats' watch (issue 19): a real-time thread that reads the peer's workers'
 * newest dataplane beats from the board (dataplane/dp_beat.h) twice per beat interval, and,
 * when one has been silent dataplane_miss intervals while the peer says it is active, probes
 * the peer over the fast beats and acts on the verdict (failover/dp_verdict.h): promote
 * (fencing first) when the peer is dead or its worker stalled; raise the "dataplane link down"
 * alarm when its workers still send; wait when a worker is only starved of a CPU.
 *
 * It acts only once armed: dataplane_arm_ms after this node, a standby in sync, first heard
 * the peer's dataplane beats, and then between silences (every peer worker fresh). A node
 * that has just started (EAL, the mbuf pool, the flow tables' pages, the full sync), or whose
 * peer has, keeps the machine's CPUs busy for a moment, and a silence of a few milliseconds
 * then is that, not a death. Until armed, the
 * control-plane beats alone decide, as BFD keeps its slow timers until a session is Up
 * (RFC 5880 section 6.8.3). A silence before that is counted (silences_unarmed()).
 *
 * It also publishes this node's role and generation to the board for the workers' beats. */
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "dataplane/dp_beat.h"
#include "failover/dp_verdict.h"
#include "peer.pb.h"

namespace ftpair {

class DpWatch {
 public:
  struct Hooks {
    std::function<void(dp::DpBeatBoard &)> publish_local;  // set_local(role, generation)
    std::function<bool()> may_promote;                     // a standby in sync, not handing over
    std::function<fo::ProbeOutcome(std::chrono::microseconds, v1::Beat *)> probe;
    // Fence and promote; the reason names the silence and the verdict.
    std::function<void(const std::string &reason, fo::DpVerdict v)> promote;
  };
  DpWatch(dp::DpBeatBoard &board, uint32_t probe_us, uint32_t arm_ms, bool realtime, Hooks hooks);
  ~DpWatch();
  void start();
  void stop();

  dp::DpBeatBoard &board() { return board_; }
  // Every worker of the peer heard within the silence limit (false before the first beat).
  bool peer_fresh() const;
  // The peer's workers still send but their beats do not arrive (set by a probe, cleared by a beat).
  bool link_down() const { return link_down_.load(std::memory_order_relaxed); }
  uint64_t verdicts(fo::DpVerdict v) const { return verdicts_[static_cast<size_t>(v)].load(std::memory_order_relaxed); }
  // The longest silence of any peer worker now, in seconds (-1 before the first beat).
  double worst_silence_s() const;
  bool realtime() const { return realtime_ok_.load(); }
  // Acting on a silence: arm_ms since this node, a standby in sync, first heard the peer's workers.
  bool armed() const { return armed_.load(std::memory_order_relaxed); }
  // Silences (a peer worker past the miss limit) seen while not armed, each counted once.
  uint64_t silences_unarmed() const { return silences_unarmed_.load(std::memory_order_relaxed); }

 private:
  void loop();
  dp::DpBeatBoard &board_;
  const std::chrono::microseconds probe_timeout_;
  const int64_t arm_ns_;
  const bool want_realtime_;
  Hooks hooks_;
  std::atomic<bool> running_{false};
  std::thread thread_;
  std::atomic<bool> link_down_{false}, realtime_ok_{false}, armed_{false};
  std::atomic<uint64_t> silences_unarmed_{0};
  std::atomic<uint64_t> verdicts_[static_cast<size_t>(fo::DpVerdict::COUNT)] = {};
};

}  // namespace ftpair
