/* Domain lifecycle events from libvirt (virConnectDomainEventRegisterAny): the fast signal that
 * a peer died (crash, destroy, qemu killed) without waiting for heartbeats to miss. */
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "common/status.h"
#include "failover/peer_events.h"

namespace ftpair::virt {

struct LifecycleEvent {
  std::string domain;
  std::string event;   // defined, undefined, started, suspended, resumed, stopped, shutdown, pmsuspended, crashed
  // stopped: shutdown, destroyed, crashed, migrated, saved, failed, from-snapshot; suspended: paused,
  // migrated, ioerror, watchdog, restored, from-snapshot, api-error, postcopy, postcopy-failed;
  // started: booted, migrated, restored, from-snapshot, wakeup; resumed: unpaused, migrated,
  // from-snapshot; shutdown: finished, guest, host; crashed: panicked, crashloaded.
  std::string detail;
  // The domain stopped running (failover's rule, fo::peer_down_label).
  bool peer_died() const { return fo::peer_down_label(fo::DomainEvent{domain, event, detail}) != nullptr; }
};

// A subscription that delivers events on libvirt's event loop thread (one per process, started
// on first use and running for the life of the process). For a daemon: start it on the peer's
// URI and domain, and treat an event with peer_died() as "the peer is gone" without waiting for
// heartbeats to miss. The callback must not block.
class LifecycleWatcher {
 public:
  LifecycleWatcher() = default;
  ~LifecycleWatcher();
  LifecycleWatcher(const LifecycleWatcher &) = delete;
  LifecycleWatcher &operator=(const LifecycleWatcher &) = delete;
  // Connects (bounded by connect_deadline) and subscribes; errors name the URI or domain.
  // on_lost (optional) runs once if the connection goes away (libvirtd gone, keepalive expired).
  Status start(const std::string &uri, const std::string &domain, std::chrono::milliseconds connect_deadline,
               std::function<void(const LifecycleEvent &)> on_event,
               std::function<void(const std::string &why)> on_lost = nullptr);
  // Unsubscribes; no callback runs after it returns.
  void stop();
  /* The domain as it is now, on the watch's connection: one that went down just before the
   * subscription sends no event, so a shut-off or crashed domain is reported as the event it
   * missed ("stopped/destroyed, found at subscription"). start() does it for its domain. */
  void report_if_down(const std::string &domain);

 private:
  struct Impl;
  Impl *impl_ = nullptr;
};

// fo::EventSource over libvirt: every domain's lifecycle events on `uri` (fo::PeerEvents keeps
// the peer's). The connection is opened within connect_deadline and kept alive (keepalive 2 s x 3).
class LifecycleSource final : public fo::EventSource {
 public:
  // `domain` (the peer's, optional): its state is reported at each subscription (report_if_down).
  LifecycleSource(std::string uri, std::chrono::milliseconds connect_deadline, std::string domain = "");
  ~LifecycleSource() override;
  std::string describe() const override { return uri_; }
  Status subscribe(std::function<void(const fo::DomainEvent &)> on_event,
                   std::function<void(const std::string &why)> on_lost) override;
  void unsubscribe() override;

 private:
  std::string uri_;
  std::chrono::milliseconds deadline_;
  std::string domain_;
  LifecycleWatcher watcher_;
};

// Subscribes on `uri` (all domains, or only `domain`) and calls on_event for each event until it
// returns false or `timeout` passes. on_ready runs once the subscription is in place.
// Returns DEADLINE_EXCEEDED on timeout, or the connection/subscription error.
Status watch_lifecycle(const std::string &uri, const std::string &domain, std::chrono::milliseconds connect_deadline,
                       std::chrono::milliseconds timeout, const std::function<void()> &on_ready,
                       const std::function<bool(const LifecycleEvent &)> &on_event);

}  // namespace ftpair::virt
