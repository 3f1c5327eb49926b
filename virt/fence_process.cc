#include "virt/fence_process.h"

#include <dirent.h>
#include <signal.h>
#include <sys/types.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace ftpair::virt {

namespace {

using Clock = std::chrono::steady_clock;

/* Alive = can still run its own code. After SIGKILL a thread is past that in one of three
 * ways, each read from the kernel:
 *   - it is a zombie or dead (Z, X);
 *   - it is exiting (PF_EXITING in its flags): tearing down its memory and sockets in the
 *     kernel, tens of milliseconds before the zombie; waiting for the zombie would add that
 *     teardown to every failover;
 *   - SIGKILL is pending on it (SigPnd). kill() marks the group as exiting and queues SIGKILL
 *     on every thread before it returns; a thread with it pending dies on its next way back to
 *     user space, and kill() also kicks a thread running on another CPU into the kernel. A
 *     stopped thread, or one waiting for a CPU behind busy workers, would otherwise have to be
 *     scheduled before it showed PF_EXITING: on two busy vCPUs, 10 ms of a SIGSTOPped peer's
 *     failover went to that wait.
 * A thread between the two (it took SIGKILL off its queue and has not yet set PF_EXITING) is
 * seen as alive: the fencer looks again 200 us later. Wrong that way costs time only.
 * What "past user code" leaves open, and why it does not matter here: the kick is an
 * interrupt that kill() does not wait for, so a thread running on another CPU may go on for
 * microseconds after the fence says done; and a thread inside a system call finishes that call
 * (a send it already made). Neither sends anything it had not already decided to send: the
 * peer's packets, its GARPs and its beats all come from its own code. */
bool thread_past_user_code(const std::string &task) {
  std::ifstream st(task + "/stat");
  std::string line;
  if (!std::getline(st, line)) return true;  // the thread just went away
  auto rp = line.rfind(')');
  if (rp == std::string::npos || rp + 2 >= line.size()) return false;  // unreadable: assume it runs
  // After ") ": state ppid pgrp session tty_nr tpgid flags ...
  std::istringstream in(line.substr(rp + 2));
  char state = '?';
  long ppid, pgrp, session, tty, tpgid;
  unsigned long flags = 0;
  in >> state >> ppid >> pgrp >> session >> tty >> tpgid >> flags;
  constexpr unsigned long kPfExiting = 0x4;
  if (state == 'Z' || state == 'X' || (in && (flags & kPfExiting))) return true;
  std::ifstream status(task + "/status");
  for (std::string l; std::getline(status, l);) {
    if (l.rfind("SigPnd:", 0) != 0) continue;
    char *end = nullptr;
    const unsigned long long pending = std::strtoull(l.c_str() + 7, &end, 16);
    if (end == l.c_str() + 7) return false;
    return pending & (1ull << (SIGKILL - 1));
  }
  return false;  // no SigPnd line (or the thread went away meanwhile: looked at again)
}

bool alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno != ESRCH;
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  DIR *d = ::opendir(dir.c_str());
  if (!d) return errno != ENOENT;
  bool any_live = false;
  while (dirent *e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    if (thread_past_user_code(dir + "/" + e->d_name)) continue;
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
      // A thread seen between its SIGKILL and PF_EXITING moves on within microseconds.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
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
