/* The daemon: one node's dataplane, its checkpoint engine and applier, its role, and the
 * management surface (gRPC and /metrics). The gRPC handlers (control/grpc_services.h) and
 * any tool call the same core functions here and map their Status. Role transitions happen
 * in the role manager (control/roles.h), display in the status view (control/status_view.h).
 *
 * Files: daemon.cc life cycle and operations, daemon_failover.cc the failover policy,
 * daemon_ops.cc health and reload, daemon_metrics.cc /metrics, daemon_upgrade.cc the
 * in-service upgrade. */
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <thread>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "checkpoint/applier.h"
#include "checkpoint/engine.h"
#include "checkpoint/snapshot.h"
#include "checkpoint/sync_server.h"
#include "control/config.h"
#include "control/dp_watch.h"
#include "control/http_server.h"
#include "control/node.h"
#include "control/roles.h"
#include "control/upgrade.h"
#include "common/status.h"
#include "control.pb.h"
#include "failover/beat_policy.h"
#include "failover/fencer.h"
#include "failover/monitor.h"
#include "failover/role.h"
#include "failover/stall.h"
#include "peer.grpc.pb.h"
#include "peer.pb.h"

namespace ftpair {

class ControlService;
class PeerService;

// sha256 of the running binary (/proc/self/exe).
Status ckpt_self_digest(std::string *hex);

// The beat keys a config names, read from their files (failover.beat_keys).
Status load_beat_keys(const Config &cfg, std::vector<fo::BeatKey> *out);

// The standard services every management gRPC server offers: grpc.health.v1.Health and reflection.
void enable_standard_grpc_services();

/* gRPC's one-time costs, paid now: the library's start, the first channel, the first server (built
 * on a loopback port and shut down). A warm spare pays them before its claim; in a TCG guest they
 * were 0.1 s of the claimed daemon's start (the management server took 92-114 ms to listen, 12-17
 * ms once warmed). */
void warm_up_grpc();

class Daemon {
 public:
  explicit Daemon(const Config &cfg);
  ~Daemon();

  // How this process was started, for an in-service upgrade (control/upgrade.h).
  using Launch = UpgradeLaunch;
  void set_launch(Launch l) { launch_ = std::move(l); }
  /* A warm spare's node, built before the spare was claimed (control/spare.h), and the binary's
   * digest taken then: start() adopts them instead of building its own. */
  void adopt_node(std::unique_ptr<Node> node, std::string self_sha) {
    adopted_node_ = std::move(node);
    self_sha_ = std::move(self_sha);
  }

  // Builds the node (EAL must be up), starts gRPC, /metrics and the worker, takes a role.
  Status start();
  // Clean shutdown: stops replication and the worker; an active writes a snapshot.
  void stop();

  // ---- core operations (gRPC handlers and tests call these) ----
  // Control.Status (control/status_view.h).
  void status(v1::StatusReply *out);
  /* Control.Status's long poll (StatusRequest.wait_in_sync_ms): returns as soon as
   * replication_in_sync(), after `wait` (at most kMaxInSyncWait), or once `cancelled` says the
   * caller has gone, checking every 2 ms: DONE. At most kMaxInSyncWaiters wait at once (each
   * holds a gRPC server thread): beyond that BUSY at once. STOPPING once the server is being shut
   * down (stop, an upgrade's hand-over), so that a held wait never delays it. */
  static constexpr std::chrono::milliseconds kMaxInSyncWait{10'000};
  static constexpr int kMaxInSyncWaiters = 4;
  enum class WaitEnd { DONE, BUSY, STOPPING };
  WaitEnd wait_in_sync(std::chrono::milliseconds wait, const std::function<bool()> &cancelled);
  // An active whose standby acknowledged the full sync, or a standby in STANDBY_READY with its
  // copy in sync: what Status reports as sync.in_sync for a node that is protected or protecting.
  bool replication_in_sync() const;
  /* Takes a checkpoint and waits for its acknowledgement (the engine's errors); with
   * `snapshot`, an active also writes a snapshot (its path in the reply when written). */
  Status checkpoint(bool snapshot, v1::CheckpointReply *out);
  // Control.Flows: up to `limit` flows (0 = all).
  Status flows(uint32_t limit, v1::FlowsReply *out);
  // Control.Config: the config as last (re)loaded, overrides included.
  std::string config_text() const;
  // Role transitions (control/roles.h); the upgrade steps call these.
  Status become_active(const std::string &why, bool bump_generation) { return roles_.become_active(why, bump_generation); }
  Status become_standby(const std::string &why) { return roles_.become_standby(why); }
  // Failover: promotion after fencing, graceful/forced switchover, the peer's takeover.
  Status promote(const std::string &reason, bool forced, const char *count_as = nullptr) {
    return roles_.promote(reason, forced, count_as);
  }
  /* Graceful (or forced) switchover asked by the operator on either node: the active drains,
   * ships a final checkpoint and asks the standby to take over; a standby asks the active, or
   * with `force` fences it and takes over. The reply says what happened either way. */
  Status switchover(bool force, v1::SwitchoverReply *out);  // one at a time: a second is refused
  /* Before a stop (failover.handover_on_stop): an active with a standby in sync switches
   * over to it, so the stop costs no connection. Logs what happened; the stop goes on
   * whatever the answer (a refused or failed switchover leaves the standby to fail over on
   * the silence, as without it). True when the peer took over. */
  bool hand_over_before_stop();
  // Peer.Takeover: the demoted active asks this standby to take the active role.
  Status takeover(const v1::TakeoverRequest &req, v1::TakeoverReply *out);
  // Peer.Heartbeat: records the peer's beat (with a monitor) and answers with ours.
  void heartbeat(const v1::Beat &peer, v1::Beat *reply);
  // This node's beat: role (typed and as strings), generation, dataplane progress, sync.
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
  /* Test hook (worker.test_hooks, SIGRTMIN): a standby's copy gets one flow's state wrong, as a
   * faulty apply would leave it, so that the divergence check can be seen to find it. */
  void corrupt_standby_record();
  /* SIGHUP: applies the keys of `next` that can change while running and lists the changed
   * keys that need a restart (also exported as ftpair_config_restart_pending{key}).
   * The caller has validated `next`; the running config is never replaced wholesale. */
  [[nodiscard]] Status reload(const Config &next, std::vector<std::string> *applied, std::vector<std::string> *restart);
  void count_reload_refused() { reloads_refused_++; }
  // Periodic upkeep (main loop): pushes the node's health to grpc.health.v1.Health.
  void tick();
  // The node fills its role: an active that forwards, or a standby in sync; worker healthy.
  bool serving() const;

  fo::Role role() const { return roles_.role(); }
  uint64_t generation() const { return roles_.generation(); }
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
  // For the status view: keys changed by reloads that need a restart, reloads applied, and
  // the sha256 of the running binary.
  std::vector<std::string> restart_pending() const;
  /* What leaves the pair open to anyone on the management network: unauthenticated fast
   * beats, a control API without mutual TLS. As "key: explanation"; empty when none. */
  std::vector<std::string> security_warnings() const;
  /* What leaves the pair without a usable copy, as "key: explanation" (empty: protected):
   * "unprotected" (an active whose standby is not in sync), "standby_not_in_sync" (a standby
   * holding no complete copy, with the reason its active's stream was refused, if it was).
   * Only with a peer configured. Also in grpc.health.v1 as service "ftpair.pair.protected". */
  std::vector<std::string> alarms() const;
  /* With mTLS: only a client whose certificate names one of peer.identities may call `what`
   * (a Peer RPC or the Sync stream); refusals are counted and logged once a second. */
  Status authorize_peer(const grpc::ServerContext &ctx, const char *what);
  uint64_t peer_calls_refused() const { return peer_calls_refused_.load(); }
  /* The peer as the beats last showed it: false without a peer or before its first beat;
   * else *reachable (heard within the miss threshold) and its last beat. */
  bool peer_view(bool *reachable, v1::Beat *last) const;
  // One line on the dataplane beats for the status (empty when they are off).
  std::string dp_beats_summary() const;
  uint64_t reloads_applied() const { return reloads_ok_.load(); }
  uint64_t transitions_rolled_back() const { return roles_.transitions_rolled_back(); }
  const std::string &binary_sha256() const { return self_sha_; }

 private:
  void log_stalls();      // tick(): one warning per worker stall the health check saw
  std::string stall_text(unsigned w, const fo::StallDetector::StallFacts &f) const;
  // The same into buf (NUL-terminated, cut to fit), allocating nothing: its length.
  size_t stall_text_into(unsigned w, const fo::StallDetector::StallFacts &f, char *buf, size_t cap) const;
  std::string stalled_text() const;  // the first worker stalled now, described; any thread
  // The same into buf, allocating nothing and waiting for no lock (the beat threads).
  size_t stalled_text_into(char *buf, size_t cap) const;
  void push_health();     // tick(): grpc.health.v1 SERVING state
  void push_protected();  // tick(): ftpair.pair.protected and the alarm log line
  // start(), in order: the checkpoint engine and the Sync service, the fencer and the
  // heartbeat monitor, the gRPC server.
  Status make_engine();
  Status make_monitor();
  Status open_management(bool beside);
  Status choose_initial_role();
  // One Heartbeat to the peer with `mine` (deadline 250 ms): true with the peer's beat in *peer.
  static bool ask_peer(v1::Peer::Stub &stub, const v1::Beat &mine, v1::Beat *peer);
  void watch_peer_domain();
  void on_peer_beat(const v1::Beat &b);
  void on_peer_silent(const std::string &reason);
  Status restore_from_snapshot();
  Status write_snapshot(bool clean, std::string *path);
  // What a snapshot holds, copied from the table (call with the workers parked or stopped).
  struct Snapshot {
    ckpt::SnapshotMeta meta;
    std::vector<dp::CapturedSlot> recs;
    uint64_t now_tsc = 0;
  };
  Snapshot collect_snapshot(bool clean);
  std::string snapshot_path() const { return cfg_.state_dir + "/flows.snap"; }
  std::shared_ptr<grpc::Channel> peer_channel();
  // A channel to addr with the peer's credentials (a new instance beside this one).
  std::shared_ptr<grpc::Channel> peer_channel(const std::string &addr);
  Status open_grpc(const Endpoint &ep, std::unique_ptr<grpc::Server> *server,
                   std::unique_ptr<ckpt::SyncEndpoint> *sync_ep, uint16_t *port);
  // Shuts the gRPC servers down (calls still running are cancelled at the deadline) and
  // drains their Sync endpoints.
  void shutdown_grpc(std::chrono::milliseconds grace);
  void write_pidfile();
  // upgrade: the coordinator's view of this daemon (control/daemon_upgrade.cc)
  class UpgradeLink;
  std::unique_ptr<UpgradeCoordinator> make_upgrade();

  Config cfg_;
  std::vector<fo::BeatKey> running_keys_;
  std::atomic<uint64_t> peer_calls_refused_{0};
  std::atomic<int64_t> peer_refusal_log_ns_{0};  // the beat keys in use (reload_mu_ after start)
  RoleManager roles_;
  std::mutex table_mu_;
  std::unique_ptr<Node> node_;
  std::unique_ptr<ckpt::Engine> engine_;
  std::unique_ptr<ckpt::Applier> applier_;
  std::unique_ptr<ckpt::SyncService> repl_svc_;
  std::unique_ptr<ControlService> ctl_svc_;
  std::unique_ptr<PeerService> peer_svc_;
  std::unique_ptr<fo::Monitor> monitor_;
  // Dataplane beats (failover.dataplane_beat_us): the workers' board and its watch.
  std::unique_ptr<dp::DpBeatBoard> dp_board_;
  std::unique_ptr<DpWatch> dp_watch_;
  Status make_dp_beats();
  void fill_probe_reply(v1::Beat *b);
  std::unique_ptr<fo::Fencer> fencer_;
  Status fencer_status_;
  mutable fo::StallDetector stall_detector_[dp::kMaxWorkers];  // one per worker; worker.stall_ms, reloadable
  uint64_t stalls_logged_[dp::kMaxWorkers] = {};                // tick(): stalls already logged, per worker
  // Settings a SIGHUP may change (read by other threads, so not through cfg_).
  std::atomic<uint32_t> stall_ms_{0}, fence_timeout_ms_{0}, garp_count_{0}, snapshot_max_age_s_{0};
  std::atomic<int> in_sync_waiters_{0};
  std::atomic<bool> grpc_closing_{false};  // shutdown_grpc() began: held waits end (wait_in_sync)
  std::atomic<bool> test_hooks_{false};
  std::atomic<bool> handover_on_stop_{true};
  // One switchover at a time: an operator's, or the handover of a stop.
  std::timed_mutex switchover_mu_;
  // for_stop: the handover of a stop (active only, shorter deadlines, see hand_over_before_stop).
  Status switchover_locked(bool force, v1::SwitchoverReply *out, bool for_stop);
  mutable std::mutex reload_mu_;
  std::string source_text_;                   // Control.Config: the config as last (re)loaded
  std::vector<std::string> restart_pending_;  // changed keys that need a restart
  std::atomic<uint64_t> reloads_ok_{0}, reloads_refused_{0}, watchdog_pings_{0};
  std::shared_ptr<grpc::ChannelCredentials> peer_creds_;
  std::atomic<int> serving_state_{-1};  // last pushed to the health service (tick thread only)
  std::atomic<int> protected_state_{-1};  // the same for ftpair.pair.protected
  // Replication.Sync on each server (asynchronous API); declared before the servers, so that
  // each outlives its server's shutdown and then drains.
  std::unique_ptr<ckpt::SyncEndpoint> sync_ep_, sync_ep_final_;
  std::unique_ptr<grpc::Server> grpc_;
  uint16_t grpc_port_ = 0;
  std::shared_ptr<grpc::ServerCredentials> server_creds_;
  // upgrade
  Launch launch_;
  std::unique_ptr<grpc::Server> grpc_final_;  // a new instance's server on the configured port
  // Set by the coordinator: a new instance not yet in its role (beside), one giving its role
  // away (retiring); neither promotes or takes over. exit: the main loop ends the process.
  std::atomic<bool> beside_{false}, retiring_{false}, exit_requested_{false};
  // Beats inform, they do not command (on_peer_beat, on the monitor's hook thread only).
  fo::BeatPolicy beat_policy_;
  std::atomic<uint64_t> beats_refused_generation_jump_{0};
  int64_t generation_jump_log_ns_ = 0;
  std::string self_sha_;
  std::unique_ptr<Node> adopted_node_;
  /* The first Heartbeat to the peer, sent from start() as soon as the gRPC server listens, while
   * the node and the engine start: an active whose stream to this address is old or down connects
   * at once. choose_initial_role() takes its answer (the peer's beat, or none). */
  std::future<std::optional<v1::Beat>> first_beat_;
  std::unique_ptr<UpgradeCoordinator> upgrade_;
  HttpServer http_;
  bool started_ = false;
};

}  // namespace ftpair
