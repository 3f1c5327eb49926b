#include "checkpoint/engine.h"

#include <cstdio>

#include <rte_cycles.h>

#include "checkpoint/record_codec.h"
#include "checkpoint/version.h"

namespace ftpair::ckpt {

using Clock = std::chrono::steady_clock;

namespace {
int64_t unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
constexpr size_t kMaxSamples = 1 << 16;
}  // namespace

struct Engine::Link {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Replication::Stub> stub;
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SyncMessage, v1::SyncReply>> stream;
  std::mutex write_mu;
  std::atomic<bool> ready{false};
  std::atomic<bool> broken{false};
  Clock::time_point started = Clock::now();
  uint32_t format = kRecordFormatV1;
  std::atomic<uint64_t> full_epoch{0};  // epoch of the full sync sent on this link (loop thread writes, link thread reads)
};

Engine::Engine(EngineConfig cfg, dp::FlowTable &flows, dp::InterfaceAgent &agent)
    : cfg_(std::move(cfg)), flows_(flows), agent_(agent) {
  samples_.reserve(kMaxSamples);
}

Engine::~Engine() { stop(); }

void Engine::start() {
  if (running_.exchange(true)) return;
  loop_thread_ = std::thread([this] { loop(); });
  link_thread_ = std::thread([this] { link_loop(); });
}

void Engine::stop() {
  if (!running_.exchange(false)) return;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    if (link_) link_->ctx.TryCancel();
  }
  link_cv_.notify_all();
  req_cv_.notify_all();
  if (loop_thread_.joinable()) loop_thread_.join();
  if (link_thread_.joinable()) link_thread_.join();
}

void Engine::set_replicating(bool on) {
  replicating_.store(on);
  if (!on) {
    std::lock_guard<std::mutex> g(link_mu_);
    if (link_) link_->ctx.TryCancel();
  }
  link_cv_.notify_all();
  update_release();
}

std::string Engine::last_error() const {
  std::lock_guard<std::mutex> g(lag_mu_);
  return last_error_;
}

uint64_t Engine::lag_bytes() const {
  std::lock_guard<std::mutex> g(lag_mu_);
  uint64_t b = 0;
  for (const auto &e : unacked_bytes_) b += e.second;
  return b;
}

std::vector<uint64_t> Engine::pause_samples() const {
  std::lock_guard<std::mutex> g(samples_mu_);
  if (samples_.size() < kMaxSamples) return samples_;
  std::vector<uint64_t> out(samples_.begin() + long(samples_next_), samples_.end());
  out.insert(out.end(), samples_.begin(), samples_.begin() + long(samples_next_));
  return out;
}

void Engine::clear_pause_samples() {
  std::lock_guard<std::mutex> g(samples_mu_);
  samples_.clear();
  samples_next_ = 0;
}

void Engine::record_pause(uint64_t ns) {
  double us = double(ns) / 1000.0;
  for (size_t i = 0; i < kPauseBuckets; i++)
    if (us <= kPauseBucketsUs[i]) stats_.pause_buckets[i]++;
  stats_.pause_count++;
  stats_.pause_ns_sum += ns;
  if (ns > stats_.pause_ns_max.load()) stats_.pause_ns_max.store(ns);
  std::lock_guard<std::mutex> g(samples_mu_);
  if (samples_.size() < kMaxSamples) {
    samples_.push_back(ns);
  } else {
    samples_[samples_next_] = ns;
    samples_next_ = (samples_next_ + 1) % kMaxSamples;
  }
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

void Engine::mark_lost(const std::string &why) {
  bool was = connected_.exchange(false);
  in_sync_.store(false);
  need_full_.store(true);
  {
    std::lock_guard<std::mutex> g(lag_mu_);
    unacked_bytes_.clear();
    last_error_ = why;
  }
  if (was) {
    stats_.standby_lost++;
    std::fprintf(stderr, "ftpaird: replication: standby lost: %s\n", why.c_str());
  }
  update_release();
  req_cv_.notify_all();
}

void Engine::on_ack(uint64_t epoch) {
  if (epoch > acked_.load()) acked_.store(epoch);
  stats_.last_ack_unix_ns = unix_ns();
  std::shared_ptr<Link> link;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    link = link_;
  }
  if (!in_sync_.load() && link && link->full_epoch.load() != 0 && epoch >= link->full_epoch.load()) {
    in_sync_.store(true);
    progress_.store(1.0);
    stats_.last_full_sync_seconds =
        std::chrono::duration<double>(Clock::now() - full_start_).count();
    std::fprintf(stderr, "ftpaird: replication: standby in sync at epoch %lu (full sync %.3f s)\n",
                 static_cast<unsigned long>(epoch), stats_.last_full_sync_seconds.load());
  }
  {
    std::lock_guard<std::mutex> g(lag_mu_);
    while (!unacked_bytes_.empty() && unacked_bytes_.front().first <= epoch) unacked_bytes_.pop_front();
    oldest_unacked_ = Clock::now();
  }
  update_release();
  req_cv_.notify_all();
}

void Engine::link_loop() {
  while (running_.load()) {
    if (!replicating_.load() || cfg_.peer.empty()) {
      std::unique_lock<std::mutex> lk(link_mu_);
      link_cv_.wait_for(lk, std::chrono::milliseconds(100));
      continue;
    }
    auto link = std::make_shared<Link>();
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    auto creds = cfg_.credentials ? cfg_.credentials : grpc::InsecureChannelCredentials();
    link->channel = grpc::CreateCustomChannel(cfg_.peer, creds, args);
    link->stub = v1::Replication::NewStub(link->channel);
    {
      std::lock_guard<std::mutex> g(link_mu_);
      link_ = link;  // not ready yet; the loop's watchdog may cancel a stuck hello
    }
    link->stream = link->stub->Sync(&link->ctx);
    v1::SyncMessage hello_msg;
    v1::Hello *h = hello_msg.mutable_hello();
    VersionRange local = local_versions();
    h->set_node_id(cfg_.node_id);
    h->set_generation(cfg_.generation());
    h->set_software_version(FTPAIR_VERSION);
    h->set_protocol_version_min(local.protocol_min);
    h->set_protocol_version_max(local.protocol_max);
    for (uint32_t f : local.record_formats) h->add_record_formats(f);
    h->add_capabilities("full-sync");
    h->add_capabilities(cfg_.strict ? "strict" : "relaxed");
    h->set_role("active");
    h->set_flow_capacity(flows_.capacity());
    v1::SyncReply reply;
    bool ok = link->stream->Write(hello_msg) && link->stream->Read(&reply) && reply.has_hello();
    if (ok) {
      link->format = reply.hello().chosen_record_format();
      if (!format_supported(link->format)) ok = false;
    }
    if (ok) {
      need_full_.store(true);
      in_sync_.store(false);
      progress_.store(0);
      link->ready.store(true);
      connected_.store(true);
      stats_.connects++;
      std::fprintf(stderr, "ftpaird: replication: connected to standby %s at %s (record format %u)\n",
                   reply.hello().node_id().c_str(), cfg_.peer.c_str(), link->format);
      while (running_.load() && link->stream->Read(&reply)) {
        if (reply.has_ack()) on_ack(reply.ack().epoch());
      }
    }
    link->broken.store(true);
    link->ctx.TryCancel();
    grpc::Status st;
    {
      std::lock_guard<std::mutex> w(link->write_mu);
      st = link->stream->Finish();
    }
    {
      std::lock_guard<std::mutex> g(link_mu_);
      if (link_ == link) link_.reset();
    }
    std::string why = st.ok() ? "stream closed" : st.error_message();
    if (connected_.load()) {
      mark_lost(why);
    } else {
      std::lock_guard<std::mutex> g(lag_mu_);
      last_error_ = "cannot sync with " + cfg_.peer + ": " + why;
    }
    std::unique_lock<std::mutex> lk(link_mu_);
    link_cv_.wait_for(lk, cfg_.connect_backoff);
  }
}

void Engine::send_capture(uint64_t epoch, bool full, const std::shared_ptr<Link> &link) {
  const auto &cap = flows_.captured();
  const uint64_t now = rte_rdtsc(), hz = rte_get_tsc_hz();
  const int64_t captured_at = unix_ns();
  const size_t n = cap.size();
  const size_t per = cfg_.chunk_records;
  std::vector<v1::SyncMessage> msgs;
  if (full) {
    const size_t chunks = n == 0 ? 1 : (n + per - 1) / per;
    for (size_t c = 0; c < chunks; c++) {
      v1::SyncMessage m;
      v1::Checkpoint *cp = m.mutable_checkpoint();
      cp->set_epoch(epoch);
      cp->set_generation(cfg_.generation());
      cp->set_full(true);
      cp->set_chunk(static_cast<uint32_t>(c));
      cp->set_last_chunk(c + 1 == chunks);
      cp->set_flows_at_cut(n);
      cp->set_captured_unix_ns(captured_at);
      size_t lo = c * per, cnt = std::min(per, n - std::min(n, lo));
      v1::RecordBatch *b = cp->add_batches();
      b->set_format(link->format);
      b->set_count(static_cast<uint32_t>(cnt));
      encode_records(cap.data() + lo, cnt, link->format, now, hz, b->mutable_records());
      b->set_crc32c(crc32c(b->records().data(), b->records().size()));
      msgs.push_back(std::move(m));
    }
  } else {
    v1::SyncMessage m;
    v1::Checkpoint *cp = m.mutable_checkpoint();
    cp->set_epoch(epoch);
    cp->set_generation(cfg_.generation());
    cp->set_captured_unix_ns(captured_at);  // flows_at_cut is a full-sync cross-check only
    for (size_t lo = 0; lo < n; lo += per) {
      size_t cnt = std::min(per, n - lo);
      v1::RecordBatch *b = cp->add_batches();
      b->set_format(link->format);
      b->set_count(static_cast<uint32_t>(cnt));
      encode_records(cap.data() + lo, cnt, link->format, now, hz, b->mutable_records());
      b->set_crc32c(crc32c(b->records().data(), b->records().size()));
    }
    msgs.push_back(std::move(m));
  }
  // The worker may capture again as soon as the buffer is back; the send can be slow.
  flows_.capture_release();
  uint64_t bytes = 0;
  for (const auto &m : msgs) bytes += m.ByteSizeLong();
  {
    std::lock_guard<std::mutex> g(lag_mu_);
    if (unacked_bytes_.empty()) oldest_unacked_ = Clock::now();
    unacked_bytes_.emplace_back(epoch, bytes);
  }
  if (full) {
    link->full_epoch.store(epoch);
    stats_.full_syncs++;
    stats_.full_sync_records += n;
    stats_.last_full_sync_records = n;
  }
  std::lock_guard<std::mutex> w(link->write_mu);
  for (size_t i = 0; i < msgs.size(); i++) {
    if (link->broken.load() || !link->stream->Write(msgs[i])) {
      link->broken.store(true);
      link->ctx.TryCancel();
      return;
    }
    if (full && msgs.size() > 1) {
      progress_.store(0.99 * double(i + 1) / double(msgs.size()));
      // A standby that keeps taking chunks (gRPC flow control lets a write finish only as it
      // reads) is alive: the acknowledgement deadline runs from its last chunk, not from the
      // start of a full sync that can outlast ack_timeout on a large table.
      std::lock_guard<std::mutex> g(lag_mu_);
      oldest_unacked_ = Clock::now();
    }
  }
  sent_.store(epoch);
  stats_.records_sent += n;
  stats_.bytes_sent += bytes;
}

bool Engine::run_checkpoint(bool explicit_request) {
  std::shared_ptr<Link> link;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    if (link_ && link_->ready.load() && !link_->broken.load()) link = link_;
  }
  const bool capture = link != nullptr;
  const bool full = capture && need_full_.load();
  int64_t epoch;
  {
    std::lock_guard<std::mutex> g(barrier_mu_);
    if (agent_.quiesce(cfg_.quiesce_timeout) != 0) {
      stats_.aborted++;
      return false;
    }
    epoch = flows_.flip_epoch(capture, full ? dp::CaptureKind::FULL : dp::CaptureKind::DIRTY);
    agent_.resume();
  }
  record_pause(agent_.last_pause_ns());
  if (epoch < 0) {
    stats_.aborted++;
    return false;
  }
  stats_.checkpoints++;
  stats_.last_checkpoint_unix_ns = unix_ns();
  uint64_t records = 0;
  if (capture) {
    if (full) {
      need_full_.store(false);
      full_start_ = Clock::now();
    }
    // The worker copies the capture between bursts; wait for it (never holds the worker).
    while (flows_.capture_done() != uint64_t(epoch)) {
      if (!running_.load()) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(5));
    }
    records = flows_.captured().size();
    send_capture(uint64_t(epoch), full, link);
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

void Engine::loop() {
  auto next = Clock::now() + cfg_.interval;
  auto last = Clock::now();
  while (running_.load()) {
    auto now = Clock::now();
    // Watchdog: a standby that stopped acknowledging, or never answered hello, is lost.
    {
      std::lock_guard<std::mutex> g(link_mu_);
      if (link_ && !link_->broken.load()) {
        bool stuck_hello = !link_->ready.load() && now - link_->started > cfg_.ack_timeout;
        bool stuck_ack = false;
        if (link_->ready.load() && sent_.load() > acked_.load()) {
          std::lock_guard<std::mutex> l(lag_mu_);
          stuck_ack = !unacked_bytes_.empty() && now - oldest_unacked_ > cfg_.ack_timeout;
        }
        if (stuck_hello || stuck_ack) {
          link_->broken.store(true);
          link_->ctx.TryCancel();
        }
      }
    }
    if (!replicating_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    bool explicit_request;
    {
      std::lock_guard<std::mutex> g(req_mu_);
      explicit_request = req_seq_ > req_done_;
    }
    const uint32_t dirty = flows_.dirty_count();
    const bool held = cfg_.strict && agent_.worker_counters(0).held_now.load() > 0;
    const bool want_full = need_full_.load() && connected_.load();
    const bool due = explicit_request || dirty >= cfg_.dirty_threshold ||
                     (now >= next && (dirty > 0 || want_full)) ||
                     (held && in_sync_.load() && now - last >= cfg_.strict_min_gap);
    if (!due) {
      std::this_thread::sleep_for(dirty > 0 || held ? std::chrono::microseconds(20)
                                                    : std::chrono::microseconds(200));
      continue;
    }
    run_checkpoint(explicit_request);
    last = Clock::now();
    next = last + cfg_.interval;
  }
}

Status Engine::checkpoint_now(std::chrono::milliseconds timeout, uint64_t *epoch, uint64_t *records) {
  if (!replicating_.load()) return FailedPrecondition("this node is not active: nothing to checkpoint");
  auto deadline = Clock::now() + timeout;
  std::unique_lock<std::mutex> lk(req_mu_);
  uint64_t seq = ++req_seq_;
  if (!req_cv_.wait_until(lk, deadline, [&] { return req_done_ >= seq || !running_.load(); }))
    return Status(Code::DEADLINE_EXCEEDED, "the checkpoint did not run in time (workers not parking?)");
  *epoch = req_epoch_;
  *records = req_records_;
  uint64_t e = req_epoch_;
  if (!in_sync_.load())
    return Unavailable("epoch " + std::to_string(e) + " closed, but no standby is in sync" +
                       (last_error().empty() ? "" : ": " + last_error()));
  if (!req_cv_.wait_until(lk, deadline, [&] { return acked_.load() >= e || !in_sync_.load(); }))
    return Status(Code::DEADLINE_EXCEEDED, "the standby did not acknowledge epoch " + std::to_string(e) + " in time");
  if (acked_.load() < e) return Unavailable("the standby was lost before acknowledging epoch " + std::to_string(e));
  return Status::Ok();
}

Status Engine::with_workers_parked(const std::function<void()> &fn) {
  std::lock_guard<std::mutex> g(barrier_mu_);
  if (agent_.quiesce(std::chrono::milliseconds(100)) != 0)
    return Status(Code::DEADLINE_EXCEEDED, "the workers did not park within 100 ms");
  fn();
  agent_.resume();
  return Status::Ok();
}

}  // namespace ftpair::ckpt
