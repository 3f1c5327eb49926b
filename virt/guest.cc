#include "virt/guest.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

#include "virt/sockets.h"

namespace ftpair::virt {

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
  // A pair that fences by libvirt: the spare fences the node it does not replace, found by
  // the domains' metadata (its domain name is not known here, and may itself be a spare's).
  auto has = [&](const char *k) { return c->values.count(k) != 0; };
  auto fence = c->values.find("failover.fence");
  auto pair = c->values.find("pair");
  if (fence != c->values.end() && fence->second == "libvirt" && pair != c->values.end() &&
      !has("failover.libvirt_domain") && !has("failover.libvirt_peer"))
    set("failover.libvirt_peer", pair->second + "/" + (a.node == "a" ? "b" : "a"));
  return validate(*c);
}

Commission spare_provisional(const Commission &c) {
  Commission p = c;
  const std::string src = "warm spare before its claim";
  for (const char *k : {"failover.libvirt_domain", "failover.libvirt_peer", "peer.grpc"}) p.values.erase(k);
  p.values["failover.fence"] = "none";
  p.values["failover.allow_fence_none"] = "true";
  p.source_of["failover.fence"] = p.source_of["failover.allow_fence_none"] = src;
  return p;
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

namespace {

Status write_sysfs(const std::string &path, const std::string &value) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (fd.fd < 0) return Unavailable(errno_text("open " + path));
  if (::write(fd.fd, value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    return Unavailable(errno_text("write '" + value + "' to " + path));
  return Status::Ok();
}

std::string link_name(const std::string &path) {
  char buf[512];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = 0;
  std::string t = buf;
  return t.substr(t.rfind('/') + 1);
}

}  // namespace

bool is_pci_address(const std::string &s) {
  // dddd:bb:dd.f, hexadecimal
  if (s.size() != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.') return false;
  for (size_t i : {0, 1, 2, 3, 5, 6, 8, 9, 11})
    if (!std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  return true;
}

Status bind_pci(const std::string &pci, const std::string &driver) {
  if (!is_pci_address(pci)) return InvalidArgument("'" + pci + "' is not a PCI address (dddd:bb:dd.f)");
  const std::string dev = "/sys/bus/pci/devices/" + pci;
  struct stat st{};
  if (::stat(dev.c_str(), &st) != 0) return Status(Code::NOT_FOUND, "no PCI device " + pci + " in this guest");
  if (link_name(dev + "/driver") == driver) return Status::Ok();
  if (Status s = write_sysfs(dev + "/driver_override", driver); !s.ok()) return s;
  if (!link_name(dev + "/driver").empty())
    if (Status s = write_sysfs(dev + "/driver/unbind", pci); !s.ok()) return s;
  // drivers_probe fails with an error when no driver takes it; the check below names the result.
  (void)write_sysfs("/sys/bus/pci/drivers_probe", pci);
  std::string now = link_name(dev + "/driver");
  if (now != driver)
    return Unavailable("PCI " + pci + " is bound to '" + (now.empty() ? "no driver" : now) + "', not " + driver +
                       " (is its module loaded?)");
  return Status::Ok();
}

Status reserve_hugepages(unsigned mb) {
  ::mkdir("/dev/hugepages", 0755);
  if (::mount("hugetlbfs", "/dev/hugepages", "hugetlbfs", 0, "pagesize=2M") != 0 && errno != EBUSY)
    return Unavailable(errno_text("mount hugetlbfs on /dev/hugepages"));
  const std::string nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
  const unsigned want = (mb + 1) / 2;
  if (Status s = write_sysfs(nr, std::to_string(want)); !s.ok()) return s;
  unsigned got = 0;
  std::ifstream(nr) >> got;
  if (got < want)
    return Unavailable("hugepages: asked for " + std::to_string(want) + " pages of 2 MiB, the kernel granted " +
                       std::to_string(got));
  return Status::Ok();
}

}  // namespace ftpair::virt
