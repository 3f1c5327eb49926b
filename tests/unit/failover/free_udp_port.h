#pragma once
// A UDP port on loopback that nothing holds now (the kernel's choice, released at once).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>

namespace ftpair::fo {

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

}  // namespace ftpair::fo
