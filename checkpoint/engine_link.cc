// The engine's streams: keep one open to the standby (and one to a joiner), read their
// acknowledgements, watch them, and notice when the standby is lost.
#include "checkpoint/engine.h"

#include <algorithm>

#include "checkpoint/version.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/realtime.h"

namespace ftpair::ckpt {

v1::SyncMessage Engine::hello_message() const {
  v1::SyncMessage m;
  v1::Hello *h = m.mutable_hello();
  const VersionRange local = local_versions();
  h->set_node_id(cfg_.node_id);
  h->set_generation(cfg_.generation());
  h->set_software_version(software_version());
  h->set_protocol_version_min(local.protocol_min);
  h->set_protocol_version_max(local.protocol_max);
  for (uint32_t f : local.record_formats) h->add_record_formats(f);
  h->add_capabilities("full-sync");
  h->add_capabilities(cfg_.strict ? "strict" : "relaxed");
  h->set_role("active");
  uint64_t slots = 0;
  for (const dp::FlowTable *t : tables_) slots += t->capacity();
  h->set_flow_capacity(cfg_.flow_capacity ? cfg_.flow_capacity : static_cast<uint32_t>(slots));
  h->set_shards(static_cast<uint32_t>(tables_.size()));
  h->set_shard_capacity(tables_[0]->capacity());
  return m;
}

/* One thread per stream: `joiner` false keeps the standby's stream (cfg_.peer) open, true
 * the joining instance's (add_joiner). After promote_joiner the joiner thread keeps reading
 * the link it opened, which is then the standby's; the other thread waits until it ends. */
void Engine::link_loop(bool joiner) {
  static auto &L = log::component("engine");
  // Reads the acknowledgements: the commit path.
  commit_path_realtime(joiner ? "joiner stream" : "standby stream");
  while (running_.load()) {
    std::string addr;
    bool busy;
    {
      std::lock_guard<std::mutex> g(link_mu_);
      addr = joiner ? joiner_addr_ : cfg_.peer;
      busy = joiner ? joiner_ != nullptr : link_ != nullptr;
    }
    if (!replicating_.load() || addr.empty() || busy) {
      std::unique_lock<std::mutex> lk(link_mu_);
      link_cv_.wait_for(lk, std::chrono::milliseconds(joiner ? 20 : 100));
      continue;
    }
    auto link = std::make_shared<SyncLink>(addr, cfg_.credentials);
    {
      std::lock_guard<std::mutex> g(link_mu_);
      // Registered before the stream starts: the watchdog may cancel a hello that hangs.
      if (joiner) {
        if (joiner_addr_ != addr) continue;  // dropped meanwhile
        joiner_ = link;
      } else {
        link_ = link;
        retry_now_.store(false);  // a kick is for the attempt now under way
      }
    }
    link->open();
    const Status hs = link->hello(hello_message());
    if (hs.ok()) {
      if (!joiner) {
        need_full_.store(true);
        in_sync_.store(false);
        progress_.store(0);
        link->mark_ready();
        connected_.store(true);
        stats_.connects++;
      } else {
        link->mark_ready();
      }
      L.info("connected to {} {} ({}) at {} (record format {})", joiner ? "the joining instance of" : "standby",
             link->peer_node(), link->peer_version(), addr, link->format());
      link->read_acks([this] { return running_.load(); },
                      [this, &link](const v1::Ack &ack) { handle_ack(link, ack); });
    }
    // A hello this side refuses (the far end's choice or size) ends the stream with that reason.
    if (!hs.ok() && hs.code() == Code::FAILED_PRECONDITION) link->cancel();
    const std::string ended = link->finish();
    link_ended(link, hs.ok() || hs.code() != Code::FAILED_PRECONDITION ? ended : hs.message());
    if (link->promoted.load()) return;  // this thread read a promoted joiner's stream: done
    // A stream that stood for a while and ended: the first attempt at once (the standby's
    // address may already have a new owner, a restarted daemon or a claimed spare), then the
    // backoff. Never for a stream that ends as soon as it is made.
    if (hs.ok() && link->age(std::chrono::steady_clock::now()) > std::chrono::seconds(1)) continue;
    std::unique_lock<std::mutex> lk(link_mu_);
    // Every notify ends the wait (set_replicating, the joiners' changes, standby_is_up). A kick
    // from standby_is_up that came before the wait began is not lost: it skips it.
    if (!joiner && retry_now_.exchange(false)) continue;
    link_cv_.wait_for(lk, cfg_.connect_backoff);
    if (!joiner) retry_now_.store(false);
  }
}

void Engine::link_ended(const LinkPtr &link, const std::string &why) {
  static auto &L = log::component("engine");
  bool was_primary = false, was_joiner = false;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    if (link_ == link) link_.reset(), was_primary = true;
    if (joiner_ == link) joiner_.reset(), was_joiner = true;
  }
  if (was_primary) {
    if (connected_.load()) {
      mark_lost(why);
    } else {
      // Retried every connect_backoff: say it once, and again when the reason changes.
      const std::string error = "cannot sync with " + link->addr() + ": " + why;
      std::lock_guard<std::mutex> g(lag_mu_);
      if (error != last_error_) L.warn("{}", error);
      last_error_ = error;
    }
  } else if (was_joiner) {
    std::lock_guard<std::mutex> g(link_mu_);
    if (!joiner_addr_.empty()) joiner_error_ = "cannot sync with the joining instance at " + link->addr() + ": " + why;
  }
  // else: a standby stream replaced by promote_joiner ends quietly.
}

// A standby that stopped acknowledging, or never answered hello, is lost.
void Engine::watch_standby(Clock::time_point now) {
  if (!link_ || link_->broken()) return;
  bool stuck_ack = false;
  if (link_->ready() && sent_.load() > acked_.load()) {
    std::lock_guard<std::mutex> l(lag_mu_);
    stuck_ack = !unacked_bytes_.empty() && now - oldest_unacked_ > cfg_.ack_timeout;
  }
  if (link_->hello_overdue(now, cfg_.ack_timeout) || stuck_ack) link_->break_off();
}

Engine::StandbyView Engine::standby_view() const {
  LinkPtr link;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    link = link_;
  }
  StandbyView v;
  if (!link || link->hello_ns.load() == 0) return v;
  v.node = link->peer_node();
  v.role_state = link->ack_role_state.load();
  v.flows = link->ack_flows.load();
  v.stream_age_s = double(mono_ns() - link->hello_ns.load()) / 1e9;
  return v;
}

void Engine::handle_ack(const LinkPtr &link, const v1::Ack &ack) {
  const uint64_t epoch = ack.epoch();
  bool primary;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    primary = link == link_;
  }
  if (epoch > link->acked.load()) link->acked.store(epoch);
  link->ack_role_state.store(static_cast<int>(ack.role_state()));
  link->ack_flows.store(ack.flows());
  if (primary)
    on_ack(epoch, ack.apply_ns());
  else
    on_joiner_ack(link, epoch);
}

void Engine::on_ack(uint64_t epoch, uint64_t apply_ns) {
  static auto &L = log::component("engine");
  const int64_t now = mono_ns();
  if (epoch > acked_.load()) acked_.store(epoch);
  LinkPtr link;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    link = link_;
  }
  if (!in_sync_.load() && link && link->full_epoch.load() != 0 && epoch >= link->full_epoch.load()) {
    in_sync_.store(true);
    progress_.store(1.0);
    stats_.last_full_sync_seconds = double(mono_ns() - full_start_ns_.load()) / 1e9;
    L.info("standby in sync at epoch {}: full sync of {} records in {:.3f} s", epoch, link->full_records.load(),
           stats_.last_full_sync_seconds.load());
  }
  // Held output first: the bookkeeping below is not on the commit path.
  update_release();
  stats_.last_ack_unix_ns = unix_ns();
  {
    std::lock_guard<std::mutex> g(lag_mu_);
    while (!unacked_bytes_.empty() && unacked_bytes_.front().first <= epoch) unacked_bytes_.pop_front();
    oldest_unacked_ = Clock::now();
    // One acknowledgement may cover several epochs: each written one is timed to it.
    bool applied_timed = false;
    for (auto &f : in_flight_) {
      if (f.first == 0 || f.first > epoch) continue;
      timing_.record(CommitStage::ACK, uint64_t(std::max<int64_t>(0, now - f.second)));
      if (f.first == epoch && apply_ns && !applied_timed) {
        timing_.record(CommitStage::APPLY, apply_ns);
        applied_timed = true;
      }
      f = {0, 0};
    }
  }
  req_cv_.notify_all();
}

void Engine::mark_lost(const std::string &why) {
  static auto &L = log::component("engine");
  bool was = connected_.exchange(false);
  in_sync_.store(false);
  need_full_.store(true);
  {
    std::lock_guard<std::mutex> g(lag_mu_);
    unacked_bytes_.clear();
    in_flight_.fill({0, 0});
    last_error_ = why;
  }
  if (was) {
    stats_.standby_lost++;
    L.warn("standby lost: {}", why);
  }
  update_release();
  req_cv_.notify_all();
}

}  // namespace ftpair::ckpt
