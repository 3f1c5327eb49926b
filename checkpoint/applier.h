/* The standby side of replication: applies checkpoints to the local flow table, in epoch
 * order, and says exactly why it refuses one.
 *
 * Thread-safety: calls come from one Sync stream at a time; the flow table is guarded by
 * the mutex passed in (dumps take it too). The standby's worker never touches the table
 * while it does not own the virtual addresses. */
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

#include "checkpoint/version.h"
#include "common/status.h"
#include "dataplane/flow_table.h"
#include "replication.pb.h"

namespace ftpair::ckpt {

struct ApplierStats {
  std::atomic<uint64_t> checkpoints{0};
  std::atomic<uint64_t> records{0};
  std::atomic<uint64_t> full_syncs{0};
  std::atomic<uint64_t> rejected_gap{0}, rejected_duplicate{0}, rejected_corrupt{0},
      rejected_version{0}, rejected_protocol{0};
  std::atomic<int64_t> last_apply_unix_ns{0};
};

class Applier {
 public:
  Applier(dp::FlowTable &flows, std::mutex &table_mu, std::string node_id);

  // A new stream starts: forget the stream state (the table stays as it is).
  void begin_stream();
  /* The active's hello. Fills the reply (chosen versions) or returns FAILED_PRECONDITION
   * naming both sides' versions. */
  Status on_hello(const v1::Hello &in, uint64_t local_generation, v1::Hello *reply);
  /* Applies one checkpoint. *ack is set when the message completes an epoch. Errors:
   * FAILED_PRECONDITION (no hello, or a generation older than ours), OUT_OF_RANGE-like
   * INVALID_ARGUMENT for gaps and duplicates, DATA_LOSS for corrupt batches. A refused
   * message changes nothing in the table. */
  Status on_checkpoint(const v1::Checkpoint &c, bool *ack, v1::Ack *a);
  // The stream ended: a half-done full sync leaves the node out of sync.
  void end_stream();

  // A node that turned active stops taking checkpoints (set under the table mutex).
  void set_accepting(bool on) { accepting_.store(on); }
  bool accepting() const { return accepting_.load(); }
  bool in_sync() const { return in_sync_.load(); }
  uint64_t applied_epoch() const { return applied_.load(); }
  double full_sync_progress() const { return progress_.load(); }
  uint32_t record_format() const { return format_.load(); }
  /* The active's session-log sequence at the newest applied epoch; false when that epoch
   * carried none (the active logs nothing, or speaks an older version). */
  bool log_sequence(uint32_t *out) const {
    const uint64_t v = log_seq_.load();
    *out = uint32_t(v);
    return v >> 32;
  }
  const ApplierStats &stats() const { return stats_; }
  // The peer's identity from its hello.
  std::string peer_node() const;
  // Tests: speak these versions instead of local_versions() (set before any stream).
  void set_versions(const VersionRange &v) {
    std::lock_guard<std::mutex> g(peer_mu_);
    versions_override_ = v;
  }

 private:
  VersionRange versions_override_;
  dp::FlowTable &flows_;
  std::mutex &mu_;
  std::string node_id_;
  bool hello_ = false;
  std::atomic<uint32_t> format_{0};  // stream thread writes; status readers
  uint64_t peer_generation_ = 0;
  std::string peer_node_;
  bool in_full_ = false;
  uint64_t full_epoch_ = 0;
  uint32_t next_chunk_ = 0;
  uint64_t full_expected_ = 0;
  std::atomic<bool> in_sync_{false};
  std::atomic<bool> accepting_{true};
  std::atomic<uint64_t> applied_{0};
  std::atomic<uint64_t> log_seq_{0};  // bit 32: present; low 32 bits: the sequence
  std::atomic<double> progress_{0};
  ApplierStats stats_;
  mutable std::mutex peer_mu_;
};

}  // namespace ftpair::ckpt
