/* Roles and the persisted generation (a term). */
#pragma once

#include <cstdint>
#include <string>

#include "control/status.h"

namespace ftpair::fo {

enum class Role : uint8_t { BOOT, STANDBY_SYNCING, STANDBY_READY, ACTIVE, DRAINING, FAULT };
const char *role_name(Role r);
// "active" or "standby" (or the state name for BOOT/FAULT), as operators read it.
const char *role_kind(Role r);

// The generation persisted in dir/generation. A missing file reads as 0.
class Generation {
 public:
  explicit Generation(std::string state_dir) : dir_(std::move(state_dir)) {}
  Status load();
  uint64_t value() const { return value_; }
  // Persists v (fsync + rename) before returning; v must not go backwards.
  Status store(uint64_t v);

 private:
  std::string dir_;
  uint64_t value_ = 0;
};

}  // namespace ftpair::fo
