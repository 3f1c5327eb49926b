// The upgrade coordinator's requests, staging, the active's side (Join) and its status.
// Starting, supervising and handing over to the new instance: control/upgrade_beside.cc.
#include "control/upgrade.h"

#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "common/file.h"
#include "common/log.h"
#include "common/process.h"
#include "common/sha256.h"
#include "checkpoint/version.h"
#include "peer.grpc.pb.h"

namespace ftpair {

namespace {

auto &L = log::component("upgrade");

// Runs `path --version` (5 s at most) and returns its first line.
Status binary_version(const std::string &path, std::string *version) {
  std::string out;
  Status st = run_capture(path, {"--version"}, std::chrono::seconds(5), &out);
  if (!st.ok()) return st;
  *version = out.substr(0, out.find('\n'));
  if (version->empty()) return FailedPrecondition("'" + path + " --version' printed nothing");
  return Status::Ok();
}

}  // namespace

UpgradeCoordinator::UpgradeCoordinator(const Config &cfg, UpgradeLaunch launch, std::unique_ptr<UpgradeHost> host)
    : cfg_(cfg), launch_(std::move(launch)), host_(std::move(host)) {}

UpgradeCoordinator::~UpgradeCoordinator() { stop(); }

void UpgradeCoordinator::stop() {
  stop_.store(true);
  if (handover_thread_.joinable()) handover_thread_.join();
  if (join_thread_.joinable()) join_thread_.join();
  if (beside_thread_.joinable()) beside_thread_.join();
  if (beside_now().pid > 0) stop_beside("this instance is stopping");
}

UpgradeCoordinator::Beside UpgradeCoordinator::beside_now() const {
  std::lock_guard<std::mutex> g(mu_);
  return {beside_pid_, beside_addr_};
}

Status UpgradeCoordinator::refuse(Status st, v1::UpgradeReply *out) {
  machine_.count(UpgradeEvent::REFUSED);
  out->set_ok(false);
  out->set_message(st.message());
  L.warn("{}", st.message());
  return st;
}

bool UpgradeCoordinator::read_previous(std::string *path, std::string *sha) const {
  std::string text;
  if (!read_file(dir() + "/previous", &text).ok()) return false;
  std::istringstream is(text);
  is >> *path >> *sha;
  return true;
}

// ------------------------------------------------------------------ requests

Status UpgradeCoordinator::request(const v1::UpgradeRequest &req, v1::UpgradeReply *out) {
  Status st = Status::Ok();
  switch (req.action()) {
    case v1::UpgradeRequest::STATUS:
      out->set_ok(true);
      break;
    case v1::UpgradeRequest::START_BESIDE:
      st = start_beside(req.rollback(), out);
      break;
    case v1::UpgradeRequest::HANDOVER:
      st = handover(out);
      break;
    case v1::UpgradeRequest::ABORT:
      st = abort(out);
      break;
    case v1::UpgradeRequest::TAKE_OVER:
      st = take_over(out);
      if (!st.ok()) out->set_message(st.message());
      break;
    default:
      st = InvalidArgument("upgrade: unknown action " + std::to_string(int(req.action())));
  }
  fill(out->mutable_upgrade());
  return st;
}

Status UpgradeCoordinator::stage(const std::string &bytes, const std::string &claimed, v1::UpgradeReply *out) {
  if (bytes.empty()) return refuse(InvalidArgument("upgrade: refused: the binary is empty"), out);
  const std::string sha = sha256_hex(bytes);
  out->set_sha256(sha);
  if (!claimed.empty() && claimed != sha)
    return refuse(DataLoss("upgrade: refused: the binary arrived damaged (sha256 " + sha + ", the sender computed " +
                           claimed + ")"),
                  out);
  const auto &allowed = cfg_.upgrade_allowed_sha256;
  if (allowed.empty())
    return refuse(PermissionDenied("upgrade: refused: upgrade.allowed_sha256 of node " + cfg_.node_id +
                                   " is empty, so it installs no binary (sha256 " + sha + ")"),
                  out);
  if (std::find(allowed.begin(), allowed.end(), sha) == allowed.end())
    return refuse(PermissionDenied("upgrade: refused: sha256 " + sha + " is not in upgrade.allowed_sha256 of node " +
                                   cfg_.node_id),
                  out);
  if (!machine_.may_move(UpgradeStage::STAGED))
    return refuse(FailedPrecondition(std::string("upgrade: refused: an upgrade is under way on node ") + cfg_.node_id +
                                     " (" + upgrade_stage_name(machine_.stage()) + ")"),
                  out);
  Status st = make_dirs(dir(), 0700);
  if (!st.ok()) return refuse(st, out);
  const std::string path = dir() + "/ftpaird-" + sha.substr(0, 16);
  st = write_file_atomic(path, bytes, 0755);
  if (!st.ok()) return refuse(st, out);
  std::string version;
  st = binary_version(path, &version);
  if (!st.ok()) {
    ::unlink(path.c_str());
    return refuse(FailedPrecondition("upgrade: refused: the binary does not run on node " + cfg_.node_id + ": " +
                                     st.message()),
                  out);
  }
  {
    std::lock_guard<std::mutex> g(mu_);
    st = machine_.move(UpgradeStage::STAGED, "version " + version + " (sha256 " + sha.substr(0, 16) + "...) at " + path);
    if (st.ok()) {
      staged_path_ = path;
      staged_sha_ = sha;
      staged_version_ = version;
    }
  }
  if (!st.ok()) return refuse(st, out);
  machine_.count(UpgradeEvent::STAGED);
  out->set_ok(true);
  out->set_version(version);
  out->set_message("staged version " + version + " on node " + cfg_.node_id);
  fill(out->mutable_upgrade());
  return Status::Ok();
}

Status UpgradeCoordinator::abort(v1::UpgradeReply *out) {
  out->set_ok(true);
  if (host_->beside()) {
    // A new instance that has not taken over just goes.
    Status st = machine_.move(UpgradeStage::ABORTED, "aborted by request before taking over; exiting");
    if (!st.ok()) out->set_message(st.message());
    host_->request_exit();
    return Status::Ok();
  }
  Status st;
  {
    std::lock_guard<std::mutex> g(mu_);
    const UpgradeStage s = machine_.stage();
    if (host_->retiring() || s == UpgradeStage::HANDING_OVER || s == UpgradeStage::RETIRED)
      st = FailedPrecondition("abort: too late, the handover is under way");
    else
      st = machine_.move(UpgradeStage::ABORTED, "aborted by request: the new instance is stopped; this instance keeps its role");
  }
  if (!st.ok()) {
    out->set_ok(false);
    out->set_message(st.message());
    return st;
  }
  stop_beside("aborted by request");
  machine_.count(UpgradeEvent::ABORTED);
  return Status::Ok();
}

// ------------------------------------------------------------------ the active

Status UpgradeCoordinator::join(const v1::JoinRequest &req, v1::JoinReply *out) {
  out->set_ok(false);
  auto refuse_join = [&](Status st) {
    out->set_message(st.message());
    L.warn("join refused: {}", st.message());
    return st;
  };
  const fo::Role r = host_->role();
  if (r != fo::Role::ACTIVE)
    return refuse_join(FailedPrecondition("node " + cfg_.node_id + " is not active (" + fo::role_name(r) + ")"));
  const std::string standby = host_->peer_node_id();
  if (!standby.empty() && req.node_id() != standby)
    return refuse_join(PermissionDenied("node '" + req.node_id() + "' is not this pair's standby ('" + standby + "')"));
  ckpt::Engine &engine = host_->engine();
  Status st;
  switch (req.action()) {
    case v1::JoinRequest::ADD:
      if (!engine.in_sync())
        return refuse_join(FailedPrecondition("the standby is not in sync: an upgrade needs a protected pair"));
      st = engine.add_joiner(req.address());
      if (st.ok()) machine_.count(UpgradeEvent::JOINER_ADDED);
      break;
    case v1::JoinRequest::PROMOTE:
      st = engine.promote_joiner(req.address());
      if (st.ok()) machine_.count(UpgradeEvent::JOINER_PROMOTED);
      break;
    case v1::JoinRequest::DROP:
      engine.drop_joiner("dropped by node " + req.node_id());
      st = Status::Ok();
      break;
    default:
      st = InvalidArgument("join: unknown action " + std::to_string(int(req.action())));
  }
  if (!st.ok()) return refuse_join(st);
  out->set_ok(true);
  out->set_message("node " + cfg_.node_id + " (version " + ckpt::software_version() + ")");
  return Status::Ok();
}

grpc::Status UpgradeCoordinator::call_join(v1::JoinRequest::Action action, const std::string &addr,
                                           std::chrono::milliseconds timeout, v1::JoinReply *rep) {
  auto stub = v1::Peer::NewStub(host_->channel(cfg_.peer_grpc.str()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
  v1::JoinRequest jr;
  jr.set_action(action);
  jr.set_node_id(cfg_.node_id);
  jr.set_address(addr);
  if (action == v1::JoinRequest::ADD) jr.set_software_version(ckpt::software_version());  // the joiner's
  v1::JoinReply ignored;
  return stub->Join(&ctx, jr, rep ? rep : &ignored);
}

// ------------------------------------------------------------------ status

void UpgradeCoordinator::fill(v1::UpgradeStatus *u) {
  {
    std::lock_guard<std::mutex> g(mu_);
    const UpgradeMachine::View v = machine_.view();
    u->set_stage(upgrade_stage_name(v.stage));
    u->set_message(v.message);
    u->set_stage_age_seconds(v.age_seconds);
    u->set_staged_sha256(staged_sha_);
    u->set_staged_version(staged_version_);
    u->set_beside_pid(uint32_t(beside_pid_));
    u->set_beside_address(beside_addr_);
    u->set_beside_version(beside_version_);
    u->set_beside_in_sync(beside_in_sync_);
    u->set_beside_sync_progress(beside_progress_);
    u->set_took_over_from_pid(uint32_t(took_over_from_));
  }
  std::string path, sha;
  if (read_previous(&path, &sha)) u->set_previous_sha256(sha);
  const fo::Role r = host_->role();
  if (r == fo::Role::ACTIVE || r == fo::Role::DRAINING) {
    const ckpt::Engine &engine = host_->engine();
    ckpt::Engine::JoinerStatus j = engine.joiner_status();
    u->set_joiner_address(j.addr);
    u->set_joiner_version(j.version);
    u->set_joiner_in_sync(j.in_sync);
    u->set_joiner_sync_progress(j.progress);
    u->set_joiner_record_format(j.format);
    u->set_record_format(engine.record_format());
  } else {
    u->set_record_format(host_->applier().record_format());
  }
  u->set_health_window_ms(cfg_.upgrade_health_window_ms);
  u->set_sync_timeout_ms(cfg_.upgrade_sync_timeout_ms);
}

void UpgradeCoordinator::expose(Exposition &x) {
  v1::UpgradeStatus u;
  fill(&u);
  const UpgradeStage now = machine_.stage();
  x.family("ftpair_upgrade_stage", "gauge", "1 for this instance's in-service upgrade stage.");
  for (size_t i = 0; i < kUpgradeStageCount; i++) {
    const auto s = static_cast<UpgradeStage>(i);
    x.sample(s == now ? 1 : 0, {{"stage", upgrade_stage_name(s)}});
  }
  x.family("ftpair_upgrade_sync_progress", "gauge",
           "Full-sync progress (0..1) of the new instance during an upgrade: the one beside this standby, "
           "or the one joining this active.")
      .sample(u.joiner_address().empty() ? u.beside_sync_progress() : u.joiner_sync_progress());
  x.family("ftpair_upgrade_events_total", "counter", "In-service upgrade steps and refusals on this instance.");
  for (size_t i = 0; i < kUpgradeEventCount; i++) {
    const auto e = static_cast<UpgradeEvent>(i);
    if (const uint64_t n = machine_.events(e)) x.sample(double(n), {{"event", upgrade_event_name(e)}});
  }
}

}  // namespace ftpair
