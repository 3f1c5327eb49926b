// When to checkpoint, and the checkpoint itself: quiesce, flip, capture, encode, send; the
// explicit requests that wait for an acknowledgement; and strict mode's output release.
#include "checkpoint/engine.h"

#include <algorithm>
#include <optional>
#include <thread>

#include <rte_cycles.h>
#include <rte_pause.h>

#include "checkpoint/capture_encoder.h"
#include "checkpoint/record_codec.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/realtime.h"

namespace ftpair::ckpt {

namespace {
// Parked workers resume when the scope that parked them ends, however it ends.
struct ResumeAtExit {
  dp::InterfaceAgent &agent;
  ~ResumeAtExit() { agent.resume(); }
};
}  // namespace

void Engine::loop() {
  commit_path_realtime("checkpoint");
  auto next = Clock::now() + cfg_.interval;
  auto last = Clock::now();
  while (running_.load()) {
    auto now = Clock::now();
    {
      std::lock_guard<std::mutex> g(link_mu_);
      watch_standby(now);
      watch_joiner(now);
    }
    if (!replicating_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    // Read before the conditions: a packet held after this read changes the signal, and the
    // wait below returns at once.
    const uint32_t hold_signal = agent_.hold_signal();
    bool explicit_request;
    {
      std::lock_guard<std::mutex> g(req_mu_);
      explicit_request = req_seq_ > req_done_;
    }
    const uint32_t dirty = dirty_count();
    // Strict mode: output held since the last cut waits for the open epoch; output held
    // before it waits for an acknowledgement, and a new epoch would not bring that sooner.
    const bool held = cfg_.strict && held_now() > 0 && agent_.newest_held_ns() >= cut_clock_ns_;
    bool joiner_wants_full = false;
    {
      std::lock_guard<std::mutex> g(link_mu_);
      joiner_wants_full = joiner_ && joiner_->ready() && joiner_->need_full.load();
    }
    const bool want_full = (need_full_.load() && connected_.load()) || joiner_wants_full;
    const bool due = explicit_request || dirty >= cfg_.dirty_threshold ||
                     (now >= next && (dirty > 0 || want_full)) ||
                     (held && in_sync_.load() && now - last >= cfg_.strict_min_gap);
    if (!due) {
      // Until the next reason to checkpoint: the strict gap's end for held output, the
      // interval's for dirty state (at most 100 us, to see the dirty threshold crossed),
      // else 200 us (explicit requests, full syncs, the link's watchdog).
      std::chrono::nanoseconds wait = std::chrono::microseconds(200);
      if (held && in_sync_.load())
        wait = std::max<std::chrono::nanoseconds>(std::chrono::microseconds(1), last + cfg_.strict_min_gap - now);
      else if (dirty > 0)
        wait = std::clamp<std::chrono::nanoseconds>(next - now, std::chrono::microseconds(1), std::chrono::microseconds(100));
      // Strict mode: the first packet held after the cut ends the wait (InterfaceAgent's
      // hold signal), so held output closes its epoch at once.
      if (cfg_.strict)
        agent_.wait_hold_signal(hold_signal, wait);
      else
        std::this_thread::sleep_for(wait);
      continue;
    }
    run_checkpoint(explicit_request);
    last = Clock::now();
    next = last + cfg_.interval;
  }
}

bool Engine::captures_done(uint64_t epoch) const {
  for (const dp::FlowTable *t : tables_)
    if (t->capture_done() != epoch) return false;
  return true;
}

// One shard: its own buffer. Several: their records one after the other, each stamped with
// its shard by the table that captured it.
const std::vector<dp::CapturedSlot> &Engine::gather_captures() {
  if (tables_.size() == 1) return tables_[0]->captured();
  size_t n = 0;
  for (const dp::FlowTable *t : tables_) n += t->captured().size();
  gathered_.clear();
  gathered_.reserve(n);
  for (const dp::FlowTable *t : tables_) gathered_.insert(gathered_.end(), t->captured().begin(), t->captured().end());
  return gathered_;
}

void Engine::release_captures() {
  for (dp::FlowTable *t : tables_) t->capture_release();
  // As the tables' buffers: a full sync's gathered copy is not kept.
  if (gathered_.capacity() > 65536) std::vector<dp::CapturedSlot>().swap(gathered_);
}

bool Engine::run_checkpoint(bool explicit_request) {
  LinkPtr link, joiner;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    if (link_ && link_->usable()) link = link_;
    if (joiner_ && joiner_->usable()) joiner = joiner_;
  }
  const bool capture = link || joiner;
  const bool primary_full = link && need_full_.load();
  const bool joiner_full = joiner && joiner->need_full.load();
  const bool full = primary_full || joiner_full;
  // A full sync's encode and send are long: at normal priority, so that they never keep a
  // CPU from a worker (stall detection) or the beats.
  std::optional<NormalPriority> normal;
  if (full) normal.emplace();
  // Strict mode: how long the oldest packet held for this epoch waited for the flip.
  if (cfg_.strict && !full) {
    const uint64_t oldest = agent_.oldest_held_ns();
    if (oldest && oldest >= cut_clock_ns_) {
      const uint64_t now = dp::InterfaceAgent::clock_ns();
      if (now > oldest) timing_.record(CommitStage::CLOSE, now - oldest);
    }
  }
  // A full capture's buffer (48 bytes a flow) is made ready here, off the worker and outside
  // the pause, with room for the flows that may come before the cut.
  if (full && capture)
    for (dp::FlowTable *t : tables_) t->prepare_capture(t->size() + t->size() / 16 + 1024);
  int64_t epoch;
  {
    std::lock_guard<std::mutex> g(barrier_mu_);
    if (agent_.quiesce(cfg_.quiesce_timeout) != 0) {
      stats_.aborted++;
      return false;
    }
    const ResumeAtExit resume{agent_};
    // A full sync for one stream while the other is in sync: that one takes the capture as
    // the epoch's changes, so it must carry the epoch's deletions too.
    const dp::CaptureKind kind = !full ? dp::CaptureKind::DIRTY
                                 : (link && !primary_full) || (joiner && !joiner_full) ? dp::CaptureKind::FULL_AND_DELETIONS
                                                                                        : dp::CaptureKind::FULL;
    // Every shard at once, under one quiesce: one cut. The captures are released together,
    // so either every table takes the flip or (a capture still held) none does.
    epoch = -EBUSY;
    bool held_capture = false;
    for (const dp::FlowTable *t : tables_) held_capture |= t->capture_held();
    if (!held_capture) {
      for (dp::FlowTable *t : tables_) {
        const int64_t e = t->flip_epoch(capture, kind);
        if (t == tables_[0]) epoch = e;
      }
    }
    // With the workers parked, the log's count of events is exactly the cut's.
    if (cfg_.log_sequence) cut_log_sequence_ = cfg_.log_sequence();
    if (epoch >= 0) {
      cut_clock_ns_ = dp::InterfaceAgent::clock_ns();
      agent_.mark_cut();
    }
  }
  record_pause(agent_.last_pause_ns());
  const int64_t flip_end_ns = mono_ns();
  if (epoch < 0) {
    stats_.aborted++;
    return false;
  }
  stats_.checkpoints++;
  stats_.last_checkpoint_unix_ns = unix_ns();
  uint64_t records = 0;
  if (capture) {
    if (primary_full) {
      need_full_.store(false);
      full_start_ns_.store(mono_ns());
    }
    if (joiner_full) {
      joiner->need_full.store(false);
      joiner->full_start_ns.store(mono_ns());
    }
    /* The worker copies the capture between bursts; wait for it (never holds the worker).
     * An epoch's few records are copied within microseconds of the resume: at real-time
     * priority (off the workers' cores when it can be) spin that long, then sleep between
     * checks; at normal priority the spin would only take the CPU from others. */
    const int64_t spin_until = mono_ns() + (full || !realtime_ok_.load() ? 0 : 10000);
    while (!captures_done(uint64_t(epoch))) {
      if (!running_.load()) return false;
      if (mono_ns() < spin_until)
        rte_pause();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(5));
    }
    if (!full) timing_.record(CommitStage::CAPTURE, uint64_t(mono_ns() - flip_end_ns));
    records = 0;
    for (const dp::FlowTable *t : tables_) records += t->captured().size();
    send_captures(uint64_t(epoch), link, primary_full, joiner, joiner_full);
  }
  if (explicit_request) {
    std::lock_guard<std::mutex> g(req_mu_);
    req_done_ = req_seq_;
    req_epoch_ = uint64_t(epoch);
    req_records_ = records;
  }
  req_cv_.notify_all();
  return true;
}

void Engine::send_captures(uint64_t epoch, const LinkPtr &primary_link, bool primary_full,
                           const LinkPtr &joiner_link, bool joiner_full) {
  static auto &L = log::component("engine");
  const auto &cap = gather_captures();
  const size_t n = cap.size();
  CaptureHeader h;
  h.epoch = epoch;
  h.generation = cfg_.generation();
  h.chunk_records = cfg_.chunk_records;
  h.now_tsc = rte_rdtsc();
  h.tsc_hz = rte_get_tsc_hz();
  h.shard_capacity = tables_[0]->capacity();
  h.captured_unix_ns = unix_ns();
  h.has_log_sequence = bool(cfg_.log_sequence);
  h.log_sequence = cut_log_sequence_;
  // The node's fingerprint at the cut: every worker's table's, summed. It covers the whole
  // replicated state, so only a stream whose record format carries all of it gets it
  // (formats 1 and 2 leave out the TCP window fields).
  bool fp_valid = true;
  for (const dp::FlowTable *t : tables_) {
    bool valid = false;
    h.fingerprint += t->cut_fingerprint(&valid);
    fp_valid &= valid;
  }
  h.has_fingerprint = fp_valid;  // for each link, only from format 3 (below)
  if (primary_link && primary_full && !joiner_link) return send_full_pipelined(epoch, primary_link, cap, h);
  // Each link's format passed format_supported() at hello, so this cannot fail; if it ever
  // does, the link is broken off (and reconnects) rather than sent a partial epoch.
  auto encode = [&](const LinkPtr &link, bool full, std::vector<v1::SyncMessage> *out) -> LinkPtr {
    h.full = full;
    h.format = link->format();
    h.has_fingerprint = fp_valid && h.format >= kRecordFormatV3;
    Status st = encode_capture(cap.data(), n, h, out);
    if (st.ok()) return link;
    L.error("epoch {} for {}: {}", epoch, link->addr(), st.str());
    link->break_off();
    return nullptr;
  };
  std::vector<v1::SyncMessage> pm, jm;
  const int64_t encode_start_ns = mono_ns();
  const LinkPtr primary = primary_link ? encode(primary_link, primary_full, &pm) : nullptr;
  LinkPtr joiner;
  if (joiner_link) {
    if (primary && primary->format() == joiner_link->format() && primary_full == joiner_full) {
      jm = pm;
      joiner = joiner_link;
    } else {
      joiner = encode(joiner_link, joiner_full, &jm);
    }
  }
  // The worker may capture again as soon as the buffer is back; the send can be slow.
  release_captures();
  const bool timed = primary && !primary_full;
  const int64_t send_start_ns = mono_ns();
  if (timed) timing_.record(CommitStage::ENCODE, uint64_t(send_start_ns - encode_start_ns));
  if (primary) {
    const uint64_t bytes = encoded_bytes(pm);
    primary_sending(epoch, *primary, primary_full, n, pm.size(), bytes);
    // gRPC flow control lets a write finish only as the standby reads: the acknowledgement
    // deadline runs from its last chunk, not from the start of a full sync that can outlast
    // ack_timeout on a large table.
    const bool written = primary->write(pm, [&](double p) { primary_chunk_taken(epoch, p, bytes); });
    if (written) {
      if (timed) {
        const int64_t now = mono_ns();
        timing_.record(CommitStage::SEND, uint64_t(now - send_start_ns));
        std::lock_guard<std::mutex> g(lag_mu_);
        in_flight_[epoch % kInFlight] = {epoch, now};
      }
      primary_sent(epoch, *primary, n, bytes);
    }
  }
  if (joiner) {
    if (joiner_full) {
      joiner->full_epoch.store(epoch);
      joiner->full_records.store(n);
      L.info("full sync to the joining instance at {} started: epoch {}, {} records in {} messages",
             joiner->addr(), epoch, n, jm.size());
    }
    if (joiner->unacked_since_ns.load() == 0) joiner->unacked_since_ns.store(mono_ns());
    const bool written = joiner->write(jm, [&joiner](double p) {
      joiner->progress.store(p);
      joiner->unacked_since_ns.store(mono_ns());
    });
    if (written) joiner->sent.store(epoch);
  }
}

void Engine::send_full_pipelined(uint64_t epoch, const LinkPtr &link, const std::vector<dp::CapturedSlot> &cap,
                                 CaptureHeader h) {
  static auto &L = log::component("engine");
  const size_t n = cap.size();
  h.full = true;
  h.format = link->format();
  h.has_fingerprint = h.has_fingerprint && h.format >= kRecordFormatV3;
  const uint64_t live = count_live(cap.data(), n);
  const size_t chunks = full_sync_chunks(n, h);
  primary_sending(epoch, *link, true, n, chunks, 0);
  uint64_t bytes = 0;  // written so far (write_made counts each chunk before on_chunk)
  const bool written = link->write_made(
      chunks,
      [&](size_t c, v1::SyncMessage *m) {
        const Status st = encode_full_chunk(cap.data(), n, h, live, c, m);
        if (!st.ok()) L.error("epoch {} for {}: {}", epoch, link->addr(), st.str());
        return st.ok();
      },
      [&](double p) { primary_chunk_taken(epoch, p, bytes); }, &bytes);
  release_captures();
  primary_chunk_taken(epoch, progress_.load(), bytes);
  if (written) primary_sent(epoch, *link, n, bytes);
}

void Engine::primary_sending(uint64_t epoch, SyncLink &link, bool full, size_t records, size_t messages,
                             uint64_t bytes) {
  static auto &L = log::component("engine");
  {
    std::lock_guard<std::mutex> g(lag_mu_);
    if (unacked_bytes_.empty()) oldest_unacked_ = Clock::now();
    unacked_bytes_.emplace_back(epoch, bytes);
  }
  if (!full) return;
  link.full_epoch.store(epoch);
  link.full_records.store(records);
  stats_.full_syncs++;
  stats_.full_sync_records += records;
  stats_.last_full_sync_records = records;
  L.info("full sync to the standby at {} started: epoch {}, {} records in {} messages (captured in {:.1f} ms)",
         link.addr(), epoch, records, messages, double(mono_ns() - full_start_ns_.load()) / 1e6);
}

void Engine::primary_chunk_taken(uint64_t epoch, double progress, uint64_t bytes) {
  progress_.store(progress);
  std::lock_guard<std::mutex> g(lag_mu_);
  oldest_unacked_ = Clock::now();
  for (auto &e : unacked_bytes_)
    if (e.first == epoch) e.second = bytes;
}

void Engine::primary_sent(uint64_t epoch, SyncLink &link, size_t records, uint64_t bytes) {
  sent_.store(epoch);
  link.sent.store(epoch);
  stats_.records_sent += records;
  stats_.bytes_sent += bytes;
}

// Strict mode: output waits for acknowledged state, unless nobody can acknowledge it and the
// operator chose availability (fallback relaxed).
void Engine::update_release() {
  if (!cfg_.strict) return;
  if (in_sync_.load() && replicating_.load())
    agent_.set_acked_epoch(acked_.load());
  else if (cfg_.fallback_relaxed || !replicating_.load())
    agent_.set_acked_epoch(UINT64_MAX);
  else
    agent_.set_acked_epoch(acked_.load());
}

Status Engine::checkpoint_now(std::chrono::milliseconds timeout, uint64_t *epoch, uint64_t *records) {
  if (!replicating_.load()) return FailedPrecondition("this node is not active: nothing to checkpoint");
  auto deadline = Clock::now() + timeout;
  std::unique_lock<std::mutex> lk(req_mu_);
  uint64_t seq = ++req_seq_;
  if (!req_cv_.wait_until(lk, deadline, [&] { return req_done_ >= seq || !running_.load(); }))
    return DeadlineExceeded("the checkpoint did not run in time (workers not parking?)");
  *epoch = req_epoch_;
  *records = req_records_;
  uint64_t e = req_epoch_;
  if (!in_sync_.load())
    return Unavailable("epoch " + std::to_string(e) + " closed, but no standby is in sync" +
                       (last_error().empty() ? "" : ": " + last_error()));
  if (!req_cv_.wait_until(lk, deadline, [&] { return acked_.load() >= e || !in_sync_.load(); }))
    return DeadlineExceeded("the standby did not acknowledge epoch " + std::to_string(e) + " in time");
  if (acked_.load() < e) return Unavailable("the standby was lost before acknowledging epoch " + std::to_string(e));
  return Status::Ok();
}

Status Engine::with_workers_parked(const std::function<void()> &fn) {
  return run_parked([&fn] {
    fn();
    return Status::Ok();
  });
}

Status Engine::run_parked(const std::function<Status()> &fn) {
  unsigned late = 0;
  for (unsigned attempt = 1;; attempt++) {
    {
      std::unique_lock<std::mutex> g(barrier_mu_);
      if (agent_.quiesce(kParkWait, &late) == 0) {
        const ResumeAtExit resume{agent_};  // an exception out of fn must not leave them parked
        return fn();
      }
    }
    stats_.park_timeouts++;
    if (attempt == kParkAttempts)
      return DeadlineExceeded("the workers did not park within " + std::to_string(kParkWait.count()) + " ms, " +
                              std::to_string(kParkAttempts) + " times in a row (worker " + std::to_string(late) +
                              " the last time)");
    /* The parked workers go back to their packets, and a checkpoint that is due may take the
     * barrier, while the late worker gets its CPU. */
    std::this_thread::sleep_for(kParkGap);
  }
}

}  // namespace ftpair::ckpt
