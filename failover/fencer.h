/* Fencing: make sure the old active can no longer forward before the standby takes over.
 * fence() reports success only when the peer is confirmed stopped. */
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "common/status.h"

namespace ftpair::fo {

class Fencer {
 public:
  virtual ~Fencer() = default;
  virtual const char *kind() const = 0;
  // Stops the peer within the deadline (the whole call returns by then). OK only if it is
  // confirmed no longer running; DEADLINE_EXCEEDED or UNAVAILABLE (peer state unknown) otherwise.
  virtual Status fence(std::chrono::milliseconds deadline) = 0;
};

enum class FenceKind { NONE, PROCESS, LIBVIRT };
// "none", "process", "libvirt".
const char *fence_kind_name(FenceKind k);
// Parses a fence kind; false for anything else.
bool parse_fence_kind(const std::string &s, FenceKind *out);

struct FenceConfig {
  FenceKind kind = FenceKind::NONE;
  bool allow_none = false;     // "none" must be chosen explicitly: it cannot stop a live peer
  std::string pidfile;         // process: the peer's pidfile (lab only)
  std::string libvirt_uri;     // libvirt: e.g. qemu:///system or qemu+ssh://host/system
  std::string domain;          // libvirt: the peer's domain name
  std::string libvirt_action = "destroy";  // destroy | suspend
};

// Builds the configured fencer, or nullptr with *st explaining a bad configuration.
std::unique_ptr<Fencer> make_fencer(const FenceConfig &cfg, Status *st);

}  // namespace ftpair::fo
