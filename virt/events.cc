#include "virt/events.h"

#include <libvirt/libvirt.h>

#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>

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

// libvirt's default event loop: registered before any connection is opened, run by one
// detached thread for the life of the process (a timer keeps it turning).
void ensure_event_loop() {
  static std::once_flag once;
  std::call_once(once, [] {
    virEventRegisterDefaultImpl();
    virEventAddTimeout(50, [](int, void *) {}, nullptr, nullptr);
    std::thread([] {
      for (;;) virEventRunDefaultImpl();
    }).detach();
  });
}

}  // namespace

// What a callback touches lives apart from the connection, owned jointly by the watcher and by
// libvirt (freed through the registration's free callback), so a callback already dispatched when
// stop() deregisters never sees freed memory.
struct CallbackState {
  std::mutex mu;
  bool stopped = false;
  std::function<void(const LifecycleEvent &)> on_event;
};

struct LifecycleWatcher::Impl {
  Conn conn;
  Dom dom;
  int callback_id = -1;
  std::shared_ptr<CallbackState> cb = std::make_shared<CallbackState>();

  static int on_lifecycle(virConnectPtr, virDomainPtr d, int event, int detail, void *opaque) {
    auto &cb = *static_cast<std::shared_ptr<CallbackState> *>(opaque);
    std::lock_guard<std::mutex> l(cb->mu);
    if (cb->stopped) return 0;
    LifecycleEvent ev{virDomainGetName(d), event_name(event),
                      event == VIR_DOMAIN_EVENT_STOPPED ? stopped_detail(detail) : std::to_string(detail)};
    cb->on_event(ev);
    return 0;
  }
  static void free_opaque(void *opaque) { delete static_cast<std::shared_ptr<CallbackState> *>(opaque); }
};

LifecycleWatcher::~LifecycleWatcher() { stop(); }

Status LifecycleWatcher::start(const std::string &uri, const std::string &domain,
                               std::chrono::milliseconds connect_deadline,
                               std::function<void(const LifecycleEvent &)> on_event) {
  stop();
  ensure_event_loop();
  auto impl = std::make_unique<Impl>();
  impl->cb->on_event = std::move(on_event);
  if (Status st = impl->conn.open(uri, connect_deadline); !st.ok()) return st;
  if (!domain.empty()) {
    impl->dom = Dom(virDomainLookupByName(impl->conn.get(), domain.c_str()));
    if (!impl->dom) return Status(Code::NOT_FOUND, "watch: no domain " + domain + " at " + uri);
  }
  auto *opaque = new std::shared_ptr<CallbackState>(impl->cb);
  impl->callback_id = virConnectDomainEventRegisterAny(impl->conn.get(), impl->dom.get(), VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                                       VIR_DOMAIN_EVENT_CALLBACK(Impl::on_lifecycle), opaque,
                                                       Impl::free_opaque);
  if (impl->callback_id < 0) {
    delete opaque;
    return Unavailable("watch: cannot subscribe to lifecycle events at " + uri + ": " + virt_error());
  }
  impl_ = impl.release();
  return Status::Ok();
}

void LifecycleWatcher::stop() {
  if (impl_ == nullptr) return;
  {
    std::lock_guard<std::mutex> l(impl_->cb->mu);  // waits out a callback in progress
    impl_->cb->stopped = true;
  }
  virConnectDomainEventDeregisterAny(impl_->conn.get(), impl_->callback_id);
  delete impl_;
  impl_ = nullptr;
}

Status watch_lifecycle(const std::string &uri, const std::string &domain, std::chrono::milliseconds connect_deadline,
                       std::chrono::milliseconds timeout, const std::function<void()> &on_ready,
                       const std::function<bool(const LifecycleEvent &)> &on_event) {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  LifecycleWatcher w;
  Status st = w.start(uri, domain, connect_deadline, [&](const LifecycleEvent &e) {
    bool more = on_event(e);
    std::lock_guard<std::mutex> l(mu);
    if (!more) {
      done = true;
      cv.notify_all();
    }
  });
  if (!st.ok()) return st;
  on_ready();
  std::unique_lock<std::mutex> l(mu);
  bool got = cv.wait_for(l, timeout, [&] { return done; });
  l.unlock();
  w.stop();
  if (!got)
    return Status(Code::DEADLINE_EXCEEDED, "watch: no matching event within " + std::to_string(timeout.count()) + " ms");
  return Status::Ok();
}

}  // namespace ftpair::virt
