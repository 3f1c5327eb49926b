// The daemon's life cycle (start, stop), its management server, snapshots and operations.
#include "control/daemon.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <rte_cycles.h>

#include "checkpoint/snapshot.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/log.h"
#include "control/grpc_services.h"
#include "control/role_wire.h"
#include "control/status_view.h"
#include "proto/rpc/rpc.h"
#include "virt/fencers.h"

namespace ftpair {

namespace {
auto &L = log::component("daemon");

rpc::TlsFiles tls_files(const TlsConfig &t) { return {t.ca, t.cert, t.key}; }
}  // namespace

Daemon::Daemon(const Config &cfg)
    : cfg_(cfg),
      roles_(cfg.node_id, cfg.state_dir),
      stall_ms_(cfg.stall_ms),
      fence_timeout_ms_(cfg.fence_timeout_ms),
      garp_count_(cfg.garp_count),
      snapshot_max_age_s_(cfg.snapshot_max_age_s),
      test_hooks_(cfg.test_hooks),
      handover_on_stop_(cfg.handover_on_stop),
      source_text_(cfg.source_text) {}
Daemon::~Daemon() {
  grpc_closing_.store(true);  // a start() that failed half way leaves a server with held waits
  stop();
}

// A fresh channel per use (switchover): a cached one could sit in reconnect backoff after the
// peer restarted. (The initial role's Heartbeats use the beats' channel kind instead, whose
// reconnect backoff is short: choose_initial_role.)
std::shared_ptr<grpc::Channel> Daemon::peer_channel() { return peer_channel(cfg_.peer_grpc.str()); }

std::shared_ptr<grpc::Channel> Daemon::peer_channel(const std::string &addr) {
  return rpc::make_channel(addr, peer_creds_, rpc::ChannelKind::CALLS);
}

// ------------------------------------------------------------------ life cycle

Status Daemon::make_engine() {
  ckpt::EngineConfig ec;
  ec.node_id = cfg_.node_id;
  ec.peer = cfg_.peer_grpc.set() ? cfg_.peer_grpc.str() : "";
  ec.strict = cfg_.mode == ReplicationMode::STRICT;
  ec.fallback_relaxed = cfg_.hold_fallback == dp::HoldFallback::RELAXED;
  ec.interval = std::chrono::microseconds(cfg_.checkpoint_interval_us);
  ec.dirty_threshold = cfg_.checkpoint_dirty_threshold;
  ec.quiesce_timeout = std::chrono::microseconds(cfg_.quiesce_timeout_us);
  ec.realtime = cfg_.checkpoint_realtime;
  ec.worker_cpus = node_->worker_cpus();
  ec.generation = [this] { return generation(); };
  if (IpfixExporter *x = node_->session_log()) ec.log_sequence = [x] { return x->cut_sequence(); };
  if (cfg_.peer_grpc.set()) {
    // mTLS towards the peer when configured (peer.tls, else management.tls), plaintext otherwise.
    Status st = rpc::client_credentials(tls_files(cfg_.peer_tls), "peer.tls", &peer_creds_);
    if (!st.ok()) return st;
    if (cfg_.peer_tls.enabled()) ec.credentials = peer_creds_;
  }
  ec.flow_capacity = cfg_.flow_capacity;
  engine_ = std::make_unique<ckpt::Engine>(ec, node_->tables(), node_->agent());
  // The session log waits for the standby's acknowledgement of each event's epoch.
  if (IpfixExporter *x = node_->session_log()) x->set_release_source([e = engine_.get()] { return e->log_release_epoch(); });

  ckpt::SyncHooks hooks;
  hooks.realtime = cfg_.checkpoint_realtime;
  hooks.worker_cpus = node_->worker_cpus();
  hooks.authorize = [this](const grpc::ServerContext &ctx) { return authorize_peer(ctx, "Replication.Sync"); };
  hooks.admit = [this]() -> Status {
    if (is_active(role()))
      return FailedPrecondition("node " + cfg_.node_id + " is active: it sends checkpoints, it does not take them");
    return Status::Ok();
  };
  hooks.generation = [this] { return generation(); };
  hooks.on_sync_state = [this](bool in_sync) {
    // A copy in sync is the active's of this generation: take it now rather than from the
    // next beat, so that an in-sync standby never reports an older one.
    if (in_sync) (void)roles_.adopt_generation(applier_->peer_generation(), "the active's Sync stream carries it");
    // A copy in sync is also news of the active, alive now: a standby that has not heard a beat
    // yet (it just started, and the active died before its first beat arrived) must still count
    // the silence from here, or it would never promote.
    if (in_sync && monitor_) monitor_->assume_heard();
    roles_.set_standby_state(in_sync, in_sync ? "the active's Sync stream is in sync"
                                              : "the active's Sync stream is not in sync (full sync, or a refusal)");
  };
  // The previous release's acknowledgements carry no role state (ftpaird-prev plays it).
  if (!wire::previous_release()) hooks.role_state = [this] { return wire::to_proto(role()); };
  repl_svc_ = std::make_unique<ckpt::SyncService>(*applier_, std::move(hooks));
  return Status::Ok();
}

Status Daemon::make_monitor() {
  if (!cfg_.peer_grpc.set()) return Status::Ok();
  fo::FenceConfig fc;
  fc.kind = cfg_.fence;
  fc.allow_none = cfg_.allow_fence_none;
  fc.pidfile = cfg_.fence_pidfile;
  fc.missing_pidfile_ok = cfg_.fence_missing_pidfile_ok;
  fc.libvirt_uri = cfg_.libvirt_uri;
  fc.domain = cfg_.libvirt_domain;
  fc.libvirt_peer = cfg_.libvirt_peer;
  fc.libvirt_action = cfg_.libvirt_action;
  fencer_ = virt::make_fencer(fc, &fencer_status_);
  if (!fencer_) L.warn("{}: promotions will be refused", fencer_status_.message());
  fo::MonitorConfig mc;
  mc.peer = cfg_.peer_grpc.str();
  mc.interval = std::chrono::milliseconds(cfg_.heartbeat_interval_ms);
  mc.miss_threshold = cfg_.miss_threshold;
  // Fast beats between the management addresses (needs both as IPv4 literals).
  if (cfg_.beat_udp_port && cfg_.grpc.set()) {
    mc.udp_port = static_cast<uint16_t>(cfg_.beat_udp_port);
    mc.udp_bind = cfg_.grpc.host;
    mc.udp_peer = cfg_.peer_grpc.host;
    mc.realtime = cfg_.beat_realtime;
    if (node_) mc.avoid_cpus = node_->worker_cpus();
  }
  if (cfg_.peer_tls.enabled()) mc.credentials = peer_creds_;
  if (Status ks = load_beat_keys(cfg_, &mc.beat_keys); !ks.ok()) return ks;
  running_keys_ = mc.beat_keys;
  if (mc.udp_port && mc.beat_keys.empty())
    L.warn("fast beats are NOT authenticated (no failover.beat_keys): anyone who can send UDP from the peer's "
           "address speaks for the peer");
  fo::MonitorHooks hooks;
  hooks.fill_local = [this](v1::Beat *b) { fill_beat(b); };
  hooks.on_peer_beat = [this](const v1::Beat &b) { on_peer_beat(b); };
  hooks.on_peer_silent = [this](const std::string &r) { on_peer_silent(r); };
  if (cfg_.dataplane_beat_us) hooks.fill_probe_reply = [this](v1::Beat *b) { fill_probe_reply(b); };
  monitor_ = std::make_unique<fo::Monitor>(mc, hooks);
  return make_dp_beats();
}

/* Dataplane beats: the board the workers write and read, keyed like the fast beats, and the
 * real-time watch that acts on a silence (control/dp_watch.h). */
Status Daemon::make_dp_beats() {
  if (!cfg_.dataplane_beat_us || !monitor_) return Status::Ok();
  dp::DpBeatConfig bc;
  bc.node_id = cfg_.node_id;  // the beat carries its first kDpBeatNodeIdBytes; the board compares with care
  bc.interval_us = cfg_.dataplane_beat_us;
  bc.miss = cfg_.dataplane_miss;
  bc.workers = node_->workers();
  bc.src_mac = node_->own_mac(dp::kPortInside);
  bc.tsc_hz = rte_get_tsc_hz();
  for (const auto &k : running_keys_) bc.keys.push_back(dp::DpBeatKey{k.id, k.secret});
  if (bc.keys.empty())
    L.warn("dataplane beats are NOT authenticated (no failover.beat_keys): anyone on the LAN can speak for the peer");
  dp_board_ = std::make_unique<dp::DpBeatBoard>(std::move(bc));
  node_->attach_dp_beats(dp_board_.get());
  DpWatch::Hooks h;
  h.publish_local = [this](dp::DpBeatBoard &b) { b.set_local(static_cast<uint8_t>(role()), generation()); };
  h.may_promote = [this] { return role() == fo::Role::STANDBY_READY && !retiring_.load() && !beside_.load(); };
  h.probe = [this](std::chrono::microseconds t, v1::Beat *r) {
    switch (monitor_->probe(t, r)) {
      case fo::Monitor::ProbeResult::ANSWERED: return fo::ProbeOutcome::ANSWERED;
      case fo::Monitor::ProbeResult::REFUSED: return fo::ProbeOutcome::REFUSED;
      case fo::Monitor::ProbeResult::HEARD: return fo::ProbeOutcome::ALIVE;
      case fo::Monitor::ProbeResult::TIMEOUT: return fo::ProbeOutcome::NOTHING;
      // No fast-beat socket (it could not bind): no probe can tell, and a silence is not a
      // death without one; the control-plane beats decide.
      case fo::Monitor::ProbeResult::NO_BEATS: return fo::ProbeOutcome::ALIVE;
    }
    return fo::ProbeOutcome::ALIVE;
  };
  h.promote = [this](const std::string &why, fo::DpVerdict v) {
    (void)promote(why, false, v == fo::DpVerdict::WORKER_STALLED ? "dp_worker_stall" : "dp_silent");
  };
  dp_watch_ = std::make_unique<DpWatch>(*dp_board_, cfg_.dataplane_probe_us, cfg_.dataplane_arm_ms,
                                        cfg_.beat_realtime, std::move(h));
  L.info("dataplane beats every {} us on ports.inside, missed after {} intervals, probe {} us, armed after {} ms heard",
         cfg_.dataplane_beat_us, cfg_.dataplane_miss, cfg_.dataplane_probe_us, cfg_.dataplane_arm_ms);
  return Status::Ok();
}

std::string Daemon::dp_beats_summary() const {
  if (!dp_board_ || !dp_watch_) return {};
  std::string out = "every " + std::to_string(cfg_.dataplane_beat_us) + " us, " + std::to_string(dp_board_->sent_total()) +
                    " sent, " + std::to_string(dp_board_->heard()) + " heard; ";
  const double s = dp_watch_->worst_silence_s();
  if (s < 0) return out + "peer not heard yet";
  char buf[64];
  std::snprintf(buf, sizeof buf, "peer's most silent worker %.1f ms ago", s * 1000.0);
  out += buf;
  out += dp_watch_->link_down() ? "; LINK DOWN (the peer's workers send, nothing arrives)" : "; link up";
  if (is_active(role())) return out;
  if (dp_watch_->armed()) return out + "; armed (a silence fails over)";
  return out + "; not armed (the control-plane beats decide" +
         (cfg_.dataplane_arm_ms ? " until " + std::to_string(cfg_.dataplane_arm_ms) +
                                      " ms after the peer is first heard as a standby in sync)"
                                : " until this node is a standby in sync)");
}

/* A probe's answer: each worker's dataplane beats, and whether its thread could run: runnable,
 * or asleep in its idle nap, whose wake-up is late when a silent worker is found there (the
 * machine did not run it; the stall detector tells that apart from a stall over stall_ms).
 * Blocked in anything else, the worker is stuck. */
void Daemon::fill_probe_reply(v1::Beat *b) {
  if (!dp_board_) return;
  const uint64_t now = rte_rdtsc(), hz = rte_get_tsc_hz();
  for (unsigned w = 0; w < node_->workers(); w++) {
    auto *d = b->add_dataplane_workers();
    d->set_worker(w);
    d->set_beats_sent(dp_board_->sent(w));
    const uint64_t last = dp_board_->last_sent_tsc(w);
    d->set_last_beat_age_us(last && now > last ? dp::tsc_to_us(now - last, hz) : (last ? 0 : UINT64_MAX));
    const dp::WorkerContext &wc = node_->worker(w);
    const int tid = wc.tid.load(std::memory_order_acquire);
    // Running, runnable, or in its nap (a wake-up that comes late). The flag is read on both
    // sides of the state: a worker that wakes or naps in between is not taken for blocked.
    const bool nap0 = wc.napping.load(std::memory_order_relaxed);
    const fo::SchedStat st = tid > 0 ? fo::read_schedstat(tid) : fo::SchedStat{};
    const bool nap1 = wc.napping.load(std::memory_order_relaxed);
    d->set_runnable(fo::waits_for_cpu(st, nap0 || nap1));
  }
}

// The gRPC server (a new instance beside the old one on a free port) and /metrics.
Status Daemon::open_management(bool beside) {
  Endpoint grpc_ep = cfg_.grpc, metrics_ep = cfg_.metrics;
  if (beside) grpc_ep.port = 0, metrics_ep.port = 0;
  if (cfg_.grpc.set()) {
    // Mutual TLS when configured: a client must present a certificate signed by management.tls.ca.
    Status st = rpc::server_credentials(tls_files(cfg_.management_tls), "management.tls", &server_creds_);
    if (!st.ok()) return st;
    // Standard gRPC tooling: grpc.health.v1.Health (driven by tick()) and server reflection.
    enable_standard_grpc_services();
    st = open_grpc(grpc_ep, &grpc_, &sync_ep_, &grpc_port_);
    if (!st.ok()) return st;
  }
  http_.route("/metrics", [this] {
    return HttpReply{200, "text/plain; version=0.0.4; charset=utf-8", render_metrics()};
  });
  if (cfg_.metrics.set()) {
    Status st = http_.start(metrics_ep);
    if (!st.ok()) return Unavailable("management.metrics: " + st.message());
  }
  return Status::Ok();
}

Status Daemon::start() {
  for (auto &d : stall_detector_) d.set_stall_ms(stall_ms_.load());
  if (::mkdir(cfg_.state_dir.c_str(), 0700) != 0 && errno != EEXIST)
    L.error("cannot create the state directory {}: {}", cfg_.state_dir, std::strerror(errno));
  Status st = roles_.load_generation();
  if (!st.ok()) return st;
  node_ = adopted_node_ ? std::move(adopted_node_) : Node::create(cfg_, &st);
  if (!node_) return st;
  // Replicated flows go straight to the worker that owns them here, whatever the active's count.
  applier_ = std::make_unique<ckpt::Applier>(
      node_->tables(), [n = node_.get()](const dp::FlowState &st) { return n->home(st); }, table_mu_, cfg_.node_id);
  st = make_engine();
  if (!st.ok()) return st;
  ctl_svc_ = std::make_unique<ControlService>(*this);
  peer_svc_ = std::make_unique<PeerService>(*this);
  st = make_monitor();
  if (!st.ok()) return st;
  RoleManager::Parts parts;
  parts.node = node_.get();
  parts.engine = engine_.get();
  parts.applier = applier_.get();
  parts.sync = repl_svc_.get();
  parts.table_mu = &table_mu_;
  parts.monitor = monitor_.get();
  parts.fencer = fencer_.get();
  parts.fencer_status = fencer_status_;
  parts.fence_timeout_ms = &fence_timeout_ms_;
  parts.garp_count = &garp_count_;
  parts.handing_over = [this] { return retiring_.load() || beside_.load(); };
  roles_.attach(std::move(parts));
  // Own nothing until a role is taken: the NF starts as owner (for standalone use), and /metrics
  // and Control.Status answer from here on, while the role is decided only after the binary's
  // digest and the peer's answer (tens of ms). A restarting node must never be seen owning the
  // virtual addresses beside the active (the soak's "never two actives" saw exactly that).
  for (unsigned w = 0; w < node_->workers(); w++) node_->nf(w).set_vip_owner(false);
  upgrade_ = make_upgrade();
  // A new version started beside the old one listens on free ports until it takes over.
  const bool beside = launch_.beside_fd >= 0;
  beside_.store(beside);
  st = open_management(beside);
  if (!st.ok()) return st;
  if (!beside && cfg_.peer_grpc.set()) {
    /* The peer hears that this node has started as soon as it can answer: one fast beat now (the
     * active connects its stream on it), and the first Heartbeat, whose answer choose_initial_role
     * takes, sent from a thread of its own while the node and the engine start. */
    auto mine = std::make_shared<v1::Beat>();
    fill_beat(mine.get());
    if (monitor_) monitor_->announce(*mine);
    auto stub = v1::Peer::NewStub(rpc::make_channel(cfg_.peer_grpc.str(), peer_creds_, rpc::ChannelKind::BEATS));
    first_beat_ = std::async(std::launch::async, [stub = std::shared_ptr<v1::Peer::Stub>(std::move(stub)), mine] {
      std::optional<v1::Beat> peer(std::in_place);
      if (!ask_peer(*stub, *mine, &*peer)) peer.reset();
      return peer;
    });
  }
  if (self_sha_.empty())
    if (Status ds = ckpt_self_digest(&self_sha_); !ds.ok()) L.error("the running binary's digest: {}", ds.str());
  // The role is taken before the worker runs (set_vip_owner(false) above), so a standby never
  // forwards a packet.
  st = node_->start();
  if (!st.ok()) return st;
  engine_->start();
  started_ = true;
  if (beside) {
    st = upgrade_->start_as_new_instance();
    if (!st.ok()) return st;
  } else {
    st = choose_initial_role();
    if (!st.ok()) return st;
    write_pidfile();
    if (monitor_) monitor_->start();
    if (dp_watch_) dp_watch_->start();
  }
  if (cfg_.telemetry) status_view::register_telemetry(*this);
  tick();
  return Status::Ok();
}

void enable_standard_grpc_services() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
}

void warm_up_grpc() {
  enable_standard_grpc_services();
  grpc_init();  // never shut down: what follows stays warm for the daemon's own server and channels
  (void)rpc::make_channel("127.0.0.1:1", nullptr, rpc::ChannelKind::CALLS);  // not connected
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  rpc::apply_server_policy(&b);
  if (auto server = b.BuildAndStart()) server->Shutdown(std::chrono::system_clock::now());
}

Status Daemon::open_grpc(const Endpoint &ep, std::unique_ptr<grpc::Server> *server,
                         std::unique_ptr<ckpt::SyncEndpoint> *sync_ep, uint16_t *port_out) {
  grpc_closing_.store(false);
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(ep.str(), server_creds_, &port);
  rpc::apply_server_policy(&b);
  // Sync services may be registered with several servers: a new instance serves the same
  // ones on its temporary and its final port. Replication goes through an endpoint per server.
  auto rep = std::make_unique<ckpt::SyncEndpoint>(*repl_svc_);
  rep->attach(&b);
  b.RegisterService(ctl_svc_.get());
  b.RegisterService(peer_svc_.get());
  *server = b.BuildAndStart();
  if (!*server || port == 0) {
    if (*server) (*server)->Shutdown(), server->reset();
    rep->stop();
    return Unavailable("management.grpc: cannot listen on " + ep.str());
  }
  rep->start();
  *sync_ep = std::move(rep);
  *port_out = static_cast<uint16_t>(port);
  if (auto *h = (*server)->GetHealthCheckService()) h->SetServingStatus(false);  // until tick() knows the role
  return Status::Ok();
}

void Daemon::shutdown_grpc(std::chrono::milliseconds grace) {
  grpc_closing_.store(true);
  const auto deadline = std::chrono::system_clock::now() + grace;
  if (grpc_) grpc_->Shutdown(deadline);
  if (grpc_final_) grpc_final_->Shutdown(deadline);
  if (sync_ep_) sync_ep_->stop();
  if (sync_ep_final_) sync_ep_final_->stop();
}

void Daemon::write_pidfile() {
  if (cfg_.pidfile.empty()) return;
  Status st = write_file_atomic(cfg_.pidfile, std::to_string(::getpid()) + "\n", 0644);
  if (!st.ok()) L.error("cannot write the pidfile: {}", st.str());
}

void Daemon::stop() {
  if (!started_) return;
  started_ = false;
  status_view::unregister_telemetry(*this);
  const bool was_active = role() == fo::Role::ACTIVE;
  upgrade_->stop();
  if (dp_watch_) dp_watch_->stop();
  if (monitor_) monitor_->stop();
  engine_->stop();
  shutdown_grpc(std::chrono::milliseconds(500));
  http_.stop();
  node_->stop();
  if (was_active) {
    std::string path;
    Status st = write_snapshot(true, &path);
    if (st.ok())
      L.info("snapshot written to {} (generation {}, {} flows)", path, generation(), node_->flow_count());
    else
      L.error("clean shutdown without a snapshot: {}", st.str());
  }
}

/* Healthy unless a worker is stalled (fo::StallDetector): its loop counter froze for
 * worker.stall_ms while it had the CPU or slept. A worker only starved of the CPU by other
 * processes is tolerated up to 10 x stall_ms. Every worker is checked every time. */
bool Daemon::dataplane_healthy() const {
  if (!node_) return false;
  bool ok = true;
  const int64_t now = mono_ns();
  for (unsigned w = 0; w < node_->workers(); w++)
    ok &= stall_detector_[w].healthy(node_->agent().loops(w), node_->worker(w).tid.load(), now);
  return ok;
}

// ------------------------------------------------------------------ snapshots

Status Daemon::write_snapshot(bool clean, std::string *path) {
  Snapshot s = collect_snapshot(clean);
  *path = snapshot_path();
  return ckpt::write_snapshot(*path, s.meta, s.recs, s.now_tsc, rte_get_tsc_hz());
}

// The table's records and the snapshot's header: the part that must see a still table.
Daemon::Snapshot Daemon::collect_snapshot(bool clean) {
  Snapshot s;
  std::vector<dp::CapturedSlot> &recs = s.recs;
  recs.reserve(node_->flow_count());
  for (unsigned w = 0; w < node_->workers(); w++) {
    node_->flows(w).for_each([&](uint32_t slot, const dp::FlowRecord &r) {
      dp::CapturedSlot c{};
      c.slot = slot;
      c.shard = static_cast<uint8_t>(w);
      c.in_use = 1;
      c.st = r.st;
      c.last_seen_tsc = r.last_seen_tsc;
      recs.push_back(c);
    });
  }
  ckpt::SnapshotMeta &meta = s.meta;
  meta.generation = generation();
  meta.epoch = node_->flows(0).epoch();
  meta.software_version = ckpt::software_version();
  meta.node_id = cfg_.node_id;
  meta.clean_shutdown = clean;
  meta.created_unix_ns = unix_ns();
  meta.count = recs.size();
  s.now_tsc = rte_rdtsc();
  return s;
}

Status Daemon::restore_from_snapshot() {
  ckpt::SnapshotMeta meta;
  std::vector<ckpt::WireRecord> recs;
  Status st = ckpt::read_snapshot(snapshot_path(), cfg_.flow_capacity, &meta, &recs);
  if (!st.ok()) return Status(st.code(), "not resuming from a snapshot: " + st.message());
  // A snapshot serves once: a later crash must not resurrect it.
  if (::rename(snapshot_path().c_str(), (snapshot_path() + ".used").c_str()) != 0)
    L.error("cannot retire the snapshot {} after reading it: {}", snapshot_path(), std::strerror(errno));
  st = ckpt::snapshot_usable(meta, generation(), snapshot_max_age_s_.load(), unix_ns());
  if (!st.ok()) return Status(st.code(), "refusing the snapshot: " + st.message());
  std::lock_guard<std::mutex> t(table_mu_);
  Node *n = node_.get();
  st = ckpt::restore_snapshot(recs, n->tables(), [n](const dp::FlowState &fs) { return n->home(fs); }, rte_rdtsc(),
                              rte_get_tsc_hz());
  if (!st.ok())
    for (dp::FlowTable *t : n->tables()) t->clear();  // all of the snapshot or none of it
  return st;
}

// ------------------------------------------------------------------ operations

void Daemon::status(v1::StatusReply *out) { status_view::fill_status(*this, out); }

bool Daemon::replication_in_sync() const {
  if (!engine_ || !applier_) return false;  // both made before the gRPC server starts
  const fo::Role r = role();
  if (is_active(r)) return engine_->in_sync();
  return r == fo::Role::STANDBY_READY && applier_->in_sync();
}

Daemon::WaitEnd Daemon::wait_in_sync(std::chrono::milliseconds wait, const std::function<bool()> &cancelled) {
  if (wait.count() <= 0) return WaitEnd::DONE;
  if (in_sync_waiters_.fetch_add(1) >= kMaxInSyncWaiters) {
    in_sync_waiters_.fetch_sub(1);
    return WaitEnd::BUSY;
  }
  const auto end = std::chrono::steady_clock::now() + std::min(wait, kMaxInSyncWait);
  while (!replication_in_sync() && !cancelled() && !grpc_closing_.load() && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  in_sync_waiters_.fetch_sub(1);
  return grpc_closing_.load() ? WaitEnd::STOPPING : WaitEnd::DONE;
}

Status Daemon::flows(uint32_t limit, v1::FlowsReply *out) { return status_view::fill_flows(*this, limit, out); }

std::string Daemon::config_text() const {
  std::lock_guard<std::mutex> g(reload_mu_);
  return source_text_;
}

std::vector<std::string> Daemon::restart_pending() const {
  std::lock_guard<std::mutex> g(reload_mu_);
  return restart_pending_;
}

std::vector<std::string> Daemon::security_warnings() const {
  std::vector<std::string> w;
  if (monitor_ && monitor_->config().udp_port && !monitor_->authenticated())
    w.push_back("beats_unauthenticated: no failover.beat_keys, so anyone who can send UDP from the peer's address "
                "speaks for the peer");
  if (cfg_.grpc.set() && !cfg_.management_tls.enabled())
    w.push_back("control_without_mtls: no management.tls, so anyone on the management network can force a "
                "switchover");
  return w;
}

bool Daemon::peer_view(bool *reachable, v1::Beat *last) const {
  if (!monitor_ || !monitor_->ever_heard()) return false;
  *reachable = !monitor_->peer_silent();
  *last = monitor_->last_peer_beat();
  return true;
}

Status Daemon::authorize_peer(const grpc::ServerContext &ctx, const char *what) {
  Status st = rpc::authorize_identity(ctx, cfg_.management_tls.enabled(), cfg_.peer_identities, what);
  if (!st.ok()) {
    peer_calls_refused_++;
    const int64_t now = mono_ns();
    int64_t last = peer_refusal_log_ns_.load();
    if (now - last > 1'000'000'000 && peer_refusal_log_ns_.compare_exchange_strong(last, now))
      L.warn("{} (from {})", st.message(), ctx.peer());
  }
  return st;
}

Status load_beat_keys(const Config &cfg, std::vector<fo::BeatKey> *out) {
  out->clear();
  for (const auto &ref : cfg.beat_keys) {
    fo::BeatKey k;
    k.id = static_cast<uint8_t>(ref.id);
    Status ks = fo::load_beat_key(ref.file, &k.secret);
    if (!ks.ok()) return Status(ks.code(), "failover.beat_keys: " + ks.message());
    out->push_back(std::move(k));
  }
  return Status::Ok();
}

std::vector<std::string> Daemon::alarms() const {
  std::vector<std::string> a;
  if (!cfg_.peer_grpc.set() || !node_) return a;
  const fo::Role r = role();
  if (r == fo::Role::ACTIVE && !engine_->in_sync()) {
    std::string why = engine_->connected() ? "the standby is still syncing" : "no standby is connected";
    const std::string err = engine_->last_error();
    if (!err.empty()) why += " (" + err + ")";
    a.push_back("unprotected: a failover now would lose the flows; " + why);
  } else if ((r == fo::Role::STANDBY_READY || r == fo::Role::STANDBY_SYNCING) && !applier_->in_sync()) {
    std::string why = "this standby holds no complete copy of the active's table";
    const std::string refused = repl_svc_ ? repl_svc_->last_refusal() : "";
    if (!refused.empty()) why += "; it refused the active's stream: " + refused;
    a.push_back("standby_not_in_sync: " + why);
  }
  if (r != fo::Role::ACTIVE && applier_->diverged_epoch())
    a.push_back("diverged: at epoch " + std::to_string(applier_->diverged_epoch()) +
                " this standby's table differed from the active's (table fingerprints); it refused the "
                "stream and waits for a full sync");
  return a;
}

Status Daemon::checkpoint(bool snapshot, v1::CheckpointReply *out) {
  uint64_t epoch = 0, records = 0;
  Status st = engine_->checkpoint_now(std::chrono::milliseconds(3000), &epoch, &records);
  out->set_epoch(epoch);
  out->set_records(records);
  out->set_acked_epoch(engine_->acked_epoch());
  out->set_pause_us(double(node_->agent().last_pause_ns()) / 1000.0);
  if (snapshot && role() == fo::Role::ACTIVE) {
    // Only the copy happens with the workers parked; the file and its fsync come after.
    Snapshot snap;
    Status parked = engine_->with_workers_parked([&] { snap = collect_snapshot(false); });
    if (!parked.ok()) {
      L.error("snapshot on request: the workers did not park: {}", parked.str());
    } else {
      const std::string path = snapshot_path();
      Status written = ckpt::write_snapshot(path, snap.meta, snap.recs, snap.now_tsc, rte_get_tsc_hz());
      if (!written.ok())
        L.error("snapshot on request: {}", written.str());
      else
        out->set_snapshot_path(path);
    }
  }
  return st;
}

}  // namespace ftpair
