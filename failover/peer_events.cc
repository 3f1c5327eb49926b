#include "failover/peer_events.h"

#include <algorithm>

#include "common/log.h"

namespace ftpair::fo {

namespace {
using Clock = std::chrono::steady_clock;
}

const char *peer_down_label(const DomainEvent &e) {
  if (e.event == "crashed") return "crashed";
  if (e.event == "stopped") return e.detail == "migrated" ? nullptr : "stopped";
  if (e.event == "shutdown") return "shutdown";
  if (e.event == "suspended" && (e.detail == "ioerror" || e.detail == "watchdog" || e.detail == "api-error" ||
                                 e.detail == "postcopy-failed"))
    return "paused_error";
  return nullptr;
}

PeerEvents::PeerEvents(PeerEventsConfig cfg, std::unique_ptr<EventSource> source,
                       std::function<void(const PeerDown &)> on_peer_down, Log log)
    : cfg_(std::move(cfg)), source_(std::move(source)), on_peer_down_(std::move(on_peer_down)), log_(std::move(log)) {
  if (cfg_.retry_min.count() < 1) cfg_.retry_min = std::chrono::milliseconds(1);
  if (cfg_.retry_max < cfg_.retry_min) cfg_.retry_max = cfg_.retry_min;
  if (!log_) log_ = [](const std::string &m) { log::component("events").info("{}", m); };
}

PeerEvents::~PeerEvents() { stop(); }

void PeerEvents::start() {
  std::lock_guard<std::mutex> l(mu_);
  if (running_ || thread_.joinable()) return;
  running_ = true;
  thread_ = std::thread([this] { loop(); });
}

void PeerEvents::stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    running_ = false;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t PeerEvents::peer_events(const std::string &label) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = by_label_.find(label);
  return it == by_label_.end() ? 0 : it->second;
}

std::string PeerEvents::last_error() const {
  std::lock_guard<std::mutex> l(mu_);
  return last_error_;
}

// On the source's thread: filter, count, queue. Never blocks on the host.
void PeerEvents::on_event(const DomainEvent &e) {
  if (e.domain != cfg_.domain) {
    other_domains_++;
    return;
  }
  const char *label = peer_down_label(e);
  std::lock_guard<std::mutex> l(mu_);
  by_label_[label ? label : "other"]++;
  if (label == nullptr) {
    log_("peer domain " + e.domain + ": " + e.event + "/" + e.detail + " (not a failover signal)");
    return;
  }
  if (!running_) return;
  queue_.push_back(PeerDown{e.domain, e.event, e.detail, label, Clock::now()});
  cv_.notify_all();
}

void PeerEvents::on_lost(const std::string &why) {
  std::lock_guard<std::mutex> l(mu_);
  lost_flag_ = true;
  lost_why_ = why;
  cv_.notify_all();
}

void PeerEvents::loop() {
  const std::string where = source_->describe();
  auto backoff = cfg_.retry_min;
  auto next_try = Clock::now();
  std::unique_lock<std::mutex> l(mu_);
  while (running_) {
    if (lost_flag_) {
      lost_flag_ = false;
      const std::string why = lost_why_;
      last_error_ = "connection lost: " + why;
      l.unlock();
      source_->unsubscribe();
      subscribed_.store(false);
      lost_++;
      log_("libvirt events: connection to " + where + " lost (" + why + "); resubscribing in " +
           std::to_string(cfg_.retry_min.count()) + " ms (failover still runs on beats)");
      l.lock();
      backoff = cfg_.retry_min;
      next_try = Clock::now() + backoff;
      continue;
    }
    if (!queue_.empty()) {
      PeerDown d = std::move(queue_.front());
      queue_.pop_front();
      l.unlock();
      signals_++;
      on_peer_down_(d);
      l.lock();
      continue;
    }
    if (!subscribed_.load() && Clock::now() >= next_try) {
      l.unlock();
      Status st = source_->subscribe([this](const DomainEvent &e) { on_event(e); },
                                     [this](const std::string &why) { on_lost(why); });
      if (st.ok()) {
        subscribed_.store(true);
        subscriptions_++;
        log_("libvirt events: subscribed at " + where + ", watching domain " + cfg_.domain);
        l.lock();
        backoff = cfg_.retry_min;
      } else {
        subscribe_failures_++;
        log_("libvirt events: cannot subscribe at " + where + ": " + st.message() + "; retrying in " +
             std::to_string(backoff.count()) + " ms (failover still runs on beats)");
        l.lock();
        last_error_ = st.message();
        next_try = Clock::now() + backoff;
        backoff = std::min(backoff * 2, cfg_.retry_max);
      }
      continue;
    }
    if (subscribed_.load())
      cv_.wait(l);
    else
      cv_.wait_until(l, next_try);
  }
  l.unlock();
  if (subscribed_.load()) {
    source_->unsubscribe();
    subscribed_.store(false);
  }
}

}  // namespace ftpair::fo
