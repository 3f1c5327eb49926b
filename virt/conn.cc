#include "virt/conn.h"

#include <libvirt/virterror.h>

#include <algorithm>
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

bool get_meta(virDomainPtr d, InstanceMeta *m) {
  char *x = virDomainGetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, kMetaNs, VIR_DOMAIN_AFFECT_CURRENT);
  if (x == nullptr) return false;
  bool ok = parse_meta_xml(x, m);
  free(x);
  return ok;
}

Status set_meta(virDomainPtr d, const InstanceMeta &m) {
  unsigned flags = VIR_DOMAIN_AFFECT_CONFIG;
  if (virDomainIsActive(d) == 1) flags |= VIR_DOMAIN_AFFECT_LIVE;
  if (virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, meta_xml(m, false).c_str(), kMetaPrefix, kMetaNs,
                           flags) < 0)
    return Internal(std::string("set metadata on ") + virDomainGetName(d) + ": " + virt_error());
  return Status::Ok();
}

std::vector<Managed> list_managed(Conn &conn, const std::string &pair) {
  std::vector<Managed> out;
  virDomainPtr *doms = nullptr;
  int n = virConnectListAllDomains(conn.get(), &doms, 0);
  for (int i = 0; i < n; ++i) {
    Dom d(doms[i]);
    InstanceMeta m;
    if (!get_meta(d.get(), &m) || (!pair.empty() && m.pair != pair)) continue;
    Managed md;
    md.name = virDomainGetName(d.get());
    md.meta = m;
    md.state = domain_state(d.get());
    md.dom = std::move(d);
    out.push_back(std::move(md));
  }
  free(doms);
  std::sort(out.begin(), out.end(), [](const Managed &a, const Managed &b) { return a.name < b.name; });
  return out;
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
