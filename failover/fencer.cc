#include "failover/fencer.h"
#include <dirent.h>

#include <signal.h>
#include <sys/types.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

namespace ftpair::fo {

namespace {

using Clock = std::chrono::steady_clock;

// "none": succeeds without doing anything, and only when the operator allowed it.
class NoneFencer final : public Fencer {
 public:
  const char *kind() const override { return "none"; }
  Status fence(std::chrono::milliseconds) override { return Status::Ok(); }
};

// Reads the peer's pid from a pidfile and SIGKILLs it; lab only (both nodes on one host).
class ProcessFencer final : public Fencer {
 public:
  explicit ProcessFencer(std::string pidfile) : pidfile_(std::move(pidfile)) {}
  const char *kind() const override { return "process"; }
  Status fence(std::chrono::milliseconds deadline) override {
    std::ifstream f(pidfile_);
    long pid = 0;
    if (!(f >> pid) || pid <= 1) {
      // No pidfile: nothing runs under it (the lab removes it when a node stops).
      return Status::Ok();
    }
    if (::kill(static_cast<pid_t>(pid), SIGKILL) != 0 && errno != ESRCH)
      return Unavailable("fence: kill(" + std::to_string(pid) + "): " + std::strerror(errno));
    auto end = Clock::now() + deadline;
    while (Clock::now() < end) {
      if (!alive(static_cast<pid_t>(pid))) return Status::Ok();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return Status(Code::DEADLINE_EXCEEDED, "fence: pid " + std::to_string(pid) + " still running after SIGKILL");
  }

 private:
  /* Alive = can still run its own code. A process that took SIGKILL tears down its memory
   * and sockets in the kernel for tens of milliseconds before it becomes a zombie; it runs
   * no user code then, and every one of its threads carries PF_EXITING. Waiting for the
   * zombie would add that teardown to every failover. */
  static bool alive(pid_t pid) {
    if (::kill(pid, 0) != 0) return errno != ESRCH;
    const std::string dir = "/proc/" + std::to_string(pid) + "/task";
    DIR *d = ::opendir(dir.c_str());
    if (!d) return errno != ENOENT;
    bool any_live = false;
    while (dirent *e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream st(dir + "/" + e->d_name + "/stat");
      std::string line;
      if (!std::getline(st, line)) continue;  // the thread just went away
      auto rp = line.rfind(')');
      if (rp == std::string::npos || rp + 2 >= line.size()) {
        any_live = true;  // unreadable: assume it runs
        break;
      }
      // After ") ": state ppid pgrp session tty_nr tpgid flags ...
      std::istringstream in(line.substr(rp + 2));
      char state = '?';
      long ppid, pgrp, session, tty, tpgid;
      unsigned long flags = 0;
      in >> state >> ppid >> pgrp >> session >> tty >> tpgid >> flags;
      constexpr unsigned long kPfExiting = 0x4;
      if (state == 'Z' || state == 'X' || (in && (flags & kPfExiting))) continue;
      any_live = true;
      break;
    }
    ::closedir(d);
    return any_live;
  }
  std::string pidfile_;
};

// Destroys (or suspends) the peer's libvirt domain and confirms through libvirt that it no
// longer runs. The whole operation (connect, lookup, destroy, confirm) is bounded by the
// deadline: libvirt calls block (a remote URI over a dead link can hang in connect), so they run
// on a worker thread and fence() stops waiting at the deadline. A worker that outlives its
// caller finishes on its own and frees what it holds.
class LibvirtFencer final : public Fencer {
 public:
  LibvirtFencer(std::string uri, std::string domain, bool suspend)
      : uri_(std::move(uri)), domain_(std::move(domain)), suspend_(suspend) {}
  const char *kind() const override { return "libvirt"; }
  Status fence(std::chrono::milliseconds deadline) override {
    struct Shared {
      std::mutex mu;
      std::condition_variable cv;
      bool done = false;
      Status result;
      std::string stage = "connecting to " ;
    };
    auto sh = std::make_shared<Shared>();
    sh->stage += uri_;
    auto end = Clock::now() + deadline;
    std::thread([sh, end, uri = uri_, domain = domain_, suspend = suspend_] {
      auto set_stage = [&](std::string s) { std::lock_guard<std::mutex> l(sh->mu); sh->stage = std::move(s); };
      Status st = run(uri, domain, suspend, end, set_stage);
      std::lock_guard<std::mutex> l(sh->mu);
      sh->result = std::move(st);
      sh->done = true;
      sh->cv.notify_all();
    }).detach();
    std::unique_lock<std::mutex> l(sh->mu);
    if (!sh->cv.wait_until(l, end, [&] { return sh->done; }))
      return Status(Code::DEADLINE_EXCEEDED, "fence: libvirt domain " + domain_ + " not confirmed stopped within " +
                                                 std::to_string(deadline.count()) + " ms (still " + sh->stage + ")");
    return sh->result;
  }

 private:
  static std::string last_error() {
    virErrorPtr e = virGetLastError();
    return e && e->message ? e->message : "unknown error";
  }
  static const char *state_name(int s) {
    switch (s) {
      case VIR_DOMAIN_RUNNING: return "running";
      case VIR_DOMAIN_BLOCKED: return "blocked";
      case VIR_DOMAIN_PAUSED: return "paused";
      case VIR_DOMAIN_SHUTDOWN: return "shutting down";
      case VIR_DOMAIN_SHUTOFF: return "shut off";
      case VIR_DOMAIN_CRASHED: return "crashed";
      case VIR_DOMAIN_PMSUSPENDED: return "pm-suspended";
      default: return "no state";
    }
  }
  // Fenced means its vCPUs can run no more: shut off or crashed (crashed = the guest panicked
  // and libvirt holds it stopped); with suspend, paused also counts.
  static bool fenced_state(int s, bool suspend) {
    return s == VIR_DOMAIN_SHUTOFF || s == VIR_DOMAIN_CRASHED || (suspend && s == VIR_DOMAIN_PAUSED);
  }
  template <class SetStage>
  static Status run(const std::string &uri, const std::string &domain, bool suspend, Clock::time_point end,
                    SetStage set_stage) {
    virConnectPtr conn = virConnectOpen(uri.c_str());
    if (conn == nullptr) return Unavailable("fence: cannot connect to libvirt at " + uri + ": " + last_error());
    virConnSetErrorFunc(conn, nullptr, [](void *, virErrorPtr) {});  // errors are reported in the Status
    set_stage("looking up domain " + domain);
    Status st = Status::Ok();
    virDomainPtr dom = virDomainLookupByName(conn, domain.c_str());
    if (dom == nullptr) {
      virErrorPtr e = virGetLastError();
      // Only a definite "no such domain" means nothing can run under that name; any other
      // failure (connection lost, permission) leaves the peer's state unknown.
      if (e == nullptr || e->code != VIR_ERR_NO_DOMAIN)
        st = Unavailable("fence: lookup of domain " + domain + " at " + uri + " failed: " + last_error());
      virConnectClose(conn);
      return st;
    }
    set_stage(std::string(suspend ? "suspending" : "destroying") + " domain " + domain);
    int rc = suspend ? virDomainSuspend(dom) : virDomainDestroy(dom);
    std::string action_error = rc < 0 ? last_error() : "";
    set_stage("confirming domain " + domain + " stopped");
    for (;;) {
      int state = VIR_DOMAIN_NOSTATE, reason = 0;
      if (virDomainGetState(dom, &state, &reason, 0) == 0) {
        if (fenced_state(state, suspend)) break;
      } else if (virErrorPtr e = virGetLastError(); e != nullptr && e->code == VIR_ERR_NO_DOMAIN) {
        break;  // gone: a transient domain is undefined once it stops, nothing runs under it
      }
      if (Clock::now() > end) {
        st = Status(Code::DEADLINE_EXCEEDED, "fence: domain " + domain + " is still " + state_name(state) +
                                                 (action_error.empty() ? "" : " (" + action_error + ")"));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    virDomainFree(dom);
    virConnectClose(conn);
    return st;
  }
  std::string uri_, domain_;
  bool suspend_;
};

}  // namespace

const char *fence_kind_name(FenceKind k) {
  switch (k) {
    case FenceKind::NONE: return "none";
    case FenceKind::PROCESS: return "process";
    case FenceKind::LIBVIRT: return "libvirt";
  }
  return "?";
}

bool parse_fence_kind(const std::string &s, FenceKind *out) {
  for (FenceKind k : {FenceKind::NONE, FenceKind::PROCESS, FenceKind::LIBVIRT})
    if (s == fence_kind_name(k)) {
      *out = k;
      return true;
    }
  return false;
}

std::unique_ptr<Fencer> make_fencer(const FenceConfig &cfg, Status *st) {
  if (cfg.kind == FenceKind::NONE) {
    if (!cfg.allow_none) {
      *st = InvalidArgument("failover.fence: 'none' cannot stop a live peer; set failover.allow_fence_none: true to accept that");
      return nullptr;
    }
    return std::make_unique<NoneFencer>();
  }
  if (cfg.kind == FenceKind::PROCESS) {
    if (cfg.pidfile.empty()) {
      *st = InvalidArgument("failover.fence_pidfile: required with fence 'process'");
      return nullptr;
    }
    return std::make_unique<ProcessFencer>(cfg.pidfile);
  }
  if (cfg.kind == FenceKind::LIBVIRT) {
    if (cfg.libvirt_uri.empty() || cfg.domain.empty()) {
      *st = InvalidArgument("failover.libvirt_uri and failover.libvirt_domain: required with fence 'libvirt'");
      return nullptr;
    }
    if (cfg.libvirt_action != "destroy" && cfg.libvirt_action != "suspend") {
      *st = InvalidArgument("failover.libvirt_action: '" + cfg.libvirt_action + "' is not destroy or suspend");
      return nullptr;
    }
    return std::make_unique<LibvirtFencer>(cfg.libvirt_uri, cfg.domain, cfg.libvirt_action == "suspend");
  }
  *st = InvalidArgument(std::string("failover.fence: '") + fence_kind_name(cfg.kind) + "' is not none, process or libvirt");
  return nullptr;
}

}  // namespace ftpair::fo
