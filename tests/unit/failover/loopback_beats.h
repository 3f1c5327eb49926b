#pragma once
// What the monitor tests share: a free loopback port, and a monitor's config for beats over it.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "failover/monitor.h"

namespace ftpair::fo {

// A UDP port on loopback that nothing holds now (the kernel's choice, released at once).
inline uint16_t free_udp_port() {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa));
  socklen_t l = sizeof(sa);
  getsockname(fd, reinterpret_cast<sockaddr *>(&sa), &l);
  close(fd);
  return ntohs(sa.sin_port);
}

/* Fast beats between self and peer (loopback addresses) on port, 5 ms x 8. The gRPC beats go
 * to a port where nothing listens and all fail: the UDP beats alone are under test. */
inline MonitorConfig loopback_beats(const std::string &self, const std::string &peer, uint16_t port,
                                    std::vector<BeatKey> keys = {}) {
  MonitorConfig c;
  c.beat_keys = std::move(keys);
  c.peer = "127.0.0.1:1";
  c.interval = std::chrono::milliseconds(5);
  c.miss_threshold = 8;
  c.udp_port = port;
  c.udp_bind = self;
  c.udp_peer = peer;
  return c;
}

}  // namespace ftpair::fo
