#include "control/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace ftpair {

SdNotifier::SdNotifier() {
  const char *sock = std::getenv("NOTIFY_SOCKET");
  if (!sock || !*sock) return;
  path_ = sock;
  if ((path_[0] != '/' && path_[0] != '@') || path_.size() >= sizeof(sockaddr_un::sun_path)) {
    setup_error_ = "NOTIFY_SOCKET '" + path_ + "' is not an absolute path or @abstract name that fits a socket address";
    return;
  }
  if (const char *w = std::getenv("WATCHDOG_USEC")) {
    char *end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(w, &end, 10);
    if (errno != 0 || !end || *end != '\0' || v == 0) {
      setup_error_ = std::string("WATCHDOG_USEC '") + w + "' is not a positive integer: watchdog off";
    } else {
      watchdog_usec_ = v;
      if (const char *p = std::getenv("WATCHDOG_PID")) {
        if (std::strtoll(p, nullptr, 10) != static_cast<long long>(::getpid())) watchdog_usec_ = 0;
      }
    }
  }
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) setup_error_ = std::string("socket(AF_UNIX): ") + std::strerror(errno);
}

SdNotifier::~SdNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

bool SdNotifier::send(const std::string &state) {
  if (fd_ < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.data(), path_.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path_.size());
  if (path_[0] == '@') addr.sun_path[0] = '\0';  // abstract: no trailing NUL counted
  else len += 1;
  ssize_t n = ::sendto(fd_, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr *>(&addr), len);
  if (n < 0) {
    last_error_ = "sd_notify to " + path_ + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

}  // namespace ftpair
