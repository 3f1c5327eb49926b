/* The two instances of the node being upgraded. The old one starts the new binary beside
 * itself, watches it reach sync and hands its role and ports over; the new one joins the
 * active and takes over when told. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>

#include "checkpoint/version.h"
#include "common/clock.h"
#include "common/file.h"
#include "common/log.h"
#include "common/process.h"
#include "common/sha256.h"
#include "control.grpc.pb.h"
#include "control/upgrade.h"

namespace ftpair {

namespace {

auto &L = log::component("upgrade");

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Reads from `fd` up to a newline, the end of the stream, or `timeout`.
std::string read_line(int fd, milliseconds timeout) {
  std::string line;
  const auto deadline = Clock::now() + timeout;
  char buf[256];
  while (Clock::now() < deadline && line.find('\n') == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n <= 0) break;
    line.append(buf, size_t(n));
  }
  return line;
}

// SIGTERM, SIGKILL when it is still there after `grace`; reaps it.
void end_process(pid_t pid, milliseconds grace) {
  ::kill(pid, SIGTERM);
  const auto deadline = Clock::now() + grace;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0 && Clock::now() < deadline) std::this_thread::sleep_for(milliseconds(20));
  if (::kill(pid, 0) == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
  }
}

// `attempt` every 20 ms until it succeeds or `deadline` passes; its last Status.
Status retry_until(Clock::time_point deadline, const std::function<Status()> &attempt) {
  Status st;
  do {
    st = attempt();
    if (st.ok()) break;
    std::this_thread::sleep_for(milliseconds(20));
  } while (Clock::now() < deadline);
  return st;
}

}  // namespace

// ------------------------------------------------------------------ the old instance: start beside

Status UpgradeCoordinator::start_beside(bool rollback, v1::UpgradeReply *out) {
  if (host_->beside())
    return refuse(FailedPrecondition("upgrade: refused: this instance is itself a new version that has not taken over"), out);
  if (host_->retiring()) return refuse(FailedPrecondition("upgrade: refused: this instance is handing over"), out);
  const fo::Role r = host_->role();
  if (r == fo::Role::ACTIVE || r == fo::Role::DRAINING)
    return refuse(FailedPrecondition("upgrade: refused: node " + cfg_.node_id +
                                     " is active; upgrade the standby first, then switch over"),
                  out);
  if (r != fo::Role::STANDBY_READY || !host_->applier().in_sync())
    return refuse(FailedPrecondition("upgrade: refused: the standby " + cfg_.node_id + " is out of sync (" +
                                     fo::role_name(r) + "); an upgrade needs a protected pair"),
                  out);
  if (launch_.config_path.empty())
    return refuse(FailedPrecondition("upgrade: refused: this instance was not started from a config file"), out);
  {
    std::lock_guard<std::mutex> g(mu_);
    if (beside_pid_ > 0)
      return refuse(FailedPrecondition("upgrade: refused: a new instance already runs beside this one (pid " +
                                       std::to_string(beside_pid_) + ")"),
                    out);
  }
  if (!machine_.may_move(UpgradeStage::STARTING))
    return refuse(FailedPrecondition(std::string("upgrade: refused: node ") + cfg_.node_id + " is " +
                                     upgrade_stage_name(machine_.stage())),
                  out);
  std::string path, sha;
  Status st = pick_binary(rollback, &path, &sha);
  if (st.ok()) st = keep_running_binary(sha);
  if (!st.ok()) return refuse(st, out);
  pid_t pid = 0;
  std::string addr, version;
  st = spawn_beside(path, rollback, &pid, &addr, &version, out);
  if (!st.ok()) return st;
  {
    std::lock_guard<std::mutex> g(mu_);
    beside_pid_ = pid;
    beside_addr_ = addr;
    beside_version_ = version;
    beside_in_sync_ = false;
    beside_progress_ = 0;
    st = machine_.move(UpgradeStage::SYNCING, "version " + version + " runs beside this one as pid " +
                                                  std::to_string(pid) + " at " + addr +
                                                  "; it joins the active for a full sync");
  }
  if (!st.ok()) {  // aborted while it started: it goes too
    stop_beside("the upgrade was aborted while it started");
    return refuse(st, out);
  }
  machine_.count(rollback ? UpgradeEvent::ROLLBACK_STARTED : UpgradeEvent::STARTED);
  if (beside_thread_.joinable()) beside_thread_.join();
  stop_.store(false);
  beside_thread_ = std::thread([this] { supervise_beside(); });
  out->set_ok(true);
  out->set_version(version);
  out->set_sha256(sha);
  out->set_message("started version " + version + " beside node " + cfg_.node_id + " (pid " + std::to_string(pid) + ")");
  return Status::Ok();
}

// The staged binary, or for a rollback the one that ran before; it must still be what was checked.
Status UpgradeCoordinator::pick_binary(bool rollback, std::string *path, std::string *sha) {
  const std::string what = rollback ? "rollback" : "upgrade";
  {
    std::lock_guard<std::mutex> g(mu_);
    *path = staged_path_;
    *sha = staged_sha_;
  }
  if (rollback) {
    if (!read_previous(path, sha))
      return FailedPrecondition("rollback: refused: node " + cfg_.node_id + " has no previous version on record");
  } else if (path->empty()) {
    return FailedPrecondition("upgrade: refused: nothing is staged on node " + cfg_.node_id);
  }
  std::string found;
  Status ds = sha256_file(*path, &found);
  if (!ds.ok()) return FailedPrecondition(what + ": refused: " + ds.message());
  if (found != *sha)
    return PermissionDenied(what + ": refused: " + *path + " changed since it was checked: sha256 " + found +
                            ", expected " + *sha);
  return Status::Ok();
}

// Keeps a copy of the running binary and records it as <dir>/previous, so a rollback can return to it.
Status UpgradeCoordinator::keep_running_binary(const std::string &next_sha) {
  Status st = make_dirs(dir(), 0700);
  if (!st.ok()) return st;
  const std::string self = host_->self_sha256();
  if (self.empty() || self == next_sha) return Status::Ok();
  const std::string mine = dir() + "/ftpaird-" + self.substr(0, 16);
  if (::access(mine.c_str(), F_OK) != 0) {
    std::string bytes;
    st = read_file("/proc/self/exe", &bytes);
    if (st.ok()) st = write_file_atomic(mine, bytes, 0755);
    if (!st.ok()) return st;
  }
  return write_file_atomic(dir() + "/previous", mine + " " + self + "\n", 0600);
}

/* Starts `path` beside this instance and waits for its "ready ADDR VERSION" line (EAL, ports
 * and gRPC up). On failure the stage is failed, out says why, and nothing else changed. */
Status UpgradeCoordinator::spawn_beside(const std::string &path, bool rollback, pid_t *pid, std::string *addr,
                                        std::string *version, v1::UpgradeReply *out) {
  std::vector<std::string> args{path, "--config", launch_.config_path};
  for (const auto &o : launch_.overrides) args.insert(args.end(), {"--set", o});
  args.insert(args.end(), {"--upgrade-beside", "3", "--upgrade-parent", std::to_string(::getpid())});
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return refuse(Internal(std::string("upgrade: pipe: ") + std::strerror(errno)), out);
  Status st = machine_.move(UpgradeStage::STARTING, std::string(rollback ? "rolling back to " : "starting ") + path +
                                                        " beside pid " + std::to_string(::getpid()));
  if (!st.ok()) {
    ::close(fds[0]);
    ::close(fds[1]);
    return refuse(st, out);
  }
  // fd 3 reports readiness; nothing else is inherited (the DPDK ports and gRPC sockets of
  // this instance stay its own).
  st = spawn(path, args, fds[1], 3, pid);
  ::close(fds[1]);
  if (!st.ok()) {
    ::close(fds[0]);
    // starting -> failed; refused only when aborted meanwhile (logged and counted).
    (void)machine_.move(UpgradeStage::FAILED, st.message());
    return refuse(Internal("upgrade: " + st.message()), out);
  }
  std::istringstream is(read_line(fds[0], milliseconds(20000)));
  ::close(fds[0]);
  std::string word;
  is >> word >> *addr >> *version;
  if (word == "ready" && !addr->empty()) return Status::Ok();
  int status = 0;
  std::string how = "did not report ready within 20 s";
  if (::waitpid(*pid, &status, WNOHANG) == *pid) {
    how = "exited during start (" + exit_text(status) + ")";
  } else {
    ::kill(*pid, SIGKILL);
    ::waitpid(*pid, &status, 0);
  }
  // A refused move (aborted meanwhile) is logged and counted by the machine.
  (void)machine_.move(UpgradeStage::FAILED, "the new version " + how + "; this instance stays the standby");
  machine_.count(UpgradeEvent::FAILED_START);
  out->set_ok(false);
  out->set_message("upgrade: the new version " + how + " (see the node's log); node " + cfg_.node_id + " is untouched");
  return Unavailable(out->message());
}

// Polls the new instance (sync progress) and reaps it if it dies before taking over.
void UpgradeCoordinator::supervise_beside() {
  const auto [pid, addr] = beside_now();
  auto stub = v1::Control::NewStub(host_->channel(addr));
  while (!stop_.load()) {
    int status = 0;
    if (pid > 0 && ::waitpid(pid, &status, WNOHANG) == pid) {
      std::lock_guard<std::mutex> g(mu_);
      if (beside_pid_ == pid) beside_pid_ = 0;
      const UpgradeStage s = machine_.stage();
      if (s != UpgradeStage::RETIRED && s != UpgradeStage::ABORTED) {
        machine_.count(UpgradeEvent::BESIDE_EXITED);
        // Allowed from every stage that has a new instance; a refusal is logged and counted.
        (void)machine_.move(UpgradeStage::FAILED, "the new version (pid " + std::to_string(pid) +
                                                      ") exited before taking over (" + exit_text(status) +
                                                      "); this instance stays the standby");
      }
      return;
    }
    if (host_->retiring()) {  // handed over: the new instance is no longer ours to watch
      std::this_thread::sleep_for(milliseconds(50));
      continue;
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(500));
    v1::StatusRequest req;
    v1::StatusReply st;
    if (stub->Status(&ctx, req, &st).ok()) {
      const bool now_in_sync = st.sync().in_sync();
      std::lock_guard<std::mutex> g(mu_);
      const bool reached = now_in_sync && !beside_in_sync_;
      beside_in_sync_ = now_in_sync;
      beside_progress_ = now_in_sync ? 1.0 : st.sync().full_sync_progress();
      // Only a syncing instance moves on (not one that failed a handover meanwhile).
      if (reached)
        (void)machine_.move_from(UpgradeStage::SYNCING, UpgradeStage::IN_SYNC,
                                 "the new version at " + addr + " is in sync with the active");
    }
    std::this_thread::sleep_for(milliseconds(100));
  }
}

void UpgradeCoordinator::stop_beside(const std::string &why) {
  const auto [pid, addr] = beside_now();
  if (pid > 0) {
    end_process(pid, milliseconds(3000));
    std::lock_guard<std::mutex> g(mu_);
    if (beside_pid_ == pid) beside_pid_ = 0;
  }
  // The active may still hold a stream to it (best effort: the stream ends with the instance).
  if (cfg_.peer_grpc.set() && !addr.empty()) call_join(v1::JoinRequest::DROP, addr, milliseconds(1000), nullptr);
  if (pid > 0) L.info("stopped the new instance (pid {}): {}", pid, why);
}

// ------------------------------------------------------------------ the old instance: hand over

Status UpgradeCoordinator::handover(v1::UpgradeReply *out) {
  Status st;
  pid_t pid;
  {
    std::lock_guard<std::mutex> g(mu_);
    pid = beside_pid_;
    if (host_->retiring() || machine_.stage() == UpgradeStage::HANDING_OVER) {
      st = FailedPrecondition("handover: already handing over");
    } else if (pid <= 0) {
      st = FailedPrecondition("handover: refused: no new instance runs beside node " + cfg_.node_id);
    } else if (!beside_in_sync_) {
      st = FailedPrecondition("handover: refused: the new instance at " + beside_addr_ + " is not in sync yet");
    } else if (host_->role() != fo::Role::STANDBY_READY) {
      st = FailedPrecondition(std::string("handover: refused: this instance is ") + fo::role_name(host_->role()) +
                              ", not a standby in sync");
    } else {
      st = machine_.move(UpgradeStage::HANDING_OVER,
                         "giving the standby role to pid " + std::to_string(pid) + " at " + beside_addr_);
    }
    if (st.ok()) host_->set_retiring(true);  // from here this instance never promotes or takes over
  }
  if (!st.ok()) {
    L.warn("{}", st.message());
    out->set_message(st.message());
    return st;
  }
  if (handover_thread_.joinable()) handover_thread_.join();
  // A thread: the handover shuts down the server this request arrived on.
  handover_thread_ = std::thread([this] { run_handover(); });
  out->set_ok(true);
  out->set_message("handing the standby role of node " + cfg_.node_id + " over to pid " + std::to_string(pid));
  return Status::Ok();
}

void UpgradeCoordinator::run_handover() {
  const auto [pid, addr] = beside_now();
  const int64_t t0 = mono_ns();
  host_->stop_monitor();
  // 1. The active makes the new instance's stream the standby's (and closes ours).
  {
    v1::JoinReply rep;
    grpc::Status gs = call_join(v1::JoinRequest::PROMOTE, addr, milliseconds(3000), &rep);
    if (!gs.ok() || !rep.ok())
      return restore_after_handover("the active refused: " + (gs.ok() ? rep.message() : gs.error_message()), false);
  }
  // 2. Release the configured ports: gRPC, /metrics (the fast-beat port went with the monitor).
  host_->release_ports();
  // 3. The new instance takes them, with the role.
  auto stub = v1::Control::NewStub(host_->channel(addr));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + milliseconds(10000));
  v1::UpgradeRequest req;
  req.set_action(v1::UpgradeRequest::TAKE_OVER);
  v1::UpgradeReply rep;
  grpc::Status gs = stub->Upgrade(&ctx, req, &rep);
  if (!gs.ok() || !rep.ok()) {
    const std::string why = gs.ok() ? rep.message() : gs.error_message();
    stop_beside("it could not take over: " + why);
    return restore_after_handover("the new instance did not take over: " + why, true);
  }
  // 4. The service manager follows the new main process; this one exits.
  if (launch_.notify) launch_.notify("MAINPID=" + std::to_string(pid));
  {
    std::lock_guard<std::mutex> g(mu_);
    beside_pid_ = 0;  // not ours any more
  }
  machine_.count(UpgradeEvent::HANDED_OVER);
  (void)machine_.move(UpgradeStage::RETIRED,  // handing_over -> retired: always allowed
                      "pid " + std::to_string(pid) + " (version " + rep.version() + ") is the standby now; exiting (" +
                          std::to_string((mono_ns() - t0) / 1000000) + " ms)");
  host_->request_exit();
}

/* Back to how it was: this instance listens again when it had let its ports go (the active
 * then reconnects to it, a full sync), and keeps its role. */
void UpgradeCoordinator::restore_after_handover(const std::string &why, bool listen_again) {
  if (listen_again) {
    Status ls = host_->listen_configured_grpc();
    if (!ls.ok()) L.error("cannot listen again: {}", ls.message());
    Status hs = host_->serve_configured_metrics();
    if (!hs.ok()) L.error("cannot serve /metrics again: {}", hs.message());
  }
  host_->set_retiring(false);
  host_->start_monitor();
  machine_.count(UpgradeEvent::HANDOVER_FAILED);
  (void)machine_.move(UpgradeStage::FAILED,  // from handing_over or failed: always allowed
                      "handover failed: " + why + "; this instance stays the standby");
}

// ------------------------------------------------------------------ the new instance

Status UpgradeCoordinator::start_as_new_instance() {
  const std::string parent = std::to_string(launch_.parent_pid);
  // Never active and not yet the standby: it only takes the active's checkpoints.
  Status st = host_->become_standby("upgrade: started beside pid " + parent);
  if (!st.ok()) return st;
  st = machine_.move(UpgradeStage::SYNCING, "started beside pid " + parent + ", joining the active");
  if (!st.ok()) return st;
  const std::string line = "ready " + cfg_.grpc.host + ":" + std::to_string(host_->grpc_port()) + " " +
                           ckpt::software_version() + "\n";
  const bool reported = ::write(launch_.beside_fd, line.data(), line.size()) == ssize_t(line.size());
  ::close(launch_.beside_fd);
  if (!reported) return Unavailable("upgrade: cannot report to the instance that started this one");
  join_thread_ = std::thread([this] { join_active(); });
  return Status::Ok();
}

// Asks the active for a Sync stream to this instance.
void UpgradeCoordinator::join_active() {
  const std::string addr = cfg_.grpc.host + ":" + std::to_string(host_->grpc_port());
  std::string last;
  const auto deadline = Clock::now() + milliseconds(15000);
  while (!stop_.load() && Clock::now() < deadline) {
    v1::JoinReply rep;
    grpc::Status gs = call_join(v1::JoinRequest::ADD, addr, milliseconds(1000), &rep);
    if (gs.ok() && rep.ok()) {
      // Refused only when aborted meanwhile (logged and counted): the instance exits anyway.
      (void)machine_.move(UpgradeStage::SYNCING,
                          "the active " + cfg_.peer_grpc.str() + " streams to this instance: " + rep.message());
      return;
    }
    last = gs.ok() ? rep.message() : gs.error_message();
    std::this_thread::sleep_for(milliseconds(200));
  }
  if (stop_.load()) return;
  (void)machine_.move(UpgradeStage::FAILED, "the active did not take this instance: " + last + "; exiting");
  host_->request_exit();
}

Status UpgradeCoordinator::take_over(v1::UpgradeReply *out) {
  if (!host_->beside()) return FailedPrecondition("take over: this instance already serves its role");
  if (!host_->applier().in_sync())
    return FailedPrecondition("take over: refused: this instance is not in sync with the active");
  if (!machine_.may_move(UpgradeStage::TOOK_OVER))
    return FailedPrecondition(std::string("take over: refused: this instance is ") + upgrade_stage_name(machine_.stage()));
  // The old instance has just released the configured ports.
  const auto deadline = Clock::now() + milliseconds(3000);
  Status st = retry_until(deadline, [this] { return host_->listen_configured_grpc(); });
  if (!st.ok()) return Unavailable("take over: " + st.message());
  Status hs = retry_until(deadline, [this] { return host_->serve_configured_metrics(); });
  if (!hs.ok()) L.warn("take over: /metrics: {}", hs.message());
  {
    std::lock_guard<std::mutex> g(mu_);
    took_over_from_ = launch_.parent_pid;
  }
  host_->set_beside(false);
  host_->write_pidfile();
  // A fresh silence window: the old instance heard the active until a moment ago.
  host_->start_monitor();
  machine_.count(UpgradeEvent::TOOK_OVER);
  // Test hook (worker.test_hooks): a new version whose dataplane dies soon after it took
  // over, for the upgrade's automatic rollback test.
  if (const char *e = std::getenv("FTPAIR_TEST_STALL_AFTER_TAKEOVER_MS"); e && host_->test_hooks()) {
    const long ms = std::strtol(e, nullptr, 10);
    UpgradeHost *host = host_.get();
    std::thread([host, ms] {
      std::this_thread::sleep_for(milliseconds(ms));
      if (!host->exit_requested()) host->set_worker_stall(true);
    }).detach();
  }
  st = machine_.move(UpgradeStage::TOOK_OVER,
                     "took the standby role and the ports over from pid " + std::to_string(launch_.parent_pid));
  if (!st.ok()) return st;
  out->set_ok(true);
  out->set_version(ckpt::software_version());
  out->set_message("node " + cfg_.node_id + " now runs version " + ckpt::software_version() + " as the standby");
  return Status::Ok();
}

}  // namespace ftpair
