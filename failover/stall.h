/* Is the dataplane stalled, or only starved?
 *
 * A worker whose loop counter has not moved for stall_ms cannot service packets. But on a
 * shared machine the usual reason is that the scheduler gave its CPU to someone else: the
 * thread was runnable and waiting on the run queue the whole time. Failing over then moves
 * the traffic to a standby on the same starved machine and counts as a spurious failover.
 * The kernel tells the two apart: /proc/self/task/TID/stat gives the thread's state and
 * schedstat its time on the CPU. A window with no progress is
 *   - a stall when the thread ran (a loop that spins without progress: CPU time grew by a
 *     quarter of the window or more) or slept, blocked or stopped (a lock, a parked lcore):
 *     it had its chance and made nothing of it;
 *   - starvation when it is runnable, gave up the CPU by itself at most once (the idle
 *     loop's one nap between two beats; more means it slept or blocked) and got (almost) no
 *     CPU time: it waits on the run queue. Likewise when it has been asleep in one nap
 *     (nanosleep) all along: a nap is a fraction of a millisecond, so its wake-up is late
 *     (a CPU the hypervisor holds back), and blocked in anything else is a stall. (The kernel adds run-queue delay to schedstat only when a thread gets the CPU
 *     back, so a starved thread's own wait figure does not move; its CPU time does not
 *     either.)
 * Starvation is tolerated up to starve_limit (default 10 x stall_ms); past that the node
 * cannot service packets whatever the reason, and is reported unhealthy.
 *
 * CPU time alone never makes a stall at one look. When the host holds a vCPU back, the guest
 * charges the whole pause as CPU time to the thread that was on it (no steal time is reported
 * here), and the look right after it can catch the worker before its first loop: no progress,
 * 70 ms "ran". A runnable thread that has not slept but ran is therefore watched afresh (a new
 * baseline, half of stall_ms), and called stalled only if the new window shows it running
 * without progress too: a worker that really spins is reported that much later. One that
 * blocks, stops or sleeps elsewhere is stalled at once. */
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "common/single_writer.h"

namespace ftpair::fo {

struct SchedStat {
  uint64_t run_ns = 0, wait_ns = 0;
  uint64_t voluntary = 0;  // context switches the thread asked for (sleeps, blocks)
  char state = '?';  // from /proc/self/task/TID/stat: R running or runnable, S, D, T, ...
  long syscall = -2;  // the system call it is in (/proc/self/task/TID/syscall): -1 none, -2 unknown
  bool ok = false;
};
// The thread's schedstat and state (not ok when the thread or the files are gone); syscall
// is left unknown (-2).
SchedStat read_schedstat(int tid);
// The system call the thread is in: its number, -1 none (running), -2 unknown.
long read_syscall(int tid);
/* Whether a worker waits only for a CPU, at one look (s: read_schedstat; napping: the worker's
 * own flag around its idle nap): runnable (R), or asleep in its nap, which for a worker silent
 * for milliseconds is a wake-up that came late because the machine did not run it. Asleep
 * anywhere else (a lock, I/O), stopped, or gone: false. For a probe's answer
 * (failover/dp_verdict.h), on a real-time thread: the flag, not /proc/TID/syscall, whose
 * read may wait for the thread to leave its CPU. The detector below looks at a whole window. */
inline bool waits_for_cpu(const SchedStat &s, bool napping) {
  return s.ok && (s.state == 'R' || (s.state == 'S' && napping));
}

class StallDetector {
 public:
  enum class Verdict { PROGRESS, STARVED, STALLED };

  // Any thread (a reload changes the threshold while beats and /metrics check).
  void set_stall_ms(uint32_t ms) { stall_ns_.store(int64_t(ms) * 1000000, std::memory_order_relaxed); }
  void set_starve_factor(uint32_t f) { starve_factor_.store(f, std::memory_order_relaxed); }
  /* loops: the worker's progress counter; tid: its thread (0 = not started yet: no
   * starvation check; it is given the starvation limit to start, then called stalled).
   * Thread-safe; cheap enough to call on every heartbeat. Never waits: while another thread
   * checks (and may have lost its CPU on a busy machine), it returns that check's verdict,
   * so a real-time beat thread is never held up by a normal-priority caller. */
  Verdict check(uint64_t loops, int tid, int64_t now_ns);
  bool healthy(uint64_t loops, int tid, int64_t now_ns) { return check(loops, tid, now_ns) != Verdict::STALLED; }
  /* Where the kernel's view of a thread comes from: /proc (read_schedstat, and read_syscall
   * for a sleeping thread when want_syscall). A test gives its own, to play a host's pause. */
  using Reader = SchedStat (*)(int tid, bool want_syscall);
  void set_reader(Reader r) { reader_ = r; }  // before the first check
  uint64_t starved_windows() const { return starved_.get(); }  // any thread
  // Windows that ended with CPU time but no progress and were watched afresh (see above).
  uint64_t rewatched_windows() const { return rewatched_.get(); }  // any thread
  // Times the verdict turned to STALLED (counted once per turn), and what the kernel said
  // about the thread then: for the log line an operator needs. last_stall() reads both at once.
  struct StallFacts {
    uint64_t count = 0;         // stalled_windows() when these facts were taken
    bool starve_limit = false;  // no progress past starve_factor x stall_ms, starved when last looked at
    int64_t idle_ms = 0;        // no progress for this long
    char state = '?';           // the thread's state then (R, S, D, T, or ? unknown)
    int64_t window_ms = -1;     // how long the kernel watched it: from the baseline (-1 unknown)
    int64_t ran_ms = -1;        // CPU time in that window (-1 unknown)
    int64_t slept = -1;         // voluntary context switches in that window (-1 unknown)
    long syscall = -2;          // the system call it was in then (-1 none, -2 unknown)
  };
  uint64_t stalled_windows() const { return stalled_.get(); }  // any thread
  bool stalled_now() const { return last_.load() == Verdict::STALLED; }  // the last verdict, any thread
  StallFacts last_stall() const {
    std::lock_guard<std::mutex> g(mu_);
    return facts_;
  }
  /* The same without waiting (a real-time caller), from a copy published under a sequence
   * count (a seqlock): false only while a check is writing new facts, a few stores long. Not
   * from facts_ under mu_: a check holds mu_ while it reads /proc, which may wait for the
   * worker to leave its CPU, and the fast beats that describe the stall to the peer would
   * then, beat after beat, find the lock taken and send no facts (the project's CI saw a
   * promotion line of "worker 0 stalled" and nothing more). */
  bool try_last_stall(StallFacts *out) const;

 private:
  Verdict check_locked(uint64_t loops, int tid, int64_t now_ns);
  Verdict stalled(int64_t idle, int64_t now_ns, const SchedStat *now, bool starve_limit);
  Verdict starving();
  mutable std::mutex mu_;
  std::atomic<Verdict> last_{Verdict::PROGRESS};
  std::atomic<int64_t> stall_ns_{150000000};
  std::atomic<uint32_t> starve_factor_{10};
  uint64_t loops_ = 0;
  int64_t change_ns_ = 0;
  int64_t base_ns_ = 0;  // when at_change_ was read
  SchedStat at_change_;
  bool in_starve_ = false;
  bool rewatch_ = false;  // the window since a look that saw CPU time and no progress is watched afresh
  Reader reader_ = &read_thread;
  static SchedStat read_thread(int tid, bool want_syscall);
  SingleWriter<uint64_t> starved_{0};  // written under mu_, read by any thread
  SingleWriter<uint64_t> rewatched_{0};  // likewise
  SingleWriter<uint64_t> stalled_{0};  // likewise
  bool in_stall_ = false;
  StallFacts facts_;
  void publish_facts();  // under mu_, after facts_ changed
  std::atomic<uint32_t> facts_seq_{0};  // odd while publish_facts writes
  std::atomic<int64_t> pub_[8] = {};  // facts_, field by field (see publish_facts)
};

}  // namespace ftpair::fo
