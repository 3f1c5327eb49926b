// The heartbeat monitor's fast beats: the datagram codec and two monitors over real UDP on
// loopback (127.0.0.1 and 127.0.0.2, same port, as two nodes would use). gRPC beats point at
// a port nothing listens on, so only the UDP path can keep the peer heard.
#include <arpa/inet.h>
#include <pthread.h>
#include <sched.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include <algorithm>

#include "common/realtime.h"
#include "failover/beat_auth.h"
#include "failover/monitor.h"
#include "tests/unit/failover/loopback_beats.h"

namespace ftpair::fo {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

template <typename F> bool wait_for(F &&f, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!f()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(BeatDatagram, RoundTrip) {
  v1::Beat b;
  b.set_node_id("a");
  b.set_role("active");
  b.set_generation(7);
  b.set_sequence(42);
  b.set_dataplane_healthy(true);
  b.set_epoch(1234);
  std::string d = encode_beat_datagram(b);
  v1::Beat got;
  ASSERT_EQ(decode_beat_datagram(reinterpret_cast<const uint8_t *>(d.data()), d.size(), &got), BeatReject::COUNT);
  EXPECT_EQ(got.node_id(), "a");
  EXPECT_EQ(got.generation(), 7u);
  EXPECT_EQ(got.sequence(), 42u);
  EXPECT_TRUE(got.dataplane_healthy());
  EXPECT_EQ(got.epoch(), 1234u);
}

TEST(BeatDatagram, RejectsMalformed) {
  v1::Beat b, got;
  b.set_node_id("a");
  std::string d = encode_beat_datagram(b);
  auto dec = [&](const std::string &s) {
    return decode_beat_datagram(reinterpret_cast<const uint8_t *>(s.data()), s.size(), &got);
  };
  EXPECT_EQ(dec(d.substr(0, 5)), BeatReject::SHORT);
  std::string m = d;
  m[0] = 'X';
  EXPECT_EQ(dec(m), BeatReject::BAD_MAGIC);
  std::string v = d;
  v[4] = 2;  // a future version
  EXPECT_EQ(dec(v), BeatReject::BAD_VERSION);
  std::string g = d.substr(0, kBeatHeader) + std::string("\xff\xff\xff\xff\xff", 5);  // not protobuf
  EXPECT_EQ(dec(g), BeatReject::BAD_PAYLOAD);
  std::string big = d + std::string(kBeatMaxDatagram, '\0');
  EXPECT_EQ(dec(big), BeatReject::BAD_PAYLOAD);
  EXPECT_STREQ(beat_reject_label(BeatReject::WRONG_SOURCE), "wrong_source");
}

struct Node {
  std::atomic<unsigned> silent_calls{0};
  std::atomic<int64_t> first_silent_ns{0};
  std::atomic<uint64_t> beats{0};
  std::unique_ptr<Monitor> mon;

  Node(const std::string &self, const std::string &peer, uint16_t port, const std::string &id,
       std::vector<BeatKey> keys = {}, std::vector<int> cpus = {}) {
    MonitorConfig c = loopback_beats(self, peer, port, std::move(keys));
    c.beat_cpus = std::move(cpus);
    MonitorHooks h;
    h.fill_local = [id](v1::Beat *b) {
      b->set_node_id(id);
      b->set_role("standby");
    };
    h.on_peer_beat = [this](const v1::Beat &) { beats++; };
    h.fill_probe_reply = [this](v1::Beat *b) {
      // Too many workers for a datagram: the answer is not sent (Monitor::oversize_beats).
      for (int i = 0, n = oversize_answer ? 300 : 0; i < n; i++) b->add_dataplane_workers()->set_worker(i + 1);
      auto *w = b->add_dataplane_workers();
      w->set_worker(0);
      w->set_beats_sent(77);
      w->set_last_beat_age_us(123);
    };
    h.on_peer_silent = [this](const std::string &) {
      if (silent_calls++ == 0)
        first_silent_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
    };
    mon = std::make_unique<Monitor>(c, h);
  }
  std::atomic<bool> oversize_answer{false};  // fill_probe_reply makes an answer that cannot be sent
};

TEST(FastBeats, PeersHearEachOtherAndNoticeSilence) {
  const uint16_t port = free_udp_port();
  Node a("127.0.0.1", "127.0.0.2", port, "a"), b("127.0.0.2", "127.0.0.1", port, "b");
  a.mon->start();
  b.mon->start();
  EXPECT_TRUE(a.mon->udp_error().empty()) << a.mon->udp_error();
  ASSERT_TRUE(wait_for([&] { return a.mon->ever_heard() && b.mon->ever_heard(); }, 2000ms));
  // Alive peers: 300 ms (60 intervals) with no silence on either side.
  std::this_thread::sleep_for(300ms);
  EXPECT_EQ(a.silent_calls.load(), 0u);
  EXPECT_EQ(b.silent_calls.load(), 0u);
  EXPECT_GT(a.mon->udp_heard(), 10u);
  EXPECT_GT(a.beats.load(), 10u);
  EXPECT_GT(b.mon->udp_sent(), 10u);

  // b dies: a notices the silence (threshold 40 ms) and keeps reporting it.
  const int64_t t0 = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
  b.mon->stop();
  ASSERT_TRUE(wait_for([&] { return a.silent_calls.load() > 0; }, 2000ms)) << "silence never reported";
  const double ms = double(a.first_silent_ns.load() - t0) / 1e6;
  EXPECT_GE(ms, 35.0) << "silence reported before the threshold";
  std::printf("silence noticed %.1f ms after the peer stopped (threshold 40 ms), real-time: %s\n", ms,
              a.mon->realtime() ? "yes" : "no");
  a.mon->stop();
}

bool pin_self(int cpu) {
  cpu_set_t s;
  CPU_ZERO(&s);
  CPU_SET(cpu, &s);
  return pthread_setaffinity_np(pthread_self(), sizeof(s), &s) == 0;
}

/* One CPU held back, as a vCPU the hypervisor stops is (measured on this project's shared
 * hosts: 10-100 ms, most often one vCPU at a time): a SCHED_FIFO thread above the beats'
 * priority spins on CPU 1 for 300 ms, 60 intervals. The pairs are pinned crosswise: a sends
 * from CPU 1 and receives on CPU 0, b the other way round. So a's sender and b's receiver
 * stop; a's receiver sends for it, and b's check (CPU 0) reads the beats its receiver left
 * in the socket. Neither side reports a silence; without either, b would at 40 ms. A probe
 * b sends meanwhile (as the dataplane watch does) gets its answer, read by the prober. */
TEST(FastBeats, OneCpuHeldBackSilencesNeitherSide) {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) GTEST_SKIP() << "needs two CPUs";
  const uint16_t port = free_udp_port();
  Node a("127.0.0.1", "127.0.0.2", port, "a", {}, {1, 0}), b("127.0.0.2", "127.0.0.1", port, "b", {}, {0, 1});
  cpu_set_t saved;
  ASSERT_EQ(pthread_getaffinity_np(pthread_self(), sizeof(saved), &saved), 0);
  ASSERT_TRUE(pin_self(0));  // this thread off the CPU held back
  a.mon->start();
  b.mon->start();
  ASSERT_TRUE(wait_for([&] { return a.mon->ever_heard() && b.mon->ever_heard(); }, 2000ms));
  std::this_thread::sleep_for(100ms);
  const unsigned silent0 = a.silent_calls.load() + b.silent_calls.load();
  std::atomic<bool> go{false}, stop{false}, held{false}, failed{false};
  std::thread hog([&] {
    sched_param sp{};
    sp.sched_priority = 50;
    if (!pin_self(1) || pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0) {
      failed = true;
      return;
    }
    while (!go.load()) std::this_thread::sleep_for(100us);
    held = true;
    const auto cap = Clock::now() + 2s;
    while (!stop.load(std::memory_order_relaxed) && Clock::now() < cap) {
    }
  });
  while (!failed.load() && !go.load()) {
    std::this_thread::sleep_for(2ms);
    go = true;
  }
  while (!failed.load() && !held.load()) std::this_thread::sleep_for(100us);
  const uint64_t a_sent0 = a.mon->udp_sent();
  std::this_thread::sleep_for(150ms);
  // b probes a: a answers (its receiver runs), and the answer waits in b's socket, whose
  // receiver is held: the probe reads it itself.
  v1::Beat reply;
  Monitor::ProbeResult probed;
  {
    // The prober is real-time on CPU 0, as the dataplane watch is (control/dp_watch.cc): at
    // normal priority, behind the real-time beat threads of both nodes there, the 2 ms could
    // run out before it got the CPU (1 run in 12 under TSan).
    const RealtimeScope rt(true, kRealtimePriorityBeats);
    probed = b.mon->probe(2000us, &reply);  // the dataplane default
  }
  std::this_thread::sleep_for(150ms);
  const uint64_t a_sent_held = a.mon->udp_sent() - a_sent0;
  stop = true;
  hog.join();
  pthread_setaffinity_np(pthread_self(), sizeof(saved), &saved);
  if (failed.load()) {
    a.mon->stop();
    b.mon->stop();
    GTEST_SKIP() << "no SCHED_FIFO or no pinning here";
  }
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(a.mon->tx_cpu(), 1);
  EXPECT_EQ(a.mon->rx_cpu(), 0);
  EXPECT_EQ(a.silent_calls.load() + b.silent_calls.load(), silent0) << "a silence reported while one CPU was held";
  // A backup beat goes out once the sender's is a quarter interval overdue: 48 in the 60 intervals.
  EXPECT_GT(a.mon->backup_beats(), 30u) << "a's receiver sent for its sender (60 intervals held)";
  EXPECT_GT(a_sent_held, 36u) << "a beat at least 3 intervals in 5 while its sender's CPU was held";
  EXPECT_GT(b.mon->beats_read_by_check(), 20u) << "b's check read what its receiver could not";
  EXPECT_EQ(probed, Monitor::ProbeResult::ANSWERED) << "b's probe read its answer itself";
  EXPECT_EQ(reply.dataplane_workers_size(), 1);
  std::printf("300 ms on one CPU held: a sent %llu beats (%llu from its receiving thread); b's check read %llu\n",
              (unsigned long long)a_sent_held, (unsigned long long)a.mon->backup_beats(),
              (unsigned long long)b.mon->beats_read_by_check());
  a.mon->stop();
  b.mon->stop();
}

TEST(FastBeats, IgnoresDatagramsFromAnyoneButThePeer) {
  const uint16_t port = free_udp_port();
  Node a("127.0.0.1", "127.0.0.2", port, "a");
  a.mon->start();
  // A stranger (127.0.0.3) sends well-formed beats, and the peer's address sends garbage.
  v1::Beat fake;
  fake.set_node_id("b");
  const std::string d = encode_beat_datagram(fake);
  for (const char *src : {"127.0.0.3", "127.0.0.2"}) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in me{};
    me.sin_family = AF_INET;
    inet_pton(AF_INET, src, &me.sin_addr);
    me.sin_port = htons(port);  // the beat port, as the peer sends from
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&me), sizeof(me)), 0) << src;
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    const std::string payload = std::string(src) == "127.0.0.3" ? d : std::string("FTPB\x01\0\0\0\xff\xff", 10);
    for (int i = 0; i < 5; i++)
      sendto(fd, payload.data(), payload.size(), 0, reinterpret_cast<sockaddr *>(&to), sizeof(to));
    close(fd);
  }
  ASSERT_TRUE(wait_for([&] {
    return a.mon->udp_rejected(BeatReject::WRONG_SOURCE) >= 5 && a.mon->udp_rejected(BeatReject::BAD_PAYLOAD) >= 5;
  }, 2000ms)) << "wrong_source " << a.mon->udp_rejected(BeatReject::WRONG_SOURCE) << " bad_payload "
              << a.mon->udp_rejected(BeatReject::BAD_PAYLOAD);
  EXPECT_FALSE(a.mon->ever_heard());
  EXPECT_EQ(a.mon->udp_heard(), 0u);
  a.mon->stop();
}

/* With keys, the monitor signs what it sends and hears only signed, new beats: a plain
 * datagram from the peer's own address (the forged "ACTIVE, generation 2^40") and
 * replays of genuine datagrams are counted and change nothing. */
TEST(FastBeats, WithKeysOnlySignedNewBeatsAreHeard) {
  const uint16_t port = free_udp_port();
  const std::vector<BeatKey> keys = {{1, std::string(32, '\x5a')}};
  Node a("127.0.0.1", "127.0.0.2", port, "a", keys), b("127.0.0.2", "127.0.0.1", port, "b", keys);
  EXPECT_TRUE(a.mon->authenticated());
  a.mon->start();
  b.mon->start();
  ASSERT_TRUE(wait_for([&] { return a.mon->ever_heard() && b.mon->ever_heard(); }, 2000ms));
  b.mon->stop();  // only forgeries from here on
  std::this_thread::sleep_for(100ms);
  const uint64_t heard = a.mon->udp_heard();
  // Forgeries from the peer's address and port: a plain beat, and a captured genuine one.
  BeatAuth b_again({{1, std::string(32, '\x5a')}}, 77);
  v1::Beat genuine;
  genuine.set_node_id("b");
  genuine.set_sequence(1);
  genuine.set_sent_unix_ns(1);  // older than what a has heard: a replay from an earlier boot
  v1::Beat forged = genuine;
  forged.set_role("active");
  forged.set_generation(1ull << 40);
  const std::string plain = encode_beat_datagram(forged), replay = b_again.seal(genuine);
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in me{};
  me.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.2", &me.sin_addr);
  me.sin_port = htons(port);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&me), sizeof(me)), 0);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  for (int i = 0; i < 20; i++) {
    sendto(fd, plain.data(), plain.size(), 0, reinterpret_cast<sockaddr *>(&to), sizeof(to));
    sendto(fd, replay.data(), replay.size(), 0, reinterpret_cast<sockaddr *>(&to), sizeof(to));
  }
  close(fd);
  ASSERT_TRUE(wait_for([&] {
    return a.mon->udp_rejected(BeatReject::UNAUTHENTICATED) >= 20 && a.mon->udp_rejected(BeatReject::STALE_BOOT) >= 20;
  }, 2000ms)) << "unauthenticated " << a.mon->udp_rejected(BeatReject::UNAUTHENTICATED) << " stale_boot "
              << a.mon->udp_rejected(BeatReject::STALE_BOOT);
  EXPECT_EQ(a.mon->udp_heard(), heard) << "a forgery was heard";
  EXPECT_NE(a.mon->last_peer_beat().role(), "active");
  ASSERT_TRUE(wait_for([&] { return a.silent_calls.load() > 0; }, 2000ms)) << "forgeries kept a dead peer alive";
  a.mon->stop();
}

// The UDP sockets bound to addr:port now, from /proc/net/udp (its local address is hex, in the
// kernel's byte order: 127.0.0.1 is 0100007F on this little-endian machine).
size_t udp_sockets_on(const char *addr, uint16_t port) {
  in_addr a{};
  inet_pton(AF_INET, addr, &a);
  char want[16];
  std::snprintf(want, sizeof want, "%08X:%04X", a.s_addr, port);
  std::ifstream in("/proc/net/udp");
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) n += line.find(std::string(": ") + want + " ") != std::string::npos ? 1 : 0;
  return n;
}

/* A node that has just started announces itself in one fast beat before its monitor runs (the
 * daemon's start does, so that an active reconnects its stream at once): the peer hears it, signed
 * and new. The socket announce() opened is the one start() uses (one socket on the port, and the
 * beats that follow are heard, none refused as a replay or an old boot), and a monitor stopped
 * without ever starting closes it. */
TEST(FastBeats, AnAnnounceBeforeStartIsHeardByThePeer) {
  const uint16_t port = free_udp_port();
  const std::vector<BeatKey> keys = {{1, std::string(32, '\x5a')}};
  std::atomic<bool> booting{false};
  auto monitor = [&](const char *self, const char *peer, const char *id) {
    MonitorHooks h;
    h.fill_local = [id](v1::Beat *x) { x->set_node_id(id); };
    h.on_peer_beat = [&](const v1::Beat &x) { booting = booting || x.role_state() == v1::ROLE_STATE_BOOT; };
    return std::make_unique<Monitor>(loopback_beats(self, peer, port, keys), h);
  };
  struct { std::unique_ptr<Monitor> mon; } a{monitor("127.0.0.1", "127.0.0.2", "a")},
      b{monitor("127.0.0.2", "127.0.0.1", "b")};
  b.mon->start();
  v1::Beat hello;
  hello.set_node_id("a");
  hello.set_role_state(v1::ROLE_STATE_BOOT);
  EXPECT_EQ(udp_sockets_on("127.0.0.1", port), 0u);
  ASSERT_TRUE(a.mon->announce(hello));
  EXPECT_EQ(udp_sockets_on("127.0.0.1", port), 1u);
  ASSERT_TRUE(wait_for([&] { return booting.load(); }, 2000ms)) << "the announcement was not heard";
  EXPECT_EQ(b.mon->udp_heard(), 1u);
  EXPECT_EQ(b.mon->last_peer_beat().node_id(), "a");
  EXPECT_EQ(b.mon->udp_rejected(BeatReject::UNAUTHENTICATED), 0u);
  EXPECT_EQ(a.mon->udp_sent(), 1u);
  a.mon->start();
  EXPECT_TRUE(a.mon->udp_error().empty()) << a.mon->udp_error();
  EXPECT_EQ(udp_sockets_on("127.0.0.1", port), 1u) << "start() bound a second socket";
  EXPECT_FALSE(a.mon->announce(hello)) << "announce is for before start()";
  ASSERT_TRUE(wait_for([&] { return b.mon->udp_heard() > 10; }, 2000ms)) << "the beats after start were not heard";
  EXPECT_EQ(b.mon->udp_rejected(BeatReject::REPLAY), 0u);
  EXPECT_EQ(b.mon->udp_rejected(BeatReject::STALE_BOOT), 0u);
  a.mon->stop();
  b.mon->stop();
  EXPECT_EQ(udp_sockets_on("127.0.0.1", port), 0u);

  {
    Monitor never(loopback_beats("127.0.0.1", "127.0.0.2", port, keys), MonitorHooks{});
    ASSERT_TRUE(never.announce(hello));
    EXPECT_EQ(udp_sockets_on("127.0.0.1", port), 1u);
    never.stop();
    never.stop();
  }
  EXPECT_EQ(udp_sockets_on("127.0.0.1", port), 0u) << "the socket of a monitor never started was not closed";
}

}  // namespace
}  // namespace ftpair::fo

namespace ftpair::fo {
namespace {

// A probe is answered at once by the peer's receiving thread, with what fill_probe_reply adds;
// a peer whose answers never come but whose beats still flow is heard (alive); a port nobody
// listens on is refused at once (ICMP port unreachable: the daemon is gone); a port that is
// bound but never answers (a stopped process) times out within the deadline.
TEST(FastBeats, AProbeIsAnsweredHeardRefusedOrTimesOut) {
  using R = Monitor::ProbeResult;
  const uint16_t port = free_udp_port();
  std::vector<BeatKey> keys{{1, std::string(32, 'p')}};
  Node a("127.0.0.1", "127.0.0.2", port, "a", keys), b("127.0.0.2", "127.0.0.1", port, "b", keys);
  a.mon->start();
  b.mon->start();
  ASSERT_TRUE(wait_for([&] { return a.mon->ever_heard() && b.mon->ever_heard(); }, 2000ms));
  std::vector<double> us;
  for (int i = 0; i < 20; i++) {
    v1::Beat r;
    const auto t0 = Clock::now();
    ASSERT_EQ(a.mon->probe(200ms, &r), R::ANSWERED) << "probe " << i << " unanswered";
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    EXPECT_EQ(r.node_id(), "b");
    ASSERT_EQ(r.dataplane_workers_size(), 1);
    EXPECT_EQ(r.dataplane_workers(0).beats_sent(), 77u);
    EXPECT_EQ(r.dataplane_workers(0).last_beat_age_us(), 123u);
  }
  std::sort(us.begin(), us.end());
  std::printf("probe answered in %.0f us (median of 20, loopback)\n", us[us.size() / 2]);
  EXPECT_EQ(a.mon->probes_answered(), 20u);

  // b's answers never come (too large to send), but its fast beats (every 5 ms) arrive
  // within the 200 ms probe.
  b.oversize_answer = true;
  const uint64_t oversize0 = b.mon->oversize_beats();
  v1::Beat r;
  EXPECT_EQ(a.mon->probe(200ms, &r), R::HEARD);
  EXPECT_GT(b.mon->oversize_beats(), oversize0) << "b was asked, and its answer could not go";
  b.oversize_answer = false;

  // b's daemon gone: its host refuses the probe at once. Whatever b sent before it stopped (its
  // late answers, its last beats) is read by a first: heard during the probe, it would
  // outweigh the refusal.
  b.mon->stop();
  ASSERT_TRUE(wait_for([&] { return a.mon->udp_heard() == b.mon->udp_sent(); }, 2000ms))
      << "a heard " << a.mon->udp_heard() << " of the " << b.mon->udp_sent() << " datagrams b sent";
  auto t0 = Clock::now();
  EXPECT_EQ(a.mon->probe(500ms, &r), R::REFUSED);
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  EXPECT_LT(ms, 100.0) << "a refusal does not wait for the deadline";
  EXPECT_EQ(a.mon->probes_refused(), 1u);

  // b's port bound but nobody reads it (a stopped process): the deadline holds.
  const int mute = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.2", &sa.sin_addr);
  ASSERT_EQ(bind(mute, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)), 0) << std::strerror(errno);
  t0 = Clock::now();
  EXPECT_EQ(a.mon->probe(5ms, &r), R::TIMEOUT);
  ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  EXPECT_GE(ms, 4.9);
  EXPECT_LT(ms, 500.0) << "the probe's deadline holds";
  close(mute);
  a.mon->stop();
}

TEST(BeatDatagram, TheSequenceIsReadFromAQuotedStartOfOurOwnDatagrams) {
  v1::Beat b;
  b.set_node_id("node-a");
  b.set_role("active");
  b.set_generation(9);
  b.set_sequence(77);
  b.set_sent_unix_ns(123456789);
  const std::string plain = encode_beat_datagram(b);
  const auto *p = reinterpret_cast<const uint8_t *>(plain.data());
  EXPECT_EQ(quoted_beat_sequence(p, plain.size(), nullptr), 77u);
  EXPECT_EQ(quoted_beat_sequence(p, 8 + 8 + 8 + 2 + 2, nullptr), 77u) << "cut right after the sequence";
  EXPECT_EQ(quoted_beat_sequence(p, 8, nullptr), 0u) << "an 8-byte quote (RFC 792) holds no sequence";
  std::string other = plain;
  other[0] = 'X';
  EXPECT_EQ(quoted_beat_sequence(reinterpret_cast<const uint8_t *>(other.data()), other.size(), nullptr), 0u);
  const std::vector<BeatKey> keys{{1, std::string(32, 'k')}};
  BeatAuth mine(keys), theirs(keys);
  const std::string sealed = mine.seal(b), forged = theirs.seal(b);
  const auto *s = reinterpret_cast<const uint8_t *>(sealed.data());
  EXPECT_EQ(quoted_beat_sequence(s, sealed.size(), &mine), 77u);
  EXPECT_EQ(quoted_beat_sequence(s, sealed.size() - 1, &mine), 0u) << "sealed: the whole datagram, with its tag";
  std::string retagged = sealed;
  retagged.back() ^= 1;
  EXPECT_EQ(quoted_beat_sequence(reinterpret_cast<const uint8_t *>(retagged.data()), retagged.size(), &mine), 0u)
      << "a tag that is not genuine";
  EXPECT_EQ(quoted_beat_sequence(s, sealed.size(), &theirs), 0u) << "another instance's datagram";
  EXPECT_EQ(quoted_beat_sequence(s, sealed.size(), nullptr), 0u) << "sealed is not plain";
  EXPECT_EQ(quoted_beat_sequence(p, plain.size(), &mine), 0u) << "plain is not sealed";
  EXPECT_EQ(quoted_beat_sequence(reinterpret_cast<const uint8_t *>(forged.data()), forged.size(), &mine), 0u)
      << "another instance's nonce";
  b.clear_sequence();
  const std::string none = mine.seal(b);
  EXPECT_EQ(quoted_beat_sequence(reinterpret_cast<const uint8_t *>(none.data()), none.size(), &mine), 0u);
  // Damaged framing inside a plain quote: a length past its end, a reserved wire type, a
  // varint that never ends.
  std::string bad = plain;
  bad[kBeatHeader + 1] = char(0x7f);  // node_id's length
  EXPECT_EQ(quoted_beat_sequence(reinterpret_cast<const uint8_t *>(bad.data()), kBeatHeader + 10, nullptr), 0u);
  bad = plain;
  bad[kBeatHeader] = char(0x0f);  // field 1, wire type 7
  EXPECT_EQ(quoted_beat_sequence(reinterpret_cast<const uint8_t *>(bad.data()), bad.size(), nullptr), 0u);
  bad = std::string(plain.data(), kBeatHeader) + std::string(40, char(0xff));
  EXPECT_EQ(quoted_beat_sequence(reinterpret_cast<const uint8_t *>(bad.data()), bad.size(), nullptr), 0u);
}

/* An ICMP port unreachable "from" 127.0.0.2 about a datagram from a's beat port to b's,
 * quoting payload as the start of that datagram: what any host on the path can send, as an
 * ICMP error is not authenticated. */
ssize_t forge_refusal(int raw, uint16_t port, const std::string &payload) {
  uint8_t pkt[8 + 20 + 8 + 256] = {};
  const size_t quoted = std::min<size_t>(payload.size(), 256);
  pkt[0] = 3;  // destination unreachable
  pkt[1] = 3;  // port unreachable
  uint8_t *ip = pkt + 8;
  ip[0] = 0x45;
  const uint16_t tot = htons(static_cast<uint16_t>(20 + 8 + quoted));
  std::memcpy(ip + 2, &tot, 2);
  ip[8] = 64;
  ip[9] = IPPROTO_UDP;
  inet_pton(AF_INET, "127.0.0.1", ip + 12);
  inet_pton(AF_INET, "127.0.0.2", ip + 16);
  const auto fold = [](const uint8_t *b, size_t n) {
    uint32_t sum = 0;
    for (size_t i = 0; i < n; i += 2) sum += uint32_t(b[i]) << 8 | (i + 1 < n ? b[i + 1] : 0);
    while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
    return htons(static_cast<uint16_t>(~sum));
  };
  const uint16_t ipsum = fold(ip, 20);
  std::memcpy(ip + 10, &ipsum, 2);
  uint8_t *udp = ip + 20;
  const uint16_t p = htons(port), ulen = htons(static_cast<uint16_t>(8 + quoted));
  std::memcpy(udp, &p, 2);
  std::memcpy(udp + 2, &p, 2);
  std::memcpy(udp + 4, &ulen, 2);
  std::memcpy(udp + 8, payload.data(), quoted);
  const size_t len = 8 + 20 + 8 + quoted;
  const uint16_t icsum = fold(pkt, len);
  std::memcpy(pkt + 2, &icsum, 2);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
  return sendto(raw, pkt, len, 0, reinterpret_cast<sockaddr *>(&to), sizeof(to));
}

/* A refusal answers a probe only when it quotes a datagram a sent since the probe began. b's
 * port is held by a socket the test reads (b's daemon stopped, its port not closed), and
 * refusals are forged from b's address from a raw socket:
 * - during a first probe, quoting a's own beats from before it (the refusals of a restarting
 *   daemon's port), a beat sealed with the same key by another instance, and junk: all read,
 *   and the probe runs to its deadline (before this, any refusal read once the probe had begun
 *   answered it);
 * - during a second, quoting each datagram of a read after it began: REFUSED;
 * - then the port closes, and the kernel's own refusal answers a third. */
TEST(FastBeats, ARefusalAnswersAProbeOnlyWhenItQuotesTheProbe) {
  int raw_fd = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
  if (raw_fd < 0) GTEST_SKIP() << "no raw ICMP socket here (CAP_NET_RAW): " << std::strerror(errno);
  const int raw = raw_fd;
  sockaddr_in me{};
  me.sin_family = AF_INET;
  inet_pton(AF_INET, "127.0.0.2", &me.sin_addr);
  ASSERT_EQ(bind(raw, reinterpret_cast<sockaddr *>(&me), sizeof(me)), 0) << std::strerror(errno);
  const uint16_t port = free_udp_port();
  std::vector<BeatKey> keys{{1, std::string(32, 'p')}};
  int mute_fd = socket(AF_INET, SOCK_DGRAM, 0);
  const int mute = mute_fd;
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, "127.0.0.2", &sa.sin_addr);
  ASSERT_EQ(bind(mute, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)), 0) << std::strerror(errno);
  const timeval tv{0, 200000};
  setsockopt(mute, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const auto take = [mute] {
    char buf[2048];
    const ssize_t n = recv(mute, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  };
  Node a("127.0.0.1", "127.0.0.2", port, "a", keys);
  a.mon->start();
  std::vector<std::string> old_beats;
  while (old_beats.size() < 4) {
    std::string d = take();
    ASSERT_FALSE(d.empty()) << "a's beats reach b's port";
    old_beats.push_back(std::move(d));
  }
  v1::Beat fake;
  fake.set_node_id("a");
  fake.set_sequence(1u << 30);  // far ahead of anything a has sent
  uint64_t nonce = 0;  // a's, as anyone who sees its beats can read it (bytes 8-15)
  std::memcpy(&nonce, old_beats[0].data() + 8, 8);
  const std::vector<BeatKey> wrong{{1, std::string(32, 'q')}};
  const std::vector<std::string> stale{
      old_beats[0], old_beats[1], old_beats[2], old_beats[3],  // a's own, sent before the probe
      BeatAuth(keys).seal(fake),                               // another instance's
      BeatAuth(wrong, nonce).seal(fake),                       // a's nonce, not a's key
      BeatAuth(keys, nonce).seal(fake),                        // a's nonce and key: never sent
      std::string(16, '\x07')};                                // nothing

  std::atomic<int> mode{0};  // 1: stale quotes; 2: quotes of what a sends from now on; 3: stop
  std::atomic<unsigned> forged{0};
  std::thread forger([&] {
    unsigned i = 0;
    while (mode.load() != 3) {
      if (mode.load() == 1) {
        if (forge_refusal(raw, port, stale[i % stale.size()]) > 0) forged++;
        i++;
        std::this_thread::sleep_for(1ms);
      } else if (mode.load() == 2) {
        const std::string d = take();
        if (!d.empty() && forge_refusal(raw, port, d) > 0) forged++;
      } else {
        std::this_thread::sleep_for(1ms);
      }
    }
  });
  struct Stop {  // an ASSERT's return stops and joins the forger, and closes the sockets
    std::atomic<int> &mode;
    std::thread &t;
    int &raw, &mute;
    ~Stop() {
      mode = 3;
      if (t.joinable()) t.join();
      if (mute >= 0) close(mute);
      if (raw >= 0) close(raw);
    }
  } stop_forger{mode, forger, raw_fd, mute_fd};
  const uint64_t read0 = a.mon->refusals_read();
  mode = 1;
  ASSERT_TRUE(wait_for([&] { return a.mon->refusals_read() >= read0 + stale.size(); }, 2000ms))
      << "forged refusals reach a's socket and are read as b's";
  v1::Beat r;
  const uint64_t read1 = a.mon->refusals_read();
  const auto got = a.mon->probe(60ms, &r);
  const uint64_t read_during = a.mon->refusals_read() - read1;
  EXPECT_EQ(got, Monitor::ProbeResult::TIMEOUT) << "a refusal of no datagram of the probe answered it";
  EXPECT_GT(read_during, 0u) << "refusals read during the probe (" << forged.load() << " forged in all)";
  EXPECT_EQ(a.mon->probes_refused(), 0u);

  mode = 0;
  std::this_thread::sleep_for(20ms);
  char sink[2048];
  while (recv(mute, sink, sizeof(sink), MSG_DONTWAIT) > 0) {  // a's beats so far: not quoted
  }
  mode = 2;
  const auto t0 = Clock::now();
  EXPECT_EQ(a.mon->probe(500ms, &r), Monitor::ProbeResult::REFUSED) << "the refusal of a datagram sent since it began";
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  mode = 3;
  forger.join();
  EXPECT_LT(ms, 400.0) << "before the deadline";
  EXPECT_EQ(a.mon->probes_refused(), 1u);

  close(mute_fd);
  mute_fd = -1;
  EXPECT_EQ(a.mon->probe(500ms, &r), Monitor::ProbeResult::REFUSED) << "the kernel's refusal of the closed port";
  EXPECT_EQ(a.mon->probes_refused(), 2u);
  a.mon->stop();
}

}  // namespace
}  // namespace ftpair::fo
