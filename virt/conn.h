/* libvirt connections with a deadline, and small RAII helpers: the one way ftpair opens a
 * libvirt connection (the fencer, lifecycle events and ftpair-virt's operations). Part of the
 * platform library that ftpaird links: no domain XML here (virt/managed.h has the metadata). */
#pragma once

#include <chrono>
#include <string>
#include <utility>

#include <libvirt/libvirt.h>

#include "common/status.h"

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

// The domain's state (VIR_DOMAIN_RUNNING, ...); VIR_DOMAIN_NOSTATE when libvirt cannot tell.
int domain_state(virDomainPtr d);
// "running", "paused", "shut-off", ...: a state as reports and messages name it.
const char *state_name(int state);

// Polls until the domain reaches `state` or the deadline passes.
bool wait_state(virDomainPtr d, int state, std::chrono::milliseconds deadline);

}  // namespace ftpair::virt
