#include "control/daemon.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <rte_cycles.h>
#include <rte_telemetry.h>

#include "checkpoint/snapshot.h"
#include "checkpoint/sync_server.h"
#include "proto/rpc/rpc.h"
#include "virt/fencers.h"
#include "replication.grpc.pb.h"
#include "control.grpc.pb.h"

namespace ftpair {

namespace {

// One mapping of ftpair status codes to gRPC's, shared with the standalone Sync server.
using rpc::to_grpc;

int64_t unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string proto_name(uint8_t p) {
  return p == IPPROTO_TCP ? "tcp" : p == IPPROTO_UDP ? "udp" : p == IPPROTO_ICMP ? "icmp" : std::to_string(p);
}

void fill_flow(uint32_t slot, const dp::FlowState &s, v1::Flow *f) {
  f->set_slot(slot);
  f->set_proto(proto_name(s.proto));
  f->set_inside(ipv4_to_string(s.in_ip) + ":" + std::to_string(ntohs(s.in_port)));
  f->set_outside(ipv4_to_string(s.ext_ip) + ":" + std::to_string(ntohs(s.ext_port)));
  f->set_nat(ipv4_to_string(s.nat_ip) + ":" + std::to_string(ntohs(s.nat_port)));
  f->set_state(s.proto == IPPROTO_TCP ? dp::tcp_state_name(static_cast<dp::TcpState>(s.tcp_state)) : "active");
  f->set_flags(s.flags);
}

bool read_pem(const std::string &path, std::string *out) {
  std::ifstream f(path);
  if (!f) return false;
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return !out->empty();
}

// The DPDK telemetry callback has no user pointer: one daemon per process.
std::mutex g_tel_mu;
Daemon *g_tel_daemon = nullptr;

int telemetry_state(const char *, const char *, rte_tel_data *d) {
  std::lock_guard<std::mutex> g(g_tel_mu);
  if (!g_tel_daemon) return -1;
  v1::StatusReply st;
  g_tel_daemon->status(&st);
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_string(d, "node_id", st.node_id().c_str());
  rte_tel_data_add_dict_string(d, "role", st.role().c_str());
  rte_tel_data_add_dict_string(d, "state", st.state().c_str());
  rte_tel_data_add_dict_u64(d, "generation", st.generation());
  rte_tel_data_add_dict_int(d, "serving", st.serving() ? 1 : 0);
  rte_tel_data_add_dict_int(d, "dataplane_healthy", st.dataplane_healthy() ? 1 : 0);
  rte_tel_data_add_dict_u64(d, "flows", st.flows());
  rte_tel_data_add_dict_u64(d, "flow_capacity", st.flow_capacity());
  rte_tel_data_add_dict_u64(d, "checkpoints", st.checkpoints());
  rte_tel_data_add_dict_u64(d, "checkpoints_aborted", st.checkpoints_aborted());
  rte_tel_data_add_dict_int(d, "in_sync", st.sync().in_sync() ? 1 : 0);
  rte_tel_data_add_dict_u64(d, "epoch", st.sync().epoch());
  rte_tel_data_add_dict_u64(d, "acked_epoch", st.sync().acked_epoch());
  rte_tel_data_add_dict_u64(d, "lag_epochs", st.sync().lag_epochs());
  rte_tel_data_add_dict_u64(d, "lag_bytes", st.sync().lag_bytes());
  rte_tel_data_add_dict_string(d, "version", st.software_version().c_str());
  return 0;
}

}  // namespace

// ------------------------------------------------------------------ Control

namespace {
// The calling thread runs as SCHED_IDLE while this lives (then back to what it was).
class IdlePriority {
 public:
  IdlePriority() {
    policy_ = sched_getscheduler(0);
    sched_getparam(0, &param_);
    sched_param p{};
    ok_ = sched_setscheduler(0, SCHED_IDLE, &p) == 0;
  }
  ~IdlePriority() {
    if (ok_) sched_setscheduler(0, policy_, &param_);
  }
  IdlePriority(const IdlePriority &) = delete;
  IdlePriority &operator=(const IdlePriority &) = delete;

 private:
  int policy_ = SCHED_OTHER;
  sched_param param_{};
  bool ok_ = false;
};
}  // namespace

class Daemon::ControlService final : public v1::Control::Service {
 public:
  explicit ControlService(Daemon &d) : d_(d) {}
  grpc::Status Status(grpc::ServerContext *, const v1::StatusRequest *, v1::StatusReply *out) override {
    d_.status(out);
    return grpc::Status::OK;
  }
  grpc::Status Checkpoint(grpc::ServerContext *, const v1::CheckpointRequest *req, v1::CheckpointReply *out) override {
    return to_grpc(d_.checkpoint(req->snapshot(), out));
  }
  grpc::Status Flows(grpc::ServerContext *, const v1::FlowsRequest *req, v1::FlowsReply *out) override {
    return to_grpc(d_.flows(req->limit(), out));
  }
  grpc::Status Config(grpc::ServerContext *, const v1::ConfigRequest *, v1::ConfigReply *out) override {
    std::lock_guard<std::mutex> g(d_.reload_mu_);
    out->set_yaml(d_.source_text_);
    return grpc::Status::OK;
  }
  grpc::Status Switchover(grpc::ServerContext *, const v1::SwitchoverRequest *req, v1::SwitchoverReply *out) override {
    return to_grpc(d_.switchover(req->force(), out));
  }
  grpc::Status StageUpgrade(grpc::ServerContext *, grpc::ServerReader<v1::UpgradeChunk> *reader,
                            v1::UpgradeReply *out) override {
    constexpr size_t kMaxBinary = 512u << 20;
    // Staging is background work: it must not delay the heartbeats that share the CPUs and
    // the management link. This thread runs as SCHED_IDLE, and reads at most 32 MiB/s (gRPC
    // flow control then paces the sender), so a bulk upload never floods the link.
    constexpr double kBytesPerSecond = 32.0 * (1 << 20);
    IdlePriority idle;
    const auto t0 = std::chrono::steady_clock::now();
    std::string bytes, claimed;
    v1::UpgradeChunk c;
    while (reader->Read(&c)) {
      if (claimed.empty()) claimed = c.sha256();
      if (bytes.size() + c.data().size() > kMaxBinary)
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "upgrade: the binary is larger than 512 MiB: refused");
      bytes += c.data();
      const auto due = t0 + std::chrono::duration<double>(double(bytes.size()) / kBytesPerSecond);
      std::this_thread::sleep_until(due);
    }
    return to_grpc(d_.stage_upgrade(bytes, claimed, out));
  }
  grpc::Status Upgrade(grpc::ServerContext *, const v1::UpgradeRequest *req, v1::UpgradeReply *out) override {
    return to_grpc(d_.upgrade(*req, out));
  }

 private:
  Daemon &d_;
};

// ------------------------------------------------------------------ Peer

class Daemon::PeerService final : public v1::Peer::Service {
 public:
  explicit PeerService(Daemon &d) : d_(d) {}
  grpc::Status Heartbeat(grpc::ServerContext *, const v1::Beat *req, v1::Beat *reply) override {
    if (d_.monitor_)
      d_.monitor_->heard(*req, reply);
    else
      d_.fill_beat(reply);
    return grpc::Status::OK;
  }
  grpc::Status Takeover(grpc::ServerContext *, const v1::TakeoverRequest *req, v1::TakeoverReply *out) override {
    return to_grpc(d_.takeover(*req, out));
  }
  grpc::Status Join(grpc::ServerContext *, const v1::JoinRequest *req, v1::JoinReply *out) override {
    return to_grpc(d_.join(*req, out));
  }

 private:
  Daemon &d_;
};

// ------------------------------------------------------------------ life cycle

Daemon::Daemon(const Config &cfg)
    : cfg_(cfg),
      generation_(cfg.state_dir),
      stall_ms_(cfg.stall_ms),
      fence_timeout_ms_(cfg.fence_timeout_ms),
      garp_count_(cfg.garp_count),
      snapshot_max_age_s_(cfg.snapshot_max_age_s),
      test_hooks_(cfg.test_hooks),
      source_text_(cfg.source_text) {}
Daemon::~Daemon() { stop(); }

// mTLS towards the peer when configured (peer.tls, else management.tls), plaintext otherwise.
std::shared_ptr<grpc::ChannelCredentials> Daemon::peer_credentials(Status *st) const {
  const TlsConfig &t = cfg_.peer_tls;
  if (!t.enabled()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions o;
  if (!read_pem(t.ca, &o.pem_root_certs)) *st = InvalidArgument("config: peer.tls.ca: cannot read '" + t.ca + "'");
  else if (!read_pem(t.cert, &o.pem_cert_chain)) *st = InvalidArgument("config: peer.tls.cert: cannot read '" + t.cert + "'");
  else if (!read_pem(t.key, &o.pem_private_key)) *st = InvalidArgument("config: peer.tls.key: cannot read '" + t.key + "'");
  if (!st->ok()) return nullptr;
  return grpc::SslCredentials(o);
}

// A fresh channel per use (switchover, initial role): a cached one could sit in reconnect
// backoff after the peer restarted.
std::shared_ptr<grpc::Channel> Daemon::peer_channel() { return peer_channel(cfg_.peer_grpc.str()); }

std::shared_ptr<grpc::Channel> Daemon::peer_channel(const std::string &addr) {
  grpc::ChannelArguments args;
  return grpc::CreateCustomChannel(addr, peer_creds_ ? peer_creds_ : grpc::InsecureChannelCredentials(), args);
}

void Daemon::register_telemetry() {
  {
    std::lock_guard<std::mutex> g(g_tel_mu);
    g_tel_daemon = this;
  }
  static bool registered = false;  // DPDK keeps a command for the life of the process
  if (registered) return;
  if (rte_telemetry_register_cmd("/ftpair/state", telemetry_state,
                                 "ftpair node state: role, generation, flows, sync. Takes no parameters.") == 0)
    registered = true;
  else
    std::fprintf(stderr, "ftpaird: cannot register the DPDK telemetry command /ftpair/state\n");
}

Status Daemon::start() {
  stall_detector_.set_stall_ms(stall_ms_.load());
  ::mkdir(cfg_.state_dir.c_str(), 0700);
  Status st = generation_.load();
  if (!st.ok()) return st;
  generation_value_.store(generation_.value());
  node_ = Node::create(cfg_, &st);
  if (!node_) return st;
  applier_ = std::make_unique<ckpt::Applier>(node_->flows(), table_mu_, cfg_.node_id);
  ckpt::EngineConfig ec;
  ec.node_id = cfg_.node_id;
  ec.peer = cfg_.peer_grpc.set() ? cfg_.peer_grpc.str() : "";
  ec.strict = cfg_.mode == ReplicationMode::STRICT;
  ec.fallback_relaxed = cfg_.hold_fallback == dp::HoldFallback::RELAXED;
  ec.interval = std::chrono::microseconds(cfg_.checkpoint_interval_us);
  ec.dirty_threshold = cfg_.checkpoint_dirty_threshold;
  ec.quiesce_timeout = std::chrono::microseconds(cfg_.quiesce_timeout_us);
  ec.generation = [this] { return generation_value_.load(); };
  if (cfg_.peer_grpc.set()) {
    Status cs;
    peer_creds_ = peer_credentials(&cs);
    if (!cs.ok()) return cs;
    if (cfg_.peer_tls.enabled()) ec.credentials = peer_creds_;
  }
  engine_ = std::make_unique<ckpt::Engine>(ec, node_->flows(), node_->agent());

  ckpt::SyncHooks hooks;
  hooks.admit = [this]() -> Status {
    if (role() == fo::Role::ACTIVE || role() == fo::Role::DRAINING)
      return FailedPrecondition("node " + cfg_.node_id + " is active: it sends checkpoints, it does not take them");
    return Status::Ok();
  };
  hooks.generation = [this] { return generation(); };
  hooks.on_sync_state = [this](bool in_sync) {
    set_standby_state(in_sync ? fo::Role::STANDBY_READY : fo::Role::STANDBY_SYNCING);
  };
  repl_svc_ = std::make_unique<ckpt::SyncService>(*applier_, std::move(hooks));
  ctl_svc_ = std::make_unique<ControlService>(*this);
  peer_svc_ = std::make_unique<PeerService>(*this);
  if (cfg_.peer_grpc.set()) {
    fo::FenceConfig fc;
    fc.kind = cfg_.fence;
    fc.allow_none = cfg_.allow_fence_none;
    fc.pidfile = cfg_.fence_pidfile;
    fc.libvirt_uri = cfg_.libvirt_uri;
    fc.domain = cfg_.libvirt_domain;
    fc.libvirt_action = cfg_.libvirt_action;
    fencer_ = virt::make_fencer(fc, &fencer_status_);
    if (!fencer_) std::fprintf(stderr, "ftpaird: %s: promotions will be refused\n", fencer_status_.message().c_str());
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
    }
    if (cfg_.peer_tls.enabled()) mc.credentials = peer_creds_;
    fo::MonitorHooks hooks;
    hooks.fill_local = [this](v1::Beat *b) { fill_beat(b); };
    hooks.on_peer_beat = [this](const v1::Beat &b) { on_peer_beat(b); };
    hooks.on_peer_silent = [this](const std::string &r) { on_peer_silent(r); };
    monitor_ = std::make_unique<fo::Monitor>(mc, hooks);
  }
  // Own nothing until a role is taken: the NF starts as owner (for standalone use), and /metrics
  // and Control.Status answer from here on, while the role is decided only after the binary's
  // digest and the peer's answer (tens of ms). A restarting node must never be seen owning the
  // virtual addresses beside the active (the soak's "never two actives" saw exactly that).
  node_->nf().set_vip_owner(false);
  upgrade_ = make_upgrade();
  // A new version started beside the old one listens on free ports until it takes over.
  const bool beside = launch_.beside_fd >= 0;
  beside_.store(beside);
  Endpoint grpc_ep = cfg_.grpc, metrics_ep = cfg_.metrics;
  if (beside) grpc_ep.port = 0, metrics_ep.port = 0;
  if (cfg_.grpc.set()) {
    std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
    if (cfg_.management_tls.enabled()) {
      // Mutual TLS: a client must present a certificate signed by management.tls.ca.
      grpc::SslServerCredentialsOptions o(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
      grpc::SslServerCredentialsOptions::PemKeyCertPair kc;
      const TlsConfig &t = cfg_.management_tls;
      if (!read_pem(t.ca, &o.pem_root_certs)) return InvalidArgument("config: management.tls.ca: cannot read '" + t.ca + "'");
      if (!read_pem(t.cert, &kc.cert_chain)) return InvalidArgument("config: management.tls.cert: cannot read '" + t.cert + "'");
      if (!read_pem(t.key, &kc.private_key)) return InvalidArgument("config: management.tls.key: cannot read '" + t.key + "'");
      o.pem_key_cert_pairs.push_back(kc);
      creds = grpc::SslServerCredentials(o);
    }
    server_creds_ = creds;
    // Standard gRPC tooling: grpc.health.v1.Health (driven by tick()) and server reflection.
    grpc::EnableDefaultHealthCheckService(true);
    grpc::reflection::InitProtoReflectionServerBuilderPlugin();
    st = open_grpc(grpc_ep, &grpc_, &grpc_port_);
    if (!st.ok()) return st;
  }
  http_.route("/metrics", [this] {
    return HttpReply{200, "text/plain; version=0.0.4; charset=utf-8", render_metrics()};
  });
  if (cfg_.metrics.set()) {
    st = http_.start(metrics_ep);
    if (!st.ok()) return Unavailable("management.metrics: " + st.message());
  }
  {
    Status ds = ckpt_self_digest(&self_sha_);
    if (!ds.ok()) std::fprintf(stderr, "ftpaird: %s\n", ds.message().c_str());
  }
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
  }
  if (cfg_.telemetry) register_telemetry();
  tick();
  return Status::Ok();
}

Status Daemon::open_grpc(const Endpoint &ep, std::unique_ptr<grpc::Server> *server, uint16_t *port_out) {
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort(ep.str(), server_creds_, &port);
  b.SetMaxReceiveMessageSize(64 << 20);
  b.SetMaxSendMessageSize(64 << 20);
  // The active's Sync stream pings every second even when idle (checkpoint/engine.cc); accept
  // that instead of answering GOAWAY "too many pings", and ping back, so a standby also notices an
  // active that vanished without closing its stream.
  b.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
  b.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  b.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Sync services may be registered with several servers: a new instance serves the same
  // ones on its temporary and its final port.
  b.RegisterService(repl_svc_.get());
  b.RegisterService(ctl_svc_.get());
  b.RegisterService(peer_svc_.get());
  *server = b.BuildAndStart();
  if (!*server || port == 0) return Unavailable("management.grpc: cannot listen on " + ep.str());
  *port_out = static_cast<uint16_t>(port);
  if (auto *h = (*server)->GetHealthCheckService()) h->SetServingStatus(false);  // until tick() knows the role
  return Status::Ok();
}

void Daemon::write_pidfile() {
  if (cfg_.pidfile.empty()) return;
  const std::string tmp = cfg_.pidfile + ".tmp";
  FILE *f = std::fopen(tmp.c_str(), "w");
  if (!f || std::fprintf(f, "%d\n", static_cast<int>(::getpid())) < 0 || std::fclose(f) != 0 ||
      ::rename(tmp.c_str(), cfg_.pidfile.c_str()) != 0)
    std::fprintf(stderr, "ftpaird: cannot write the pidfile %s\n", cfg_.pidfile.c_str());
}

void Daemon::stop() {
  if (!started_) return;
  started_ = false;
  {
    std::lock_guard<std::mutex> g(g_tel_mu);
    if (g_tel_daemon == this) g_tel_daemon = nullptr;
  }
  const bool was_active = role_.load() == fo::Role::ACTIVE;
  upgrade_->stop();
  if (monitor_) monitor_->stop();
  engine_->stop();
  if (grpc_) grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  if (grpc_final_) grpc_final_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
  http_.stop();
  node_->stop();
  if (was_active) {
    std::string path;
    Status st = write_snapshot(true, &path);
    std::fprintf(stderr, "ftpaird: %s\n", st.ok() ? ("snapshot written to " + path).c_str() : st.message().c_str());
  }
}

Status Daemon::become_active(const std::string &why, bool bump_generation) {
  using Clock = std::chrono::steady_clock;
  auto ms = [](Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  const auto t0 = Clock::now();
  std::lock_guard<std::mutex> g(role_mu_);
  repl_svc_->cancel_current();
  std::lock_guard<std::mutex> t(table_mu_);
  applier_->set_accepting(false);  // a late checkpoint must not touch the table we now own
  if (bump_generation) {
    uint64_t peer_gen = monitor_ ? monitor_->last_peer_beat().generation() : 0;
    // The standby reserved (and flushed) this generation ahead of time: no disk I/O here.
    const uint64_t want = std::max(generation(), peer_gen) + 1;
    if (!generation_.take_reserved(want)) {
      Status gs = generation_.store(want);
      if (!gs.ok()) return gs;
    }
    generation_value_.store(generation_.value());
  }
  const auto t1 = Clock::now();
  Status st = engine_->with_workers_parked([this] {
    node_->flows().refresh_all(rte_rdtsc());
    node_->nf().set_vip_owner(true);
  });
  if (!st.ok()) return st;
  role_.store(fo::Role::ACTIVE);
  engine_->set_replicating(true);
  node_->nf().request_announce(garp_count_.load());
  const auto t2 = Clock::now();
  std::fprintf(stderr, "ftpaird: node %s is ACTIVE (generation %lu): %s [locks+generation %.2f ms, dataplane %.2f ms]\n",
               cfg_.node_id.c_str(), static_cast<unsigned long>(generation()), why.c_str(), ms(t0, t1), ms(t1, t2));
  return Status::Ok();
}

Status Daemon::become_standby(const std::string &why) {
  std::lock_guard<std::mutex> g(role_mu_);
  engine_->set_replicating(false);
  Status st = engine_->with_workers_parked([this] { node_->nf().set_vip_owner(false); });
  if (!st.ok()) return st;
  applier_->set_accepting(true);
  role_.store(applier_->in_sync() ? fo::Role::STANDBY_READY : fo::Role::STANDBY_SYNCING);
  std::fprintf(stderr, "ftpaird: node %s is STANDBY: %s\n", cfg_.node_id.c_str(), why.c_str());
  return Status::Ok();
}

/* Healthy unless the worker is stalled (fo::StallDetector): its loop counter froze for
 * worker.stall_ms while it had the CPU or slept. A worker only starved of the CPU by other
 * processes is tolerated up to 10 x stall_ms. */
bool Daemon::dataplane_healthy() const {
  if (!node_) return false;
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::steady_clock::now().time_since_epoch()).count();
  return stall_detector_.healthy(node_->agent().loops(0), node_->worker().tid.load(), now);
}

// ------------------------------------------------------------------ snapshots

Status Daemon::write_snapshot(bool clean, std::string *path) {
  std::vector<dp::CapturedSlot> recs;
  recs.reserve(node_->flows().size());
  node_->flows().for_each([&](uint32_t slot, const dp::FlowRecord &r) {
    dp::CapturedSlot c{};
    c.slot = slot;
    c.in_use = 1;
    c.st = r.st;
    c.last_seen_tsc = r.last_seen_tsc;
    recs.push_back(c);
  });
  ckpt::SnapshotMeta meta;
  meta.generation = generation();
  meta.epoch = node_->flows().epoch();
  meta.software_version = ckpt::software_version();
  meta.node_id = cfg_.node_id;
  meta.clean_shutdown = clean;
  meta.created_unix_ns = unix_ns();
  meta.count = recs.size();
  *path = snapshot_path();
  return ckpt::write_snapshot(*path, meta, recs, rte_rdtsc(), rte_get_tsc_hz());
}

Status Daemon::restore_from_snapshot() {
  ckpt::SnapshotMeta meta;
  std::vector<ckpt::WireRecord> recs;
  Status st = ckpt::read_snapshot(snapshot_path(), node_->flows().capacity(), &meta, &recs);
  if (!st.ok()) return Status(st.code(), "not resuming from a snapshot: " + st.message());
  // A snapshot serves once: a later crash must not resurrect it.
  ::rename(snapshot_path().c_str(), (snapshot_path() + ".used").c_str());
  st = ckpt::snapshot_usable(meta, generation(), snapshot_max_age_s_.load(), unix_ns());
  if (!st.ok()) return Status(st.code(), "refusing the snapshot: " + st.message());
  std::lock_guard<std::mutex> t(table_mu_);
  return ckpt::restore_snapshot(recs, node_->flows(), rte_rdtsc(), rte_get_tsc_hz());
}

// ------------------------------------------------------------------ operations

void Daemon::status(v1::StatusReply *out) {
  const fo::Role r = role();
  out->set_node_id(cfg_.node_id);
  out->set_role(fo::role_kind(r));
  out->set_state(fo::role_name(r));
  out->set_generation(generation());
  out->set_software_version(ckpt::software_version());
  out->set_dataplane_healthy(dataplane_healthy());
  out->set_flows(node_->flows().size());
  out->set_flow_capacity(node_->flows().capacity());
  const auto &es = engine_->stats();
  out->set_checkpoints(es.checkpoints.load());
  out->set_checkpoints_aborted(es.aborted.load());
  int64_t last = es.last_checkpoint_unix_ns.load();
  out->set_last_checkpoint_age_seconds(last ? double(unix_ns() - last) / 1e9 : -1);
  out->set_last_pause_us(double(node_->agent().last_pause_ns()) / 1000.0);
  out->set_serving(serving());
  {
    std::lock_guard<std::mutex> g(reload_mu_);
    for (const auto &k : restart_pending_) out->add_restart_pending(k);
  }
  out->set_config_reloads(reloads_ok_.load());
  out->set_pid(uint32_t(::getpid()));
  out->set_binary_sha256(self_sha_);
  if (cfg_.peer_grpc.set()) out->set_peer_address(cfg_.peer_grpc.str());
  fill_upgrade(out->mutable_upgrade());
  out->set_upgrade_stage(out->upgrade().stage());
  v1::SyncStatus *s = out->mutable_sync();
  s->set_mode(cfg_.mode == ReplicationMode::STRICT ? "strict" : "relaxed");
  if (r == fo::Role::ACTIVE || r == fo::Role::DRAINING) {
    s->set_peer(engine_->peer());
    s->set_connected(engine_->connected());
    s->set_in_sync(engine_->in_sync());
    s->set_epoch(engine_->current_epoch());
    s->set_acked_epoch(engine_->acked_epoch());
    uint64_t closed = engine_->current_epoch() - 1;
    s->set_lag_epochs(engine_->in_sync() && closed > engine_->acked_epoch() ? closed - engine_->acked_epoch() : 0);
    s->set_exposure_epochs(s->lag_epochs());
    s->set_lag_bytes(engine_->lag_bytes());
    int64_t ack = es.last_ack_unix_ns.load();
    s->set_last_ack_age_seconds(ack ? double(unix_ns() - ack) / 1e9 : -1);
    s->set_full_syncs(es.full_syncs.load());
    s->set_full_sync_progress(engine_->full_sync_progress());
  } else {
    s->set_peer(applier_->peer_node());
    s->set_in_sync(applier_->in_sync());
    s->set_epoch(applier_->applied_epoch());
    s->set_acked_epoch(applier_->applied_epoch());
    s->set_full_syncs(applier_->stats().full_syncs.load());
    s->set_full_sync_progress(applier_->full_sync_progress());
    int64_t ap = applier_->stats().last_apply_unix_ns.load();
    s->set_last_ack_age_seconds(ap ? double(unix_ns() - ap) / 1e9 : -1);
  }
}

Status Daemon::checkpoint(bool snapshot, v1::CheckpointReply *out) {
  uint64_t epoch = 0, records = 0;
  Status st = engine_->checkpoint_now(std::chrono::milliseconds(3000), &epoch, &records);
  out->set_epoch(epoch);
  out->set_records(records);
  out->set_acked_epoch(engine_->acked_epoch());
  out->set_pause_us(double(node_->agent().last_pause_ns()) / 1000.0);
  if (snapshot && role() == fo::Role::ACTIVE) {
    std::string path;
    Status written;
    Status parked = engine_->with_workers_parked([&] { written = write_snapshot(false, &path); });
    if (parked.ok() && written.ok()) out->set_snapshot_path(path);
  }
  return st;
}

Status Daemon::flows(uint32_t limit, v1::FlowsReply *out) {
  auto copy = [&] {
    uint32_t n = 0;
    out->set_total(node_->flows().size());
    out->set_epoch(node_->flows().epoch());
    node_->flows().for_each([&](uint32_t slot, const dp::FlowRecord &r) {
      if (limit && n >= limit) return;
      fill_flow(slot, r.st, out->add_flows());
      n++;
    });
  };
  if (role() == fo::Role::ACTIVE || role() == fo::Role::DRAINING) {
    // The worker owns the table: read it at a barrier.
    return engine_->with_workers_parked(copy);
  }
  std::lock_guard<std::mutex> t(table_mu_);
  copy();
  out->set_epoch(applier_->applied_epoch());
  return Status::Ok();
}

}  // namespace ftpair
