#include "control/upgrade_stage.h"

#include <initializer_list>

#include "common/clock.h"
#include "common/log.h"

namespace ftpair {

namespace {

auto &L = log::component("upgrade");

using S = UpgradeStage;

constexpr const char *kStageNames[kUpgradeStageCount] = {
    "idle", "staged", "starting", "syncing", "in_sync", "handing_over", "retired", "took_over", "aborted", "failed"};

constexpr const char *kEventNames[kUpgradeEventCount] = {
    "staged",          "started",     "rollback_started", "failed_start", "beside_exited",
    "handover_failed", "handed_over", "took_over",        "aborted",      "joiner_added",
    "joiner_promoted", "refused",     "illegal_transition"};

constexpr uint32_t bits(std::initializer_list<S> to) {
  uint32_t m = 0;
  for (S s : to) m |= 1u << static_cast<unsigned>(s);
  return m;
}

/* Where each stage may go. A stage that restates itself (syncing again once the active took
 * the new instance, failed twice when both the supervisor and the handover see the new
 * instance go) keeps its clock and only changes its message. A failed handover may be tried
 * again while the new instance runs in sync (the request checks that). */
constexpr uint32_t kMoves[kUpgradeStageCount] = {
    /* idle         */ bits({S::STAGED, S::STARTING, S::SYNCING, S::ABORTED}),
    /* staged       */ bits({S::STAGED, S::STARTING, S::ABORTED}),
    /* starting     */ bits({S::SYNCING, S::FAILED, S::ABORTED}),
    /* syncing      */ bits({S::SYNCING, S::IN_SYNC, S::TOOK_OVER, S::FAILED, S::ABORTED}),
    /* in_sync      */ bits({S::HANDING_OVER, S::FAILED, S::ABORTED}),
    /* handing_over */ bits({S::RETIRED, S::FAILED}),
    /* retired      */ 0,
    /* took_over    */ bits({S::STAGED, S::STARTING, S::ABORTED}),
    /* aborted      */ bits({S::STAGED, S::STARTING, S::ABORTED}),
    /* failed       */ bits({S::STAGED, S::STARTING, S::HANDING_OVER, S::FAILED, S::ABORTED}),
};

size_t idx(S s) { return static_cast<size_t>(s); }

}  // namespace

const char *upgrade_stage_name(UpgradeStage s) { return idx(s) < kUpgradeStageCount ? kStageNames[idx(s)] : "?"; }

bool upgrade_stage_from_name(const std::string &name, UpgradeStage *out) {
  for (size_t i = 0; i < kUpgradeStageCount; i++)
    if (name == kStageNames[i]) {
      *out = static_cast<UpgradeStage>(i);
      return true;
    }
  return false;
}

const char *upgrade_event_name(UpgradeEvent e) {
  const size_t i = static_cast<size_t>(e);
  return i < kUpgradeEventCount ? kEventNames[i] : "?";
}

bool upgrade_move_allowed(UpgradeStage from, UpgradeStage to) {
  if (idx(from) >= kUpgradeStageCount || idx(to) >= kUpgradeStageCount) return false;
  return (kMoves[idx(from)] >> idx(to)) & 1u;
}

Status UpgradeMachine::move(UpgradeStage to, const std::string &why) {
  std::lock_guard<std::mutex> g(mu_);
  return move_locked(to, why);
}

Status UpgradeMachine::move_from(UpgradeStage from, UpgradeStage to, const std::string &why) {
  std::lock_guard<std::mutex> g(mu_);
  if (stage_ != from)
    return FailedPrecondition(std::string("upgrade: the stage is ") + upgrade_stage_name(stage_) + ", not " +
                              upgrade_stage_name(from));
  return move_locked(to, why);
}

Status UpgradeMachine::move_locked(UpgradeStage to, const std::string &why) {
  const UpgradeStage from = stage_;
  if (!upgrade_move_allowed(from, to)) {
    count(UpgradeEvent::ILLEGAL_TRANSITION);
    L.warn("refused the move {} -> {} (not allowed): {}", upgrade_stage_name(from), upgrade_stage_name(to), why);
    return FailedPrecondition(std::string("upgrade: this instance is ") + upgrade_stage_name(from) + ", it cannot go " +
                              upgrade_stage_name(to) + " (" + why + ")");
  }
  if (to != from) since_ns_ = mono_ns();
  stage_ = to;
  message_ = why;
  if (to == S::FAILED || to == S::ABORTED)
    L.warn("{} -> {}: {}", upgrade_stage_name(from), upgrade_stage_name(to), why);
  else
    L.info("{} -> {}: {}", upgrade_stage_name(from), upgrade_stage_name(to), why);
  return Status::Ok();
}

bool UpgradeMachine::may_move(UpgradeStage to) const {
  std::lock_guard<std::mutex> g(mu_);
  return upgrade_move_allowed(stage_, to);
}

UpgradeStage UpgradeMachine::stage() const {
  std::lock_guard<std::mutex> g(mu_);
  return stage_;
}

UpgradeMachine::View UpgradeMachine::view() const {
  std::lock_guard<std::mutex> g(mu_);
  return {stage_, message_, since_ns_ ? double(mono_ns() - since_ns_) / 1e9 : 0};
}

}  // namespace ftpair
