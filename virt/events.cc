#include "virt/events.h"

#include <libvirt/libvirt.h>

#include <mutex>

#include "virt/conn.h"

namespace ftpair::virt {

namespace {

const char *event_name(int e) {
  switch (e) {
    case VIR_DOMAIN_EVENT_DEFINED: return "defined";
    case VIR_DOMAIN_EVENT_UNDEFINED: return "undefined";
    case VIR_DOMAIN_EVENT_STARTED: return "started";
    case VIR_DOMAIN_EVENT_SUSPENDED: return "suspended";
    case VIR_DOMAIN_EVENT_RESUMED: return "resumed";
    case VIR_DOMAIN_EVENT_STOPPED: return "stopped";
    case VIR_DOMAIN_EVENT_SHUTDOWN: return "shutdown";
    case VIR_DOMAIN_EVENT_PMSUSPENDED: return "pmsuspended";
    case VIR_DOMAIN_EVENT_CRASHED: return "crashed";
    default: return "unknown";
  }
}

std::string stopped_detail(int d) {
  switch (d) {
    case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: return "shutdown";
    case VIR_DOMAIN_EVENT_STOPPED_DESTROYED: return "destroyed";
    case VIR_DOMAIN_EVENT_STOPPED_CRASHED: return "crashed";
    case VIR_DOMAIN_EVENT_STOPPED_MIGRATED: return "migrated";
    case VIR_DOMAIN_EVENT_STOPPED_SAVED: return "saved";
    case VIR_DOMAIN_EVENT_STOPPED_FAILED: return "failed";
    case VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: return "from-snapshot";
    default: return std::to_string(d);
  }
}

struct WatchState {
  const std::function<bool(const LifecycleEvent &)> *on_event;
  bool done = false;
};

int on_lifecycle(virConnectPtr, virDomainPtr dom, int event, int detail, void *opaque) {
  auto *ws = static_cast<WatchState *>(opaque);
  if (ws->done) return 0;
  LifecycleEvent ev{virDomainGetName(dom), event_name(event),
                    event == VIR_DOMAIN_EVENT_STOPPED ? stopped_detail(detail) : std::to_string(detail)};
  if (!(*ws->on_event)(ev)) ws->done = true;
  return 0;
}

std::once_flag event_impl_once;

}  // namespace

Status watch_lifecycle(const std::string &uri, const std::string &domain, std::chrono::milliseconds connect_deadline,
                       std::chrono::milliseconds timeout, const std::function<void()> &on_ready,
                       const std::function<bool(const LifecycleEvent &)> &on_event) {
  // The event loop implementation must be registered before the connection is opened.
  std::call_once(event_impl_once, [] { virEventRegisterDefaultImpl(); });
  Conn conn;
  if (Status st = conn.open(uri, connect_deadline); !st.ok()) return st;
  Dom dom;
  if (!domain.empty()) {
    dom = Dom(virDomainLookupByName(conn.get(), domain.c_str()));
    if (!dom) return Status(Code::NOT_FOUND, "watch: no domain " + domain + " at " + uri);
  }
  WatchState ws{&on_event};
  int id = virConnectDomainEventRegisterAny(conn.get(), dom.get(), VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                            VIR_DOMAIN_EVENT_CALLBACK(on_lifecycle), &ws, nullptr);
  if (id < 0) return Unavailable("watch: cannot subscribe to lifecycle events at " + uri + ": " + virt_error());
  // A periodic timer wakes the loop so the timeout is honoured when no event comes.
  int timer = virEventAddTimeout(50, [](int, void *) {}, nullptr, nullptr);
  on_ready();
  auto end = std::chrono::steady_clock::now() + timeout;
  Status st = Status::Ok();
  while (!ws.done) {
    if (std::chrono::steady_clock::now() >= end) {
      st = Status(Code::DEADLINE_EXCEEDED, "watch: no matching event within " + std::to_string(timeout.count()) + " ms");
      break;
    }
    if (virEventRunDefaultImpl() < 0) {
      st = Unavailable("watch: event loop failed: " + virt_error());
      break;
    }
  }
  virConnectDomainEventDeregisterAny(conn.get(), id);
  if (timer >= 0) virEventRemoveTimeout(timer);
  return st;
}

}  // namespace ftpair::virt
