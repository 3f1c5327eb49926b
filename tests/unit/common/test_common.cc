// The base layer: atomic files, digests, spawning, clocks, logging.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <thread>
#include <vector>
#include <atomic>

#include <gtest/gtest.h>

#include "common/clock.h"
#include "common/crash.h"
#include "common/file.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/process.h"
#include "common/status.h"

namespace ftpair {
namespace {

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ftpair-common-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)std::system(("rm -rf " + dir_).c_str()); }
  std::string dir_;
};

TEST(StatusTest, NamesItsCode) {
  EXPECT_EQ(Status::Ok().str(), "OK");
  EXPECT_EQ(FailedPrecondition("not in sync").str(), "FAILED_PRECONDITION: not in sync");
  EXPECT_EQ(DataLoss("crc").code(), Code::DATA_LOSS);
  EXPECT_EQ(DeadlineExceeded("x").code(), Code::DEADLINE_EXCEEDED);
  EXPECT_EQ(Aborted("x").code(), Code::ABORTED);
}

TEST_F(TempDir, AtomicWriteReplacesWholeAndLeavesNoTemporary) {
  const std::string path = dir_ + "/f";
  ASSERT_TRUE(write_file_atomic(path, "first\n").ok());
  ASSERT_TRUE(write_file_atomic(path, "second\n", 0640).ok());
  std::string back;
  ASSERT_TRUE(read_file(path, &back).ok());
  EXPECT_EQ(back, "second\n");
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);  // the caller's mode, not the umask's
  // No temporary file is left beside it.
  std::string listing;
  ASSERT_TRUE(run_capture("/bin/ls", {"-A", dir_}, std::chrono::seconds(5), &listing).ok());
  EXPECT_EQ(listing, "f\n");
}

TEST_F(TempDir, ConcurrentAtomicWritesOfOneFileAllSucceed) {
  const std::string path = dir_ + "/g";
  std::vector<std::thread> ts;
  std::atomic<int> failed{0};
  for (int t = 0; t < 4; t++)
    ts.emplace_back([&, t] {
      for (int i = 0; i < 50; i++)
        if (!write_file_atomic(path, std::to_string(t) + "\n").ok()) failed++;
    });
  for (auto &t : ts) t.join();
  EXPECT_EQ(failed.load(), 0);
  std::string back;
  ASSERT_TRUE(read_file(path, &back).ok());
  EXPECT_EQ(back.size(), 2u);
}

TEST_F(TempDir, AtomicWriteIntoAMissingFolderNamesTheFile) {
  const std::string path = dir_ + "/missing/f";
  Status st = write_file_atomic(path, "x");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), Code::INTERNAL);
  EXPECT_NE(st.message().find(path + ".tmp."), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("No such file"), std::string::npos) << st.message();
}

TEST_F(TempDir, ReadMissingIsNotFoundAndMakeDirsNests) {
  std::string out;
  EXPECT_EQ(read_file(dir_ + "/nope", &out).code(), Code::NOT_FOUND);
  ASSERT_TRUE(make_dirs(dir_ + "/a/b/c").ok());
  ASSERT_TRUE(write_file_atomic(dir_ + "/a/b/c/f", "y").ok());
  Status st = make_dirs("/proc/ftpair-cannot-exist/x");
  EXPECT_FALSE(st.ok());
}

TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(TempDir, Sha256OfAFileEqualsThatOfItsBytes) {
  std::string bytes(3 << 20, 'q');  // over the 1 MiB read buffer
  ASSERT_TRUE(write_file_atomic(dir_ + "/big", bytes).ok());
  std::string hex;
  ASSERT_TRUE(sha256_file(dir_ + "/big", &hex).ok());
  EXPECT_EQ(hex, sha256_hex(bytes));
  EXPECT_FALSE(sha256_file(dir_ + "/nope", &hex).ok());
}

TEST(SpawnTest, CapturesOutputAndReportsFailures) {
  std::string out;
  ASSERT_TRUE(run_capture("/bin/echo", {"hello", "there"}, std::chrono::seconds(5), &out).ok());
  EXPECT_EQ(out, "hello there\n");
  Status st = run_capture("/bin/false", {}, std::chrono::seconds(5), &out);
  EXPECT_EQ(st.code(), Code::FAILED_PRECONDITION);
  EXPECT_NE(st.message().find("exit code 1"), std::string::npos) << st.message();
  st = run_capture("/bin/sleep", {"5"}, std::chrono::milliseconds(200), &out);
  EXPECT_NE(st.message().find("did not finish within 200 ms"), std::string::npos) << st.message();
  st = run_capture("/nonexistent/prog", {}, std::chrono::seconds(1), &out);
  EXPECT_FALSE(st.ok());
}

/* Runs `fault` in a child whose standard error is a pipe, with the crash report installed, and
 * returns what the child wrote; *status is its wait status. */
std::string crash_child(void (*fault)(), int *status) {
  int p[2];
  if (::pipe(p) != 0) return "pipe failed";
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], STDERR_FILENO);
    ::close(p[0]);
    ::alarm(10);  // a handler that hangs must not hang the test
    install_crash_report("crashtest");
    pthread_setname_np(pthread_self(), "faulter");
    fault();
    ::_exit(0);  // not reached
  }
  ::close(p[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  ::waitpid(pid, status, 0);
  return out;
}

void *g_guard_page = nullptr;

// A write to a page with no access: a real fault at a known address (not undefined behaviour
// that a sanitizer would report first).
void write_guard_page() { *static_cast<volatile char *>(g_guard_page) = 1; }
void call_abort() { std::abort(); }

TEST(CrashReportTest, AFaultNamesItsSignalAddressThreadAndStackThenDiesOfIt) {
  g_guard_page = ::mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(g_guard_page, MAP_FAILED);
  int status = 0;
  std::string out = crash_child(write_guard_page, &status);
  ::munmap(g_guard_page, 4096);
  ASSERT_TRUE(WIFSIGNALED(status)) << "the child must still die of the signal, status " << status << "\n" << out;
  EXPECT_EQ(WTERMSIG(status), SIGSEGV);
  char addr[32];
  std::snprintf(addr, sizeof addr, "at address %#lx", reinterpret_cast<unsigned long>(g_guard_page));
  EXPECT_NE(out.find("crashtest: fatal signal 11 (SEGV) "), std::string::npos) << out;
  // Stamped as the log's lines are (2026-12-05T14:11:39.763274Z), with this year.
  char year[8];
  const std::time_t now = std::time(nullptr);
  std::strftime(year, sizeof year, "%Y-", std::gmtime(&now));
  EXPECT_EQ(out.rfind(year, 0), 0u) << out;
  EXPECT_EQ(out.find("Z critical [crash] crashtest: fatal signal"), 26u) << out;
  EXPECT_NE(out.find(addr), std::string::npos) << out;
  EXPECT_NE(out.find("(faulter); its stack:\n"), std::string::npos) << out;
  // The stack names at least the frames that led here (this test binary's own).
  EXPECT_NE(out.find("test_common("), std::string::npos) << out;
}

TEST(CrashReportTest, AnAbortIsReportedAndKeepsItsSignal) {
  int status = 0;
  std::string out = crash_child(call_abort, &status);
  ASSERT_TRUE(WIFSIGNALED(status)) << status << "\n" << out;
  EXPECT_EQ(WTERMSIG(status), SIGABRT);
  EXPECT_NE(out.find("crashtest: fatal signal 6 (ABRT) in thread "), std::string::npos) << out;
}

TEST(ClockTest, AgesAndMonotonicity) {
  EXPECT_EQ(age_seconds(0), -1.0);
  double a = age_seconds(unix_ns() - 2'000'000'000);
  EXPECT_GT(a, 1.9);
  EXPECT_LT(a, 60.0);
  int64_t m1 = mono_ns(), m2 = mono_ns();
  EXPECT_LE(m1, m2);
}

// Captures what the loggers write to stderr while `fn` runs.
template <typename F>
std::string capture_stderr(F fn) {
  char path[] = "/tmp/ftpair-log-XXXXXX";
  int fd = mkstemp(path);
  int saved = dup(2);
  dup2(fd, 2);
  fn();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  std::string out;
  (void)read_file(path, &out);
  close(fd);
  unlink(path);
  return out;
}

TEST(LogTest, TextJournalAndJsonLines) {
  auto &l = log::component("test");
  log::configure(log::Level::INFO, log::Format::TEXT);
  std::string text = capture_stderr([&] { l.info("promoted: reason={} generation={}", "kill", 7); });
  EXPECT_NE(text.find(" info  [test] promoted: reason=kill generation=7\n"), std::string::npos) << text;
  EXPECT_EQ(text[4], '-');  // 2026-...: a timestamp leads
  EXPECT_NE(text.find('Z'), std::string::npos);

  log::configure(log::Level::INFO, log::Format::JOURNAL);
  std::string j = capture_stderr([&] { l.warn("fence refused"); l.error("x"); });
  EXPECT_EQ(j, "<4>[test] fence refused\n<3>[test] x\n");

  log::configure(log::Level::INFO, log::Format::JSON);
  std::string js = capture_stderr([&] { l.info("a \"quoted\"\tline"); });
  EXPECT_NE(js.find("\"level\":\"info\",\"component\":\"test\",\"msg\":\"a \\\"quoted\\\"\\tline\"}\n"),
            std::string::npos) << js;
  EXPECT_EQ(js.rfind("{\"ts\":\"", 0), 0u) << js;
  log::configure(log::Level::INFO, log::Format::TEXT);
}

TEST(LogTest, LevelFiltersEveryLoggerMadeBeforeAndAfter) {
  auto &before = log::component("before");
  log::configure(log::Level::WARN, log::Format::JOURNAL);
  auto &after = log::component("after");
  std::string out = capture_stderr([&] {
    before.info("hidden");
    after.info("hidden");
    before.warn("shown");
    after.error("shown");
  });
  EXPECT_EQ(out, "<4>[before] shown\n<3>[after] shown\n");
  log::configure(log::Level::INFO, log::Format::TEXT);
}

TEST(LogTest, ParsesLevelsAndFormats) {
  log::Level lv;
  EXPECT_TRUE(log::parse_level("debug", &lv).ok());
  EXPECT_EQ(lv, log::Level::DEBUG);
  Status st = log::parse_level("loud", &lv);
  EXPECT_EQ(st.code(), Code::INVALID_ARGUMENT);
  EXPECT_NE(st.message().find("'loud'"), std::string::npos);
  log::Format f;
  EXPECT_TRUE(log::parse_format("json", &f).ok());
  EXPECT_EQ(f, log::Format::JSON);
  EXPECT_FALSE(log::parse_format("xml", &f).ok());
  for (log::Format each : {log::Format::AUTO, log::Format::TEXT, log::Format::JOURNAL, log::Format::JSON}) {
    ASSERT_TRUE(log::parse_format(log::format_name(each), &f).ok());  // the names round-trip
    EXPECT_EQ(f, each);
  }
}

TEST(LogTest, AutoIsJournalOnlyWhenStderrIsTheJournalStream) {
  setenv("JOURNAL_STREAM", "1:2", 1);  // not our stderr
  log::configure(log::Level::INFO, log::Format::AUTO);
  EXPECT_EQ(log::format(), log::Format::TEXT);
  struct stat st;
  ASSERT_EQ(fstat(2, &st), 0);
  setenv("JOURNAL_STREAM", (std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino)).c_str(), 1);
  log::configure(log::Level::INFO, log::Format::AUTO);
  EXPECT_EQ(log::format(), log::Format::JOURNAL);
  unsetenv("JOURNAL_STREAM");
  log::configure(log::Level::INFO, log::Format::TEXT);
}

}  // namespace
}  // namespace ftpair
