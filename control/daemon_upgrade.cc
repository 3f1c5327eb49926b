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
 * was. */
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "control/daemon.h"
#include "control.grpc.pb.h"
#include "peer.grpc.pb.h"
#include "common/sha256.h"

namespace ftpair {

namespace {
using Clock = std::chrono::steady_clock;

int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}

std::string exit_text(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

int spawn(const std::string &path, char *const *argv, int fd, int as_fd, pid_t *pid);

// Runs `path --version` (5 s at most) and returns its first line.
Status binary_version(const std::string &path, std::string *version) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Internal(std::string("pipe: ") + std::strerror(errno));
  const char *argv[] = {path.c_str(), "--version", nullptr};
  pid_t pid = 0;
  int rc = spawn(path, const_cast<char *const *>(argv), fds[1], 1, &pid);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    return Internal("cannot run " + path + ": " + std::strerror(rc));
  }
  std::string out;
  const auto deadline = Clock::now() + std::chrono::seconds(5);
  char buf[512];
  while (Clock::now() < deadline && out.size() < 4096) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    out.append(buf, size_t(n));
  }
  close(fds[0]);
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() >= deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return FailedPrecondition("'" + path + " --version' did not finish within 5 s");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return FailedPrecondition("'" + path + " --version' failed (" + exit_text(status) + ")");
  *version = out.substr(0, out.find('\n'));
  if (version->empty()) return FailedPrecondition("'" + path + " --version' printed nothing");
  return Status::Ok();
}

/* posix_spawn (vfork-like): no copy of this process's page tables, which with DPDK's memory
 * would hold the address-space lock long enough to delay the heartbeat threads. `fd` becomes
 * `as_fd` in the child; every other descriptor from as_fd + 1 up is closed. */
int spawn(const std::string &path, char *const *argv, int fd, int as_fd, pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fd, as_fd);  // also clears close-on-exec when fd == as_fd
  posix_spawn_file_actions_addclosefrom_np(&fa, as_fd + 1);
  int rc = posix_spawn(pid, path.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc;
}

Status write_file(const std::string &path, const std::string &bytes, mode_t mode) {
  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return Internal("cannot write " + tmp + ": " + std::strerror(errno));
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::write(fd, bytes.data() + off, bytes.size() - off);
    if (n <= 0) {
      ::close(fd);
      ::unlink(tmp.c_str());
      return Internal("cannot write " + tmp + ": " + std::strerror(errno));
    }
    off += size_t(n);
  }
  if (::fsync(fd) != 0 || ::fchmod(fd, mode) != 0 || ::close(fd) != 0 || ::rename(tmp.c_str(), path.c_str()) != 0)
    return Internal("cannot install " + path + ": " + std::strerror(errno));
  return Status::Ok();
}

Status read_whole(const std::string &path, std::string *out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return NotFound("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return Status::Ok();
}
}  // namespace

Status ckpt_self_digest(std::string *hex) { return sha256_file("/proc/self/exe", hex); }

void Daemon::set_upgrade_stage(const std::string &stage, const std::string &message) {
  {
    std::lock_guard<std::mutex> g(up_mu_);
    if (stage != up_stage_) up_since_ns_ = steady_ns();
    up_stage_ = stage;
    up_message_ = message;
  }
  std::fprintf(stderr, "ftpaird: upgrade: %s: %s\n", stage.c_str(), message.c_str());
}

void Daemon::count_upgrade_event(const std::string &event) {
  std::lock_guard<std::mutex> g(up_mu_);
  upgrade_events_[event]++;
}

void Daemon::fill_upgrade(v1::UpgradeStatus *u) {
  {
    std::lock_guard<std::mutex> g(up_mu_);
    u->set_stage(up_stage_);
    u->set_message(up_message_);
    u->set_stage_age_seconds(up_since_ns_ ? double(steady_ns() - up_since_ns_) / 1e9 : 0);
    u->set_staged_sha256(staged_sha_);
    u->set_staged_version(staged_version_);
    u->set_beside_pid(uint32_t(beside_pid_));
    u->set_beside_address(beside_addr_);
    u->set_beside_version(beside_version_);
    u->set_beside_in_sync(beside_in_sync_);
    u->set_beside_sync_progress(beside_progress_);
    u->set_took_over_from_pid(uint32_t(took_over_from_));
  }
  std::string prev;
  if (read_whole(upgrade_dir() + "/previous", &prev).ok()) {
    std::istringstream is(prev);
    std::string path, sha;
    is >> path >> sha;
    u->set_previous_sha256(sha);
  }
  const fo::Role r = role();
  if (r == fo::Role::ACTIVE || r == fo::Role::DRAINING) {
    ckpt::Engine::JoinerStatus j = engine_->joiner_status();
    u->set_joiner_address(j.addr);
    u->set_joiner_version(j.version);
    u->set_joiner_in_sync(j.in_sync);
    u->set_joiner_sync_progress(j.progress);
    u->set_joiner_record_format(j.format);
    u->set_record_format(engine_->record_format());
  } else {
    u->set_record_format(applier_->record_format());
  }
  u->set_health_window_ms(cfg_.upgrade_health_window_ms);
  u->set_sync_timeout_ms(cfg_.upgrade_sync_timeout_ms);
}

// ------------------------------------------------------------------ stage

Status Daemon::stage_upgrade(const std::string &bytes, const std::string &claimed, v1::UpgradeReply *out) {
  auto refuse = [&](Status st) {
    count_upgrade_event("refused");
    out->set_ok(false);
    out->set_message(st.message());
    std::fprintf(stderr, "ftpaird: %s\n", st.message().c_str());
    return st;
  };
  if (bytes.empty()) return refuse(InvalidArgument("upgrade: refused: the binary is empty"));
  const std::string sha = sha256_hex(bytes);
  out->set_sha256(sha);
  if (!claimed.empty() && claimed != sha)
    return refuse(Status(Code::DATA_LOSS, "upgrade: refused: the binary arrived damaged (sha256 " + sha +
                                              ", the sender computed " + claimed + ")"));
  const auto &allowed = cfg_.upgrade_allowed_sha256;
  if (allowed.empty())
    return refuse(PermissionDenied("upgrade: refused: upgrade.allowed_sha256 of node " + cfg_.node_id +
                                   " is empty, so it installs no binary (sha256 " + sha + ")"));
  if (std::find(allowed.begin(), allowed.end(), sha) == allowed.end())
    return refuse(PermissionDenied("upgrade: refused: sha256 " + sha + " is not in upgrade.allowed_sha256 of node " +
                                   cfg_.node_id));
  ::mkdir(upgrade_dir().c_str(), 0700);
  const std::string path = upgrade_dir() + "/ftpaird-" + sha.substr(0, 16);
  Status st = write_file(path, bytes, 0755);
  if (!st.ok()) return refuse(st);
  std::string version;
  st = binary_version(path, &version);
  if (!st.ok()) {
    ::unlink(path.c_str());
    return refuse(FailedPrecondition("upgrade: refused: the binary does not run on node " + cfg_.node_id + ": " +
                                     st.message()));
  }
  {
    std::lock_guard<std::mutex> g(up_mu_);
    staged_path_ = path;
    staged_sha_ = sha;
    staged_version_ = version;
  }
  count_upgrade_event("staged");
  set_upgrade_stage("staged", "version " + version + " (sha256 " + sha.substr(0, 16) + "...) at " + path);
  out->set_ok(true);
  out->set_version(version);
  out->set_message("staged version " + version + " on node " + cfg_.node_id);
  fill_upgrade(out->mutable_upgrade());
  return Status::Ok();
}

// ------------------------------------------------------------------ start beside

Status Daemon::start_beside(bool rollback, v1::UpgradeReply *out) {
  auto refuse = [&](Status st) {
    count_upgrade_event("refused");
    out->set_ok(false);
    out->set_message(st.message());
    std::fprintf(stderr, "ftpaird: %s\n", st.message().c_str());
    return st;
  };
  if (beside_.load()) return refuse(FailedPrecondition("upgrade: refused: this instance is itself a new version that has not taken over"));
  if (retiring_.load()) return refuse(FailedPrecondition("upgrade: refused: this instance is handing over"));
  const fo::Role r = role();
  if (r == fo::Role::ACTIVE || r == fo::Role::DRAINING)
    return refuse(FailedPrecondition("upgrade: refused: node " + cfg_.node_id +
                                     " is active; upgrade the standby first, then switch over"));
  if (r != fo::Role::STANDBY_READY || !applier_->in_sync())
    return refuse(FailedPrecondition("upgrade: refused: the standby " + cfg_.node_id + " is out of sync (" +
                                     fo::role_name(r) + "); an upgrade needs a protected pair"));
  if (!launch_.config_path.size()) return refuse(FailedPrecondition("upgrade: refused: this instance was not started from a config file"));
  std::string path, sha;
  {
    std::lock_guard<std::mutex> g(up_mu_);
    if (beside_pid_ > 0)
      return refuse(FailedPrecondition("upgrade: refused: a new instance already runs beside this one (pid " +
                                       std::to_string(beside_pid_) + ")"));
    path = staged_path_;
    sha = staged_sha_;
  }
  if (rollback) {
    std::string prev;
    if (!read_whole(upgrade_dir() + "/previous", &prev).ok())
      return refuse(FailedPrecondition("rollback: refused: node " + cfg_.node_id + " has no previous version on record"));
    std::istringstream is(prev);
    is >> path >> sha;
  } else if (path.empty()) {
    return refuse(FailedPrecondition("upgrade: refused: nothing is staged on node " + cfg_.node_id));
  }
  // The file must still be what was checked (staging, or the binary that ran before).
  std::string found;
  Status ds = sha256_file(path, &found);
  if (!ds.ok()) return refuse(FailedPrecondition(std::string(rollback ? "rollback" : "upgrade") + ": refused: " + ds.message()));
  if (found != sha)
    return refuse(PermissionDenied(std::string(rollback ? "rollback" : "upgrade") + ": refused: " + path +
                                   " changed since it was checked: sha256 " + found + ", expected " + sha));
  // Keep this binary, so a rollback can return to it.
  ::mkdir(upgrade_dir().c_str(), 0700);
  if (!self_sha_.empty() && self_sha_ != sha) {
    const std::string mine = upgrade_dir() + "/ftpaird-" + self_sha_.substr(0, 16);
    std::string bytes;
    struct stat sb {};
    if (::stat(mine.c_str(), &sb) != 0) {
      Status rs = read_whole("/proc/self/exe", &bytes);
      if (rs.ok()) rs = write_file(mine, bytes, 0755);
      if (!rs.ok()) return refuse(rs);
    }
    Status ws = write_file(upgrade_dir() + "/previous", mine + " " + self_sha_ + "\n", 0600);
    if (!ws.ok()) return refuse(ws);
  }

  std::vector<std::string> args{path, "--config", launch_.config_path};
  for (const auto &o : launch_.overrides) args.insert(args.end(), {"--set", o});
  args.insert(args.end(), {"--upgrade-beside", "3", "--upgrade-parent", std::to_string(::getpid())});
  std::vector<char *> argv;
  for (auto &a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return refuse(Internal(std::string("upgrade: pipe: ") + std::strerror(errno)));
  set_upgrade_stage("starting", std::string(rollback ? "rolling back to " : "starting ") + path + " beside pid " +
                                    std::to_string(::getpid()));
  // fd 3 reports readiness; nothing else is inherited (the DPDK ports and gRPC sockets of
  // this instance stay its own).
  pid_t pid = 0;
  int rc = spawn(path, argv.data(), fds[1], 3, &pid);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    set_upgrade_stage("failed", "cannot run " + path + ": " + std::strerror(rc));
    return refuse(Internal("upgrade: cannot run " + path + ": " + std::strerror(rc)));
  }
  // Wait for "ready ADDR VERSION" (EAL, ports, gRPC up), or the child's end.
  std::string line;
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  char buf[256];
  while (Clock::now() < deadline && line.find('\n') == std::string::npos) {
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, 100) <= 0) continue;
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    line.append(buf, size_t(n));
  }
  close(fds[0]);
  std::istringstream is(line);
  std::string word, addr, version;
  is >> word >> addr >> version;
  if (word != "ready" || addr.empty()) {
    int status = 0;
    std::string how = "did not report ready within 20 s";
    if (waitpid(pid, &status, WNOHANG) == pid) {
      how = "exited during start (" + exit_text(status) + ")";
    } else {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    set_upgrade_stage("failed", "the new version " + how + "; this instance stays the standby");
    count_upgrade_event("failed_start");
    out->set_ok(false);
    out->set_message("upgrade: the new version " + how + " (see the node's log); node " + cfg_.node_id +
                     " is untouched");
    return Unavailable(out->message());
  }
  {
    std::lock_guard<std::mutex> g(up_mu_);
    beside_pid_ = pid;
    beside_addr_ = addr;
    beside_version_ = version;
    beside_in_sync_ = false;
    beside_progress_ = 0;
  }
  count_upgrade_event(rollback ? "rollback_started" : "started");
  set_upgrade_stage("syncing", "version " + version + " runs beside this one as pid " + std::to_string(pid) + " at " +
                                   addr + "; it joins the active for a full sync");
  if (beside_thread_.joinable()) beside_thread_.join();
  beside_stop_.store(false);
  beside_thread_ = std::thread([this] { supervise_beside(); });
  out->set_ok(true);
  out->set_version(version);
  out->set_sha256(sha);
  out->set_message("started version " + version + " beside node " + cfg_.node_id + " (pid " + std::to_string(pid) + ")");
  return Status::Ok();
}

// Polls the new instance (sync progress) and reaps it if it dies before taking over.
void Daemon::supervise_beside() {
  std::string addr;
  int pid;
  {
    std::lock_guard<std::mutex> g(up_mu_);
    addr = beside_addr_;
    pid = beside_pid_;
  }
  auto stub = v1::Control::NewStub(peer_channel(addr));
  while (!beside_stop_.load()) {
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, WNOHANG) == pid) {
      bool expected;
      {
        std::lock_guard<std::mutex> g(up_mu_);
        if (beside_pid_ == pid) beside_pid_ = 0;
        expected = up_stage_ == "retired" || up_stage_ == "aborted";
      }
      if (!expected) {
        count_upgrade_event("beside_exited");
        set_upgrade_stage("failed", "the new version (pid " + std::to_string(pid) + ") exited before taking over (" +
                                        exit_text(status) + "); this instance stays the standby");
      }
      return;
    }
    if (retiring_.load()) {  // handed over: the new instance is no longer ours to watch
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(500));
    v1::StatusRequest req;
    v1::StatusReply st;
    if (stub->Status(&ctx, req, &st).ok()) {
      bool now_in_sync = st.sync().in_sync();
      bool changed;
      {
        std::lock_guard<std::mutex> g(up_mu_);
        changed = now_in_sync && !beside_in_sync_;
        beside_in_sync_ = now_in_sync;
        beside_progress_ = now_in_sync ? 1.0 : st.sync().full_sync_progress();
      }
      if (changed) set_upgrade_stage("in_sync", "the new version at " + addr + " is in sync with the active");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void Daemon::stop_beside(const std::string &why) {
  int pid;
  std::string addr;
  {
    std::lock_guard<std::mutex> g(up_mu_);
    pid = beside_pid_;
    addr = beside_addr_;
  }
  if (pid > 0) {
    kill(pid, SIGTERM);
    const auto deadline = Clock::now() + std::chrono::seconds(3);
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0 && Clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (kill(pid, 0) == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
    }
    std::lock_guard<std::mutex> g(up_mu_);
    if (beside_pid_ == pid) beside_pid_ = 0;
  }
  // The active may still hold a stream to it.
  if (cfg_.peer_grpc.set() && !addr.empty()) call_join(v1::JoinRequest::DROP, addr, std::chrono::seconds(1), nullptr);
  std::fprintf(stderr, "ftpaird: upgrade: stopped the new instance (pid %d): %s\n", pid, why.c_str());
}

grpc::Status Daemon::call_join(v1::JoinRequest::Action action, const std::string &addr,
                               std::chrono::milliseconds timeout, v1::JoinReply *rep) {
  auto stub = v1::Peer::NewStub(peer_channel());
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

// ------------------------------------------------------------------ the new instance

// Beside: asks the active for a Sync stream to this instance.
void Daemon::join_active() {
  std::string addr = cfg_.grpc.host + ":" + std::to_string(grpc_port_);
  std::string last;
  const auto deadline = Clock::now() + std::chrono::seconds(15);
  while (!beside_stop_.load() && Clock::now() < deadline) {
    v1::JoinReply rep;
    grpc::Status gs = call_join(v1::JoinRequest::ADD, addr, std::chrono::seconds(1), &rep);
    if (gs.ok() && rep.ok()) {
      set_upgrade_stage("syncing", "the active " + cfg_.peer_grpc.str() + " streams to this instance: " + rep.message());
      return;
    }
    last = gs.ok() ? rep.message() : gs.error_message();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  if (beside_stop_.load()) return;
  set_upgrade_stage("failed", "the active did not take this instance: " + last + "; exiting");
  exit_requested_.store(true);
}

Status Daemon::take_over(v1::UpgradeReply *out) {
  if (!beside_.load()) return FailedPrecondition("take over: this instance already serves its role");
  if (!applier_->in_sync()) return FailedPrecondition("take over: refused: this instance is not in sync with the active");
  // The old instance has just released the configured ports.
  Status st;
  const auto deadline = Clock::now() + std::chrono::seconds(3);
  uint16_t port = 0;
  do {
    st = open_grpc(cfg_.grpc, &grpc_final_, &port);
    if (st.ok()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (Clock::now() < deadline);
  if (!st.ok()) return Unavailable("take over: " + st.message());
  if (cfg_.metrics.set()) {
    http_.stop();
    Status hs;
    do {
      hs = http_.start(cfg_.metrics);
      if (hs.ok()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } while (Clock::now() < deadline);
    if (!hs.ok()) std::fprintf(stderr, "ftpaird: take over: /metrics: %s\n", hs.message().c_str());
  }
  grpc_port_ = port;
  serving_state_ = -1;  // push the health state to the new server too
  took_over_from_ = launch_.parent_pid;
  beside_.store(false);
  write_pidfile();
  // A fresh silence window: the old instance heard the active until a moment ago.
  if (monitor_) {
    monitor_->assume_heard();
    monitor_->start();
  }
  count_upgrade_event("took_over");
  // Test hook (worker.test_hooks): a new version whose dataplane dies soon after it took
  // over, for the upgrade's automatic rollback test.
  if (const char *e = std::getenv("FTPAIR_TEST_STALL_AFTER_TAKEOVER_MS"); e && test_hooks_.load()) {
    const long ms = std::strtol(e, nullptr, 10);
    std::thread([this, ms] {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      if (!exit_requested_.load()) set_worker_stall(true);
    }).detach();
  }
  set_upgrade_stage("took_over", "took the standby role and the ports over from pid " + std::to_string(launch_.parent_pid));
  out->set_ok(true);
  out->set_version(ckpt::software_version());
  out->set_message("node " + cfg_.node_id + " now runs version " + ckpt::software_version() + " as the standby");
  return Status::Ok();
}

// ------------------------------------------------------------------ hand over

void Daemon::run_handover() {
  std::string addr;
  int pid;
  {
    std::lock_guard<std::mutex> g(up_mu_);
    addr = beside_addr_;
    pid = beside_pid_;
  }
  const auto t0 = Clock::now();
  set_upgrade_stage("handing_over", "giving the standby role to pid " + std::to_string(pid) + " at " + addr);
  retiring_.store(true);  // from here this instance never promotes or takes over
  if (monitor_) monitor_->stop();
  auto restore = [&](const std::string &why) {
    retiring_.store(false);
    if (monitor_) {
      monitor_->assume_heard();
      monitor_->start();
    }
    count_upgrade_event("handover_failed");
    set_upgrade_stage("failed", "handover failed: " + why + "; this instance stays the standby");
  };
  // 1. The active makes the new instance's stream the standby's (and closes ours).
  {
    v1::JoinReply rep;
    grpc::Status gs = call_join(v1::JoinRequest::PROMOTE, addr, std::chrono::seconds(3), &rep);
    if (!gs.ok() || !rep.ok()) return restore("the active refused: " + (gs.ok() ? rep.message() : gs.error_message()));
  }
  // 2. Release the configured ports: gRPC, /metrics (the fast-beat port went with the monitor).
  if (grpc_) grpc_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  if (grpc_final_) grpc_final_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  http_.stop();
  // 3. The new instance takes them, with the role.
  auto stub = v1::Control::NewStub(peer_channel(addr));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::UpgradeRequest req;
  req.set_action(v1::UpgradeRequest::TAKE_OVER);
  v1::UpgradeReply rep;
  grpc::Status gs = stub->Upgrade(&ctx, req, &rep);
  if (!gs.ok() || !rep.ok()) {
    const std::string why = gs.ok() ? rep.message() : gs.error_message();
    // Back to how it was: the new instance goes, this one listens again, and the active
    // reconnects to it (a full sync).
    stop_beside("it could not take over: " + why);
    uint16_t port = 0;
    Status ls = open_grpc(cfg_.grpc, &grpc_final_, &port);
    if (ls.ok()) grpc_port_ = port;
    else std::fprintf(stderr, "ftpaird: upgrade: cannot listen again: %s\n", ls.message().c_str());
    if (cfg_.metrics.set()) {
      Status hs = http_.start(cfg_.metrics);
      if (!hs.ok()) std::fprintf(stderr, "ftpaird: upgrade: cannot serve /metrics again: %s\n", hs.message().c_str());
    }
    serving_state_ = -1;
    return restore("the new instance did not take over: " + why);
  }
  // 4. The service manager follows the new main process; this one exits.
  if (launch_.notify) launch_.notify("MAINPID=" + std::to_string(pid));
  {
    std::lock_guard<std::mutex> g(up_mu_);
    beside_pid_ = 0;  // not ours any more
  }
  count_upgrade_event("handed_over");
  set_upgrade_stage("retired", "pid " + std::to_string(pid) + " (version " + rep.version() + ") is the standby now; exiting (" +
                                   std::to_string(int(std::chrono::duration<double, std::milli>(Clock::now() - t0).count())) +
                                   " ms)");
  exit_requested_.store(true);
}

// ------------------------------------------------------------------ requests

Status Daemon::upgrade(const v1::UpgradeRequest &req, v1::UpgradeReply *out) {
  Status st = Status::Ok();
  switch (req.action()) {
    case v1::UpgradeRequest::STATUS:
      out->set_ok(true);
      break;
    case v1::UpgradeRequest::START_BESIDE:
      st = start_beside(req.rollback(), out);
      break;
    case v1::UpgradeRequest::HANDOVER: {
      std::string addr;
      bool in_sync;
      int pid;
      {
        std::lock_guard<std::mutex> g(up_mu_);
        addr = beside_addr_;
        in_sync = beside_in_sync_;
        pid = beside_pid_;
      }
      if (retiring_.load()) {
        st = FailedPrecondition("handover: already handing over");
      } else if (pid <= 0) {
        st = FailedPrecondition("handover: refused: no new instance runs beside node " + cfg_.node_id);
      } else if (!in_sync) {
        st = FailedPrecondition("handover: refused: the new instance at " + addr + " is not in sync yet");
      } else if (role() != fo::Role::STANDBY_READY) {
        st = FailedPrecondition(std::string("handover: refused: this instance is ") + fo::role_name(role()) +
                                ", not a standby in sync");
      } else {
        if (handover_thread_.joinable()) handover_thread_.join();
        // A thread: the handover shuts down the server this request arrived on.
        handover_thread_ = std::thread([this] { run_handover(); });
        out->set_ok(true);
        out->set_message("handing the standby role of node " + cfg_.node_id + " over to pid " + std::to_string(pid));
      }
      if (!st.ok()) out->set_message(st.message());
      break;
    }
    case v1::UpgradeRequest::ABORT:
      if (beside_.load()) {
        set_upgrade_stage("aborted", "aborted by request before taking over; exiting");
        exit_requested_.store(true);
      } else {
        {
          std::lock_guard<std::mutex> g(up_mu_);
          if (up_stage_ != "retired" && up_stage_ != "handing_over") up_stage_ = "aborted";
        }
        if (retiring_.load()) {
          st = FailedPrecondition("abort: too late, the handover is under way");
          break;
        }
        stop_beside("aborted by request");
        count_upgrade_event("aborted");
        set_upgrade_stage("aborted", "the new instance was stopped; this instance keeps its role");
      }
      out->set_ok(true);
      break;
    case v1::UpgradeRequest::TAKE_OVER:
      st = take_over(out);
      if (!st.ok()) out->set_message(st.message());
      break;
    default:
      st = InvalidArgument("upgrade: unknown action " + std::to_string(int(req.action())));
  }
  fill_upgrade(out->mutable_upgrade());
  return st;
}

Status Daemon::join(const v1::JoinRequest &req, v1::JoinReply *out) {
  out->set_ok(false);
  auto refuse = [&](Status st) {
    out->set_message(st.message());
    std::fprintf(stderr, "ftpaird: join refused: %s\n", st.message().c_str());
    return st;
  };
  if (role() != fo::Role::ACTIVE)
    return refuse(FailedPrecondition("node " + cfg_.node_id + " is not active (" + fo::role_name(role()) + ")"));
  const std::string standby = monitor_ ? monitor_->last_peer_beat().node_id() : "";
  if (!standby.empty() && req.node_id() != standby)
    return refuse(PermissionDenied("node '" + req.node_id() + "' is not this pair's standby ('" + standby + "')"));
  Status st;
  switch (req.action()) {
    case v1::JoinRequest::ADD:
      if (!engine_->in_sync())
        return refuse(FailedPrecondition("the standby is not in sync: an upgrade needs a protected pair"));
      st = engine_->add_joiner(req.address());
      if (st.ok()) count_upgrade_event("joiner_added");
      break;
    case v1::JoinRequest::PROMOTE:
      st = engine_->promote_joiner(req.address());
      if (st.ok()) count_upgrade_event("joiner_promoted");
      break;
    case v1::JoinRequest::DROP:
      engine_->drop_joiner("dropped by node " + req.node_id());
      st = Status::Ok();
      break;
    default:
      st = InvalidArgument("join: unknown action " + std::to_string(int(req.action())));
  }
  if (!st.ok()) return refuse(st);
  out->set_ok(true);
  out->set_message("node " + cfg_.node_id + " (version " + ckpt::software_version() + ")");
  return Status::Ok();
}

}  // namespace ftpair
