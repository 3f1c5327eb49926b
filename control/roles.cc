#include "control/roles.h"

#include <rte_cycles.h>

#include <algorithm>

#include "common/clock.h"
#include "common/log.h"
#include "control/node.h"

namespace ftpair {

namespace {
auto &L = log::component("roles");

double ms_since(int64_t t0_ns) { return double(mono_ns() - t0_ns) / 1e6; }
}  // namespace

RoleManager::RoleManager(std::string node_id, std::string state_dir)
    : node_id_(std::move(node_id)), generation_(std::move(state_dir)) {}

void RoleManager::attach(Parts parts) { p_ = std::move(parts); }

Status RoleManager::load_generation() {
  Status st = generation_.load();
  if (!st.ok()) return st;
  generation_value_.store(generation_.value());
  return Status::Ok();
}

Status RoleManager::set_vip_owner(bool own) {
  return p_.engine->with_workers_parked([this, own] {
    for (unsigned w = 0; w < p_.node->workers(); w++) p_.node->nf(w).set_vip_owner(own);
  });
}

/* One transaction. Prepare: with the table lock (no checkpoint is being applied) and the workers
 * parked, check what can fail (the generation must be stored). Commit, still parked and
 * infallible: stop taking checkpoints, cancel the standby's stream, refresh the copies, own the
 * VIPs. A failed prepare changes nothing: the node stays the standby it was, still accepting
 * its active's stream, at its old generation (so that stream is not refused as stale). */
Status RoleManager::become_active(const std::string &why, bool bump_generation) {
  const int64_t t0 = mono_ns();
  std::lock_guard<std::mutex> g(role_mu_);
  const fo::Role was = role();
  std::lock_guard<std::mutex> t(*p_.table_mu);
  int64_t t_gen = 0;
  Status st = p_.engine->run_parked([&] {
    const int64_t tp = mono_ns();
    if (bump_generation) {
      const uint64_t peer_gen = p_.monitor ? p_.monitor->last_peer_generation() : 0;
      // The standby reserved (and flushed) this generation ahead of time: no disk I/O here.
      const uint64_t want = std::max(generation(), peer_gen) + 1;
      if (!generation_.take_reserved(want)) {
        Status gs = generation_.store(want);
        if (!gs.ok()) return Status(gs.code(), "cannot store generation " + std::to_string(want) + ": " + gs.message());
      }
      generation_value_.store(generation_.value());
    }
    t_gen = mono_ns() - tp;
    // Commit: nothing below can fail.
    p_.applier->set_accepting(false);  // a late checkpoint must not touch the table we now own
    p_.sync->cancel_current();
    // The standby's copies carry the old active's clock: refresh them before they can expire.
    for (unsigned w = 0; w < p_.node->workers(); w++) p_.node->flows(w).refresh_all(rte_rdtsc());
    continue_session_log();
    for (unsigned w = 0; w < p_.node->workers(); w++) p_.node->nf(w).set_vip_owner(true);
    return Status::Ok();
  });
  if (!st.ok()) {
    transitions_rolled_back_++;
    L.error("node {} stays {} at generation {}, nothing changed: cannot take the active role ({}): {}", node_id_,
            fo::role_name(was), generation(), why, st.str());
    return st;
  }
  role_.store(fo::Role::ACTIVE);
  p_.engine->set_replicating(true);
  p_.node->nf(0).request_announce(p_.garp_count->load());  // worker 0 sends the GARPs
  L.info("node {} is ACTIVE (generation {}): {} [was {}; parked {:.2f} ms, of which generation {:.2f} ms]", node_id_,
         generation(), why, fo::role_name(was), ms_since(t0), double(t_gen) / 1e6);
  return Status::Ok();
}

/* The session log goes on from the old active's count at the newest cut this node applied,
 * or from its own if that is further on (mod 2^32): the collector never sees a number twice.
 * Called with the workers parked, before the NF logs as owner. */
void RoleManager::continue_session_log() {
  IpfixExporter *x = p_.node->session_log();
  if (!x) return;
  const uint32_t own = x->sequence();
  uint32_t peer = 0;
  const bool have = p_.applier->log_sequence(&peer);
  const uint32_t from = have && static_cast<int32_t>(peer - own) > 0 ? peer : own;
  x->start_sequence(from);
  L.info("session log continues at sequence {} ({})", from,
         !have ? "no replicated sequence: this node's own count" : from == peer ? "the old active's, replicated" : "this node's own count, which is further on");
}

/* Prepare: park the workers and release the VIPs (the only step that can fail: then nothing
 * changed, and the node is still the active it was). Commit: stop replicating, take
 * checkpoints. */
Status RoleManager::become_standby(const std::string &why) {
  const int64_t t0 = mono_ns();
  std::lock_guard<std::mutex> g(role_mu_);
  const fo::Role was = role();
  Status st = set_vip_owner(false);
  if (!st.ok()) {
    transitions_rolled_back_++;
    L.error("node {} stays {}, nothing changed: the workers did not park to release the virtual addresses ({}): {}",
            node_id_, fo::role_name(was), why, st.str());
    return st;
  }
  p_.engine->set_replicating(false);
  p_.applier->set_accepting(true);
  role_.store(p_.applier->in_sync() ? fo::Role::STANDBY_READY : fo::Role::STANDBY_SYNCING);
  L.info("node {} is STANDBY ({}, generation {}): {} [was {}; dataplane {:.2f} ms]", node_id_, fo::role_name(role()),
         generation(), why, fo::role_name(was), ms_since(t0));
  return Status::Ok();
}

void RoleManager::set_standby_state(bool in_sync, const std::string &why) {
  const fo::Role want = in_sync ? fo::Role::STANDBY_READY : fo::Role::STANDBY_SYNCING;
  fo::Role cur = role_.load();
  while (!is_active(cur) && cur != want && !role_.compare_exchange_weak(cur, want)) {
  }
  if (!is_active(cur) && cur != want)
    L.info("node {} standby state {} -> {}: {} (applied epoch {})", node_id_, fo::role_name(cur), fo::role_name(want),
           why, p_.applier->applied_epoch());
}

Status RoleManager::adopt_generation(uint64_t g, const std::string &why) {
  const uint64_t was = generation();
  if (g <= was) return Status::Ok();
  Status st = generation_.store(g);
  if (!st.ok()) {
    L.error("node {}: cannot adopt generation {} (ours {}; {}): {}", node_id_, g, was, why, st.str());
    return st;
  }
  generation_value_.store(g);
  L.info("node {} generation {} -> {}: {}", node_id_, was, g, why);
  return Status::Ok();
}

Status RoleManager::fence_peer() {
  if (!p_.fencer) return FailedPrecondition("no usable fencer (" + p_.fencer_status.message() + ")");
  return p_.fencer->fence(std::chrono::milliseconds(p_.fence_timeout_ms->load()));
}

Status RoleManager::refuse_promotion(Status st) {
  promotions_refused_++;
  if (quiet_log_due()) L.warn("{}", st.message());
  return st;
}

Status RoleManager::promote(const std::string &reason, bool forced, const char *count_as) {
  std::unique_lock<std::mutex> lk(promote_mu_, std::try_to_lock);
  if (!lk.owns_lock()) return Aborted("a promotion is already under way");
  const fo::Role r = role();
  if (is_active(r)) return Status::Ok();
  if (p_.handing_over && p_.handing_over()) {
    Status st = FailedPrecondition("promotion refused: this instance is handing its role to a new version (upgrade)");
    if (quiet_log_due()) L.warn("{} ({})", st.message(), reason);
    return st;
  }
  if (!forced && r != fo::Role::STANDBY_READY)
    return refuse_promotion(FailedPrecondition(std::string("promotion refused: this standby is ") + fo::role_name(r) +
                                               ", not in sync with the active"));
  const int64_t t0 = mono_ns();
  if (!p_.fencer)
    return refuse_promotion(
        FailedPrecondition("promotion refused: no usable fencer (" + p_.fencer_status.message() + ")"));
  Status fs = fence_peer();
  if (!fs.ok()) {
    fence_failures_++;
    promotions_refused_++;
    if (quiet_log_due())
      L.warn("promotion refused: fencing ({}) failed after {:.1f} ms: {} ({})", p_.fencer->kind(), ms_since(t0),
             fs.message(), reason);
    return FailedPrecondition("promotion refused: the old active may be alive and fencing failed: " + fs.message());
  }
  const int64_t t1 = mono_ns();
  Status st = become_active(reason, true);
  if (!st.ok()) return st;
  L.info("promoted ({}): fenced in {:.1f} ms, active {:.1f} ms after the decision", reason, double(t1 - t0) / 1e6,
         ms_since(t0));
  if (count_as) count_failover(count_as);
  return Status::Ok();
}

Status RoleManager::takeover(const std::string &from, uint64_t peer_generation, uint64_t final_epoch, bool forced,
                             std::string *message) {
  auto refuse = [&](const std::string &why) {
    *message = why;
    L.warn("takeover asked by {} refused: {}", from, why);
    return FailedPrecondition(why);
  };
  if (is_active(role())) return refuse("node " + node_id_ + " is already active");
  if (p_.handing_over && p_.handing_over())
    return refuse("takeover refused: node " + node_id_ + " is in the middle of an upgrade handover");
  if (!forced && (!p_.applier->in_sync() || p_.applier->applied_epoch() < final_epoch))
    return refuse("takeover refused: applied epoch " + std::to_string(p_.applier->applied_epoch()) +
                  (p_.applier->in_sync() ? "" : " (not in sync)") + ", the active's final epoch is " +
                  std::to_string(final_epoch));
  // A failure is logged; the new generation is past the peer's either way (become_active).
  (void)adopt_generation(peer_generation, "the peer " + from + " hands over");
  // The old active demoted itself before asking: no fencing needed.
  Status st = become_active((forced ? "forced switchover from " : "graceful switchover from ") + from, true);
  if (!st.ok()) {
    *message = st.message();
    return st;
  }
  count_failover(forced ? "forced" : "switchover");
  *message = "node " + node_id_ + " is active at generation " + std::to_string(generation());
  return Status::Ok();
}

Status RoleManager::drain(const std::string &why) {
  std::lock_guard<std::mutex> g(role_mu_);
  // Release first: DRAINING is only said once this node no longer forwards.
  Status st = set_vip_owner(false);
  if (!st.ok()) {
    L.error("node {} stays ACTIVE: the workers did not park to release the virtual addresses ({}): {}", node_id_,
            why, st.str());
    return Status(st.code(), "the workers did not park to release the virtual addresses: " + st.message());
  }
  role_.store(fo::Role::DRAINING);
  L.info("node {} is DRAINING (generation {}): {}", node_id_, generation(), why);
  return Status::Ok();
}

Status RoleManager::resume_active(const std::string &why) {
  std::lock_guard<std::mutex> g(role_mu_);
  Status st = set_vip_owner(true);
  if (!st.ok()) {
    L.error("node {} stays DRAINING without the virtual addresses: the workers did not park to take them back "
            "({}): {}",
            node_id_, why, st.str());
    return st;
  }
  role_.store(fo::Role::ACTIVE);
  p_.node->nf(0).request_announce(p_.garp_count->load());  // worker 0 sends the GARPs
  L.warn("node {} keeps the active role (generation {}): {}", node_id_, generation(), why);
  return Status::Ok();
}

void RoleManager::keep_generation(uint64_t peer_generation) {
  if (role() == fo::Role::STANDBY_READY) {
    const uint64_t want = std::max(generation(), peer_generation) + 1;
    if (generation_.reserved() < want) {
      Status st = generation_.reserve(want);
      if (!st.ok()) L.error("cannot reserve generation {}: {}", want, st.str());
    }
  }
  if (generation_.unflushed()) {
    // The beat thread never waits on another thread's fsync: a busy writer is left to finish.
    Status st = generation_.flush();
    if (!st.ok()) L.error("cannot persist generation {}: {}", generation_.value(), st.str());
  }
}

void RoleManager::count_failover(const std::string &reason) {
  std::lock_guard<std::mutex> g(failovers_mu_);
  failovers_[reason]++;
}

uint64_t RoleManager::failovers(const std::string &reason) const {
  std::lock_guard<std::mutex> g(failovers_mu_);
  auto it = failovers_.find(reason);
  return it == failovers_.end() ? 0 : it->second;
}

bool RoleManager::quiet_log_due() {
  const int64_t now = mono_ns();
  int64_t last = quiet_log_ns_.load();
  return now - last > 1000000000 && quiet_log_ns_.compare_exchange_strong(last, now);
}

}  // namespace ftpair
