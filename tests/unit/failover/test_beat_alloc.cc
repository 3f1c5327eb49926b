/* The fast beats' real-time threads allocate nothing once warm. A thread that allocates waits
 * for its malloc arena's lock, and a thread of lower priority that holds that lock while it is
 * preempted (the busy-polling workers keep both CPUs) stops the beats: that stopped a lab
 * active's beats for 20-40 ms while an upgrade binary arrived, and its standby took over.
 *
 * Counted by interposing malloc and its kin in this test binary (forwarded to glibc's): each
 * thread marks itself when it first runs a fill hook, and counts only while the test arms the
 * count. Not in sanitizer builds, whose runtime owns malloc: there the tests skip. */
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <execinfo.h>
#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <chrono>
#include <cstdlib>
#include <thread>

#include "failover/beat_auth.h"
#include "failover/monitor.h"
#include "tests/unit/failover/loopback_beats.h"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define FTPAIR_COUNT_ALLOCATIONS 0
#else
#define FTPAIR_COUNT_ALLOCATIONS 1
#endif

namespace {
std::atomic<bool> g_armed{false};
std::atomic<uint64_t> g_counted{0};
thread_local bool t_marked = false;
std::atomic<int> g_marked_threads{0};
thread_local bool t_mark_all = false;  // the test's own thread, for the BeatAuth case

/* The first counted allocation's stack, so that a failure names the path that allocated (the
 * project's CI saw 2 allocations in one second once, on a loaded machine). backtrace() is
 * warmed before the count is armed; t_in_trace keeps its own allocations, if any, out. */
void *g_trace[32];
std::atomic<int> g_trace_depth{0};
std::atomic<bool> g_trace_taken{false};
thread_local bool t_in_trace = false;

inline void note_allocation() {
  if (t_in_trace || !(t_marked || t_mark_all) || !g_armed.load(std::memory_order_relaxed)) return;
  g_counted.fetch_add(1, std::memory_order_relaxed);
  bool no = false;
  if (g_trace_taken.compare_exchange_strong(no, true)) {
    t_in_trace = true;
    g_trace_depth = backtrace(g_trace, 32);
    t_in_trace = false;
  }
}

// The stack of the first counted allocation, on stderr (symbols as the binary has them).
void print_first_allocation() {
  const int n = g_trace_depth.load();
  if (n <= 0) return;
  std::fprintf(stderr, "the first counted allocation came from:\n");
  backtrace_symbols_fd(g_trace, n, 2);
}
}  // namespace

#if FTPAIR_COUNT_ALLOCATIONS
extern "C" {
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);

void *malloc(size_t n) noexcept {
  note_allocation();
  return __libc_malloc(n);
}
void *calloc(size_t k, size_t n) noexcept {
  note_allocation();
  return __libc_calloc(k, n);
}
void *realloc(void *p, size_t n) noexcept {
  note_allocation();
  return __libc_realloc(p, n);
}
void *aligned_alloc(size_t a, size_t n) noexcept {
  note_allocation();
  return __libc_memalign(a, n);
}
int posix_memalign(void **out, size_t a, size_t n) noexcept {
  note_allocation();
  void *p = __libc_memalign(a, n);
  if (!p) return ENOMEM;
  *out = p;
  return 0;
}
}
#endif

namespace ftpair::fo {
namespace {

using namespace std::chrono_literals;

v1::Beat sample_beat(uint64_t seq) {
  v1::Beat b;
  b.set_node_id("node-with-a-longer-name");
  b.set_role("active");
  b.set_state("ACTIVE");
  b.set_sequence(seq);
  b.set_sent_unix_ns(int64_t(seq) * 1000);
  b.set_dataplane_unhealthy("worker 0 stalled: no progress 41 ms; state R, ran 14 ms");
  auto *w = b.add_dataplane_workers();
  w->set_worker(0);
  w->set_beats_sent(seq);
  return b;
}

TEST(BeatAlloc, SealAndOpenAllocateNothingOnceWarm) {
  if (!FTPAIR_COUNT_ALLOCATIONS) GTEST_SKIP() << "the sanitizer runtime owns malloc";
  const std::string secret(32, '\x5a');
  BeatAuth tx({{1, secret}}, 11), rx({{1, secret}}, 22);
  uint8_t buf[kBeatMaxDatagram];
  v1::Beat b = sample_beat(1), got;
  // Warm: the message received into has allocated its strings once.
  for (uint64_t s = 1; s <= 3; s++) {
    b.set_sequence(s);
    const size_t n = tx.seal_into(b, buf, sizeof(buf));
    ASSERT_GT(n, 0u);
    ASSERT_EQ(rx.open(buf, n, &got), BeatReject::COUNT);
  }
  t_mark_all = true;
  g_counted = 0;
  g_armed = true;
  for (uint64_t s = 4; s <= 1000; s++) {
    b.set_sequence(s);
    b.set_sent_unix_ns(int64_t(s) * 1000);
    const size_t n = tx.seal_into(b, buf, sizeof(buf));
    if (n == 0 || rx.open(buf, n, &got) != BeatReject::COUNT) break;
  }
  g_armed = false;
  t_mark_all = false;
  EXPECT_EQ(got.sequence(), 1000u) << "every beat sealed and opened";
  EXPECT_EQ(got.node_id(), "node-with-a-longer-name");
  EXPECT_EQ(g_counted.load(), 0u) << "allocations in 997 seals and opens";
  // The check itself sees allocations: the string form allocates.
  t_mark_all = true;
  g_counted = 0;
  g_armed = true;
  const std::string d = tx.seal(b);
  g_armed = false;
  t_mark_all = false;
  EXPECT_GT(g_counted.load(), 0u) << "the count would not see an allocation";
  EXPECT_FALSE(d.empty());
}

std::unique_ptr<Monitor> beating(const std::string &self, const std::string &peer, uint16_t port,
                                 const std::string &id, std::atomic<uint64_t> *fills) {
  MonitorConfig c = loopback_beats(self, peer, port, {{1, std::string(32, '\x33')}});
  MonitorHooks h;
  h.fill_local = [id, fills](v1::Beat *b) {
    // The real-time threads: the sender, and the receiver (answers, backup beats). The gRPC
    // beats' thread fills beats too, at normal priority, through gRPC (which allocates).
    char name[16] = {};
    pthread_getname_np(pthread_self(), name, sizeof(name));
    if (!t_marked && (std::strcmp(name, "beats-tx") == 0 || std::strcmp(name, "beats-rx") == 0)) {
      t_marked = true;
      g_marked_threads++;
    }
    (*fills)++;
    b->set_node_id(id);
    b->set_role("standby");
    b->set_state("STANDBY_READY");
    b->set_generation(7);
  };
  h.fill_probe_reply = [](v1::Beat *b) {
    auto *w = b->add_dataplane_workers();
    w->set_worker(0);
    w->set_beats_sent(77);
  };
  h.on_peer_beat = [](const v1::Beat &) {};
  return std::make_unique<Monitor>(c, h);
}

/* Two monitors beat over loopback with authentication, 5 ms apart, and probe each other (an
 * answer comes from the real-time receiver). After a warm second, one more second: the beat
 * threads allocate nothing. */
TEST(BeatAlloc, TheBeatThreadsAllocateNothingOnceWarm) {
  if (!FTPAIR_COUNT_ALLOCATIONS) GTEST_SKIP() << "the sanitizer runtime owns malloc";
  const uint16_t port = free_udp_port();
  std::atomic<uint64_t> fills_a{0}, fills_b{0};
  auto a = beating("127.0.0.1", "127.0.0.2", port, "a", &fills_a);
  auto b = beating("127.0.0.2", "127.0.0.1", port, "b", &fills_b);
  a->start();
  b->start();
  ASSERT_TRUE(a->udp_error().empty()) << a->udp_error();
  v1::Beat reply;
  auto probe_both = [&] {
    EXPECT_EQ(a->probe(20ms, &reply), Monitor::ProbeResult::ANSWERED);
    EXPECT_EQ(b->probe(20ms, &reply), Monitor::ProbeResult::ANSWERED);
  };
  for (int i = 0; i < 10; i++) {
    probe_both();
    std::this_thread::sleep_for(100ms);
  }
  // Both monitors' senders (every beat) and receivers (the answers) are counted, or nothing is.
  ASSERT_EQ(g_marked_threads.load(), 4) << "beat threads marked for counting";
  const uint64_t heard0 = a->udp_heard() + b->udp_heard();
  void *warm[4];
  (void)backtrace(warm, 4);  // loads what backtrace() needs before anything is counted
  g_trace_depth = 0;
  g_trace_taken = false;
  g_counted = 0;
  g_armed = true;
  for (int i = 0; i < 10; i++) {
    std::this_thread::sleep_for(100ms);
    probe_both();  // the prober is this (unmarked) thread; the answers come from marked ones
  }
  g_armed = false;
  const uint64_t heard = a->udp_heard() + b->udp_heard() - heard0;
  a->stop();
  b->stop();
  EXPECT_GT(heard, 200u) << "the beats flowed while counted";
  EXPECT_EQ(g_counted.load(), 0u) << "allocations on the beat threads in one second";
  if (g_counted.load()) print_first_allocation();
  std::printf("beats heard while counted: %llu; allocations on the beat threads: %llu\n",
              static_cast<unsigned long long>(heard), static_cast<unsigned long long>(g_counted.load()));
}

}  // namespace
}  // namespace ftpair::fo
