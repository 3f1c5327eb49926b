/* Real-time scheduling for the few threads whose wake-up latency is the product: the beats,
 * and the checkpoint engine's commit path (its loop and the thread that reads the standby's
 * acknowledgements; on a standby, the thread that applies them).
 *
 * Rules for a thread made real-time here:
 *   - it sleeps or blocks between its bursts of work, never spins for long;
 *   - it never waits on a normal-priority thread while real-time (NormalPriority for that):
 *     on a shared CPU a SCHED_FIFO thread keeps the CPU from the thread it waits for, and
 *     sched_yield() does not give it away to a SCHED_OTHER thread.
 * Priorities, highest first: beats (10) above the commit path (5), so that a busy engine
 * never delays failover detection. Without permission (no CAP_SYS_NICE, an RLIMIT_RTPRIO of
 * 0) the thread stays as it was and the call says so. */
#pragma once

#include <pthread.h>
#include <sched.h>

#include <vector>

namespace ftpair {

constexpr int kRealtimePriorityBeats = 10;
constexpr int kRealtimePriorityCommit = 5;

// SCHED_FIFO at priority for the calling thread; false when not permitted.
inline bool make_thread_realtime(int priority) {
  sched_param sp{};
  sp.sched_priority = priority;
  return pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) == 0;
}

/* Keeps the calling thread off cpus (the dataplane workers' cores), where other CPUs are
 * allowed to it: a real-time thread woken on a worker's core preempts the worker, a
 * context switch and a cold cache per wake-up. False when nothing changed. */
inline bool keep_thread_off_cpus(const std::vector<int> &cpus) {
  if (cpus.empty()) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (pthread_getaffinity_np(pthread_self(), sizeof(set), &set) != 0) return false;
  cpu_set_t rest = set;
  for (int c : cpus)
    if (c >= 0 && c < CPU_SETSIZE) CPU_CLR(c, &rest);
  if (CPU_COUNT(&rest) == 0 || CPU_EQUAL(&rest, &set)) return false;
  return pthread_setaffinity_np(pthread_self(), sizeof(rest), &rest) == 0;
}

/* The CPUs the calling thread may run on, ascending, without `avoid` (the workers' cores)
 * when at least `need` others remain; else all of them. Empty when unknown. */
inline std::vector<int> allowed_cpus(const std::vector<int> &avoid, size_t need) {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> all, rest;
  if (pthread_getaffinity_np(pthread_self(), sizeof(set), &set) != 0) return all;
  for (int c = 0; c < CPU_SETSIZE; c++) {
    if (!CPU_ISSET(c, &set)) continue;
    all.push_back(c);
    bool avoided = false;
    for (int a : avoid) avoided |= a == c;
    if (!avoided) rest.push_back(c);
  }
  return rest.size() >= need ? rest : all;
}

// The calling thread on one CPU; false when not permitted.
inline bool pin_thread_to_cpu(int cpu) {
  if (cpu < 0 || cpu >= CPU_SETSIZE) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

inline bool thread_is_realtime() {
  int pol = 0;
  sched_param sp{};
  return pthread_getschedparam(pthread_self(), &pol, &sp) == 0 && (pol == SCHED_FIFO || pol == SCHED_RR);
}

/* The calling thread at normal priority for a scope, then back to what it was: for a
 * real-time thread about to wait on normal ones (parking workers, a host's hook). */
class NormalPriority {
 public:
  NormalPriority() {
    int pol = 0;
    sched_param sp{};
    if (pthread_getschedparam(pthread_self(), &pol, &sp) == 0 && (pol == SCHED_FIFO || pol == SCHED_RR)) {
      sched_param normal{};
      was_rt_ = pthread_setschedparam(pthread_self(), SCHED_OTHER, &normal) == 0;
      saved_pol_ = pol;
      saved_ = sp;
    }
  }
  ~NormalPriority() {
    if (was_rt_) pthread_setschedparam(pthread_self(), saved_pol_, &saved_);
  }
  NormalPriority(const NormalPriority &) = delete;
  NormalPriority &operator=(const NormalPriority &) = delete;

 private:
  bool was_rt_ = false;
  int saved_pol_ = SCHED_OTHER;
  sched_param saved_{};
};

/* For a scope (a gRPC handler's pooled thread, for one stream): real-time when `realtime`
 * (and permitted), and then off avoid_cpus (the workers' cores); then back as it was. */
class RealtimeScope {
 public:
  RealtimeScope(bool realtime, int priority, const std::vector<int> &avoid_cpus = {})
      : on_(realtime && !thread_is_realtime() && make_thread_realtime(priority)) {
    CPU_ZERO(&saved_);
    if (on_) moved_ = pthread_getaffinity_np(pthread_self(), sizeof(saved_), &saved_) == 0 && keep_thread_off_cpus(avoid_cpus);
  }
  ~RealtimeScope() {
    if (on_) {
      sched_param normal{};
      pthread_setschedparam(pthread_self(), SCHED_OTHER, &normal);
    }
    if (moved_) pthread_setaffinity_np(pthread_self(), sizeof(saved_), &saved_);
  }
  bool on() const { return on_; }
  RealtimeScope(const RealtimeScope &) = delete;
  RealtimeScope &operator=(const RealtimeScope &) = delete;

 private:
  bool on_;
  bool moved_ = false;
  cpu_set_t saved_;
};

}  // namespace ftpair
