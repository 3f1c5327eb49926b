#include "failover/stall.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ftpair::fo {

namespace {
/* The start of a small /proc file into buf (NUL-terminated): its length, or -1. open/read, not
 * stdio: the fast beats' real-time threads call this (through the health check in every
 * beat), and fopen would allocate, waiting for the allocator's lock. */
ssize_t read_proc(const char *path, char *buf, size_t cap) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t n = 0;
  while (n + 1 < cap) {
    const ssize_t r = ::read(fd, buf + n, cap - 1 - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    n += size_t(r);
  }
  ::close(fd);
  buf[n] = '\0';
  return ssize_t(n);
}
}  // namespace

SchedStat read_schedstat(int tid) {
  SchedStat s;
  char path[64], buf[8192];  // status is about 1.5 KB
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", tid);
  if (read_proc(path, buf, sizeof(buf)) <= 0) return s;
  unsigned long long run = 0, wait = 0;
  s.ok = std::sscanf(buf, "%llu %llu", &run, &wait) == 2;
  s.run_ns = run;
  s.wait_ns = wait;
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
  if (read_proc(path, buf, 512) <= 0) {
    s.ok = false;
    return s;
  }
  // "tid (comm) S ...": comm may hold spaces and parentheses, so take the last ')'.
  const char *rp = std::strrchr(buf, ')');
  if (!rp || rp[1] != ' ' || !rp[2]) {
    s.ok = false;
    return s;
  }
  s.state = rp[2];
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
  if (read_proc(path, buf, sizeof(buf)) <= 0) {
    s.ok = false;
    return s;
  }
  // A line of its own ("nonvoluntary_ctxt_switches:" ends the same way).
  static constexpr char kKey[] = "\nvoluntary_ctxt_switches:";
  const char *at = std::strstr(buf, kKey);
  bool got = false;
  if (at) {
    char *end = nullptr;
    const unsigned long long v = std::strtoull(at + sizeof(kKey) - 1, &end, 10);
    if (end != at + sizeof(kKey) - 1 && *end == '\n') {  // the whole number, not one cut by the buffer
      s.voluntary = v;
      got = true;
    }
  }
  s.ok = s.ok && got;
  return s;
}

/* "running", or "-1 sp pc" (blocked outside a system call), or "NR args... sp pc". Read only
 * for a sleeping thread, on the way to a verdict: the kernel may wait for the thread to be
 * off its CPU before it answers. */
long read_syscall(int tid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", tid);
  char buf[256];
  if (read_proc(path, buf, sizeof(buf)) <= 0) return -2;
  char word[32] = {};
  long nr = -2;
  if (std::sscanf(buf, "%31s", word) == 1) nr = std::strcmp(word, "running") == 0 ? -1 : std::strtol(word, nullptr, 10);
  return nr;
}

SchedStat StallDetector::read_thread(int tid, bool want_syscall) {
  SchedStat s = read_schedstat(tid);
  if (want_syscall && s.ok && s.state == 'S') s.syscall = read_syscall(tid);
  return s;
}

StallDetector::Verdict StallDetector::check(uint64_t loops, int tid, int64_t now_ns) {
  std::unique_lock<std::mutex> g(mu_, std::try_to_lock);
  if (!g.owns_lock()) return last_.load();
  const Verdict v = check_locked(loops, tid, now_ns);
  last_.store(v);
  return v;
}

StallDetector::Verdict StallDetector::check_locked(uint64_t loops, int tid, int64_t now_ns) {
  if (loops != loops_ || change_ns_ == 0) {
    loops_ = loops;
    change_ns_ = now_ns;
    base_ns_ = 0;  // the scheduler baseline is taken only once progress pauses
    in_starve_ = false;
    rewatch_ = false;
    in_stall_ = false;
    return Verdict::PROGRESS;
  }
  if (tid > 0 && base_ns_ == 0) {
    at_change_ = reader_(tid, false);
    base_ns_ = now_ns;
  }
  const int64_t idle = now_ns - change_ns_;
  const int64_t stall_ns = stall_ns_.load(std::memory_order_relaxed);
  if (idle <= stall_ns) return Verdict::PROGRESS;
  const int64_t limit = stall_ns * int64_t(starve_factor_.load(std::memory_order_relaxed));
  /* No thread yet: the worker has not started (a node just launched it, on a busy machine).
   * Not progress, and nothing the kernel can say about it: starved until the starvation
   * limit, as a thread that waits for its CPU would be; past it, stalled ("state unknown"). */
  if (tid <= 0) {
    if (idle > limit) return stalled(idle, now_ns, nullptr, true);
    return starving();
  }
  /* The checks come from threads that share the machine with the worker (every fast beat, 5 ms
   * apart, when they get a CPU). When the first check to see no progress came late, past
   * stall_ms, the baseline was only taken now: a window of nothing tells a starved thread from
   * a stalled one. Judge once the kernel has watched the thread for half of stall_ms. A real
   * stall is then reported that much later, and only when the checks themselves were late.
   * The same after a starved look (rewatch_): still starved meanwhile, as last seen. */
  if (at_change_.ok && now_ns - base_ns_ < stall_ns / 2 && idle <= limit)
    return in_starve_ ? Verdict::STARVED : Verdict::PROGRESS;
  const SchedStat now = reader_(tid, true);
  /* The first baseline could not be read (the thread's files for a moment): this look is the
   * baseline, and the window starts now, rather than a verdict with nothing to compare. */
  if (!at_change_.ok && now.ok && idle <= limit) {
    at_change_ = now;
    base_ns_ = now_ns;
    return in_starve_ ? Verdict::STARVED : Verdict::PROGRESS;
  }
  const int64_t window = now_ns - base_ns_;
  /* Starved: runnable, not slept or blocked, and (almost) no CPU time since progress paused.
   * One voluntary switch is allowed: an idle worker's loop beats, polls, then naps
   * (dataplane/worker.cc), so a worker preempted between its beat and its nap that gets the
   * CPU back only for that nap, and then waits again on the run queue, has slept once
   * after the baseline without being stalled. A second sleep would need a new iteration,
   * which beats. */
  /* Or asleep in its one nap (nanosleep) for much longer than a nap: the idle loop's naps are
   * a fraction of a millisecond, so its wake-up is late. The timer fires on a CPU the
   * hypervisor holds back, or not at all while the vCPU is away: the machine did not run
   * it. A thread blocked in anything else (a lock, I/O) is stalled. */
  const bool napping = now.state == 'S' && (now.syscall == SYS_nanosleep || now.syscall == SYS_clock_nanosleep);
  const bool waits = at_change_.ok && now.ok && (now.state == 'R' || napping) &&
                     now.voluntary <= at_change_.voluntary + 1 && now.run_ns >= at_change_.run_ns;
  const bool starved = waits && 4 * (now.run_ns - at_change_.run_ns) < uint64_t(window);
  if (starved) {
    if (idle > limit) return stalled(idle, now_ns, &now, true);
    rewatch_ = false;
    return starving();
  }
  /* Still runnable (or in its one nap) and not slept since, but with CPU time: the one figure a
   * host's pause can forge. The guest charges a held vCPU's pause as CPU time to the thread
   * that was on it, and this look may come before the worker's first loop after the pause
   * (whether or not an earlier look caught it starved: the CI's lab saw "ran 18 ms of 40"
   * with none). Watch afresh from here; it is stalled only if this window, too, shows it
   * running without progress: a worker that really spins is reported half of stall_ms later.
   * A thread now blocked, stopped or asleep elsewhere is stalled at once: no pause explains
   * that. */
  if (!rewatch_ && waits && idle <= limit) {
    at_change_ = now;
    base_ns_ = now_ns;
    rewatch_ = true;
    rewatched_++;
    return in_starve_ ? Verdict::STARVED : Verdict::PROGRESS;
  }
  return stalled(idle, now_ns, &now, false);
}

StallDetector::Verdict StallDetector::starving() {
  if (!in_starve_) {
    in_starve_ = true;
    starved_++;
  }
  in_stall_ = false;  // a check that saw it stalled (in its one nap, say) was wrong: count the next one
  return Verdict::STARVED;
}

StallDetector::Verdict StallDetector::stalled(int64_t idle, int64_t now_ns, const SchedStat *now, bool starve_limit) {
  if (in_stall_) return Verdict::STALLED;
  in_stall_ = true;
  facts_ = StallFacts{};
  facts_.starve_limit = starve_limit;
  facts_.idle_ms = idle / 1000000;
  if (now && now->ok) {
    facts_.state = now->state;
    facts_.syscall = now->syscall;
    if (at_change_.ok && now->run_ns >= at_change_.run_ns) {
      facts_.window_ms = (now_ns - base_ns_) / 1000000;
      facts_.ran_ms = int64_t((now->run_ns - at_change_.run_ns) / 1000000);
      facts_.slept = int64_t(now->voluntary - at_change_.voluntary);
    }
  }
  stalled_++;
  facts_.count = stalled_.get();
  publish_facts();
  return Verdict::STALLED;
}

/* One writer at a time (mu_ is held). Each field is an atomic of its own, so a reader that
 * races a write reads a mix but no torn value, and the count tells it to try again. No
 * standalone fences (ThreadSanitizer does not model them; GCC says so, and the build treats
 * warnings as errors): each field is stored with release, so a reader that sees one new field
 * also sees the odd count stored before it; the even count is stored with release after them. */
void StallDetector::publish_facts() {
  const uint32_t s = facts_seq_.load(std::memory_order_relaxed);
  facts_seq_.store(s + 1, std::memory_order_relaxed);
  const int64_t v[8] = {int64_t(facts_.count), facts_.starve_limit ? 1 : 0, facts_.idle_ms, facts_.state,
                        facts_.window_ms,      facts_.ran_ms,              facts_.slept,   facts_.syscall};
  for (int i = 0; i < 8; i++) pub_[i].store(v[i], std::memory_order_release);
  facts_seq_.store(s + 2, std::memory_order_release);
}

bool StallDetector::try_last_stall(StallFacts *out) const {
  for (int attempt = 0; attempt < 4; attempt++) {
    const uint32_t s1 = facts_seq_.load(std::memory_order_acquire);
    if (s1 & 1) continue;
    if (s1 == 0) {  // nothing published yet
      *out = StallFacts{};
      return true;
    }
    int64_t v[8];
    // Acquire: the count's second load below cannot move before them, and a field from a
    // newer write brings that write's odd count with it.
    for (int i = 0; i < 8; i++) v[i] = pub_[i].load(std::memory_order_acquire);
    if (facts_seq_.load(std::memory_order_relaxed) != s1) continue;
    out->count = uint64_t(v[0]);
    out->starve_limit = v[1] != 0;
    out->idle_ms = v[2];
    out->state = char(v[3]);
    out->window_ms = v[4];
    out->ran_ms = v[5];
    out->slept = v[6];
    out->syscall = long(v[7]);
    return true;
  }
  return false;
}

}  // namespace ftpair::fo
