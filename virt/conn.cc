#include "virt/conn.h"

#include <libvirt/virterror.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

namespace ftpair::virt {

std::string virt_error() {
  virErrorPtr e = virGetLastError();
  return e && e->message ? e->message : "unknown libvirt error";
}

void quiet_libvirt_errors() {
  virSetErrorFunc(nullptr, [](void *, virErrorPtr) {});
}

Conn::~Conn() {
  if (c_) virConnectClose(c_);
}

Status Conn::open(const std::string &uri, std::chrono::milliseconds deadline) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false, abandoned = false;
    virConnectPtr c = nullptr;
    std::string err;
  };
  auto sh = std::make_shared<Shared>();
  std::thread([sh, uri] {
    quiet_libvirt_errors();
    virConnectPtr c = virConnectOpen(uri.c_str());
    std::string err = c ? "" : virt_error();
    std::lock_guard<std::mutex> l(sh->mu);
    if (sh->abandoned) {
      if (c) virConnectClose(c);  // the caller gave up; do not leak the connection
      return;
    }
    sh->c = c;
    sh->err = err;
    sh->done = true;
    sh->cv.notify_all();
  }).detach();
  std::unique_lock<std::mutex> l(sh->mu);
  if (!sh->cv.wait_for(l, deadline, [&] { return sh->done; })) {
    sh->abandoned = true;
    return Status(Code::DEADLINE_EXCEEDED, "cannot reach libvirt at " + uri + " within " +
                                               std::to_string(deadline.count()) + " ms");
  }
  if (sh->c == nullptr) return Unavailable("cannot connect to libvirt at " + uri + ": " + sh->err);
  c_ = sh->c;
  uri_ = uri;
  return Status::Ok();
}

int domain_state(virDomainPtr d) {
  int st = VIR_DOMAIN_NOSTATE, reason = 0;
  if (virDomainGetState(d, &st, &reason, 0) < 0) return VIR_DOMAIN_NOSTATE;
  return st;
}

const char *state_name(int s) {
  switch (s) {
    case VIR_DOMAIN_RUNNING: return "running";
    case VIR_DOMAIN_BLOCKED: return "blocked";
    case VIR_DOMAIN_PAUSED: return "paused";
    case VIR_DOMAIN_SHUTDOWN: return "shutting-down";
    case VIR_DOMAIN_SHUTOFF: return "shut-off";
    case VIR_DOMAIN_CRASHED: return "crashed";
    case VIR_DOMAIN_PMSUSPENDED: return "pm-suspended";
    default: return "no-state";
  }
}

bool wait_state(virDomainPtr d, int state, std::chrono::milliseconds deadline) {
  auto end = std::chrono::steady_clock::now() + deadline;
  for (;;) {
    if (domain_state(d) == state) return true;
    if (std::chrono::steady_clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace ftpair::virt
