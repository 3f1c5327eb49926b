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
  std::atomic<uint32_t> format{kRecordFormatV1};  // link thread writes before ready; others read
  std::atomic<uint64_t> full_epoch{0};  // epoch of the full sync sent on this link (loop thread writes, link thread reads)
  std::string addr;
  std::string peer_node, peer_version;  // from the hello reply
  // A joiner's own sync state (the standby's lives in the engine; promote_joiner moves it).
  std::atomic<bool> need_full{true}, in_sync{false};
  std::atomic<uint64_t> acked{0}, sent{0};
  std::atomic<double> progress{0};
  std::atomic<int64_t> unacked_since_ns{0};  // 0 = nothing unacknowledged
  std::atomic<bool> promoted{false};          // now the standby's stream (promote_joiner)
  std::atomic<int64_t> full_start_ns{0};  // loop thread writes, link thread reads
};

namespace {
int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
}  // namespace

Engine::Engine(EngineConfig cfg, dp::FlowTable &flows, dp::InterfaceAgent &agent)
    : cfg_(std::move(cfg)), flows_(flows), agent_(agent) {
  samples_.reserve(kMaxSamples);
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
    if (link_) link_->ctx.TryCancel();
    if (joiner_) joiner_->ctx.TryCancel();
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
    if (link_) link_->ctx.TryCancel();
    // A joiner joins an active; a demoted node has nothing to give it.
    joiner_addr_.clear();
    if (joiner_) joiner_->ctx.TryCancel();
  }
  link_cv_.notify_all();
  update_release();
}

std::string Engine::last_error() const {
  std::lock_guard<std::mutex> g(lag_mu_);
  return last_error_;
}

uint32_t Engine::record_format() const {
  std::lock_guard<std::mutex> g(link_mu_);
  return link_ && link_->ready.load() ? link_->format.load() : 0;
}

Status Engine::add_joiner(const std::string &addr) {
  if (!replicating_.load()) return FailedPrecondition("this node is not active: it has no state to give a joiner");
  if (addr.empty()) return InvalidArgument("join: empty address");
  std::lock_guard<std::mutex> g(link_mu_);
  if (!joiner_addr_.empty() && joiner_addr_ != addr)
    return FailedPrecondition("another instance is already joining (" + joiner_addr_ + ")");
  if (joiner_addr_ == addr) return Status::Ok();
  joiner_addr_ = addr;
  joiner_error_.clear();
  link_cv_.notify_all();
  std::fprintf(stderr, "ftpaird: replication: instance at %s joins (upgrade): full sync, then every epoch\n", addr.c_str());
  return Status::Ok();
}

void Engine::drop_joiner(const std::string &why) {
  std::lock_guard<std::mutex> g(link_mu_);
  if (joiner_addr_.empty() && !joiner_) return;
  std::fprintf(stderr, "ftpaird: replication: dropping the joining instance %s: %s\n", joiner_addr_.c_str(), why.c_str());
  joiner_addr_.clear();
  joiner_error_ = why;
  if (joiner_) {
    joiner_->broken.store(true);
    joiner_->ctx.TryCancel();
  }
  link_cv_.notify_all();
}

Status Engine::promote_joiner(const std::string &addr) {
  std::shared_ptr<Link> old, j;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    j = joiner_;
    if (!j || j->addr != addr || !j->ready.load() || j->broken.load())
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
    if (old) {
      old->broken.store(true);  // its thread sees a link that is no longer the standby's: no loss
      old->ctx.TryCancel();
    }
  }
  {
    std::lock_guard<std::mutex> g(lag_mu_);
    unacked_bytes_.clear();
    oldest_unacked_ = Clock::now();
    last_error_.clear();
  }
  std::fprintf(stderr, "ftpaird: replication: the instance at %s (%s, record format %u) is now the standby's stream\n",
               addr.c_str(), j->peer_version.c_str(), j->format.load());
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
    s.connected = joiner_->ready.load() && !joiner_->broken.load();
    s.in_sync = joiner_->in_sync.load();
    s.progress = joiner_->progress.load();
    s.format = joiner_->format.load();
    s.acked = joiner_->acked.load();
    s.node = joiner_->peer_node;
    s.version = joiner_->peer_version;
  }
  return s;
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

void Engine::handle_ack(const std::shared_ptr<Link> &link, uint64_t epoch) {
  bool primary;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    primary = link == link_;
  }
  if (epoch > link->acked.load()) link->acked.store(epoch);
  if (primary) {
    on_ack(epoch);
    return;
  }
  if (link->sent.load() <= epoch) link->unacked_since_ns.store(0);
  else link->unacked_since_ns.store(steady_ns());
  if (!link->in_sync.load() && link->full_epoch.load() != 0 && epoch >= link->full_epoch.load()) {
    link->in_sync.store(true);
    link->progress.store(1.0);
    std::fprintf(stderr, "ftpaird: replication: the joining instance at %s is in sync at epoch %lu (full sync %.3f s)\n",
                 link->addr.c_str(), static_cast<unsigned long>(epoch),
                 double(steady_ns() - link->full_start_ns.load()) / 1e9);
  }
}

/* One thread per stream: `joiner` false keeps the standby's stream (cfg_.peer) open, true
 * the joining instance's (add_joiner). After promote_joiner the joiner thread keeps reading
 * the link it opened, which is then the standby's; the other thread waits until it ends. */
void Engine::link_loop(bool joiner) {
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
    auto link = std::make_shared<Link>();
    link->addr = addr;
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    args.SetMaxSendMessageSize(64 << 20);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 1000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    // Keep pinging while the stream is idle (no epoch has data): gRPC stops after 2 pings
    // without data by default, and a standby whose VM vanished (no RST) then looks in sync forever.
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
    auto creds = cfg_.credentials ? cfg_.credentials : grpc::InsecureChannelCredentials();
    link->channel = grpc::CreateCustomChannel(addr, creds, args);
    link->stub = v1::Replication::NewStub(link->channel);
    {
      std::lock_guard<std::mutex> g(link_mu_);
      // not ready yet; the loop's watchdog may cancel a stuck hello
      if (joiner) {
        if (joiner_addr_ != addr) continue;  // dropped meanwhile
        joiner_ = link;
      } else {
        link_ = link;
      }
    }
    link->stream = link->stub->Sync(&link->ctx);
    v1::SyncMessage hello_msg;
    v1::Hello *h = hello_msg.mutable_hello();
    VersionRange local = local_versions();
    h->set_node_id(cfg_.node_id);
    h->set_generation(cfg_.generation());
    h->set_software_version(software_version());
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
      link->format.store(reply.hello().chosen_record_format());
      if (!format_supported(link->format.load())) ok = false;
    }
    if (ok) {
      {
        std::lock_guard<std::mutex> g(link_mu_);
        link->peer_node = reply.hello().node_id();
        link->peer_version = reply.hello().software_version();
      }
      if (!joiner) {
        need_full_.store(true);
        in_sync_.store(false);
        progress_.store(0);
        link->ready.store(true);
        connected_.store(true);
        stats_.connects++;
      } else {
        link->ready.store(true);
      }
      std::fprintf(stderr, "ftpaird: replication: connected to %s %s (%s) at %s (record format %u)\n",
                   joiner ? "the joining instance of" : "standby", reply.hello().node_id().c_str(),
                   reply.hello().software_version().c_str(), addr.c_str(), link->format.load());
      while (running_.load() && link->stream->Read(&reply)) {
        if (reply.has_ack()) handle_ack(link, reply.ack().epoch());
      }
    }
    link->broken.store(true);
    link->ctx.TryCancel();
    grpc::Status st;
    {
      std::lock_guard<std::mutex> w(link->write_mu);
      st = link->stream->Finish();
    }
    bool was_primary = false, was_joiner = false;
    {
      std::lock_guard<std::mutex> g(link_mu_);
      if (link_ == link) link_.reset(), was_primary = true;
      if (joiner_ == link) joiner_.reset(), was_joiner = true;
    }
    std::string why = st.ok() ? "stream closed" : st.error_message();
    if (was_primary) {
      if (connected_.load()) {
        mark_lost(why);
      } else {
        std::lock_guard<std::mutex> g(lag_mu_);
        last_error_ = "cannot sync with " + addr + ": " + why;
      }
    } else if (was_joiner) {
      std::lock_guard<std::mutex> g(link_mu_);
      if (!joiner_addr_.empty()) joiner_error_ = "cannot sync with the joining instance at " + addr + ": " + why;
    }
    // else: a standby stream replaced by promote_joiner ends quietly.
    if (link->promoted.load()) return;  // this thread read a promoted joiner's stream: done
    std::unique_lock<std::mutex> lk(link_mu_);
    link_cv_.wait_for(lk, cfg_.connect_backoff);
  }
}

namespace {
// The capture as Sync messages for one stream: a full sync in chunks, or one incremental
// checkpoint. A full capture also carries the slots freed in its epoch (deletions), so a
// stream in sync can take it as an incremental one.
std::vector<v1::SyncMessage> build_messages(const std::vector<dp::CapturedSlot> &cap, uint64_t epoch, uint64_t generation,
                                            bool full, uint32_t format, size_t per, uint64_t now, uint64_t hz,
                                            int64_t captured_at) {
  const size_t n = cap.size();
  std::vector<v1::SyncMessage> msgs;
  auto add_batch = [&](v1::Checkpoint *cp, size_t lo, size_t cnt) {
    v1::RecordBatch *b = cp->add_batches();
    b->set_format(format);
    b->set_count(static_cast<uint32_t>(cnt));
    encode_records(cap.data() + lo, cnt, format, now, hz, b->mutable_records());
    b->set_crc32c(crc32c(b->records().data(), b->records().size()));
  };
  if (full) {
    uint64_t live = 0;
    for (const auto &c : cap) live += c.in_use ? 1 : 0;
    const size_t chunks = n == 0 ? 1 : (n + per - 1) / per;
    for (size_t c = 0; c < chunks; c++) {
      v1::SyncMessage m;
      v1::Checkpoint *cp = m.mutable_checkpoint();
      cp->set_epoch(epoch);
      cp->set_generation(generation);
      cp->set_full(true);
      cp->set_chunk(static_cast<uint32_t>(c));
      cp->set_last_chunk(c + 1 == chunks);
      cp->set_flows_at_cut(live);
      cp->set_captured_unix_ns(captured_at);
      size_t lo = c * per;
      add_batch(cp, lo, std::min(per, n - std::min(n, lo)));
      msgs.push_back(std::move(m));
    }
  } else {
    v1::SyncMessage m;
    v1::Checkpoint *cp = m.mutable_checkpoint();
    cp->set_epoch(epoch);
    cp->set_generation(generation);
    cp->set_captured_unix_ns(captured_at);  // flows_at_cut is a full-sync cross-check only
    for (size_t lo = 0; lo < n; lo += per) add_batch(cp, lo, std::min(per, n - lo));
    msgs.push_back(std::move(m));
  }
  return msgs;
}
}  // namespace

bool Engine::write_messages(const std::shared_ptr<Link> &link, const std::vector<v1::SyncMessage> &msgs, bool primary) {
  const bool full = !msgs.empty() && msgs[0].checkpoint().full();
  std::lock_guard<std::mutex> w(link->write_mu);
  for (size_t i = 0; i < msgs.size(); i++) {
    if (link->broken.load() || !link->stream->Write(msgs[i])) {
      link->broken.store(true);
      link->ctx.TryCancel();
      return false;
    }
    if (full && msgs.size() > 1) {
      const double p = 0.99 * double(i + 1) / double(msgs.size());
      // A standby that keeps taking chunks (gRPC flow control lets a write finish only as it
      // reads) is alive: the acknowledgement deadline runs from its last chunk, not from the
      // start of a full sync that can outlast ack_timeout on a large table.
      if (primary) {
        progress_.store(p);
        std::lock_guard<std::mutex> g(lag_mu_);
        oldest_unacked_ = Clock::now();
      } else {
        link->progress.store(p);
        link->unacked_since_ns.store(steady_ns());
      }
    }
  }
  return true;
}

void Engine::send_captures(uint64_t epoch, const std::shared_ptr<Link> &primary, bool primary_full,
                           const std::shared_ptr<Link> &joiner, bool joiner_full) {
  const auto &cap = flows_.captured();
  const uint64_t now = rte_rdtsc(), hz = rte_get_tsc_hz();
  const int64_t captured_at = unix_ns();
  const size_t n = cap.size();
  const uint64_t gen = cfg_.generation();
  std::vector<v1::SyncMessage> pm, jm;
  if (primary) pm = build_messages(cap, epoch, gen, primary_full, primary->format, cfg_.chunk_records, now, hz, captured_at);
  if (joiner) {
    if (primary && primary->format == joiner->format && primary_full == joiner_full)
      jm = pm;
    else
      jm = build_messages(cap, epoch, gen, joiner_full, joiner->format, cfg_.chunk_records, now, hz, captured_at);
  }
  // The worker may capture again as soon as the buffer is back; the send can be slow.
  flows_.capture_release();
  if (primary) {
    uint64_t bytes = 0;
    for (const auto &m : pm) bytes += m.ByteSizeLong();
    {
      std::lock_guard<std::mutex> g(lag_mu_);
      if (unacked_bytes_.empty()) oldest_unacked_ = Clock::now();
      unacked_bytes_.emplace_back(epoch, bytes);
    }
    if (primary_full) {
      primary->full_epoch.store(epoch);
      stats_.full_syncs++;
      stats_.full_sync_records += n;
      stats_.last_full_sync_records = n;
    }
    if (write_messages(primary, pm, true)) {
      sent_.store(epoch);
      primary->sent.store(epoch);
      stats_.records_sent += n;
      stats_.bytes_sent += bytes;
    }
  }
  if (joiner) {
    if (joiner_full) joiner->full_epoch.store(epoch);
    if (joiner->unacked_since_ns.load() == 0) joiner->unacked_since_ns.store(steady_ns());
    if (write_messages(joiner, jm, false)) joiner->sent.store(epoch);
  }
}

bool Engine::run_checkpoint(bool explicit_request) {
  std::shared_ptr<Link> link, joiner;
  {
    std::lock_guard<std::mutex> g(link_mu_);
    if (link_ && link_->ready.load() && !link_->broken.load()) link = link_;
    if (joiner_ && joiner_->ready.load() && !joiner_->broken.load()) joiner = joiner_;
  }
  const bool capture = link || joiner;
  const bool primary_full = link && need_full_.load();
  const bool joiner_full = joiner && joiner->need_full.load();
  const bool full = primary_full || joiner_full;
  int64_t epoch;
  {
    std::lock_guard<std::mutex> g(barrier_mu_);
    if (agent_.quiesce(cfg_.quiesce_timeout) != 0) {
      stats_.aborted++;
      return false;
    }
    // A full sync for one stream while the other is in sync: that one takes the capture as
    // the epoch's changes, so it must carry the epoch's deletions too.
    const dp::CaptureKind kind = !full ? dp::CaptureKind::DIRTY
                                 : (link && !primary_full) || (joiner && !joiner_full) ? dp::CaptureKind::FULL_AND_DELETIONS
                                                                                        : dp::CaptureKind::FULL;
    epoch = flows_.flip_epoch(capture, kind);
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
    if (primary_full) {
      need_full_.store(false);
      full_start_ = Clock::now();
    }
    if (joiner_full) {
      joiner->need_full.store(false);
      joiner->full_start_ns.store(steady_ns());
    }
    // The worker copies the capture between bursts; wait for it (never holds the worker).
    while (flows_.capture_done() != uint64_t(epoch)) {
      if (!running_.load()) return false;
      std::this_thread::sleep_for(std::chrono::microseconds(5));
    }
    records = flows_.captured().size();
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
      if (joiner_ && !joiner_->broken.load()) {
        const int64_t since = joiner_->unacked_since_ns.load();
        const int64_t limit = std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.ack_timeout).count();
        bool stuck = (!joiner_->ready.load() && now - joiner_->started > cfg_.ack_timeout) ||
                     (joiner_->ready.load() && since != 0 && steady_ns() - since > limit);
        if (stuck) {
          joiner_error_ = "the joining instance at " + joiner_->addr + " stopped acknowledging";
          joiner_->broken.store(true);
          joiner_->ctx.TryCancel();
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
    bool joiner_wants_full = false;
    {
      std::lock_guard<std::mutex> g(link_mu_);
      joiner_wants_full = joiner_ && joiner_->ready.load() && joiner_->need_full.load();
    }
    const bool want_full = (need_full_.load() && connected_.load()) || joiner_wants_full;
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
