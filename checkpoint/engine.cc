#include "checkpoint/engine.h"

#include <stdexcept>

#include "checkpoint/record_codec.h"
#include "common/log.h"
#include "common/realtime.h"

namespace ftpair::ckpt {

Engine::Engine(EngineConfig cfg, std::vector<dp::FlowTable *> tables, dp::InterfaceAgent &agent)
    : cfg_(std::move(cfg)), tables_(std::move(tables)), agent_(agent) {
  if (tables_.empty() || tables_.size() > kMaxShards)
    throw std::invalid_argument("ckpt::Engine: 1 to " + std::to_string(kMaxShards) + " tables, not " +
                                std::to_string(tables_.size()));
  for (size_t i = 0; i < tables_.size(); i++) {
    // One cut numbers every shard's epoch alike, and global slots need one capacity.
    if (tables_[i]->capacity() != tables_[0]->capacity() || tables_[i]->epoch() != tables_[0]->epoch())
      throw std::invalid_argument("ckpt::Engine: the shards' tables differ in capacity or epoch");
    tables_[i]->set_shard(static_cast<uint8_t>(i));
  }
}

uint32_t Engine::dirty_count() const {
  uint32_t n = 0;
  for (const dp::FlowTable *t : tables_) n += t->dirty_count();
  return n;
}

uint64_t Engine::held_now() const {
  uint64_t n = 0;
  for (unsigned w = 0; w < agent_.nb_workers(); w++) n += agent_.worker_counters(w).held_now.load();
  return n;
}

Engine::~Engine() { stop(); }

void Engine::start() {
  if (running_.exchange(true)) return;
  loop_thread_ = std::thread([this] { loop(); });
  link_thread_ = std::thread([this] { link_loop(false); });
  std::lock_guard<std::mutex> g(link_mu_);
  joiner_threads_.emplace_back([this] { link_loop(true); });
}

void Engine::stop() {
  if (!running_.exchange(false)) return;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    if (link_) link_->cancel();
    if (joiner_) joiner_->cancel();
  }
  link_cv_.notify_all();
  req_cv_.notify_all();
  if (loop_thread_.joinable()) loop_thread_.join();
  if (link_thread_.joinable()) link_thread_.join();
  std::vector<std::thread> js;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    js.swap(joiner_threads_);
  }
  for (auto &t : js)
    if (t.joinable()) t.join();
}

void Engine::set_replicating(bool on) {
  replicating_.store(on);
  if (!on) {
    std::lock_guard<std::mutex> g(link_mu_);
    if (link_) link_->cancel();
    // A joiner joins an active; a demoted node has nothing to give it.
    joiner_addr_.clear();
    if (joiner_) joiner_->cancel();
  }
  link_cv_.notify_all();
  update_release();
}

void Engine::standby_is_up(bool booting, const char *how) {
  static auto &L = log::component("engine");
  if (!replicating_.load()) return;
  const auto now = std::chrono::steady_clock::now();
  const int64_t now_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  LinkPtr stale;
  if (booting) {
    std::lock_guard<std::mutex> g(link_mu_);
    // Younger than 500 ms, the link may be the one the booting standby is answering right now.
    // One cancel per 5 s: a standby's start sends a few beats, and forged ones cannot keep the
    // standby in full syncs.
    const int64_t last = last_stale_cancel_ns_.load();
    if (link_ && link_->age(now) > std::chrono::milliseconds(500) && (last == 0 || now_ns - last > 5'000'000'000)) {
      stale = link_;
      last_stale_cancel_ns_.store(now_ns);
    }
  }
  if (stale) {
    L.info("the standby at {} says it has just started ({}): the stream this node holds to it is an old one, "
           "cancelled, and a new one made",
           stale->addr(), how);
  } else {
    if (connected_.load()) return;
    int64_t last = last_standby_kick_ns_.load();
    const int64_t every = std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.connect_backoff).count();
    if (now_ns - last < every || !last_standby_kick_ns_.compare_exchange_strong(last, now_ns)) return;
  }
  {
    std::lock_guard<std::mutex> g(link_mu_);
    retry_now_.store(true);
  }
  if (stale) stale->cancel();
  link_cv_.notify_all();
}

std::string Engine::last_error() const {
  std::lock_guard<std::mutex> g(lag_mu_);
  return last_error_;
}

uint32_t Engine::record_format() const {
  std::lock_guard<std::mutex> g(link_mu_);
  return link_ && link_->ready() ? link_->format() : 0;
}

uint64_t Engine::lag_bytes() const {
  std::lock_guard<std::mutex> g(lag_mu_);
  uint64_t b = 0;
  for (const auto &e : unacked_bytes_) b += e.second;
  return b;
}

void Engine::commit_path_realtime(const char *thread) {
  static auto &L = log::component("engine");
  if (!cfg_.realtime) return;
  if (make_thread_realtime(kRealtimePriorityCommit)) {
    realtime_ok_.store(true);
    // A real-time thread woken on a worker's core preempts the worker at every wake-up.
    keep_thread_off_cpus(cfg_.worker_cpus);
  } else
    L.warn("the {} thread runs at normal priority: real-time scheduling is not permitted", thread);
}

void Engine::record_pause(uint64_t ns) {
  double us = double(ns) / 1000.0;
  for (size_t i = 0; i < kPauseBuckets; i++)
    if (us <= kPauseBucketsUs[i]) stats_.pause_buckets[i]++;
  stats_.pause_count++;
  stats_.pause_ns_sum += ns;
  if (ns > stats_.pause_ns_max.load()) stats_.pause_ns_max.store(ns);
  timing_.record(CommitStage::PAUSE, ns);
}

}  // namespace ftpair::ckpt
