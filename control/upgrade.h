/* In-service upgrade, one node's part. `ftpairctl upgrade` drives the pair:
 *
 *   stage     StageUpgrade: the binary arrives over gRPC, its sha256 must be in
 *             upgrade.allowed_sha256; it is stored in <state_dir>/upgrade/ and run once
 *             with --version.
 *   beside    Upgrade(START_BESIDE) on the standby: the new binary starts as a second
 *             instance (same config, free ports, its own DPDK file prefix). It reports its
 *             address on a pipe and asks the active to Join: the active opens a second
 *             Sync stream to it, full sync, then every epoch, in the record format the two
 *             negotiate. The old instance stays the standby meanwhile.
 *   handover  Upgrade(HANDOVER) on the old instance once the new one is in sync: it stops
 *             its heartbeat monitor (it can no longer promote), has the active make the new
 *             stream the standby's (Join PROMOTE), releases its ports, tells the new
 *             instance to TAKE_OVER (bind the configured ports, write the pidfile, start the
 *             monitor), passes MAINPID to the service manager and exits.
 *
 * Then a graceful switchover makes the new version active and the other node goes the same
 * way. A rollback is the same path with the binary that ran before (START_BESIDE rollback).
 * The old instance keeps its role until the very end, so a failed step leaves the pair as it
 * was. The stages and their moves are control/upgrade_stage.h. */
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "checkpoint/applier.h"
#include "checkpoint/engine.h"
#include "common/status.h"
#include "control.pb.h"
#include "control/config.h"
#include "control/exposition.h"
#include "control/upgrade_stage.h"
#include "failover/role.h"
#include "peer.pb.h"

namespace ftpair {

/* How this process was started: the new binary is started beside this one with the same
 * config file and overrides. beside_fd >= 0 marks the new instance itself (ftpaird
 * --upgrade-beside FD): it reports its address on FD, joins the active, and takes no role
 * until the instance it replaces hands over (TAKE_OVER). */
struct UpgradeLaunch {
  std::string config_path;
  std::vector<std::string> overrides;
  int beside_fd = -1;
  int parent_pid = 0;
  std::function<void(const std::string &)> notify;  // sd_notify (MAINPID= on handover)
};

// What the coordinator needs of the daemon it upgrades, and nothing more.
class UpgradeHost {
 public:
  virtual ~UpgradeHost() = default;

  virtual fo::Role role() const = 0;
  virtual ckpt::Engine &engine() = 0;
  virtual ckpt::Applier &applier() = 0;
  virtual Status become_standby(const std::string &why) = 0;
  // The node id in the peer's last beat ("" before any, or without a heartbeat monitor).
  virtual std::string peer_node_id() const = 0;

  /* Promotion holds: a new instance that has not taken over (beside), and an instance that
   * gives its role away (retiring), never promote or take over. */
  virtual bool beside() const = 0;
  virtual void set_beside(bool on) = 0;
  virtual bool retiring() const = 0;
  virtual void set_retiring(bool on) = 0;

  // The heartbeat monitor: stop it; start it with a fresh silence window. No-ops without one.
  virtual void stop_monitor() = 0;
  virtual void start_monitor() = 0;

  // Serves gRPC on the configured management.grpc port (once). UNAVAILABLE while it is taken.
  virtual Status listen_configured_grpc() = 0;
  // Serves /metrics on the configured port (once); OK when none is configured.
  virtual Status serve_configured_metrics() = 0;
  // Shuts every gRPC server and /metrics down, so another instance can bind the ports.
  virtual void release_ports() = 0;
  virtual uint16_t grpc_port() const = 0;
  virtual void write_pidfile() = 0;
  // A channel to `addr` with the peer's credentials.
  virtual std::shared_ptr<grpc::Channel> channel(const std::string &addr) = 0;

  // The instance should exit (the main loop asks).
  virtual void request_exit() = 0;
  virtual bool exit_requested() const = 0;
  // sha256 of the running binary ("" if unknown).
  virtual std::string self_sha256() const = 0;
  // worker.test_hooks, and the worker stall it allows.
  virtual bool test_hooks() const = 0;
  virtual void set_worker_stall(bool on) = 0;
};

class UpgradeCoordinator {
 public:
  UpgradeCoordinator(const Config &cfg, UpgradeLaunch launch, std::unique_ptr<UpgradeHost> host);
  ~UpgradeCoordinator();  // stop()

  /* StageUpgrade: checks `bytes` (sha256 against `claimed` and upgrade.allowed_sha256),
   * stores them in <state_dir>/upgrade/ and runs them once with --version. Refusals:
   * INVALID_ARGUMENT (empty), DATA_LOSS (damaged), PERMISSION_DENIED (not allowed),
   * FAILED_PRECONDITION (an upgrade under way, or the binary does not run). */
  Status stage(const std::string &bytes, const std::string &claimed_sha256, v1::UpgradeReply *out);
  /* Upgrade: STATUS, START_BESIDE, HANDOVER, ABORT, TAKE_OVER (see control.proto). A refusal
   * is FAILED_PRECONDITION (or PERMISSION_DENIED, UNAVAILABLE) with the reason in
   * out->message(); out->upgrade() is filled either way. */
  Status request(const v1::UpgradeRequest &req, v1::UpgradeReply *out);
  /* Peer.Join on the active: ADD, PROMOTE or DROP the Sync stream to a new instance of the
   * standby node. FAILED_PRECONDITION unless active (and, to ADD, in sync);
   * PERMISSION_DENIED for another node than the pair's standby. */
  Status join(const v1::JoinRequest &req, v1::JoinReply *out);
  /* The new instance (UpgradeLaunch::beside_fd >= 0) at start: a standby that only takes the
   * active's checkpoints; reports "ready ADDR VERSION" to the instance that started it and
   * joins the active in the background. UNAVAILABLE when it cannot report. */
  Status start_as_new_instance();

  void fill(v1::UpgradeStatus *u);
  // The ftpair_upgrade_* families.
  void expose(Exposition &x);
  // Joins the threads and stops the new instance beside this one. Idempotent.
  void stop();

  UpgradeMachine &machine() { return machine_; }

 private:
  Status refuse(Status st, v1::UpgradeReply *out);
  Status start_beside(bool rollback, v1::UpgradeReply *out);
  Status pick_binary(bool rollback, std::string *path, std::string *sha);
  Status keep_running_binary(const std::string &next_sha);
  Status spawn_beside(const std::string &path, bool rollback, pid_t *pid, std::string *addr, std::string *version,
                      v1::UpgradeReply *out);
  void supervise_beside();
  void stop_beside(const std::string &why);
  Status handover(v1::UpgradeReply *out);
  void run_handover();
  void restore_after_handover(const std::string &why, bool listen_again);
  Status abort(v1::UpgradeReply *out);
  Status take_over(v1::UpgradeReply *out);
  void join_active();
  /* Peer.Join on the active: `action` for the instance at `addr` of this node, within
   * `timeout`. The reply goes to *rep (may be null). */
  grpc::Status call_join(v1::JoinRequest::Action action, const std::string &addr, std::chrono::milliseconds timeout,
                         v1::JoinReply *rep);
  std::string dir() const { return cfg_.state_dir + "/upgrade"; }
  // The new instance beside this one (pid 0: none).
  struct Beside {
    pid_t pid;
    std::string addr;
  };
  Beside beside_now() const;
  // The binary that ran before the last upgrade (<dir>/previous); false when none is on record.
  bool read_previous(std::string *path, std::string *sha) const;

  const Config &cfg_;
  const UpgradeLaunch launch_;
  std::unique_ptr<UpgradeHost> host_;
  UpgradeMachine machine_;

  mutable std::mutex mu_;  // what follows, up to the threads; taken before machine_'s
  std::string staged_path_, staged_sha_, staged_version_;
  pid_t beside_pid_ = 0;
  std::string beside_addr_, beside_version_;
  bool beside_in_sync_ = false;
  double beside_progress_ = 0;
  int took_over_from_ = 0;

  std::thread beside_thread_, handover_thread_, join_thread_;
  std::atomic<bool> stop_{false};
};

}  // namespace ftpair
