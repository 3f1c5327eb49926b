/* The peer's domain lifecycle events as a fast failover signal.
 *
 * When the peer runs as a hypervisor domain (libvirt), the hypervisor knows at once that the
 * domain crashed, was destroyed, shut down or was paused by an error; beats only notice after
 * K silent intervals. PeerEvents subscribes to those events through an EventSource (libvirt's
 * is virt::LifecycleSource), keeps only the peer domain's, and hands a "peer down" to the host
 * (the daemon promotes, still fencing first). It is a second opinion beside the beats, never a
 * replacement:
 *   - subscribing happens on PeerEvents' own thread, so an unreachable hypervisor never delays
 *     the daemon's start; a failed subscribe or a lost connection is logged, counted and
 *     retried with backoff, and the beats keep working meanwhile;
 *   - events of other domains, and peer events that do not mean "it stopped running"
 *     (started, resumed, defined, a migration, a plain operator pause), trigger nothing;
 *   - the host's callback runs on PeerEvents' thread, never on the event source's loop, so it
 *     may block (fencing takes up to its deadline). */
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"

namespace ftpair::fo {

// One lifecycle event with libvirt's names (virt/events.h lists them).
struct DomainEvent {
  std::string domain;
  std::string event;   // defined, undefined, started, suspended, resumed, stopped, shutdown, pmsuspended, crashed
  std::string detail;  // e.g. stopped: destroyed, crashed, failed, shutdown, migrated, saved, from-snapshot
};

/* What an event says about the domain: a metric label when the domain stopped running,
 * nullptr otherwise.
 *   crashed (any detail)                       -> "crashed"
 *   stopped (any detail but migrated)          -> "stopped"   (a migrated domain runs elsewhere)
 *   shutdown (the guest is going down)         -> "shutdown"
 *   suspended by ioerror, watchdog, api-error or postcopy-failed -> "paused_error"
 * A plain pause (an operator's virsh suspend), a migration pause, started, resumed, defined,
 * undefined and pmsuspended say nothing: the beats decide those. */
const char *peer_down_label(const DomainEvent &e);

// The labels peer_down_label returns, then "other" (a peer event that says nothing).
inline constexpr const char *kPeerEventLabels[] = {"crashed", "stopped", "shutdown", "paused_error", "other"};

// A subscription to one hypervisor connection's lifecycle events (all domains).
class EventSource {
 public:
  virtual ~EventSource() = default;
  virtual std::string describe() const = 0;  // for messages, e.g. the libvirt URI
  /* Connects and subscribes; may block up to the source's own deadline. on_event runs on the
   * source's thread for every event and must not block; on_lost runs at most once, when the
   * connection of a successful subscription goes away. Both stop before unsubscribe() returns.
   * Neither may call unsubscribe(). */
  virtual Status subscribe(std::function<void(const DomainEvent &)> on_event,
                           std::function<void(const std::string &why)> on_lost) = 0;
  virtual void unsubscribe() = 0;
};

struct PeerEventsConfig {
  std::string domain;  // the peer's domain name
  std::chrono::milliseconds retry_min{500}, retry_max{30000};  // resubscribe backoff
};

struct PeerDown {
  std::string domain, event, detail;
  const char *label = "";                      // from peer_down_label
  std::chrono::steady_clock::time_point seen;  // when the event arrived
};

class PeerEvents {
 public:
  // Receives each line PeerEvents has to say; empty: lines go to log component "events" (info).
  using Log = std::function<void(const std::string &)>;
  PeerEvents(PeerEventsConfig cfg, std::unique_ptr<EventSource> source, std::function<void(const PeerDown &)> on_peer_down,
             Log log);
  ~PeerEvents();
  PeerEvents(const PeerEvents &) = delete;
  PeerEvents &operator=(const PeerEvents &) = delete;

  void start();  // returns at once
  void stop();   // unsubscribes; no callback runs after it returns

  const PeerEventsConfig &config() const { return cfg_; }
  bool subscribed() const { return subscribed_.load(); }
  uint64_t subscriptions() const { return subscriptions_.load(); }
  // Subscribe attempts that failed, and subscriptions whose connection was lost.
  uint64_t subscribe_failures() const { return subscribe_failures_.load(); }
  uint64_t connections_lost() const { return lost_.load(); }
  // Events about the peer's domain by label (kPeerEventLabels), and about other domains.
  uint64_t peer_events(const std::string &label) const;
  uint64_t other_domain_events() const { return other_domains_.load(); }
  // Peer-down signals handed to the host.
  uint64_t signals() const { return signals_.load(); }
  std::string last_error() const;

 private:
  void loop();
  void on_event(const DomainEvent &e);
  void on_lost(const std::string &why);

  PeerEventsConfig cfg_;
  std::unique_ptr<EventSource> source_;
  std::function<void(const PeerDown &)> on_peer_down_;
  Log log_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool running_ = false, lost_flag_ = false;
  std::string lost_why_, last_error_;
  std::deque<PeerDown> queue_;
  std::map<std::string, uint64_t> by_label_;
  std::atomic<bool> subscribed_{false};
  std::atomic<uint64_t> subscriptions_{0}, subscribe_failures_{0}, lost_{0}, other_domains_{0}, signals_{0};
};

}  // namespace ftpair::fo
