// The sd_notify client speaks to a socket bound here, as systemd would.
#include "control/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

namespace ftpair {
namespace {

class NotifySocket : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = "/tmp/ftpair-sdn-" + std::to_string(getpid()) + ".sock";
    ::unlink(path_.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM, 0);
    ASSERT_GE(fd_, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::strcpy(a.sun_path, path_.c_str());
    ASSERT_EQ(::bind(fd_, reinterpret_cast<sockaddr *>(&a), sizeof(a)), 0);
    timeval tv{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  }
  void TearDown() override {
    ::close(fd_);
    ::unlink(path_.c_str());
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
  }
  std::string recv() {
    char buf[512];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, size_t(n)) : "";
  }
  std::string path_;
  int fd_ = -1;
};

TEST_F(NotifySocket, SendsDatagramsAndReadsTheWatchdog) {
  setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  setenv("WATCHDOG_USEC", "500000", 1);
  SdNotifier sd;
  ASSERT_TRUE(sd.enabled()) << sd.setup_error();
  EXPECT_EQ(sd.watchdog_usec(), 500000u);
  EXPECT_TRUE(sd.send("READY=1"));
  EXPECT_EQ(recv(), "READY=1");
  EXPECT_TRUE(sd.send("WATCHDOG=1"));
  EXPECT_EQ(recv(), "WATCHDOG=1");
}

TEST_F(NotifySocket, WatchdogForAnotherPidIsNotOurs) {
  setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  setenv("WATCHDOG_USEC", "500000", 1);
  setenv("WATCHDOG_PID", std::to_string(getpid() + 1).c_str(), 1);
  SdNotifier sd;
  EXPECT_EQ(sd.watchdog_usec(), 0u);
}

TEST_F(NotifySocket, NoSocketNoOpAndBadValuesExplained) {
  {
    SdNotifier sd;
    EXPECT_FALSE(sd.enabled());
    EXPECT_FALSE(sd.send("READY=1"));
  }
  setenv("NOTIFY_SOCKET", "relative/path", 1);
  {
    SdNotifier sd;
    EXPECT_FALSE(sd.enabled());
    EXPECT_NE(sd.setup_error().find("NOTIFY_SOCKET"), std::string::npos);
  }
  setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  setenv("WATCHDOG_USEC", "soon", 1);
  SdNotifier sd;
  EXPECT_TRUE(sd.enabled());
  EXPECT_EQ(sd.watchdog_usec(), 0u);
  EXPECT_NE(sd.setup_error().find("WATCHDOG_USEC"), std::string::npos);
  // The manager went away: an error, not a crash.
  ::close(fd_);
  ::unlink(path_.c_str());
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  EXPECT_FALSE(sd.send("WATCHDOG=1"));
  EXPECT_FALSE(sd.last_error().empty());
}

}  // namespace
}  // namespace ftpair
