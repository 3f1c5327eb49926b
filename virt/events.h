/* Domain lifecycle events from libvirt (virConnectDomainEventRegisterAny): the fast signal that
 * a peer died (crash, destroy, qemu killed) without waiting for heartbeats to miss. */
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "control/status.h"

namespace ftpair::virt {

struct LifecycleEvent {
  std::string domain;
  std::string event;   // defined, undefined, started, suspended, resumed, stopped, shutdown, pmsuspended, crashed
  std::string detail;  // for stopped: shutdown, destroyed, crashed, migrated, saved, failed, from-snapshot
  bool peer_died() const {
    return event == "crashed" || (event == "stopped" && (detail == "destroyed" || detail == "crashed" || detail == "failed"));
  }
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
  Status start(const std::string &uri, const std::string &domain, std::chrono::milliseconds connect_deadline,
               std::function<void(const LifecycleEvent &)> on_event);
  // Unsubscribes; no callback runs after it returns.
  void stop();

 private:
  struct Impl;
  Impl *impl_ = nullptr;
};

// Subscribes on `uri` (all domains, or only `domain`) and calls on_event for each event until it
// returns false or `timeout` passes. on_ready runs once the subscription is in place.
// Returns DEADLINE_EXCEEDED on timeout, or the connection/subscription error.
Status watch_lifecycle(const std::string &uri, const std::string &domain, std::chrono::milliseconds connect_deadline,
                       std::chrono::milliseconds timeout, const std::function<void()> &on_ready,
                       const std::function<bool(const LifecycleEvent &)> &on_event);

}  // namespace ftpair::virt
