/* The standby side of replication: applies checkpoints to the local flow table, in epoch
 * order, and says exactly why it refuses one.
 *
 * Thread-safety: calls come from one Sync stream at a time; the flow table is guarded by
 * the mutex passed in (dumps take it too). The standby's worker never touches the table
 * while it does not own the virtual addresses.
 *
 * Shards. The active's records name their shard (its worker) and that shard's slot; this
 * node's tables are its own workers' shards, and may be fewer or more. Each flow goes to the
 * table of the worker that will own it here (home(), the dataplane's rule), at the active's
 * slot when that is free there, so that equal layouts stay slot for slot; a map from the
 * active's (shard, slot) to this node's (table, slot) finds it again for the next change or
 * its deletion. A promotion needs nothing more: every flow already sits with its owner. */
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

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
  // Epochs after which this table's fingerprint differed from the active's at the cut.
  std::atomic<uint64_t> divergences{0};
  std::atomic<int64_t> last_apply_unix_ns{0};
};

class Applier {
 public:
  // home(state): the index of the table (worker) that owns a flow on this node.
  using HomeFn = std::function<unsigned(const dp::FlowState &)>;
  Applier(std::vector<dp::FlowTable *> tables, HomeFn home, std::mutex &table_mu, std::string node_id);
  Applier(dp::FlowTable &flows, std::mutex &table_mu, std::string node_id)
      : Applier(std::vector<dp::FlowTable *>{&flows}, nullptr, table_mu, std::move(node_id)) {}

  /* After an acknowledged epoch: rereads the next `slots` slots of the tables (round robin)
   * and compares each record with what was applied there. A record changed in memory since
   * (a bit flip, a write behind the applier) is a divergence like a fingerprint mismatch:
   * counted, the epoch named, the node out of sync, and DATA_LOSS for the stream. Only while
   * in sync. */
  Status scrub_step(uint32_t slots);
  // Slots the scrub has reread (any thread).
  uint64_t scrubbed() const { return scrubbed_.load(); }

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

  /* A node that turned active stops taking checkpoints (set under the table mutex). When it
   * turns standby again its table is its own, not a copy of the new active's: out of sync
   * until a full sync. */
  void set_accepting(bool on) {
    if (on && !accepting_.exchange(true)) in_sync_.store(false);
    if (!on) accepting_.store(false);
  }
  bool accepting() const { return accepting_.load(); }
  bool in_sync() const { return in_sync_.load(); }
  /* The table diverged silently from the active's: after an applied epoch its fingerprint
   * differed from the one the active sent. Set until a full sync ends with them equal; the
   * stream is refused meanwhile (the active resyncs). The epoch it was found at, or 0. */
  uint64_t diverged_epoch() const { return diverged_epoch_.load(); }
  /* The newest epoch whose records are all in the table (set with them, under the table
   * mutex): a change made to the table under the mutex comes after exactly this epoch. */
  uint64_t table_epoch() const { return table_epoch_.load(); }
  // Epochs whose fingerprint was compared (and matched or not).
  uint64_t fingerprints_checked() const { return fp_checked_.load(); }
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
  // Flows in every table (any thread).
  uint64_t flows() const;
  // The generation of the active whose stream was last accepted (its hello).
  uint64_t peer_generation() const { return peer_generation_.load(); }
  // The active's shards, from its hello (1 until one came).
  uint32_t peer_shards() const { return peer_shards_.load(); }
  // The peer's identity from its hello.
  std::string peer_node() const;
  // Tests: speak these versions instead of local_versions() (set before any stream).
  void set_versions(const VersionRange &v) {
    std::lock_guard<std::mutex> g(peer_mu_);
    versions_override_ = v;
  }

 private:
  static constexpr uint32_t kUnmapped = UINT32_MAX;
  uint64_t min_table_capacity() const;
  // The most shards an active may announce (its workers; the map is sized by them).
  static constexpr uint32_t kMaxPeerShards = 16;
  void clear_all();
  // The active's (shard, slot) as one index into the map.
  uint32_t key(const dp::CapturedSlot &s) const { return s.shard * peer_shard_cap_ + s.slot; }
  void unmap_and_free(uint32_t k, uint64_t now);
  int apply_one(uint32_t k, const dp::FlowState &st, uint32_t slot, uint64_t seen_tsc, std::string *why);

  VersionRange versions_override_;
  std::vector<dp::FlowTable *> tables_;
  HomeFn home_;
  // The active's layout (hello) and where each of its slots lives here (table, slot).
  std::atomic<uint32_t> peer_shards_{1};
  uint32_t peer_shard_cap_ = 0;
  std::vector<uint32_t> map_slot_;
  std::vector<uint8_t> map_table_;
  std::mutex &mu_;
  std::string node_id_;
  bool hello_ = false;
  std::atomic<uint32_t> format_{0};  // stream thread writes; status readers
  std::atomic<uint64_t> peer_generation_{0};
  std::string peer_node_;
  bool in_full_ = false;
  uint64_t full_epoch_ = 0;
  uint32_t next_chunk_ = 0;
  uint64_t full_expected_ = 0;
  std::atomic<bool> in_sync_{false};
  std::atomic<bool> accepting_{true};
  std::atomic<uint64_t> applied_{0};
  std::atomic<uint64_t> diverged_epoch_{0}, fp_checked_{0}, scrubbed_{0}, table_epoch_{0};
  size_t scrub_table_ = 0;
  uint32_t scrub_pos_ = 0;
  // The fingerprint of what this node applied: every table's (under mu_).
  uint64_t applied_fingerprint() const;
  std::atomic<uint64_t> log_seq_{0};  // bit 32: present; low 32 bits: the sequence
  std::atomic<double> progress_{0};
  ApplierStats stats_;
  mutable std::mutex peer_mu_;
};

}  // namespace ftpair::ckpt
