#include "virt/guest.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <sstream>
#include <thread>

namespace ftpair::virt {

namespace {

std::string errno_text(const std::string &what) { return what + ": " + std::strerror(errno); }

struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd &) = delete;
  Fd &operator=(const Fd &) = delete;
};

bool valid_endpoint(const std::string &s) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon + 1 >= s.size() || s.size() - colon - 1 > 5) return false;
  in_addr a{};
  if (inet_pton(AF_INET, s.substr(0, colon).c_str(), &a) != 1) return false;
  for (size_t i = colon + 1; i < s.size(); ++i)
    if (s[i] < '0' || s[i] > '9') return false;
  unsigned long port = std::stoul(s.substr(colon + 1));
  return port >= 1 && port <= 65535;
}

}  // namespace

Status parse_ipv4_prefix(const std::string &text, Ipv4Prefix *out) {
  auto slash = text.find('/');
  if (slash == std::string::npos || slash + 1 >= text.size() || text.size() - slash - 1 > 2)
    return InvalidArgument("'" + text + "' is not ip/prefix");
  in_addr a{};
  if (inet_pton(AF_INET, text.substr(0, slash).c_str(), &a) != 1)
    return InvalidArgument("'" + text + "': not an IPv4 address");
  int prefix = 0;
  for (size_t i = slash + 1; i < text.size(); ++i) {
    if (text[i] < '0' || text[i] > '9') return InvalidArgument("'" + text + "': prefix is not a number");
    prefix = prefix * 10 + (text[i] - '0');
  }
  if (prefix < 1 || prefix > 32) return InvalidArgument("'" + text + "': prefix must be 1..32");
  out->addr = a.s_addr;
  out->prefix = prefix;
  out->text = text;
  return Status::Ok();
}

Status parse_assume(const std::string &line_in, const std::string &token, Assume *out) {
  std::string line = line_in;
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  if (line.size() > 512) return InvalidArgument("assume: line longer than 512 bytes");
  std::istringstream in(line);
  std::string verb;
  in >> verb;
  if (verb != "assume") return InvalidArgument("assume: unknown request '" + verb.substr(0, 32) + "'");
  std::map<std::string, std::string> f;
  for (std::string w; in >> w;) {
    auto eq = w.find('=');
    if (eq == std::string::npos || eq == 0) return InvalidArgument("assume: '" + w.substr(0, 32) + "' is not key=value");
    std::string k = w.substr(0, eq);
    if (k != "token" && k != "node" && k != "address" && k != "peer")
      return InvalidArgument("assume: unknown field '" + k.substr(0, 32) + "'");
    if (!f.emplace(k, w.substr(eq + 1)).second) return InvalidArgument("assume: field '" + k + "' given twice");
  }
  for (const char *k : {"token", "node", "address", "peer"})
    if (f[k].empty()) return InvalidArgument(std::string("assume: field '") + k + "' missing");
  // Constant-time enough for a 32-byte secret: compare every byte.
  if (token.empty()) return FailedPrecondition("assume: this spare has no ftpair:pool.token; it cannot be claimed");
  unsigned diff = f["token"].size() ^ token.size();
  for (size_t i = 0; i < f["token"].size() && i < token.size(); ++i) diff |= f["token"][i] ^ token[i];
  if (diff != 0) return PermissionDenied("assume: wrong token");
  if (f["node"] != "a" && f["node"] != "b") return InvalidArgument("assume: node must be a or b, not '" + f["node"] + "'");
  if (Status st = parse_ipv4_prefix(f["address"], &out->address); !st.ok())
    return InvalidArgument("assume: address " + st.message());
  if (!valid_endpoint(f["peer"])) return InvalidArgument("assume: peer '" + f["peer"] + "' is not ip:port");
  out->node = f["node"];
  out->peer = f["peer"];
  return Status::Ok();
}

Status apply_assume(const Assume &a, Commission *c) {
  auto grpc = c->values.find("management.grpc");
  if (grpc == c->values.end()) return FailedPrecondition("assume: the spare has no management.grpc");
  std::string port = grpc->second.substr(grpc->second.rfind(':') + 1);
  std::string ip = a.address.text.substr(0, a.address.text.find('/'));
  if (ip + ":" + port == a.peer) return InvalidArgument("assume: peer " + a.peer + " is the address to assume");
  const std::string src = "assume (from the host)";
  for (auto it = c->values.begin(); it != c->values.end();)
    it = it->first == "peer.candidates" || it->first.rfind("pool.", 0) == 0 ? c->values.erase(it) : std::next(it);
  auto set = [&](const std::string &k, const std::string &v) {
    c->values[k] = v;
    c->source_of[k] = src;
  };
  set("node.id", a.node);
  set("management.address", a.address.text);
  set("management.grpc", ip + ":" + port);
  set("peer.grpc", a.peer);
  return validate(*c);
}

Status load_module(const std::string &path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) return Unavailable(errno_text("load module " + path));
  if (::syscall(SYS_finit_module, fd.fd, "", 0) != 0 && errno != EEXIST)
    return Unavailable(errno_text("load module " + path));
  return Status::Ok();
}

Status wait_interface(const std::string &ifname, int timeout_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  struct stat st{};
  while (::stat(("/sys/class/net/" + ifname).c_str(), &st) != 0) {
    if (std::chrono::steady_clock::now() > end)
      return Status(Code::DEADLINE_EXCEEDED, "no interface " + ifname + " after " + std::to_string(timeout_ms) + " ms");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return Status::Ok();
}

Status link_up(const std::string &ifname) {
  Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (s.fd < 0) return Unavailable(errno_text("socket"));
  ifreq r{};
  std::snprintf(r.ifr_name, sizeof r.ifr_name, "%s", ifname.c_str());
  if (::ioctl(s.fd, SIOCGIFFLAGS, &r) != 0) return Unavailable(errno_text("SIOCGIFFLAGS " + ifname));
  r.ifr_flags |= IFF_UP;
  if (::ioctl(s.fd, SIOCSIFFLAGS, &r) != 0) return Unavailable(errno_text("SIOCSIFFLAGS " + ifname));
  return Status::Ok();
}

Status set_ipv4(const std::string &ifname, const Ipv4Prefix *p) {
  Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (s.fd < 0) return Unavailable(errno_text("socket"));
  ifreq r{};
  std::snprintf(r.ifr_name, sizeof r.ifr_name, "%s", ifname.c_str());
  auto *sin = reinterpret_cast<sockaddr_in *>(&r.ifr_addr);
  sin->sin_family = AF_INET;
  sin->sin_addr.s_addr = p ? p->addr : 0;  // 0.0.0.0 removes the primary address
  if (::ioctl(s.fd, SIOCSIFADDR, &r) != 0) return Unavailable(errno_text("SIOCSIFADDR " + ifname));
  if (p == nullptr) return Status::Ok();
  sin->sin_addr.s_addr = htonl(p->prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> p->prefix));
  if (::ioctl(s.fd, SIOCSIFNETMASK, &r) != 0) return Unavailable(errno_text("SIOCSIFNETMASK " + ifname));
  return Status::Ok();
}

Status send_gratuitous_arp(const std::string &ifname, uint32_t addr, int count) {
  Fd s(::socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETH_P_ARP)));
  if (s.fd < 0) return Unavailable(errno_text("packet socket"));
  ifreq r{};
  std::snprintf(r.ifr_name, sizeof r.ifr_name, "%s", ifname.c_str());
  if (::ioctl(s.fd, SIOCGIFHWADDR, &r) != 0) return Unavailable(errno_text("SIOCGIFHWADDR " + ifname));
  uint8_t mac[6];
  std::memcpy(mac, r.ifr_hwaddr.sa_data, 6);
  unsigned ifindex = ::if_nametoindex(ifname.c_str());
  if (ifindex == 0) return Unavailable(errno_text("if_nametoindex " + ifname));
  // An ARP request for our own address (sender = target): neighbours that already have an entry
  // for the address (the old member's MAC) update it.
  uint8_t f[42] = {};
  std::memset(f, 0xff, 6);
  std::memcpy(f + 6, mac, 6);
  f[12] = 0x08, f[13] = 0x06;                          // ARP
  f[14] = 0, f[15] = 1, f[16] = 0x08, f[17] = 0;       // Ethernet, IPv4
  f[18] = 6, f[19] = 4, f[20] = 0, f[21] = 1;          // sizes, request
  std::memcpy(f + 22, mac, 6);
  std::memcpy(f + 28, &addr, 4);
  std::memcpy(f + 38, &addr, 4);
  sockaddr_ll to{};
  to.sll_family = AF_PACKET;
  to.sll_protocol = htons(ETH_P_ARP);
  to.sll_ifindex = static_cast<int>(ifindex);
  to.sll_halen = 6;
  std::memset(to.sll_addr, 0xff, 6);
  for (int i = 0; i < count; ++i) {
    if (::sendto(s.fd, f, sizeof f, 0, reinterpret_cast<sockaddr *>(&to), sizeof to) != sizeof f)
      return Unavailable(errno_text("send gratuitous ARP on " + ifname));
    if (i + 1 < count) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return Status::Ok();
}

Status wait_for_assume(const Ipv4Prefix &self, uint16_t port, const std::string &token, Assume *out) {
  Fd ls(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (ls.fd < 0) return Unavailable(errno_text("socket"));
  int one = 1;
  ::setsockopt(ls.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = self.addr;
  if (::bind(ls.fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 || ::listen(ls.fd, 4) != 0)
    return Unavailable(errno_text("listen on " + self.text + " port " + std::to_string(port)));
  for (;;) {
    Fd c(::accept4(ls.fd, nullptr, nullptr, SOCK_CLOEXEC));
    if (c.fd < 0) {
      if (errno == EINTR) continue;
      return Unavailable(errno_text("accept"));
    }
    timeval tv{2, 0};  // a client that connects and says nothing cannot hold the spare
    ::setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string line;
    char ch;
    while (line.size() <= 512 && ::read(c.fd, &ch, 1) == 1 && ch != '\n') line += ch;
    if (line == "ping" || line == "ping\r") {  // the host's readiness probe (pool fill)
      if (::write(c.fd, "ready\n", 6) < 0) { /* gone */ }
      continue;
    }
    Status st = parse_assume(line, token, out);
    std::string reply = st.ok() ? "ok\n" : "refused: " + st.message() + "\n";
    if (::write(c.fd, reply.data(), reply.size()) < 0) { /* the sender is gone; its problem */ }
    if (st.ok()) return st;
    std::printf("ftpair-guest: %s", reply.c_str());
    std::fflush(stdout);
  }
}

}  // namespace ftpair::virt
