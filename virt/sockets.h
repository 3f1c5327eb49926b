/* Plain sockets for both sides of virt/: an owning descriptor, and TCP probes with a deadline
 * (the host's drain probe of a daemon, its claims to a spare). ftpair-commission links it too. */
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace ftpair::virt {

// Owns a file descriptor (-1: none) and closes it.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd();
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
};

// "<what>: <strerror(errno)>".
std::string errno_text(const std::string &what);

// Connects to ip:port (IPv4) within the deadline; the connected socket, blocking again, or -1.
int connect_within(const std::string &ip, uint16_t port, std::chrono::milliseconds deadline);

// Whether something accepts TCP connections at ip:port within the deadline.
bool reachable(const std::string &ip, uint16_t port, std::chrono::milliseconds deadline);

}  // namespace ftpair::virt
