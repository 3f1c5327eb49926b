/* libvirt connections with a deadline, and small RAII helpers. */
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include <libvirt/libvirt.h>

#include "common/status.h"
#include "virt/domain.h"

namespace ftpair::virt {

// The text of libvirt's last error on this thread.
std::string virt_error();
// Silences libvirt's default "libvirt: ... error" printing; errors are reported by us.
void quiet_libvirt_errors();

class Conn {
 public:
  Conn() = default;
  ~Conn();
  Conn(const Conn &) = delete;
  Conn &operator=(const Conn &) = delete;
  virConnectPtr get() const { return c_; }
  const std::string &uri() const { return uri_; }

  // Opens `uri`, giving up at the deadline with "cannot reach libvirt at URI within N ms"
  // (an unreachable remote host can block the open for minutes).
  Status open(const std::string &uri, std::chrono::milliseconds deadline);

 private:
  virConnectPtr c_ = nullptr;
  std::string uri_;
};

class Dom {
 public:
  explicit Dom(virDomainPtr d = nullptr) : d_(d) {}
  ~Dom() { if (d_) virDomainFree(d_); }
  Dom(Dom &&o) noexcept : d_(o.d_) { o.d_ = nullptr; }
  Dom &operator=(Dom &&o) noexcept { std::swap(d_, o.d_); return *this; }
  virDomainPtr get() const { return d_; }
  explicit operator bool() const { return d_ != nullptr; }

 private:
  virDomainPtr d_;
};

struct Managed {
  std::string name;
  InstanceMeta meta;
  int state = VIR_DOMAIN_NOSTATE;
  Dom dom;
};

// Every domain on `conn` carrying ftpair metadata, optionally only of one pair, sorted by name.
std::vector<Managed> list_managed(Conn &conn, const std::string &pair);

// Reads/writes the ftpair metadata of a domain (live and persistent as applicable).
bool get_meta(virDomainPtr d, InstanceMeta *m);
Status set_meta(virDomainPtr d, const InstanceMeta &m);

int domain_state(virDomainPtr d);
const char *state_name(int state);

// Polls until the domain reaches `state` or the deadline passes.
bool wait_state(virDomainPtr d, int state, std::chrono::milliseconds deadline);

}  // namespace ftpair::virt
