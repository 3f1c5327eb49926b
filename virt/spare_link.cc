#include "virt/spare_link.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "virt/sockets.h"

namespace ftpair::virt {

Status spare_read_line(int fd, std::chrono::milliseconds deadline, std::string *line, bool (*keep_waiting)()) {
  using Clock = std::chrono::steady_clock;
  const auto end = Clock::now() + deadline;
  line->clear();
  bool too_long = false;  // the rest of an over-long line is read and dropped, up to its newline
  for (;;) {
    int wait_ms = 100;
    if (deadline.count() >= 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
      if (left <= 0) return DeadlineExceeded("no line within " + std::to_string(deadline.count()) + " ms");
      wait_ms = int(left < 100 ? left : 100);
    } else if (keep_waiting && !keep_waiting()) {
      return Aborted("stopped while waiting");
    }
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, wait_ms);
    if (r < 0 && errno != EINTR) return Unavailable(errno_text("poll"));
    if (r <= 0) continue;
    char c;
    const ssize_t n = ::read(fd, &c, 1);  // a byte at a time: nothing past the line is taken
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return Unavailable(errno_text("read"));
    if (n == 0) return Unavailable("the other end closed the link");
    if (c == '\n') {
      if (too_long) return InvalidArgument("line longer than " + std::to_string(kMaxSpareLine) + " bytes");
      return Status::Ok();
    }
    if (line->size() >= kMaxSpareLine) too_long = true;
    if (!too_long) line->push_back(c);
  }
}

Status spare_write_line(int fd, const std::string &line) {
  const std::string s = line + "\n";
  size_t off = 0;
  while (off < s.size()) {
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd, s.data() + off, s.size() - off);  // a pipe
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Unavailable(errno_text("write"));
    off += size_t(n);
  }
  return Status::Ok();
}

Status parse_spare_config(const std::string &line, std::string *path) {
  const std::string verb = kSpareConfig;
  if (line.rfind(verb, 0) != 0) return InvalidArgument("unknown request '" + line.substr(0, 40) + "'");
  *path = line.substr(verb.size());
  if (path->empty() || (*path)[0] != '/') return InvalidArgument("config path '" + *path + "' is not absolute");
  return Status::Ok();
}

}  // namespace ftpair::virt
