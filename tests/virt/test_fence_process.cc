// The process fencer against real processes: a running child, a stopped child, a child
// that ignores SIGTERM; each must be confirmed unable to run before fence() returns OK. And the
// platform's factory (virt::make_fencer): each kind refuses an incomplete config by its key.
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "virt/fence_process.h"
#include "virt/fencers.h"

namespace ftpair::virt {
namespace {

using namespace std::chrono_literals;

pid_t spawn_sleeper() {
  pid_t pid = fork();
  if (pid == 0) {
    signal(SIGTERM, SIG_IGN);
    for (;;) pause();
  }
  return pid;
}

using fo::FenceConfig;
using fo::FenceKind;
using fo::Fencer;

// Through the daemon's factory, as ftpaird builds it from failover.fence: process.
std::unique_ptr<Fencer> process_fencer(const std::string &pidfile, bool missing_ok = false) {
  FenceConfig fc;
  fc.kind = FenceKind::PROCESS;
  fc.pidfile = pidfile;
  fc.missing_pidfile_ok = missing_ok;
  Status st;
  auto f = make_fencer(fc, &st);
  EXPECT_TRUE(f) << st.message();
  return f;
}

class ProcessFencerTest : public ::testing::Test {
 protected:
  void SetUp() override { pidfile_ = "/tmp/ftpair-fence-test-" + std::to_string(getpid()) + ".pid"; }
  void TearDown() override { std::remove(pidfile_.c_str()); }
  void write_pid(pid_t p) { std::ofstream(pidfile_) << p << "\n"; }
  std::string pidfile_;
};

// Fences a sleeper (stopped first with `stop`) and checks that SIGKILL is what ended it.
void fence_sleeper(const std::string &pidfile, bool stop) {
  pid_t child = spawn_sleeper();
  ASSERT_GT(child, 0);
  if (stop) kill(child, SIGSTOP);
  std::ofstream(pidfile) << child << "\n";
  Status st = process_fencer(pidfile)->fence(2000ms);
  EXPECT_TRUE(st.ok()) << st.message();
  int ws = 0;
  ASSERT_EQ(waitpid(child, &ws, 0), child);
  EXPECT_TRUE(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
}

TEST_F(ProcessFencerTest, KillsARunningPeer) { fence_sleeper(pidfile_, false); }

TEST_F(ProcessFencerTest, KillsAStoppedPeer) { fence_sleeper(pidfile_, true); }

/* A stopped peer that cannot get a CPU: SIGKILL pending on every thread is enough, without
 * waiting for the threads to be scheduled and start exiting (10 ms of a stopped peer's
 * failover on two busy vCPUs). The peer is pinned to one CPU and stopped; a SCHED_FIFO spinner
 * holds that CPU while the fence runs (the test's own thread on another), so no thread of the
 * peer can run, and the fence must still confirm it. Once the spinner lets go, the peer dies of
 * that SIGKILL. The old fencer, which waited for PF_EXITING, timed out here. */
TEST_F(ProcessFencerTest, AStoppedPeerThatCannotRunIsFencedByThePendingKill) {
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
  int cpus[2], found = 0;
  for (int c = 0; c < CPU_SETSIZE && found < 2; c++)
    if (CPU_ISSET(c, &allowed)) cpus[found++] = c;
  if (found < 2) GTEST_SKIP() << "needs two CPUs";
  cpu_set_t mine, theirs;
  CPU_ZERO(&mine);
  CPU_SET(cpus[0], &mine);
  CPU_ZERO(&theirs);
  CPU_SET(cpus[1], &theirs);
  struct Restore {
    cpu_set_t saved;
    ~Restore() { sched_setaffinity(0, sizeof(saved), &saved); }
  } restore{allowed};
  ASSERT_EQ(sched_setaffinity(0, sizeof(mine), &mine), 0);  // the test (and the fencer) off the peer's CPU

  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t child = fork();
  if (child == 0) {
    close(ready[0]);
    if (sched_setaffinity(0, sizeof(theirs), &theirs) != 0) _exit(2);
    std::thread([] {
      for (;;) pause();
    }).detach();  // a second thread: every thread must be past user code
    (void)!write(ready[1], "r", 1);
    for (;;) pause();
  }
  ASSERT_GT(child, 0);
  // Whatever ends the test early (a failed assertion), the child is killed and reaped.
  struct Reap {
    pid_t pid;
    bool done = false;
    ~Reap() {
      if (done) return;
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } reap{child};
  close(ready[1]);
  char c;
  const bool up = read(ready[0], &c, 1) == 1;  // EOF: the child could not pin itself
  close(ready[0]);
  if (!up) GTEST_SKIP() << "cannot pin a process to CPU " << cpus[1];
  ASSERT_EQ(kill(child, SIGSTOP), 0);
  int ws = 0;
  ASSERT_EQ(waitpid(child, &ws, WUNTRACED), child);  // stopped for certain, not on its way
  ASSERT_TRUE(WIFSTOPPED(ws));
  write_pid(child);

  std::atomic<bool> go{false}, spinning{false}, stop{false}, rt{true};
  std::thread hog([&] {
    sched_param sp{};
    sp.sched_priority = 10;
    if (pthread_setaffinity_np(pthread_self(), sizeof(theirs), &theirs) != 0 ||
        pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0) {
      rt = false;
      spinning = true;
      return;
    }
    while (!go.load()) std::this_thread::sleep_for(100us);
    spinning = true;
    // Short: anything else pinned to that CPU waits as long (the RT throttle would end it at 950 ms).
    const auto end = std::chrono::steady_clock::now() + 150ms;
    while (!stop.load() && std::chrono::steady_clock::now() < end) {
    }
  });
  go = true;
  while (!spinning.load()) std::this_thread::sleep_for(100us);
  if (!rt.load()) {
    hog.join();
    GTEST_SKIP() << "no SCHED_FIFO or no pinning here";
  }
  const auto t0 = std::chrono::steady_clock::now();
  Status st = process_fencer(pidfile_)->fence(100ms);
  const auto took = std::chrono::steady_clock::now() - t0;
  // Still unable to run: the peer has not exited (no zombie yet) while the spinner holds its CPU.
  const bool still_there = waitpid(child, nullptr, WNOHANG) == 0;
  stop = true;
  hog.join();
  EXPECT_TRUE(st.ok()) << st.message();
  EXPECT_LT(took, 100ms);
  EXPECT_TRUE(still_there) << "the peer exited during the fence: the test proved nothing";
  ASSERT_EQ(waitpid(child, &ws, 0), child);
  reap.done = true;
  EXPECT_TRUE(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
}

TEST_F(ProcessFencerTest, AnUnreapedZombieIsFenced) {
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  std::this_thread::sleep_for(50ms);  // it is a zombie now: we do not reap it yet
  write_pid(child);
  Status st = process_fencer(pidfile_)->fence(500ms);
  EXPECT_TRUE(st.ok()) << st.message();
  waitpid(child, nullptr, 0);
}

// Fail closed: what the fencer cannot read leaves the peer's state unknown.
TEST_F(ProcessFencerTest, AMissingPidfileIsNotFenced) {
  Status st = process_fencer(pidfile_)->fence(100ms);
  EXPECT_EQ(st.code(), Code::UNAVAILABLE) << st.str();
  EXPECT_NE(st.message().find("failover.fence_missing_pidfile_ok"), std::string::npos) << st.message();
}

TEST_F(ProcessFencerTest, AnEmptyOrGarbledPidfileIsNotFenced) {
  for (const char *text : {"", "\n", "abc\n", "1\n", "-5\n"}) {
    SCOPED_TRACE(text);
    std::ofstream(pidfile_) << text;
    Status st = process_fencer(pidfile_, true)->fence(100ms);  // even where a missing one would do
    EXPECT_EQ(st.code(), Code::UNAVAILABLE) << st.str();
  }
}

TEST_F(ProcessFencerTest, AnUnreadablePidfileIsNotFenced) {
  const std::string dir = pidfile_ + ".d";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  Status st = process_fencer(dir, true)->fence(100ms);  // a directory: opening it reads nothing
  EXPECT_EQ(st.code(), Code::UNAVAILABLE) << st.str();
  ::rmdir(dir.c_str());
}

// Only the explicit setting makes a missing pidfile mean "stopped".
TEST_F(ProcessFencerTest, AMissingPidfileIsFencedOnlyWhenConfiguredSo) {
  Status st = process_fencer(pidfile_, true)->fence(100ms);
  EXPECT_TRUE(st.ok()) << st.message();
}

TEST(Fencers, FactoryRefusesIncompleteConfigs) {
  FenceConfig fc;
  Status st;
  EXPECT_FALSE(make_fencer(fc, &st)) << "none without allow_none";
  EXPECT_NE(st.message().find("allow_fence_none"), std::string::npos) << st.message();
  fc.allow_none = true;
  auto none = make_fencer(fc, &st);
  ASSERT_TRUE(none) << st.message();
  EXPECT_STREQ(none->kind(), "none");

  fc.kind = FenceKind::PROCESS;
  st = Status::Ok();
  EXPECT_FALSE(make_fencer(fc, &st));
  EXPECT_NE(st.message().find("failover.fence_pidfile"), std::string::npos) << st.message();

  fc.kind = FenceKind::LIBVIRT;
  st = Status::Ok();
  EXPECT_FALSE(make_fencer(fc, &st));
  EXPECT_NE(st.message().find("failover.libvirt_uri"), std::string::npos) << st.message();
  fc.libvirt_uri = "qemu:///system";
  fc.domain = "pair-b";
  fc.libvirt_action = "reboot";
  st = Status::Ok();
  EXPECT_FALSE(make_fencer(fc, &st));
  EXPECT_NE(st.message().find("failover.libvirt_action"), std::string::npos) << st.message();
  fc.libvirt_action = "suspend";
  auto lv = make_fencer(fc, &st);
  ASSERT_TRUE(lv) << st.message();
  EXPECT_STREQ(lv->kind(), "libvirt");
  EXPECT_NE(lv->target().find("pair-b"), std::string::npos) << lv->target();
}

}  // namespace
}  // namespace ftpair::virt
