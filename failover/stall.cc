#include "failover/stall.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

namespace ftpair::fo {

SchedStat read_schedstat(int tid) {
  SchedStat s;
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", tid);
  std::FILE *f = std::fopen(path, "re");
  if (!f) return s;
  unsigned long long run = 0, wait = 0;
  s.ok = std::fscanf(f, "%llu %llu", &run, &wait) == 2;
  std::fclose(f);
  s.run_ns = run;
  s.wait_ns = wait;
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
  f = std::fopen(path, "re");
  if (!f) {
    s.ok = false;
    return s;
  }
  char buf[512];
  size_t n = std::fread(buf, 1, sizeof(buf) - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  // "tid (comm) S ...": comm may hold spaces and parentheses, so take the last ')'.
  const char *rp = std::strrchr(buf, ')');
  if (!rp || rp[1] != ' ' || !rp[2]) {
    s.ok = false;
    return s;
  }
  s.state = rp[2];
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
  f = std::fopen(path, "re");
  if (!f) {
    s.ok = false;
    return s;
  }
  char line[256];
  bool got = false;
  while (std::fgets(line, sizeof(line), f)) {
    unsigned long long v = 0;
    if (std::sscanf(line, "voluntary_ctxt_switches: %llu", &v) == 1) {
      s.voluntary = v;
      got = true;
      break;
    }
  }
  std::fclose(f);
  s.ok = s.ok && got;
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
    return Verdict::PROGRESS;
  }
  if (tid > 0 && base_ns_ == 0) {
    at_change_ = read_schedstat(tid);
    base_ns_ = now_ns;
  }
  const int64_t idle = now_ns - change_ns_;
  const int64_t stall_ns = stall_ns_.load(std::memory_order_relaxed);
  if (idle <= stall_ns) return Verdict::PROGRESS;
  if (tid > 0 && at_change_.ok && idle <= stall_ns * int64_t(starve_factor_.load(std::memory_order_relaxed))) {
    SchedStat now = read_schedstat(tid);
    const int64_t window = now_ns - base_ns_;
    /* Starved: runnable, not slept or blocked, and (almost) no CPU time since progress paused.
     * One voluntary switch is allowed: an idle worker's loop beats, polls, then naps
     * (dataplane/worker.cc), so a worker preempted between its beat and its nap that gets the
     * CPU back only for that nap, and then waits again on the run queue, has slept once
     * after the baseline without being stalled. A second sleep would need a new iteration,
     * which beats. */
    if (now.ok && now.state == 'R' && now.voluntary <= at_change_.voluntary + 1 && now.run_ns >= at_change_.run_ns &&
        4 * (now.run_ns - at_change_.run_ns) < uint64_t(window)) {
      if (!in_starve_) {
        in_starve_ = true;
        starved_++;
      }
      return Verdict::STARVED;
    }
  }
  return Verdict::STALLED;
}

}  // namespace ftpair::fo
