/* The in-service upgrade's stages: one enum, one table of names (the status text and the
 * ftpair_upgrade_stage{stage} labels both take it), one table of allowed moves, and one
 * function that makes a move. A move the table does not allow is refused, counted as the
 * event illegal_transition and logged; it never happens silently.
 *
 *   old instance (a standby being upgraded):
 *     idle|staged|took_over|aborted|failed -> starting -> syncing -> in_sync -> handing_over -> retired
 *   new instance (started beside it):
 *     idle -> syncing -> took_over
 *   any stage before handing_over -> aborted; a step that fails -> failed, from where the
 *   upgrade starts again (or a failed handover is tried again). */
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "common/status.h"

namespace ftpair {

// The metric lists the stages in this order.
enum class UpgradeStage : uint8_t {
  IDLE,
  STAGED,        // a checked binary waits in <state_dir>/upgrade/
  STARTING,      // the new binary is starting beside this instance
  SYNCING,       // the new instance takes a full sync from the active
  IN_SYNC,       // ... and is in sync: ready for the handover
  HANDING_OVER,  // this instance gives its role and ports to the new one
  RETIRED,       // it did; this instance exits
  TOOK_OVER,     // (new instance) it took the role and the ports
  ABORTED,
  FAILED,
  COUNT
};
constexpr size_t kUpgradeStageCount = static_cast<size_t>(UpgradeStage::COUNT);

// Steps and refusals, counted in ftpair_upgrade_events_total{event}.
enum class UpgradeEvent : uint8_t {
  STAGED,
  STARTED,
  ROLLBACK_STARTED,
  FAILED_START,
  BESIDE_EXITED,
  HANDOVER_FAILED,
  HANDED_OVER,
  TOOK_OVER,
  ABORTED,
  JOINER_ADDED,
  JOINER_PROMOTED,
  REFUSED,
  ILLEGAL_TRANSITION,
  COUNT
};
constexpr size_t kUpgradeEventCount = static_cast<size_t>(UpgradeEvent::COUNT);

// "idle", "staged", ... (the status text and the metric label).
const char *upgrade_stage_name(UpgradeStage s);
// The stage named `name`; false when no stage has that name.
bool upgrade_stage_from_name(const std::string &name, UpgradeStage *out);
// "staged", "joiner_added", "illegal_transition", ... (the metric label).
const char *upgrade_event_name(UpgradeEvent e);
// Whether the table allows the move from `from` to `to` (a few stages may restate themselves).
bool upgrade_move_allowed(UpgradeStage from, UpgradeStage to);

/* One instance's upgrade stage, the reason of its last move, since when, and the event
 * counts. Thread-safe. */
class UpgradeMachine {
 public:
  /* Moves to `to` when the table allows it from the current stage and logs one line with
   * the reason (component "upgrade"). Otherwise the stage stays, the event
   * illegal_transition is counted, a warning is logged, and FAILED_PRECONDITION names both
   * stages and the reason. */
  Status move(UpgradeStage to, const std::string &why);
  // move(), but only from `from`: FAILED_PRECONDITION (not counted) when the stage is another.
  Status move_from(UpgradeStage from, UpgradeStage to, const std::string &why);
  // Whether move(to) would be allowed now.
  bool may_move(UpgradeStage to) const;

  UpgradeStage stage() const;
  struct View {
    UpgradeStage stage;
    std::string message;
    double age_seconds;  // in this stage (0 before the first move)
  };
  View view() const;

  void count(UpgradeEvent e) { events_[static_cast<size_t>(e)]++; }
  uint64_t events(UpgradeEvent e) const { return events_[static_cast<size_t>(e)].load(); }

 private:
  Status move_locked(UpgradeStage to, const std::string &why);

  mutable std::mutex mu_;
  UpgradeStage stage_ = UpgradeStage::IDLE;
  std::string message_;
  int64_t since_ns_ = 0;  // mono_ns() of the last move to another stage
  std::array<std::atomic<uint64_t>, kUpgradeEventCount> events_{};
};

}  // namespace ftpair
