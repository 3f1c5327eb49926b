// In-service upgrade: the extra Sync stream to the new instance of the standby node (the
// joiner). It is added, synced in full, fed every epoch, and either dropped or promoted to be
// the standby's stream.
#include "checkpoint/engine.h"

#include "common/clock.h"
#include "common/log.h"

namespace ftpair::ckpt {

Status Engine::add_joiner(const std::string &addr) {
  static auto &L = log::component("engine");
  if (!replicating_.load()) return FailedPrecondition("this node is not active: it has no state to give a joiner");
  if (addr.empty()) return InvalidArgument("join: empty address");
  std::lock_guard<std::mutex> g(link_mu_);
  if (!joiner_addr_.empty() && joiner_addr_ != addr)
    return FailedPrecondition("another instance is already joining (" + joiner_addr_ + ")");
  if (joiner_addr_ == addr) return Status::Ok();
  joiner_addr_ = addr;
  joiner_error_.clear();
  link_cv_.notify_all();
  L.info("instance at {} joins (upgrade): full sync, then every epoch", addr);
  return Status::Ok();
}

void Engine::drop_joiner(const std::string &why) {
  static auto &L = log::component("engine");
  std::lock_guard<std::mutex> g(link_mu_);
  if (joiner_addr_.empty() && !joiner_) return;
  L.info("dropping the joining instance {}: {}", joiner_addr_, why);
  joiner_addr_.clear();
  joiner_error_ = why;
  if (joiner_) joiner_->break_off();
  link_cv_.notify_all();
}

Status Engine::promote_joiner(const std::string &addr) {
  static auto &L = log::component("engine");
  LinkPtr old, j;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    j = joiner_;
    if (!j || j->addr() != addr || !j->usable())
      return FailedPrecondition("no joining instance is connected at " + addr);
    if (!j->in_sync.load())
      return FailedPrecondition("the joining instance at " + addr + " is not in sync yet (full sync " +
                                std::to_string(int(j->progress.load() * 100)) + "%)");
    old = link_;
    link_ = j;
    j->promoted.store(true);
    joiner_.reset();
    joiner_addr_.clear();
    // The thread reading j goes on reading it as the standby's; the next joiner gets its own.
    if (running_.load()) joiner_threads_.emplace_back([this] { link_loop(true); });
    // The standby's sync state is now the joiner's: same epochs, its acknowledgements.
    acked_.store(j->acked.load());
    sent_.store(j->sent.load());
    need_full_.store(false);
    in_sync_.store(true);
    connected_.store(true);
    progress_.store(1.0);
    if (old) old->break_off();  // its thread sees a link that is no longer the standby's: no loss
  }
  {
    std::lock_guard<std::mutex> g(lag_mu_);
    unacked_bytes_.clear();
    oldest_unacked_ = Clock::now();
    last_error_.clear();
  }
  L.info("the instance at {} ({}, record format {}) is now the standby's stream", addr, j->peer_version(),
         j->format());
  update_release();
  req_cv_.notify_all();
  link_cv_.notify_all();
  return Status::Ok();
}

Engine::JoinerStatus Engine::joiner_status() const {
  JoinerStatus s;
  std::lock_guard<std::mutex> g(link_mu_);
  s.addr = joiner_addr_;
  s.error = joiner_error_;
  if (joiner_) {
    s.connected = joiner_->usable();
    s.in_sync = joiner_->in_sync.load();
    s.progress = joiner_->progress.load();
    s.format = joiner_->format();
    s.acked = joiner_->acked.load();
    s.node = joiner_->peer_node();
    s.version = joiner_->peer_version();
  }
  return s;
}

// A joiner's acknowledgements move its own state only: they release no held output.
void Engine::on_joiner_ack(const LinkPtr &link, uint64_t epoch) {
  static auto &L = log::component("engine");
  if (link->sent.load() <= epoch)
    link->unacked_since_ns.store(0);
  else
    link->unacked_since_ns.store(mono_ns());
  if (!link->in_sync.load() && link->full_epoch.load() != 0 && epoch >= link->full_epoch.load()) {
    link->in_sync.store(true);
    link->progress.store(1.0);
    L.info("the joining instance at {} is in sync at epoch {}: full sync of {} records in {:.3f} s", link->addr(),
           epoch, link->full_records.load(), double(mono_ns() - link->full_start_ns.load()) / 1e9);
  }
}

// A joiner that stopped acknowledging, or never answered hello, is dropped (and retried).
void Engine::watch_joiner(Clock::time_point now) {
  if (!joiner_ || joiner_->broken()) return;
  const int64_t since = joiner_->unacked_since_ns.load();
  const int64_t limit = std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.ack_timeout).count();
  const bool stuck = joiner_->hello_overdue(now, cfg_.ack_timeout) ||
                     (joiner_->ready() && since != 0 && mono_ns() - since > limit);
  if (stuck) {
    joiner_error_ = "the joining instance at " + joiner_->addr() + " stopped acknowledging";
    joiner_->break_off();
  }
}

}  // namespace ftpair::ckpt
