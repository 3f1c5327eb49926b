// The process fencer against real processes: a running child, a stopped child, a child
// that ignores SIGTERM; each must be confirmed unable to run before fence() returns OK.
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "failover/fencer.h"

namespace ftpair::fo {
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

std::unique_ptr<Fencer> process_fencer(const std::string &pidfile) {
  FenceConfig fc;
  fc.kind = FenceKind::PROCESS;
  fc.pidfile = pidfile;
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

TEST_F(ProcessFencerTest, KillsARunningPeer) {
  pid_t child = spawn_sleeper();
  ASSERT_GT(child, 0);
  write_pid(child);
  auto f = process_fencer(pidfile_);
  Status st = f->fence(2000ms);
  EXPECT_TRUE(st.ok()) << st.message();
  int ws = 0;
  ASSERT_EQ(waitpid(child, &ws, 0), child);
  EXPECT_TRUE(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
}

TEST_F(ProcessFencerTest, KillsAStoppedPeer) {
  pid_t child = spawn_sleeper();
  ASSERT_GT(child, 0);
  kill(child, SIGSTOP);
  write_pid(child);
  Status st = process_fencer(pidfile_)->fence(2000ms);
  EXPECT_TRUE(st.ok()) << st.message();
  int ws = 0;
  ASSERT_EQ(waitpid(child, &ws, 0), child);
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

TEST_F(ProcessFencerTest, NoPidfileMeansNothingRuns) {
  Status st = process_fencer(pidfile_)->fence(100ms);
  EXPECT_TRUE(st.ok()) << st.message();
}

TEST(Fencer, NoneMustBeChosenExplicitly) {
  FenceConfig fc;
  Status st;
  EXPECT_FALSE(make_fencer(fc, &st));
  EXPECT_FALSE(st.ok());
  fc.allow_none = true;
  EXPECT_TRUE(make_fencer(fc, &st)) << st.message();
}

}  // namespace
}  // namespace ftpair::fo
