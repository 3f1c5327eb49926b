/* The role manager: the one place where this node's role changes. Every transition (take the
 * active role, step down to standby, the standby states the Sync stream sets, promotion after
 * fencing, a takeover asked by the peer, the steps of a graceful switchover) and every change
 * of the generation happens here, under its locks, and logs one line with the reason and the
 * figures ("roles" component). It also keeps the failover counters.
 *
 * It decides nothing: the failover policy (when to promote, who yields) and the switchover's
 * calls to the peer stay with the daemon, which calls these steps. */
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "checkpoint/applier.h"
#include "checkpoint/engine.h"
#include "checkpoint/sync_server.h"
#include "common/status.h"
#include "failover/fencer.h"
#include "failover/monitor.h"
#include "failover/role.h"

namespace ftpair {

class Node;

// ACTIVE or DRAINING: the node owns the flow table and sends checkpoints.
inline bool is_active(fo::Role r) { return r == fo::Role::ACTIVE || r == fo::Role::DRAINING; }

class RoleManager {
 public:
  // What a transition acts on. Set once by attach(), before the first transition.
  struct Parts {
    Node *node = nullptr;
    ckpt::Engine *engine = nullptr;
    ckpt::Applier *applier = nullptr;
    ckpt::SyncService *sync = nullptr;
    std::mutex *table_mu = nullptr;       // the flow table's lock, shared with the applier
    const fo::Monitor *monitor = nullptr;  // null without a peer: no peer generation to outrun
    fo::Fencer *fencer = nullptr;          // null: promotions are refused with fencer_status
    Status fencer_status;
    // Settings a reload may change (owned by the daemon).
    const std::atomic<uint32_t> *fence_timeout_ms = nullptr;
    const std::atomic<uint32_t> *garp_count = nullptr;
    // True while this instance hands its role to a new version (upgrade): no promotion then.
    std::function<bool()> handing_over;
  };

  RoleManager(std::string node_id, std::string state_dir);
  void attach(Parts parts);

  // Reads the persisted generation (state_dir/generation). Before any transition.
  Status load_generation();

  fo::Role role() const { return role_.load(); }
  uint64_t generation() const { return generation_value_.load(); }

  /* Takes the active role in one transaction, with the workers parked: bumps the generation
   * (past the peer's, from the reservation when there is one, else with a disk write) when
   * asked, then stops applying checkpoints, cancels the standby's Sync stream, owns the VIPs;
   * then starts replicating. Errors (the workers did not park, the generation could not be
   * stored) change nothing: counted in transitions_rolled_back(). */
  [[nodiscard]] Status become_active(const std::string &why, bool bump_generation);
  /* Steps down: releases the VIPs (workers parked), stops replicating, applies checkpoints.
   * An error (the workers did not park) changes nothing. */
  [[nodiscard]] Status become_standby(const std::string &why);
  /* The Sync stream moved the standby in or out of sync. Only between the standby states: a
   * node that took the active role meanwhile (on another thread) keeps it. */
  void set_standby_state(bool in_sync, const std::string &why);
  // Raises the generation to g (persisted) when g is newer; a no-op otherwise.
  Status adopt_generation(uint64_t g, const std::string &why);

  /* Promotion of a standby: refuses (FAILED_PRECONDITION, counted, logged) while handing over,
   * when not in sync unless forced, without a fencer, or when fencing fails; ABORTED when a
   * promotion is already under way. Already active: OK, nothing done. `count_as`: the failover
   * cause to count (ftpair_failovers_total) when this call made the node active, and only
   * then: two detectors that fire together (the dataplane watch and the beats) count once. */
  Status promote(const std::string &reason, bool forced, const char *count_as = nullptr);
  // A fencer is usable: promotions can happen.
  bool can_fence() const { return p_.fencer != nullptr; }
  /* Fences the peer within failover.fence_timeout_ms. FAILED_PRECONDITION without a fencer,
   * else the fencer's error. Not counted: promote() counts its own failures. */
  Status fence_peer();
  /* The peer (node `from`) demoted itself in a graceful or forced switchover and asks this
   * standby to take over at or past `final_epoch`. *message says what happened either way. */
  Status takeover(const std::string &from, uint64_t peer_generation, uint64_t final_epoch, bool forced,
                  std::string *message);

  /* Graceful switchover, the active's side: ACTIVE -> DRAINING, the VIPs released. If the
   * workers do not park to release them, nothing changes (still ACTIVE, still the owner) and
   * the error says so: the switchover must not go on with this node forwarding. */
  [[nodiscard]] Status drain(const std::string &why);
  /* The switchover did not happen: DRAINING -> ACTIVE, the VIPs taken back and announced. An
   * error (the workers did not park) leaves the node DRAINING without the VIPs, and says so. */
  [[nodiscard]] Status resume_active(const std::string &why);

  /* Upkeep (off the promotion path): a standby in sync keeps the generation it would take
   * reserved on disk, and a generation taken from the reservation reaches the main file. */
  void keep_generation(uint64_t peer_generation);

  // Failovers: times this node took the active role, by reason (metrics).
  void count_failover(const std::string &reason);
  uint64_t failovers(const std::string &reason) const;
  uint64_t fence_failures() const { return fence_failures_.load(); }
  uint64_t promotions_refused() const { return promotions_refused_.load(); }
  // Transitions whose prepare failed and that changed nothing (metrics).
  uint64_t transitions_rolled_back() const { return transitions_rolled_back_.load(); }
  /* At most one line a second about why nothing happens (a silent peer seen by a standby
   * that cannot promote, a fencing that keeps failing): true when one may be logged now. */
  bool quiet_log_due();

 private:
  Status refuse_promotion(Status st);
  Status set_vip_owner(bool own);
  void continue_session_log();

  const std::string node_id_;
  Parts p_;
  fo::Generation generation_;
  std::atomic<uint64_t> generation_value_{0};
  std::atomic<fo::Role> role_{fo::Role::BOOT};
  std::mutex role_mu_;     // one transition at a time
  std::mutex promote_mu_;  // one promotion at a time (others give up, not wait)
  mutable std::mutex failovers_mu_;
  std::map<std::string, uint64_t> failovers_;
  std::atomic<uint64_t> fence_failures_{0}, promotions_refused_{0}, transitions_rolled_back_{0};
  std::atomic<int64_t> quiet_log_ns_{0};
};

}  // namespace ftpair
