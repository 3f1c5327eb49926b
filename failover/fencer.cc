#include "failover/fencer.h"

#include <signal.h>
#include <sys/types.h>

#include <cerrno>
#include <cstring>
#include <fstream>
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
  static bool alive(pid_t pid) {
    if (::kill(pid, 0) != 0) return errno != ESRCH;
    // A zombie is dead for our purpose: it forwards nothing.
    std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(st, line);
    auto rp = line.rfind(')');
    return !(rp != std::string::npos && rp + 2 < line.size() && line[rp + 2] == 'Z');
  }
  std::string pidfile_;
};

// Destroys (or suspends) the peer's libvirt domain and confirms it is not running.
class LibvirtFencer final : public Fencer {
 public:
  LibvirtFencer(std::string uri, std::string domain, bool suspend)
      : uri_(std::move(uri)), domain_(std::move(domain)), suspend_(suspend) {}
  const char *kind() const override { return "libvirt"; }
  Status fence(std::chrono::milliseconds deadline) override {
    virConnectPtr conn = virConnectOpen(uri_.c_str());
    if (conn == nullptr) return Unavailable("fence: cannot connect to libvirt at " + uri_ + ": " + last_error());
    Status st = fence_on(conn, deadline);
    virConnectClose(conn);
    return st;
  }

 private:
  static std::string last_error() {
    virErrorPtr e = virGetLastError();
    return e && e->message ? e->message : "unknown error";
  }
  Status fence_on(virConnectPtr conn, std::chrono::milliseconds deadline) {
    virDomainPtr dom = virDomainLookupByName(conn, domain_.c_str());
    if (dom == nullptr) return Status::Ok();  // no such domain: nothing can forward
    auto end = Clock::now() + deadline;
    int rc = suspend_ ? virDomainSuspend(dom) : virDomainDestroy(dom);
    Status st = Status::Ok();
    for (;;) {
      int state = 0, reason = 0;
      if (virDomainGetState(dom, &state, &reason, 0) == 0 &&
          (suspend_ ? state == VIR_DOMAIN_PAUSED : state != VIR_DOMAIN_RUNNING && state != VIR_DOMAIN_PAUSED))
        break;
      if (Clock::now() > end) {
        st = Status(Code::DEADLINE_EXCEEDED, "fence: domain " + domain_ + " still running" +
                                                 (rc < 0 ? " (" + last_error() + ")" : ""));
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    virDomainFree(dom);
    return st;
  }
  std::string uri_, domain_;
  bool suspend_;
};

}  // namespace

std::unique_ptr<Fencer> make_fencer(const FenceConfig &cfg, Status *st) {
  if (cfg.kind == "none") {
    if (!cfg.allow_none) {
      *st = InvalidArgument("failover.fence: 'none' cannot stop a live peer; set failover.allow_fence_none: true to accept that");
      return nullptr;
    }
    return std::make_unique<NoneFencer>();
  }
  if (cfg.kind == "process") {
    if (cfg.pidfile.empty()) {
      *st = InvalidArgument("failover.fence_pidfile: required with fence 'process'");
      return nullptr;
    }
    return std::make_unique<ProcessFencer>(cfg.pidfile);
  }
  if (cfg.kind == "libvirt") {
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
  *st = InvalidArgument("failover.fence: '" + cfg.kind + "' is not none, process or libvirt");
  return nullptr;
}

}  // namespace ftpair::fo
