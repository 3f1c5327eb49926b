#include "failover/monitor.h"

#include <arpa/inet.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/clock.h"
#include "common/log.h"
#include "common/realtime.h"

namespace ftpair::fo {

using Clock = std::chrono::steady_clock;

namespace {
auto &L = log::component("monitor");
// A probe waiting for its answer reads the socket itself this often.
constexpr std::chrono::microseconds kProbeSlice{500};
}  // namespace

const char *beat_reject_label(BeatReject r) {
  switch (r) {
    case BeatReject::WRONG_SOURCE: return "wrong_source";
    case BeatReject::SHORT: return "short";
    case BeatReject::BAD_MAGIC: return "bad_magic";
    case BeatReject::BAD_VERSION: return "bad_version";
    case BeatReject::BAD_PAYLOAD: return "bad_payload";
    case BeatReject::UNAUTHENTICATED: return "unauthenticated";
    case BeatReject::UNKNOWN_KEY: return "unknown_key";
    case BeatReject::BAD_MAC: return "bad_mac";
    case BeatReject::REPLAY: return "replay";
    case BeatReject::STALE_BOOT: return "stale_boot";
    case BeatReject::COUNT: break;
  }
  return "unknown";
}

namespace {
constexpr uint8_t kBeatMagic[4] = {'F', 'T', 'P', 'B'};
constexpr uint8_t kBeatVersion = 1;
}  // namespace

std::string encode_beat_datagram(const v1::Beat &b) {
  std::string d(kBeatHeader + b.ByteSizeLong(), '\0');
  d.resize(encode_beat_into(b, reinterpret_cast<uint8_t *>(d.data()), d.size()));
  return d;
}

size_t encode_beat_into(const v1::Beat &b, uint8_t *buf, size_t cap) {
  const size_t body = b.ByteSizeLong();
  if (cap < kBeatHeader + body) return 0;
  std::memset(buf, 0, kBeatHeader);
  std::memcpy(buf, kBeatMagic, 4);
  buf[4] = kBeatVersion;
  b.SerializeWithCachedSizesToArray(buf + kBeatHeader);
  return kBeatHeader + body;
}

BeatReject decode_beat_datagram(const uint8_t *p, size_t n, v1::Beat *out) {
  if (n < kBeatHeader) return BeatReject::SHORT;
  if (std::memcmp(p, kBeatMagic, 4) != 0) return BeatReject::BAD_MAGIC;
  if (p[4] != kBeatVersion) return BeatReject::BAD_VERSION;
  if (n > kBeatMaxDatagram || !out->ParseFromArray(p + kBeatHeader, static_cast<int>(n - kBeatHeader)))
    return BeatReject::BAD_PAYLOAD;
  return BeatReject::COUNT;
}

/* A message the beat threads reuse, allocated up front: every string field with room for more
 * than a beat carries (node ids are at most 32 characters, a stall's text about 250), and
 * kWarmWorkers cleared entries in its worker list, which Clear() keeps for reuse. After this,
 * filling, parsing into or copying into it allocates nothing (unless a newer peer sends fields
 * this version does not know: protobuf keeps those as unknown fields, which allocate). */
static void warm_beat(v1::Beat *m) {
  constexpr int kWarmWorkers = 64;
  const std::string room(320, 'x');
  m->set_node_id(room);
  m->set_role(room);
  m->set_state(room);
  m->set_dataplane_unhealthy(room);
  for (int i = 0; i < kWarmWorkers; i++) m->add_dataplane_workers()->set_worker(uint32_t(i));
  m->Clear();
}

Monitor::Monitor(MonitorConfig cfg, MonitorHooks hooks) : cfg_(std::move(cfg)), hooks_(std::move(hooks)) {
  if (!cfg_.beat_keys.empty()) auth_ = std::make_unique<BeatAuth>(cfg_.beat_keys);
  for (v1::Beat *m : {&last_beat_, &hook_beat_, &probe_answer_, &probe_out_, &probe_ask_}) warm_beat(m);
}

Monitor::~Monitor() { stop(); }

bool Monitor::open_udp(std::string *err) {
  if (udp_fd_ >= 0) return true;
  in_addr bind_addr{}, peer_addr{};
  if (inet_pton(AF_INET, cfg_.udp_bind.c_str(), &bind_addr) != 1) {
    *err = "fast beats: bad local address '" + cfg_.udp_bind + "'";
    return false;
  }
  if (inet_pton(AF_INET, cfg_.udp_peer.c_str(), &peer_addr) != 1) {
    *err = "fast beats: bad peer address '" + cfg_.udp_peer + "'";
    return false;
  }
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int one = 1;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(cfg_.udp_port);
  sa.sin_addr = bind_addr;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      setsockopt(fd, IPPROTO_IP, IP_RECVERR, &one, sizeof(one)) != 0 ||  // a probe to a dead daemon: refused
      bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) != 0) {
    *err = "fast beats: cannot bind UDP " + cfg_.udp_bind + ":" + std::to_string(cfg_.udp_port) + ": " +
           std::strerror(errno);
    if (fd >= 0) close(fd);
    return false;
  }
  udp_fd_ = fd;
  udp_peer_addr_ = peer_addr.s_addr;
  return true;
}

bool Monitor::announce(v1::Beat b) {
  if (cfg_.peer.empty() || !cfg_.udp_port || running_.load()) return false;
  std::string err;
  if (udp_fd_ < 0) {
    if (!open_udp(&err)) return false;
    announce_only_fd_ = true;
  }
  return send_beat(b);
}

void Monitor::start() {
  if (cfg_.peer.empty() || running_.exchange(true)) return;
  announce_only_fd_ = false;  // the beat threads use it from here on
  {
    // Before the receiving thread runs: a beat it takes at once (a peer's announcement sent as
    // this node starts) is queued for the hook thread, not cleared after.
    std::lock_guard<std::mutex> g(hook_mu_);
    hook_stop_ = false;
    hook_pending_ = false;
  }
  if (cfg_.udp_port) {
    std::string err;
    if (open_udp(&err)) {
      last_tx_ns_.store(0);
      tx_cpu_.store(-1);
      rx_cpu_.store(-1);
      if (cfg_.beat_cpus.size() == 2) {
        tx_cpu_.store(cfg_.beat_cpus[0]), rx_cpu_.store(cfg_.beat_cpus[1]);
      } else if (cfg_.spread) {
        const std::vector<int> cpus = allowed_cpus(cfg_.avoid_cpus, 2);
        if (cpus.size() >= 2) tx_cpu_.store(cpus[cpus.size() - 1]), rx_cpu_.store(cpus[cpus.size() - 2]);
      }
      udp_rx_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "beats-rx");  // top -H, /proc/PID/task/*/comm
        udp_rx_loop();
      });
      udp_tx_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "beats-tx");  // top -H, /proc/PID/task/*/comm
        udp_tx_loop();
      });
      if (tx_cpu_.load() >= 0)
        L.info("fast beats: sending thread on CPU {}, receiving thread on CPU {} (each covers for the other)",
               tx_cpu_.load(), rx_cpu_.load());
      else if (cfg_.spread)
        L.info("fast beats: one CPU allowed, the beat threads share it (a held vCPU stops both)");
    } else {
      // Heartbeats still run over gRPC; the silence check stays on that loop.
      L.warn("{}; heartbeats over gRPC only", err);
      std::lock_guard<std::mutex> g(err_mu_);
      udp_error_ = err;
    }
  }
  hook_thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "beats-hook");
    hook_loop();
  });
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "beats-grpc");
    loop();
  });
  if (events_) events_->start();  // subscribes on its own thread: never delays the beats
}

void Monitor::attach_peer_events(std::unique_ptr<PeerEvents> events) {
  if (running_.load()) return;
  events_ = std::move(events);
}

void Monitor::stop() {
  if (!running_.exchange(false)) {
    // The socket announce() opened for a monitor never started (and only that: a second stop()
    // while the first joins the threads must not close theirs).
    if (announce_only_fd_.exchange(false)) {
      close(udp_fd_);
      udp_fd_ = -1;
    }
    return;
  }
  if (events_) events_->stop();  // waits out a promotion it started
  if (thread_.joinable()) thread_.join();
  if (udp_tx_.joinable()) udp_tx_.join();
  if (udp_rx_.joinable()) udp_rx_.join();
  {
    std::lock_guard<std::mutex> g(hook_mu_);
    hook_stop_ = true;
  }
  hook_cv_.notify_all();
  if (hook_thread_.joinable()) hook_thread_.join();
  if (udp_fd_ >= 0) close(udp_fd_);
  udp_fd_ = -1;
}

void Monitor::hook_loop() {
  /* Swapped, not moved: hook_beat_ keeps the strings of the beat before, so the receiver's copy
   * into it reuses them and allocates nothing (see record()). Both messages that take turns as
   * hook_beat_ are warmed: this one started cold, and the first beat with dataplane workers (a
   * probe's answer, rarer than the beats) copied into it after a swap made the real-time
   * receiver allocate their room, at any time (a fresh-clone CI run, session 26: 2 allocations
   * in BeatAlloc.TheBeatThreadsAllocateNothingOnceWarm; 22 runs of 60 here under load). */
  v1::Beat b;
  warm_beat(&b);
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(hook_mu_);
      hook_cv_.wait(lk, [this] { return hook_pending_ || hook_stop_; });
      if (hook_stop_) return;
      b.Swap(&hook_beat_);
      hook_pending_ = false;
    }
    hooks_.on_peer_beat(b);
  }
}

Status Monitor::set_beat_keys(std::vector<BeatKey> keys) {
  if (!auth_) return FailedPrecondition("the fast beats run unauthenticated: failover.beat_keys takes effect at a restart");
  if (keys.empty()) return FailedPrecondition("failover.beat_keys may not become empty while running: restart to turn authentication off");
  auth_->set_keys(std::move(keys));
  return Status::Ok();
}

std::string Monitor::udp_error() const {
  std::lock_guard<std::mutex> g(err_mu_);
  return udp_error_;
}

/* "K consecutive beats missed" (DESIGN.md), counted in checks of our own, one per interval:
 * a stall of this process (a busy machine) is one interval however long it lasts, and the
 * beats that waited in our socket meanwhile are heard before the next check. The wall-clock
 * silence must also exceed the threshold. */
void Monitor::check_silence() {
  if (udp_fd_ >= 0) repost();
  const int64_t heard = last_heard_ns_.load();
  if (heard != heard_at_check_) {
    heard_at_check_ = heard;
    silent_checks_ = 0;
    return;
  }
  /* Silent since the last check. Beats may wait unread in our socket, the receiving thread
   * held back with its CPU: read them here. */
  if (udp_fd_ >= 0) {
    const unsigned n = read_pending();
    if (n) {
      read_by_check_ += n;
      heard_at_check_ = last_heard_ns_.load();
      silent_checks_ = 0;
      return;
    }
  }
  if (++silent_checks_ < cfg_.miss_threshold) return;
  if (peer_silent() && hooks_.on_peer_silent) {
    NormalPriority normal;
    hooks_.on_peer_silent("missed heartbeats for " + std::to_string(static_cast<int>(silence_seconds() * 1000)) +
                          " ms");
  }
}

/* Pinned only at real-time priority: a normal thread is better off where the scheduler's
 * wake-up placement and load balancing put it. */
void Monitor::pin(std::atomic<int> &cpu, const char *what) {
  const int c = cpu.load();
  if (c < 0) return;
  if (!thread_is_realtime()) {
    cpu.store(-1);
    return;
  }
  if (!pin_thread_to_cpu(c)) {
    L.warn("fast beats: cannot pin the {} thread to CPU {} ({}); it runs where the scheduler puts it", what, c,
           std::strerror(errno));
    cpu.store(-1);
  }
}

void Monitor::udp_tx_loop() {
  if (cfg_.realtime) {
    bool ok = make_thread_realtime(kRealtimePriorityBeats);
    realtime_ok_.store(ok);
    if (!ok) L.warn("fast beats: no real-time priority here ({}); normal priority", std::strerror(errno));
  }
  pin(tx_cpu_, "sending");
  auto next = Clock::now();
  v1::Beat mine;  // one message, cleared and refilled: its strings are allocated once, here
  warm_beat(&mine);
  (void)datagram_scratch();  // this thread reads beats too (check_silence): warm its messages now
  while (running_.load()) {
    next += cfg_.interval;
    mine.Clear();
    if (hooks_.fill_local) hooks_.fill_local(&mine);
    send_beat(mine);
    check_silence();
    auto now = Clock::now();
    if (next < now) next = now;
    std::this_thread::sleep_until(next);
  }
}

bool Monitor::send_beat(v1::Beat &b, bool holds_probe_mu) {
  sockaddr_in peer{};
  peer.sin_family = AF_INET;
  peer.sin_port = htons(cfg_.udp_port);
  peer.sin_addr.s_addr = udp_peer_addr_;
  b.set_sequence(seq_.fetch_add(1) + 1);
  b.set_sent_unix_ns(unix_ns());
  uint8_t d[kBeatMaxDatagram];
  const size_t len = auth_ ? auth_->seal_into(b, d, sizeof(d)) : encode_beat_into(b, d, sizeof(d));
  if (len == 0) {  // larger than a datagram may be (a probe answer for many workers): not sent
    udp_oversize_++;
    return false;
  }
  for (int attempt = 0; attempt < 2; attempt++) {
    const ssize_t n = sendto(udp_fd_, d, len, MSG_DONTWAIT, reinterpret_cast<const sockaddr *>(&peer), sizeof(peer));
    if (n == static_cast<ssize_t>(len)) {
      udp_sent_++;
      last_tx_ns_.store(mono_ns(), std::memory_order_relaxed);
      return true;
    }
    /* With IP_RECVERR an ICMP error for an earlier datagram fails the next call, this one,
     * and this datagram was not sent: read the errors (a refusal of a probe's datagram
     * answers it) and send it again. */
    if (n < 0 && (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH || errno == EMSGSIZE ||
                  errno == EPROTO)) {
      drain_icmp_errors(holds_probe_mu);
      continue;
    }
    return false;
  }
  return false;
}

Monitor::ProbeResult Monitor::probe(std::chrono::microseconds timeout, v1::Beat *reply) {
  if (udp_fd_ < 0 || !running_.load()) return ProbeResult::NO_BEATS;
  /* One prober at a time (prober_mu_, which only probers take). The question is filled before
   * probe_mu_ is taken, into a message kept warm: the real-time receiver takes probe_mu_ to post
   * an answer, and the prober (the dataplane watch, itself real-time) allocates nothing. */
  std::lock_guard<std::mutex> one(prober_mu_);
  v1::Beat &ask = probe_ask_;
  ask.Clear();
  if (hooks_.fill_local) hooks_.fill_local(&ask);
  std::unique_lock<std::mutex> lk(probe_mu_);
  probe_id_ = ++probe_seq_;
  probe_answered_ = probe_refused_ = false;
  drain_icmp_errors(true);  // errors of earlier datagrams (they quote sequences from before)
  refusal_from_seq_.store(seq_.load() + 1);  // a refusal of any datagram sent from now on
  const uint64_t heard0 = udp_heard_.load();
  ask.set_probe(probe_id_);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  const auto done = [this] { return probe_answered_ || probe_refused_; };
  bool got = false;
  for (int attempt = 0; attempt < 3 && !got; attempt++) {
    send_beat(ask, true);  // a fresh sequence number and send time each time (send_beat sets them)
    const auto until = std::min(attempt == 2 ? deadline : std::chrono::steady_clock::now() + timeout / 3, deadline);
    for (;;) {
      got = probe_cv_.wait_until(lk, std::min(until, std::chrono::steady_clock::now() + kProbeSlice), done);
      if (got || std::chrono::steady_clock::now() >= until) break;
      /* No answer yet. It may wait unread in the socket, our receiving thread held back with
       * its CPU: read it here (probe_mu_ released: an answer read is posted under it). */
      lk.unlock();
      read_pending();
      lk.lock();
      if ((got = done())) break;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
  }
  probe_id_ = 0;
  refusal_from_seq_.store(0);
  if (probe_answered_) {
    /* Swapped out under the lock (no allocation), copied to the caller after it: both messages
     * keep their strings, for the receiver's next answer and the next probe. */
    probe_out_.Swap(&probe_answer_);
    lk.unlock();
    reply->CopyFrom(probe_out_);
    return ProbeResult::ANSWERED;
  }
  // An authentic beat heard meanwhile outweighs a refusal (an ICMP error is not authenticated).
  if (udp_heard_.load() > heard0) return ProbeResult::HEARD;
  if (probe_refused_) {
    probes_refused_++;
    return ProbeResult::REFUSED;
  }
  return ProbeResult::TIMEOUT;
}

uint64_t quoted_beat_sequence(const uint8_t *q, size_t n, const BeatAuth *auth) {
  size_t off = kBeatHeader;
  if (auth) {
    if (!auth->own_datagram(q, n)) return 0;
    off = kBeatAuthHeader;
    n -= kBeatTagBytes;
  } else if (n < kBeatHeader || std::memcmp(q, kBeatMagic, 4) != 0 || q[4] != kBeatVersion) {
    return 0;
  }
  // The Beat's fields in order (protobuf writes them by number): skip to field 4, a varint.
  const uint8_t *p = q + off, *const end = q + n;
  const auto varint = [&p, end](uint64_t *v) {
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64 && p < end; shift += 7) {
      const uint8_t b = *p++;
      r |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return *v = r, true;
    }
    return false;
  };
  while (p < end) {
    uint64_t key, v;
    if (!varint(&key)) return 0;
    const uint64_t field = key >> 3, type = key & 7;
    if (field == 4 && type == 0) return varint(&v) ? v : 0;
    if (field > 4) return 0;  // sequence 0 is not written; it is never sent as 0 anyway
    if (type == 0) {
      if (!varint(&v)) return 0;
    } else if (type == 1 || type == 5) {
      const size_t w = type == 1 ? 8 : 4;
      if (size_t(end - p) < w) return 0;
      p += w;
    } else if (type == 2) {
      if (!varint(&v) || v > uint64_t(end - p)) return 0;
      p += v;
    } else {
      return 0;
    }
  }
  return 0;
}

/* ICMP errors for datagrams to the peer (IP_RECVERR). Every queued error is read: errors left
 * queued count against the socket's receive buffer and would starve the beats. Any thread may
 * read them, each error once: a refusal is matched to the datagram it quotes, not to the time
 * it is read, so it does not matter which thread reads it or when. */
void Monitor::drain_icmp_errors(bool holds_probe_mu) {
  for (int i = 0; i < 256; i++) {
    uint8_t data[512], ctrl[512];  // data: the start of the refused datagram (enough for its sequence)
    sockaddr_in to{};
    iovec iov{data, sizeof(data)};
    msghdr mh{};
    mh.msg_name = &to;
    mh.msg_namelen = sizeof(to);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = ctrl;
    mh.msg_controllen = sizeof(ctrl);
    const ssize_t n = recvmsg(udp_fd_, &mh, MSG_ERRQUEUE | MSG_DONTWAIT);
    if (n < 0) return;
    for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
      if (c->cmsg_level != IPPROTO_IP || c->cmsg_type != IP_RECVERR) continue;
      const auto *e = reinterpret_cast<const sock_extended_err *>(CMSG_DATA(c));
      // msg_name holds the destination of the datagram that failed; the data, its start.
      const auto *from = reinterpret_cast<const sockaddr_in *>(SO_EE_OFFENDER(e));
      if (e->ee_origin != SO_EE_ORIGIN_ICMP || e->ee_errno != ECONNREFUSED || to.sin_addr.s_addr != udp_peer_addr_ ||
          to.sin_port != htons(cfg_.udp_port) || from->sin_family != AF_INET || from->sin_addr.s_addr != udp_peer_addr_)
        continue;
      refusals_read_++;
      refusal(data, static_cast<size_t>(n), holds_probe_mu);
    }
  }
}

void Monitor::refusal(const uint8_t *quote, size_t n, bool holds_probe_mu) {
  const uint64_t from = refusal_from_seq_.load();
  if (from == 0) return;
  const uint64_t seq = quoted_beat_sequence(quote, n, auth_.get());
  if (seq < from || seq > seq_.load()) return;  // before the probe, or never sent
  std::unique_lock<std::mutex> g(probe_mu_, std::defer_lock);
  if (!holds_probe_mu) g.lock();
  if (probe_id_ == 0 || refusal_from_seq_.load() != from) return;  // that probe has ended
  probe_refused_ = true;
  probe_cv_.notify_all();
}

void Monitor::udp_rx_loop() {
  if (cfg_.realtime) make_thread_realtime(kRealtimePriorityBeats);
  pin(rx_cpu_, "receiving");
  const int64_t interval_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.interval).count();
  const int64_t late_ns = interval_ns + interval_ns / 4;  // the sender's beat overdue by a quarter interval
  v1::Beat mine;  // the backup beat: one message, refilled
  warm_beat(&mine);
  (void)datagram_scratch();
  while (running_.load()) {
    repost();
    // Wake for a datagram, or when the sender's next beat is overdue (at most one interval on).
    const int64_t last = last_tx_ns_.load(std::memory_order_relaxed);
    const int64_t wait_ns = std::clamp<int64_t>(last ? last + late_ns - mono_ns() : interval_ns, 200'000, interval_ns);
    const timespec ts{time_t(wait_ns / 1'000'000'000), long(wait_ns % 1'000'000'000)};
    pollfd p{udp_fd_, POLLIN, 0};
    if (ppoll(&p, 1, &ts, nullptr) > 0) {
      // ICMP errors queued (IP_RECVERR) keep the socket readable for poll until read.
      if (p.revents & POLLERR) drain_icmp_errors(false);
      read_pending();
    }
    /* The sender's beat overdue: its CPU is held back (or it is). Send this node's beat from
     * here, every interval while that lasts, so that one CPU stopped does not silence the node. */
    const int64_t last_sent = last_tx_ns_.load(std::memory_order_relaxed);
    if (last_sent != 0 && mono_ns() - last_sent > late_ns) {
      mine.Clear();
      if (hooks_.fill_local) hooks_.fill_local(&mine);
      if (send_beat(mine)) backup_beats_++;
    }
  }
}

unsigned Monitor::read_pending() {
  repost();
  unsigned accepted = 0;
  uint8_t buf[kBeatMaxDatagram + 1];
  for (int i = 0; i < 1024; i++) {
    sockaddr_in from{};
    socklen_t fl = sizeof(from);
    const ssize_t n = recvfrom(udp_fd_, buf, sizeof(buf), MSG_DONTWAIT, reinterpret_cast<sockaddr *>(&from), &fl);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno != EINTR) drain_icmp_errors(false);  // IP_RECVERR: an error queued fails the call
      continue;
    }
    accepted += take_datagram(buf, static_cast<size_t>(n), from);
  }
  return accepted;
}

Monitor::Scratch &Monitor::datagram_scratch() {
  thread_local Scratch s;
  return s;
}

Monitor::Scratch::Scratch() {
  warm_beat(&beat);
  warm_beat(&answer);
  warm_beat(&unpublished_beat);
}

bool Monitor::take_datagram(const uint8_t *buf, size_t n, const sockaddr_in &from) {
  /* One message per reading thread, parsed into again and again: after the first beats its
   * strings are allocated, and the real-time threads never wait for the allocator's lock. */
  v1::Beat &b = datagram_scratch().beat, &ans = datagram_scratch().answer;
  BeatReject r;
  if (from.sin_addr.s_addr != udp_peer_addr_ || from.sin_port != htons(cfg_.udp_port))
    r = BeatReject::WRONG_SOURCE;
  else if (auth_) {
    std::lock_guard<std::mutex> g(auth_mu_);  // the replay window: one reader at a time
    r = auth_->open(buf, n, &b);
  } else {
    r = decode_beat_datagram(buf, n, &b);
  }
  if (r != BeatReject::COUNT) {
    udp_rejected_[static_cast<size_t>(r)]++;
    return false;
  }
  udp_heard_++;
  if (b.probe() != 0) {
    // Answer at once, from this (real-time) thread: the prober is deciding a failover.
    ans.Clear();
    if (hooks_.fill_local) hooks_.fill_local(&ans);
    if (hooks_.fill_probe_reply) hooks_.fill_probe_reply(&ans);
    ans.set_probe_reply(b.probe());
    send_beat(ans);
  }
  if (b.probe_reply() != 0) {
    std::lock_guard<std::mutex> g(probe_mu_);
    if (b.probe_reply() == probe_id_) {
      probe_answer_ = b;
      probe_answered_ = true;
      probes_answered_++;
      probe_cv_.notify_all();
    }
  }
  keep_unpublished(b, record(b));
  return true;
}

bool Monitor::record(const v1::Beat &b) {
  last_heard_ns_.store(mono_ns());
  ever_heard_.store(true);
  last_generation_.store(b.generation());
  return publish(b);
}

/* last_beat_ and the hook's beat. A reader of last_peer_beat() copies under beat_mu_ (and
 * allocates, at normal priority), and the gRPC beats' thread and handlers post here too: a
 * real-time thread never waits for either lock. A beat not published is kept by the reading
 * thread and published again (repost()), unless a newer one got through meanwhile: a peer's
 * single announcement must reach the hook even when a lock was busy as it arrived. The
 * generation, which decisions read, is kept apart and always current. */
bool Monitor::publish(const v1::Beat &b) {
  bool all = true;
  {
    std::unique_lock<std::mutex> g(beat_mu_, std::try_to_lock);
    if (g.owns_lock())
      last_beat_ = b;
    else
      all = false;
  }
  if (hooks_.on_peer_beat) {
    {
      std::unique_lock<std::mutex> g(hook_mu_, std::try_to_lock);
      if (!g.owns_lock()) {
        hook_skipped_++;
        all = false;
      } else {
        hook_beat_ = b;
        hook_pending_ = true;
      }
    }
    hook_cv_.notify_one();
  }
  if (all) published_++;
  return all;
}

void Monitor::keep_unpublished(const v1::Beat &b, bool published) {
  Scratch &s = datagram_scratch();
  s.unpublished = !published;
  if (published) return;
  s.unpublished_beat = b;
  s.published_then = published_.load();
}

void Monitor::repost() {
  Scratch &s = datagram_scratch();
  if (!s.unpublished) return;
  // A newer beat published meanwhile (by any thread) replaces this one.
  if (published_.load() != s.published_then || publish(s.unpublished_beat)) s.unpublished = false;
}

void Monitor::heard(const v1::Beat &peer_beat, v1::Beat *reply) {
  record(peer_beat);
  if (hooks_.fill_local) hooks_.fill_local(reply);
  reply->set_sequence(seq_.load());
  reply->set_sent_unix_ns(unix_ns());
}

uint64_t Monitor::last_peer_generation() const { return last_generation_.load(); }

v1::Beat Monitor::last_peer_beat() const {
  std::lock_guard<std::mutex> g(beat_mu_);
  return last_beat_;
}

void Monitor::assume_heard() {
  last_heard_ns_.store(mono_ns());
  ever_heard_.store(true);
}

double Monitor::silence_seconds() const {
  if (!ever_heard_.load()) return -1;
  return double(mono_ns() - last_heard_ns_.load()) / 1e9;
}

bool Monitor::peer_silent() const {
  if (!ever_heard_.load()) return false;
  auto limit = std::chrono::duration_cast<std::chrono::nanoseconds>(cfg_.interval).count() *
               int64_t(cfg_.miss_threshold);
  return mono_ns() - last_heard_ns_.load() > limit;
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
    if (udp_fd_ < 0) check_silence();  // with fast beats, their thread checks
    auto now = Clock::now();
    if (next < now) next = now;  // a stall of ours: do not burst to catch up
    std::this_thread::sleep_until(next);
  }
}

}  // namespace ftpair::fo
