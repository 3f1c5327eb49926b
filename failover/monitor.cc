#include "failover/monitor.h"

#include <algorithm>

namespace ftpair::fo {

using Clock = std::chrono::steady_clock;

namespace {
int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
int64_t unix_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

Monitor::Monitor(MonitorConfig cfg, MonitorHooks hooks) : cfg_(std::move(cfg)), hooks_(std::move(hooks)) {}

Monitor::~Monitor() { stop(); }

void Monitor::start() {
  if (cfg_.peer.empty() || running_.exchange(true)) return;
  thread_ = std::thread([this] { loop(); });
}

void Monitor::stop() {
  if (!running_.exchange(false)) return;
  if (thread_.joinable()) thread_.join();
}

void Monitor::record(const v1::Beat &b) {
  last_heard_ns_.store(now_ns());
  ever_heard_.store(true);
  {
    std::lock_guard<std::mutex> g(beat_mu_);
    last_beat_ = b;
  }
  if (hooks_.on_peer_beat) hooks_.on_peer_beat(b);
}

void Monitor::heard(const v1::Beat &peer_beat, v1::Beat *reply) {
  record(peer_beat);
  if (hooks_.fill_local) hooks_.fill_local(reply);
  reply->set_sequence(seq_.load());
  reply->set_sent_unix_ns(unix_ns());
}

v1::Beat Monitor::last_peer_beat() const {
  std::lock_guard<std::mutex> g(beat_mu_);
  return last_beat_;
}

double Monitor::silence_seconds() const {
  if (!ever_heard_.load()) return -1;
  return double(now_ns() - last_heard_ns_.load()) / 1e9;
}

bool Monitor::peer_silent() const {
  if (!ever_heard_.load()) return false;
  auto limit = std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.interval).count() *
               int64_t(cfg_.miss_threshold);
  return now_ns() - last_heard_ns_.load() > limit;
}

void Monitor::loop() {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 20);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 100);
  auto creds = cfg_.credentials ? cfg_.credentials : grpc::InsecureChannelCredentials();
  auto channel = grpc::CreateCustomChannel(cfg_.peer, creds, args);
  auto stub = v1::Peer::NewStub(channel);
  auto next = Clock::now();
  while (running_.load()) {
    next += cfg_.interval;
    v1::Beat mine, theirs;
    if (hooks_.fill_local) hooks_.fill_local(&mine);
    mine.set_sequence(seq_.fetch_add(1) + 1);
    mine.set_sent_unix_ns(unix_ns());
    grpc::ClientContext ctx;
    // A slow answer from a live peer is still an answer: wait up to a third of the silence
    // budget before counting a miss (a shared core can hold a reply for tens of ms).
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::max(cfg_.interval, cfg_.interval * cfg_.miss_threshold / 3));
    grpc::Status st = stub->Heartbeat(&ctx, mine, &theirs);
    sent_++;
    if (st.ok())
      record(theirs);
    else
      misses_++;
    if (peer_silent() && hooks_.on_peer_silent) {
      hooks_.on_peer_silent("missed heartbeats for " +
                            std::to_string(static_cast<int>(silence_seconds() * 1000)) + " ms");
    }
    auto now = Clock::now();
    if (next < now) next = now;  // a stall of ours: do not burst to catch up
    std::this_thread::sleep_until(next);
  }
}

}  // namespace ftpair::fo
