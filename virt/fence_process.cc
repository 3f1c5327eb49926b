#include "virt/fence_process.h"

#include <dirent.h>
#include <signal.h>
#include <sys/types.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace ftpair::virt {

namespace {

using Clock = std::chrono::steady_clock;

/* Alive = can still run its own code. A process that took SIGKILL tears down its memory
 * and sockets in the kernel for tens of milliseconds before it becomes a zombie; it runs
 * no user code then, and every one of its threads carries PF_EXITING. Waiting for the
 * zombie would add that teardown to every failover. */
bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno != ESRCH;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR *d = ::opendir(dir.c_str());
  if (!d) return errno != ENOENT;
  bool any_live = false;
  while (dirent *e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream st(dir + "/" + e->d_name + "/stat");
    std::string line;
    if (!std::getline(st, line)) continue;  // the thread just went away
    auto rp = line.rfind(')');
    if (rp == std::string::npos || rp + 2 >= line.size()) {
      any_live = true;  // unreadable: assume it runs
      break;
    }
    // After ") ": state ppid pgrp session tty_nr tpgid flags ...
    std::istringstream in(line.substr(rp + 2));
    char state = '?';
    long ppid, pgrp, session, tty, tpgid;
    unsigned long flags = 0;
    in >> state >> ppid >> pgrp >> session >> tty >> tpgid >> flags;
    constexpr unsigned long kPfExiting = 0x4;
    if (state == 'Z' || state == 'X' || (in && (flags & kPfExiting))) continue;
    any_live = true;
    break;
  }
  ::closedir(d);
  return any_live;
}

class ProcessFencer final : public fo::Fencer {
 public:
  ProcessFencer(std::string pidfile, bool missing_ok) : pidfile_(std::move(pidfile)), missing_ok_(missing_ok) {}
  const char *kind() const override { return "process"; }
  std::string target() const override { return "pidfile " + pidfile_; }

 protected:
  Status stop_peer(std::chrono::milliseconds deadline) override {
    std::ifstream f(pidfile_);
    if (!f) {
      const int err = errno;
      if (err == ENOENT && missing_ok_) return Status::Ok();  // stopped: its pidfile went with it
      return Unavailable("fence: peer state unknown: cannot read " + pidfile_ + ": " + std::strerror(err) +
                         (err == ENOENT ? " (failover.fence_missing_pidfile_ok is not set)" : ""));
    }
    long pid = 0;
    if (!(f >> pid) || pid <= 1)
      return Unavailable("fence: peer state unknown: " + pidfile_ + " holds no process id");
    if (::kill(static_cast<pid_t>(pid), SIGKILL) != 0 && errno != ESRCH)
      return Unavailable("fence: kill(" + std::to_string(pid) + "): " + std::strerror(errno));
    auto end = Clock::now() + deadline;
    while (Clock::now() < end) {
      if (!alive(static_cast<pid_t>(pid))) return Status::Ok();
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return DeadlineExceeded("fence: pid " + std::to_string(pid) + " still running after SIGKILL");
  }

 private:
  std::string pidfile_;
  bool missing_ok_;
};

}  // namespace

std::unique_ptr<fo::Fencer> make_process_fencer(const std::string &pidfile, bool missing_ok, Status *st) {
  if (pidfile.empty()) {
    *st = InvalidArgument("failover.fence_pidfile: required with fence 'process'");
    return nullptr;
  }
  return std::make_unique<ProcessFencer>(pidfile, missing_ok);
}

}  // namespace ftpair::virt
