#include "common/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>

extern char **environ;

namespace ftpair {

Status spawn(const std::string &path, const std::vector<std::string> &argv, int fd, int as_fd, pid_t *pid) {
  std::vector<char *> cargv;
  for (const auto &a : argv) cargv.push_back(const_cast<char *>(a.c_str()));
  cargv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (fd >= 0) {
    posix_spawn_file_actions_adddup2(&fa, fd, as_fd);  // also clears close-on-exec when fd == as_fd
    posix_spawn_file_actions_addclosefrom_np(&fa, as_fd + 1);
  }
  int rc = posix_spawn(pid, path.c_str(), &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return Internal("cannot run " + path + ": " + std::strerror(rc));
  return Status::Ok();
}

std::string exit_text(int status) {
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("signal ") + strsignal(WTERMSIG(status));
  return "status " + std::to_string(status);
}

Status run_capture(const std::string &path, const std::vector<std::string> &args, std::chrono::milliseconds timeout,
                   std::string *out, size_t max_bytes) {
  using Clock = std::chrono::steady_clock;
  std::string what = "'" + path;
  for (const auto &a : args) what += " " + a;
  what += "'";
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return Internal(std::string("pipe: ") + std::strerror(errno));
  std::vector<std::string> argv{path};
  argv.insert(argv.end(), args.begin(), args.end());
  pid_t pid = 0;
  Status st = spawn(path, argv, fds[1], 1, &pid);
  ::close(fds[1]);
  if (!st.ok()) {
    ::close(fds[0]);
    return st;
  }
  out->clear();
  const auto deadline = Clock::now() + timeout;
  char buf[512];
  while (Clock::now() < deadline && out->size() < max_bytes) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, 100) <= 0) continue;
    ssize_t n = ::read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;
    out->append(buf, size_t(n));
  }
  ::close(fds[0]);
  if (out->size() > max_bytes) out->resize(max_bytes);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (Clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return FailedPrecondition(what + " did not finish within " + std::to_string(timeout.count()) + " ms");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return FailedPrecondition(what + " failed (" + exit_text(status) + ")");
  return Status::Ok();
}

}  // namespace ftpair
