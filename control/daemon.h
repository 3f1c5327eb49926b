/* The daemon: one node's dataplane, its checkpoint engine and applier, its role, and the
 * management surface (gRPC and /metrics). The gRPC handlers and any tool call the same
 * core functions here and map their Status. */
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <thread>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "checkpoint/applier.h"
#include "checkpoint/engine.h"
#include "checkpoint/sync_server.h"
#include "control/config.h"
#include "control/http_server.h"
#include "control/node.h"
#include "control/upgrade.h"
#include "common/status.h"
#include "control.pb.h"
#include "failover/fencer.h"
#include "failover/monitor.h"
#include "failover/role.h"
#include "failover/stall.h"
#include "peer.pb.h"

namespace ftpair {

// sha256 of the running binary (/proc/self/exe).
Status ckpt_self_digest(std::string *hex);

class Daemon {
 public:
  explicit Daemon(const Config &cfg);
  ~Daemon();

  // How this process was started, for an in-service upgrade (control/upgrade.h).
  using Launch = UpgradeLaunch;
  void set_launch(Launch l) { launch_ = std::move(l); }

  // Builds the node (EAL must be up), starts gRPC, /metrics and the worker, takes a role.
  Status start();
  // Clean shutdown: stops replication and the worker; an active writes a snapshot.
  void stop();

  // ---- core operations (gRPC handlers and tests call these) ----
  void status(v1::StatusReply *out);
  Status checkpoint(bool snapshot, v1::CheckpointReply *out);
  Status flows(uint32_t limit, v1::FlowsReply *out);
  Status become_active(const std::string &why, bool bump_generation);
  Status become_standby(const std::string &why);
  // Failover: promotion after fencing, graceful/forced switchover, the peer's takeover.
  Status promote(const std::string &reason, bool forced);
  Status switchover(bool force, v1::SwitchoverReply *out);
  Status takeover(const v1::TakeoverRequest &req, v1::TakeoverReply *out);
  void fill_beat(v1::Beat *b);
  // In-service upgrade: forwards to the coordinator (control/upgrade.h).
  Status stage_upgrade(const std::string &bytes, const std::string &claimed_sha256, v1::UpgradeReply *out);
  Status upgrade(const v1::UpgradeRequest &req, v1::UpgradeReply *out);
  Status join(const v1::JoinRequest &req, v1::JoinReply *out);
  void fill_upgrade(v1::UpgradeStatus *u);
  // The instance handed its role to a new version and should exit (main loop).
  bool exit_requested() const { return exit_requested_.load(); }
  // A new version started beside the old one that has not taken over yet.
  bool beside() const { return beside_.load(); }
  // Test hook (worker.test_hooks): freeze or release the worker loop.
  void set_worker_stall(bool on);
  /* SIGHUP: applies the keys of `next` that can change while running and lists the changed
   * keys that need a restart (also exported as ftpair_config_restart_pending{key}).
   * The caller has validated `next`; the running config is never replaced wholesale. */
  void reload(const Config &next, std::vector<std::string> *applied, std::vector<std::string> *restart);
  void count_reload_refused() { reloads_refused_++; }
  // Periodic upkeep (main loop): pushes the node's health to grpc.health.v1.Health.
  void tick();
  // The node fills its role: an active that forwards, or a standby in sync; worker healthy.
  bool serving() const;

  fo::Role role() const { return role_.load(); }
  /* The Sync stream moves the node between the standby states only: a node that took the
   * active role meanwhile (a promotion or a takeover on another thread) keeps it. */
  void set_standby_state(fo::Role r) {
    fo::Role cur = role_.load();
    while (cur != fo::Role::ACTIVE && cur != fo::Role::DRAINING && !role_.compare_exchange_weak(cur, r)) {
    }
  }
  uint64_t generation() const { return generation_value_.load(); }
  Node &node() { return *node_; }
  ckpt::Engine &engine() { return *engine_; }
  ckpt::Applier &applier() { return *applier_; }
  std::mutex &table_mutex() { return table_mu_; }
  const Config &config() const { return cfg_; }
  uint16_t grpc_port() const { return grpc_port_; }
  uint16_t metrics_port() const { return http_.port(); }
  std::string render_metrics();
  void count_watchdog_ping() { watchdog_pings_++; }
  bool dataplane_healthy() const;

 private:
  class ControlService;
  class PeerService;
  Status choose_initial_role();
  void on_peer_beat(const v1::Beat &b);
  void on_peer_silent(const std::string &reason);
  Status adopt_generation(uint64_t g);
  void count_failover(const std::string &reason);
  Status restore_from_snapshot();
  Status write_snapshot(bool clean, std::string *path);
  std::string snapshot_path() const { return cfg_.state_dir + "/flows.snap"; }
  std::shared_ptr<grpc::ChannelCredentials> peer_credentials(Status *st) const;
  std::shared_ptr<grpc::Channel> peer_channel();
  // A channel to addr with the peer's credentials (a new instance beside this one).
  std::shared_ptr<grpc::Channel> peer_channel(const std::string &addr);
  void register_telemetry();
  Status open_grpc(const Endpoint &ep, std::unique_ptr<grpc::Server> *server, uint16_t *port);
  void write_pidfile();
  // upgrade: the coordinator's view of this daemon (control/daemon_upgrade.cc)
  class UpgradeLink;
  std::unique_ptr<UpgradeCoordinator> make_upgrade();
  // A move of the upgrade stage by name (tick()); a name that is no stage is logged.
  void set_upgrade_stage(const std::string &stage, const std::string &message);

  Config cfg_;
  fo::Generation generation_;
  std::atomic<uint64_t> generation_value_{0};
  std::atomic<fo::Role> role_{fo::Role::BOOT};
  std::mutex role_mu_;
  std::mutex table_mu_;
  std::unique_ptr<Node> node_;
  std::unique_ptr<ckpt::Engine> engine_;
  std::unique_ptr<ckpt::Applier> applier_;
  std::unique_ptr<ckpt::SyncService> repl_svc_;
  std::unique_ptr<ControlService> ctl_svc_;
  std::unique_ptr<PeerService> peer_svc_;
  std::unique_ptr<fo::Monitor> monitor_;
  std::unique_ptr<fo::Fencer> fencer_;
  Status fencer_status_;
  std::mutex promote_mu_;
  std::mutex failovers_mu_;
  std::map<std::string, uint64_t> failovers_;
  std::atomic<uint64_t> fence_failures_{0}, promotions_refused_{0};
  std::atomic<int64_t> silent_log_ns_{0};
  mutable fo::StallDetector stall_detector_;  // worker.stall_ms, reloadable
  // Settings a SIGHUP may change (read by other threads, so not through cfg_).
  std::atomic<uint32_t> stall_ms_{0}, fence_timeout_ms_{0}, garp_count_{0}, snapshot_max_age_s_{0};
  std::atomic<bool> test_hooks_{false};
  mutable std::mutex reload_mu_;
  std::string source_text_;                   // Control.Config: the config as last (re)loaded
  std::vector<std::string> restart_pending_;  // changed keys that need a restart
  std::atomic<uint64_t> reloads_ok_{0}, reloads_refused_{0}, watchdog_pings_{0};
  std::shared_ptr<grpc::ChannelCredentials> peer_creds_;
  std::atomic<int> serving_state_{-1};  // last pushed to the health service (tick thread only)
  std::unique_ptr<grpc::Server> grpc_;
  uint16_t grpc_port_ = 0;
  std::shared_ptr<grpc::ServerCredentials> server_creds_;
  // upgrade
  Launch launch_;
  std::unique_ptr<grpc::Server> grpc_final_;  // a new instance's server on the configured port
  // Set by the coordinator: a new instance not yet in its role (beside), one giving its role
  // away (retiring); neither promotes or takes over. exit: the main loop ends the process.
  std::atomic<bool> beside_{false}, retiring_{false}, exit_requested_{false};
  std::string self_sha_;
  std::unique_ptr<UpgradeCoordinator> upgrade_;
  HttpServer http_;
  bool started_ = false;
};

}  // namespace ftpair
