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

std::string detail_name(int e, int d) {
  switch (e) {
    case VIR_DOMAIN_EVENT_STOPPED:
      switch (d) {
        case VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: return "shutdown";
        case VIR_DOMAIN_EVENT_STOPPED_DESTROYED: return "destroyed";
        case VIR_DOMAIN_EVENT_STOPPED_CRASHED: return "crashed";
        case VIR_DOMAIN_EVENT_STOPPED_MIGRATED: return "migrated";
        case VIR_DOMAIN_EVENT_STOPPED_SAVED: return "saved";
        case VIR_DOMAIN_EVENT_STOPPED_FAILED: return "failed";
        case VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: return "from-snapshot";
      }
      break;
    case VIR_DOMAIN_EVENT_SUSPENDED:
      switch (d) {
        case VIR_DOMAIN_EVENT_SUSPENDED_PAUSED: return "paused";
        case VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED: return "migrated";
        case VIR_DOMAIN_EVENT_SUSPENDED_IOERROR: return "ioerror";
        case VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG: return "watchdog";
        case VIR_DOMAIN_EVENT_SUSPENDED_RESTORED: return "restored";
        case VIR_DOMAIN_EVENT_SUSPENDED_FROM_SNAPSHOT: return "from-snapshot";
        case VIR_DOMAIN_EVENT_SUSPENDED_API_ERROR: return "api-error";
        case VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY: return "postcopy";
        case VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED: return "postcopy-failed";
      }
      break;
    case VIR_DOMAIN_EVENT_STARTED:
      switch (d) {
        case VIR_DOMAIN_EVENT_STARTED_BOOTED: return "booted";
        case VIR_DOMAIN_EVENT_STARTED_MIGRATED: return "migrated";
        case VIR_DOMAIN_EVENT_STARTED_RESTORED: return "restored";
        case VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT: return "from-snapshot";
        case VIR_DOMAIN_EVENT_STARTED_WAKEUP: return "wakeup";
      }
      break;
    case VIR_DOMAIN_EVENT_RESUMED:
      switch (d) {
        case VIR_DOMAIN_EVENT_RESUMED_UNPAUSED: return "unpaused";
        case VIR_DOMAIN_EVENT_RESUMED_MIGRATED: return "migrated";
        case VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT: return "from-snapshot";
      }
      break;
    case VIR_DOMAIN_EVENT_SHUTDOWN:
      switch (d) {
        case VIR_DOMAIN_EVENT_SHUTDOWN_FINISHED: return "finished";
        case VIR_DOMAIN_EVENT_SHUTDOWN_GUEST: return "guest";
        case VIR_DOMAIN_EVENT_SHUTDOWN_HOST: return "host";
      }
      break;
    case VIR_DOMAIN_EVENT_CRASHED:
      switch (d) {
        case VIR_DOMAIN_EVENT_CRASHED_PANICKED: return "panicked";
        case VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED: return "crashloaded";
      }
      break;
  }
  return std::to_string(d);
}

const char *close_reason(int r) {
  switch (r) {
    case VIR_CONNECT_CLOSE_REASON_ERROR: return "I/O error";
    case VIR_CONNECT_CLOSE_REASON_EOF: return "libvirtd closed the connection";
    case VIR_CONNECT_CLOSE_REASON_KEEPALIVE: return "keepalive timed out";
    case VIR_CONNECT_CLOSE_REASON_CLIENT: return "closed by us";
    default: return "unknown reason";
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
  bool stopped = false, lost = false;
  std::function<void(const LifecycleEvent &)> on_event;
  std::function<void(const std::string &)> on_lost;
};

struct LifecycleWatcher::Impl {
  Conn conn;
  Dom dom;
  int callback_id = -1;
  bool close_registered = false;
  std::shared_ptr<CallbackState> cb = std::make_shared<CallbackState>();

  static int on_lifecycle(virConnectPtr, virDomainPtr d, int event, int detail, void *opaque) {
    auto &cb = *static_cast<std::shared_ptr<CallbackState> *>(opaque);
    std::lock_guard<std::mutex> l(cb->mu);
    if (cb->stopped) return 0;
    LifecycleEvent ev{virDomainGetName(d), event_name(event), detail_name(event, detail)};
    cb->on_event(ev);
    return 0;
  }
  static void on_close(virConnectPtr, int reason, void *opaque) {
    auto &cb = *static_cast<std::shared_ptr<CallbackState> *>(opaque);
    std::lock_guard<std::mutex> l(cb->mu);
    if (cb->stopped || cb->lost) return;
    cb->lost = true;
    if (cb->on_lost) cb->on_lost(close_reason(reason));
  }
  static void free_opaque(void *opaque) { delete static_cast<std::shared_ptr<CallbackState> *>(opaque); }
};

LifecycleWatcher::~LifecycleWatcher() { stop(); }

Status LifecycleWatcher::start(const std::string &uri, const std::string &domain,
                               std::chrono::milliseconds connect_deadline,
                               std::function<void(const LifecycleEvent &)> on_event,
                               std::function<void(const std::string &why)> on_lost) {
  stop();
  ensure_event_loop();
  auto impl = std::make_unique<Impl>();
  impl->cb->on_event = std::move(on_event);
  impl->cb->on_lost = std::move(on_lost);
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
  // A lost connection (libvirtd restarted, a remote link dead: keepalive) is reported once.
  virConnectSetKeepAlive(impl->conn.get(), 2, 3);
  auto *close_opaque = new std::shared_ptr<CallbackState>(impl->cb);
  if (virConnectRegisterCloseCallback(impl->conn.get(), Impl::on_close, close_opaque, Impl::free_opaque) == 0)
    impl->close_registered = true;
  else
    delete close_opaque;
  impl_ = impl.release();
  if (!domain.empty()) report_if_down(domain);
  return Status::Ok();
}

void LifecycleWatcher::report_if_down(const std::string &domain) {
  if (impl_ == nullptr || domain.empty()) return;
  Dom d(virDomainLookupByName(impl_->conn.get(), domain.c_str()));
  if (!d) return;  // not defined (yet): nothing to report
  int state = 0, reason = 0;
  if (virDomainGetState(d.get(), &state, &reason, 0) != 0 || (state != VIR_DOMAIN_SHUTOFF && state != VIR_DOMAIN_CRASHED))
    return;
  LifecycleEvent ev{domain, "", ""};
  if (state == VIR_DOMAIN_CRASHED) {
    ev.event = event_name(VIR_DOMAIN_EVENT_CRASHED);
    ev.detail = "crashed";
  } else {
    ev.event = event_name(VIR_DOMAIN_EVENT_STOPPED);
    switch (reason) {
      case VIR_DOMAIN_SHUTOFF_SHUTDOWN: ev.detail = detail_name(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN); break;
      case VIR_DOMAIN_SHUTOFF_DESTROYED: ev.detail = detail_name(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_DESTROYED); break;
      case VIR_DOMAIN_SHUTOFF_CRASHED: ev.detail = detail_name(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_CRASHED); break;
      case VIR_DOMAIN_SHUTOFF_MIGRATED: ev.detail = detail_name(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_MIGRATED); break;
      case VIR_DOMAIN_SHUTOFF_SAVED: ev.detail = detail_name(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_SAVED); break;
      case VIR_DOMAIN_SHUTOFF_FAILED: ev.detail = detail_name(VIR_DOMAIN_EVENT_STOPPED, VIR_DOMAIN_EVENT_STOPPED_FAILED); break;
      default: ev.detail = "shut-off"; break;
    }
  }
  if (ev.detail != "migrated") ev.detail += ", found at subscription";
  std::lock_guard<std::mutex> l(impl_->cb->mu);
  if (!impl_->cb->stopped) impl_->cb->on_event(ev);
}

void LifecycleWatcher::stop() {
  if (impl_ == nullptr) return;
  {
    std::lock_guard<std::mutex> l(impl_->cb->mu);  // waits out a callback in progress
    impl_->cb->stopped = true;
  }
  if (impl_->close_registered) virConnectUnregisterCloseCallback(impl_->conn.get(), Impl::on_close);
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

LifecycleSource::LifecycleSource(std::string uri, std::chrono::milliseconds connect_deadline, std::string domain)
    : uri_(std::move(uri)), deadline_(connect_deadline), domain_(std::move(domain)) {}

LifecycleSource::~LifecycleSource() { unsubscribe(); }

Status LifecycleSource::subscribe(std::function<void(const fo::DomainEvent &)> on_event,
                                  std::function<void(const std::string &why)> on_lost) {
  Status st = watcher_.start(
      uri_, "", deadline_,
      [on_event = std::move(on_event)](const LifecycleEvent &e) { on_event(fo::DomainEvent{e.domain, e.event, e.detail}); },
      std::move(on_lost));
  if (st.ok()) watcher_.report_if_down(domain_);
  return st;
}

void LifecycleSource::unsubscribe() { watcher_.stop(); }

}  // namespace ftpair::virt
