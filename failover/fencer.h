/* Fencing: make sure the old active can no longer forward before the standby takes over.
 * fence() reports success only when the peer is confirmed stopped.
 *
 * failover/ holds the interface and the policy (which kinds exist, "none" only when the
 * operator allowed it, one log line per attempt). The platform's implementations (a process by
 * pidfile, a libvirt domain) live in virt/ (virt/fencers.h builds the configured one). */
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "common/status.h"

namespace ftpair::fo {

class Fencer {
 public:
  virtual ~Fencer() = default;
  // "none", "process" or "libvirt".
  virtual const char *kind() const = 0;
  // What it stops, for log lines: "pidfile /run/b.pid", "domain pair-b at qemu:///system".
  virtual std::string target() const = 0;
  /* Stops the peer within the deadline (the whole call returns by then). OK only if it is
   * confirmed no longer running; DEADLINE_EXCEEDED or UNAVAILABLE (peer state unknown)
   * otherwise. Logs one line (component "fence") with the outcome and the milliseconds; a run
   * of failures within a second is folded into the next line that is written. */
  Status fence(std::chrono::milliseconds deadline);

 protected:
  // The platform's way to stop the peer: the contract of fence(), without the log line.
  virtual Status stop_peer(std::chrono::milliseconds deadline) = 0;

 private:
  std::mutex log_mu_;
  int64_t last_failure_log_ns_ = 0;
  uint64_t unlogged_failures_ = 0;
};

enum class FenceKind { NONE, PROCESS, LIBVIRT };
// "none", "process", "libvirt".
const char *fence_kind_name(FenceKind k);
// Parses a fence kind; false for anything else.
bool parse_fence_kind(const std::string &s, FenceKind *out);

// A node of a pair, as the domains' ftpair metadata names it: "PAIR/NODE" (failover.libvirt_peer).
struct PeerRef {
  std::string pair, node;
};
// Parses "PAIR/NODE" (both non-empty, one slash); false otherwise.
bool parse_peer_ref(const std::string &s, PeerRef *out);

struct FenceConfig {
  FenceKind kind = FenceKind::NONE;
  bool allow_none = false;     // "none" must be chosen explicitly: it cannot stop a live peer
  std::string pidfile;         // process: the peer's pidfile (lab only)
  bool missing_pidfile_ok = false;  // process: a missing pidfile means stopped (else: unknown)
  std::string libvirt_uri;     // libvirt: e.g. qemu:///system or qemu+ssh://host/system
  std::string domain;          // libvirt: the peer's domain name
  std::string libvirt_peer;    // libvirt: or "PAIR/NODE", found by the domains' ftpair metadata
  std::string libvirt_action = "destroy";  // destroy | suspend
};

/* The "none" fencer: fence() succeeds without doing anything. Only with cfg.allow_none;
 * otherwise nullptr and *st (INVALID_ARGUMENT) names failover.allow_fence_none. */
std::unique_ptr<Fencer> make_none_fencer(const FenceConfig &cfg, Status *st);

}  // namespace ftpair::fo
