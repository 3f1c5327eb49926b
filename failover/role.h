/* Roles and the persisted generation (a term). */
#pragma once

#include <cstdint>
#include <mutex>
#include <string>

#include "common/status.h"

namespace ftpair::fo {

enum class Role : uint8_t { BOOT, STANDBY_SYNCING, STANDBY_READY, ACTIVE, DRAINING, FAULT };
const char *role_name(Role r);
// "active" or "standby" (or the state name for BOOT/FAULT), as operators read it.
const char *role_kind(Role r);

// The generation persisted in dir/generation. A missing file reads as 0.
/* The generation, persisted in state_dir/generation. A promotion must not wait for a disk
 * flush (an fsync takes 5-70 ms on a busy disk), so a standby reserves the generation it
 * would take: reserve() persists it to state_dir/generation.reserved off the critical path,
 * and take_reserved() makes it the current value at promotion without any I/O; the daemon
 * writes it to the generation file within its next tick (20 ms). load() reads the generation
 * file only: a crash inside that window loses the step, as a crash before the fsync did.
 * Thread-safe. */
class Generation {
 public:
  explicit Generation(std::string state_dir) : dir_(std::move(state_dir)) {}
  Status load();
  uint64_t value() const;
  /* Persists v (fsync + rename) before returning; v must not go backwards. Writers take
   * turns, and one whose value a newer write already covers writes nothing, so the file
   * never ends older than the newest store. */
  Status store(uint64_t v);
  /* Writes value() if it is unflushed, unless another write is under way (which it then
   * leaves to a later call: for a thread that must not wait on another one's fsync). */
  Status flush();
  // Persists v as the reserved next generation (no effect on value()).
  Status reserve(uint64_t v);
  uint64_t reserved() const;
  /* If a reserved generation >= at_least (and above the current value) is on disk, makes
   * it the current value and returns true: no I/O. */
  bool take_reserved(uint64_t at_least);
  // True when value() is not yet in the generation file itself (flush it with store()).
  bool unflushed() const;

 private:
  Status write_file(const std::string &name, uint64_t v);
  std::string dir_;
  mutable std::mutex mu_;
  std::mutex write_mu_;  // one write of the generation file at a time (taken before mu_)
  uint64_t value_ = 0, reserved_ = 0, flushed_ = 0;
  Status write_locked(uint64_t v);  // under write_mu_
};

}  // namespace ftpair::fo
