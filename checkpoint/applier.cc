#include "checkpoint/applier.h"

#include <cstdio>

#include <algorithm>
#include <cerrno>
#include <stdexcept>

#include <rte_cycles.h>

#include "checkpoint/record_codec.h"
#include "common/clock.h"

namespace ftpair::ckpt {

Applier::Applier(std::vector<dp::FlowTable *> tables, HomeFn home, std::mutex &table_mu, std::string node_id)
    : tables_(std::move(tables)), home_(std::move(home)), mu_(table_mu), node_id_(std::move(node_id)) {
  if (tables_.empty() || tables_.size() > kMaxShards)
    throw std::invalid_argument("ckpt::Applier: 1 to " + std::to_string(kMaxShards) + " tables");
  if (!home_) home_ = [](const dp::FlowState &) { return 0u; };
}

uint64_t Applier::min_table_capacity() const {
  uint64_t n = UINT64_MAX;
  for (const dp::FlowTable *t : tables_) n = std::min<uint64_t>(n, t->capacity());
  return n;
}

uint64_t Applier::flows() const {
  uint64_t n = 0;
  for (const dp::FlowTable *t : tables_) n += t->size();
  return n;
}

void Applier::clear_all() {
  for (dp::FlowTable *t : tables_) t->clear();
  std::fill(map_slot_.begin(), map_slot_.end(), kUnmapped);
}

void Applier::unmap_and_free(uint32_t k, uint64_t now) {
  (void)tables_[map_table_[k]]->apply(map_slot_[k], nullptr, now);
  map_slot_[k] = kUnmapped;
}

// The active's flow at key k, now st: in place where it lives here, else in its home table.
int Applier::apply_one(uint32_t k, const dp::FlowState &st, uint32_t slot, uint64_t seen_tsc, std::string *why) {
  if (map_slot_[k] != kUnmapped) {
    const int rc = tables_[map_table_[k]]->apply(map_slot_[k], &st, seen_tsc);
    if (rc < 0) *why = "table " + std::to_string(map_table_[k]) + " slot " + std::to_string(map_slot_[k]) +
                       " cannot take it (error " + std::to_string(rc) + ")";
    return rc;
  }
  const unsigned t = home_(st);
  if (t >= tables_.size()) {
    *why = "its home is table " + std::to_string(t) + " of " + std::to_string(tables_.size());
    return -EINVAL;
  }
  const int rc = tables_[t]->place(st, slot, seen_tsc);
  if (rc < 0) {
    *why = rc == -ENOSPC ? "worker " + std::to_string(t) + "'s table is full (" +
                               std::to_string(tables_[t]->capacity()) + " flows)"
                         : "table " + std::to_string(t) + " cannot take it (error " + std::to_string(rc) + ")";
    return rc;
  }
  map_table_[k] = static_cast<uint8_t>(t);
  map_slot_[k] = static_cast<uint32_t>(rc);
  return 0;
}

void Applier::begin_stream() {
  hello_ = false;
  in_full_ = false;
  next_chunk_ = 0;
}

void Applier::end_stream() {
  if (in_full_) {
    // A half-applied full sync is not a consistent cut.
    in_sync_.store(false);
    in_full_ = false;
  }
  hello_ = false;
}

std::string Applier::peer_node() const {
  std::lock_guard<std::mutex> g(peer_mu_);
  return peer_node_;
}

Status Applier::on_hello(const v1::Hello &in, uint64_t local_generation, v1::Hello *reply) {
  VersionRange local;
  {
    std::lock_guard<std::mutex> g(peer_mu_);
    local = versions_override_.record_formats.empty() ? local_versions() : versions_override_;
  }
  VersionRange peer;
  peer.protocol_min = in.protocol_version_min();
  peer.protocol_max = in.protocol_version_max();
  peer.record_formats.assign(in.record_formats().begin(), in.record_formats().end());
  Negotiated n;
  std::string why;
  if (!negotiate(local, peer, &n, &why)) {
    stats_.rejected_version++;
    in_sync_.store(false);  // a live active whose stream this node refuses is not protected by it
    return FailedPrecondition("incompatible versions: " + why + " (peer software " + in.software_version() +
                              ", this node " + software_version() + ")");
  }
  if (in.generation() < local_generation) {
    in_sync_.store(false);  // the same: its changes no longer reach this copy
    return FailedPrecondition("stale active: its generation " + std::to_string(in.generation()) +
                              " is older than this node's " + std::to_string(local_generation));
  }
  // Each of this node's tables must hold every flow the active may have: a flow goes to the
  // table of its host's worker here, and the active's load may sit on one worker's hosts.
  const uint64_t room = min_table_capacity();
  if (in.flow_capacity() != 0 && in.flow_capacity() > room) {
    in_sync_.store(false);
    return FailedPrecondition("flow table too small: the active has capacity " + std::to_string(in.flow_capacity()) +
                              ", this node " + std::to_string(room) +
                              (tables_.size() > 1 ? " in each worker's table" : ""));
  }
  // The active's layout: shards tables of shard_cap slots (an active before format 4: one
  // table of its flow capacity).
  const uint32_t shards = in.shards() ? in.shards() : 1;
  const uint64_t shard_cap = in.shard_capacity()  ? in.shard_capacity()
                             : in.flow_capacity() ? in.flow_capacity()
                                                  : room;
  const uint64_t total = shards * shard_cap;
  // The map takes 5 bytes per slot of the active's: its layout must be one this node could hold.
  if (shards > kMaxPeerShards || total > UINT32_MAX || (shards > 1 && !in.shard_capacity()) ||
      shard_cap > std::max<uint64_t>(in.flow_capacity(), room)) {
    in_sync_.store(false);
    return FailedPrecondition("the active's layout is not one this node can follow: " + std::to_string(shards) +
                              " shards of " + std::to_string(in.shard_capacity()) + " flows");
  }
  if (map_slot_.size() != total || peer_shards_.load() != shards) {
    // Another layout: the map (and so this copy) starts again with the next full sync.
    in_sync_.store(false);
    std::lock_guard<std::mutex> g(mu_);
    map_slot_.assign(total, kUnmapped);
    map_table_.assign(total, 0);
  }
  peer_shards_.store(shards);
  peer_shard_cap_ = static_cast<uint32_t>(shard_cap);
  hello_ = true;
  format_ = n.record_format;
  peer_generation_ = in.generation();
  {
    std::lock_guard<std::mutex> g(peer_mu_);
    peer_node_ = in.node_id();
  }
  reply->set_node_id(node_id_);
  reply->set_generation(local_generation);
  reply->set_software_version(software_version());
  reply->set_protocol_version_min(local.protocol_min);
  reply->set_protocol_version_max(local.protocol_max);
  for (uint32_t f : local.record_formats) reply->add_record_formats(f);
  reply->set_role("standby");
  reply->set_chosen_protocol_version(n.protocol);
  reply->set_chosen_record_format(n.record_format);
  reply->set_flow_capacity(static_cast<uint32_t>(std::min<uint64_t>(min_table_capacity(), UINT32_MAX)));
  reply->set_shards(static_cast<uint32_t>(tables_.size()));
  return Status::Ok();
}

uint64_t Applier::applied_fingerprint() const {
  uint64_t f = 0;
  for (const dp::FlowTable *t : tables_) f += t->applied_fingerprint();
  return f;
}

Status Applier::scrub_step(uint32_t slots) {
  std::lock_guard<std::mutex> g(mu_);
  if (!in_sync_.load() || !accepting_.load() || tables_.empty()) return Status::Ok();
  while (slots > 0) {
    dp::FlowTable &t = *tables_[scrub_table_];
    const uint32_t n = std::min(slots, t.capacity() - scrub_pos_);
    const int64_t bad = t.scrub(scrub_pos_, n);
    scrubbed_ += n;
    if (bad >= 0) {
      stats_.divergences++;
      diverged_epoch_.store(std::max<uint64_t>(1, applied_.load()));
      in_sync_.store(false);
      return Status(Code::DATA_LOSS, "table " + std::to_string(scrub_table_) + " slot " + std::to_string(bad) +
                                         " changed in memory since it was applied (scrub after epoch " +
                                         std::to_string(applied_.load()) + "): this table diverged from the "
                                         "active's; a full sync must follow");
    }
    slots -= n;
    scrub_pos_ += n;
    if (scrub_pos_ >= t.capacity()) {
      scrub_pos_ = 0;
      scrub_table_ = (scrub_table_ + 1) % tables_.size();
    }
  }
  return Status::Ok();
}

Status Applier::on_checkpoint(const v1::Checkpoint &c, bool *ack, v1::Ack *a) {
  *ack = false;
  if (!hello_) {
    stats_.rejected_protocol++;
    return FailedPrecondition("checkpoint before hello");
  }
  if (c.generation() < peer_generation_) {
    stats_.rejected_protocol++;
    return FailedPrecondition("checkpoint from generation " + std::to_string(c.generation()) +
                              " after hello of generation " + std::to_string(peer_generation_.load()));
  }
  const uint64_t applied = applied_.load();
  if (c.full()) {
    if (c.chunk() == 0) {
      in_full_ = true;
      full_epoch_ = c.epoch();
      next_chunk_ = 0;
      full_expected_ = c.flows_at_cut();
    } else if (!in_full_ || c.epoch() != full_epoch_ || c.chunk() != next_chunk_) {
      stats_.rejected_gap++;
      return InvalidArgument("full sync out of order: expected chunk " + std::to_string(next_chunk_) +
                             " of epoch " + std::to_string(full_epoch_) + ", got chunk " +
                             std::to_string(c.chunk()) + " of epoch " + std::to_string(c.epoch()));
    }
  } else {
    if (in_full_ || !in_sync_.load()) {
      stats_.rejected_gap++;
      return FailedPrecondition("incremental epoch " + std::to_string(c.epoch()) +
                                " before a completed full sync");
    }
    if (c.epoch() <= applied) {
      stats_.rejected_duplicate++;
      return InvalidArgument("duplicate epoch " + std::to_string(c.epoch()) + ": already applied " +
                             std::to_string(applied));
    }
    if (c.epoch() != applied + 1) {
      stats_.rejected_gap++;
      return InvalidArgument("gap: expected epoch " + std::to_string(applied + 1) + ", got " +
                             std::to_string(c.epoch()));
    }
  }
  // Decode everything first: a refused message must leave the table untouched.
  std::vector<WireRecord> recs;
  for (int b = 0; b < c.batches_size(); b++) {
    const v1::RecordBatch &batch = c.batches(b);
    if (batch.format() != format_) {
      stats_.rejected_version++;
      return InvalidArgument("batch " + std::to_string(b) + " uses record format " + std::to_string(batch.format()) +
                             ", negotiated " + std::to_string(format_.load()));
    }
    std::string detail;
    // Format 4 names (shard, slot); older formats a global slot, decoded as shard 0.
    const bool sharded = batch.format() >= kRecordFormatV4;
    DecodeError e = decode_records(batch.records(), batch.format(), batch.count(), batch.crc32c(),
                                   sharded ? peer_shard_cap_ : uint32_t(map_slot_.size()), &recs, &detail,
                                   sharded ? peer_shards_.load() : 1);
    if (e != DecodeError::OK) {
      stats_.rejected_corrupt++;
      return Status(Code::DATA_LOSS, "epoch " + std::to_string(c.epoch()) + " batch " + std::to_string(b) + ": " +
                                         decode_error_text(e) + " (" + detail + ")");
    }
  }
  const uint64_t now = rte_rdtsc(), hz = rte_get_tsc_hz();
  uint64_t mine_fp = 0;
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!accepting_.load()) {
      stats_.rejected_protocol++;
      return FailedPrecondition("this node has taken the active role: checkpoint refused");
    }
    if (c.full() && c.chunk() == 0) {
      in_sync_.store(false);  // a half-filled table is no copy to promote
      clear_all();
    }
    // Free first every flow that is deleted or changes keys, so a flow that moved to
    // another slot in this epoch finds its keys free wherever it lands.
    for (const auto &w : recs) {
      const uint32_t k = key(w.slot);
      if (map_slot_[k] == kUnmapped) continue;
      const dp::FlowState &cur = tables_[map_table_[k]]->record(map_slot_[k]).st;
      if (!w.slot.in_use || !(dp::inside_key(cur) == dp::inside_key(w.slot.st)) ||
          !(dp::outside_key(cur) == dp::outside_key(w.slot.st)))
        unmap_and_free(k, now);
    }
    // Each record's lines are fetched kAhead records before it is applied: a batch's cache
    // misses overlap (a full sync's inserts are bound by them, not by work).
    constexpr size_t kAhead = 8;
    const auto prefetch = [&](const WireRecord &w) {
      if (!w.slot.in_use) return;
      const uint32_t k = key(w.slot);
      if (map_slot_[k] != kUnmapped) return tables_[map_table_[k]]->prefetch_apply(w.slot.st, map_slot_[k]);
      const unsigned t = home_(w.slot.st);
      if (t < tables_.size()) tables_[t]->prefetch_apply(w.slot.st, w.slot.slot);
    };
    for (size_t i = 0; i < std::min(kAhead, recs.size()); i++) prefetch(recs[i]);
    for (size_t i = 0; i < recs.size(); i++) {
      if (i + kAhead < recs.size()) prefetch(recs[i + kAhead]);
      const WireRecord &w = recs[i];
      if (!w.slot.in_use) continue;
      const uint64_t idle = uint64_t(w.idle_ms) * hz / 1000;
      std::string why;
      if (apply_one(key(w.slot), w.slot.st, w.slot.slot, now > idle ? now - idle : 0, &why) < 0) {
        stats_.rejected_corrupt++;
        in_sync_.store(false);
        in_full_ = false;
        return Status(Code::DATA_LOSS, "epoch " + std::to_string(c.epoch()) + ": shard " +
                                           std::to_string(w.slot.shard) + " slot " + std::to_string(w.slot.slot) +
                                           " cannot be applied: " + why + "; the table needs a full sync");
      }
    }
    // Taken with the records, under the same hold of the mutex: exactly this epoch's table.
    if (!c.full() || c.last_chunk()) {
      mine_fp = applied_fingerprint();
      table_epoch_.store(c.epoch());
    }
  }
  // The epoch is complete here (an incremental one, or a full sync's last chunk): compare
  // the fingerprints. A table that differs is no copy to promote; the stream is refused so
  // that the active starts over with a full sync.
  // (Only where the records carry the whole state the fingerprint covers: format 3 on.)
  if (c.has_fingerprint() && format_.load() >= kRecordFormatV3 && (!c.full() || c.last_chunk())) {
    const uint64_t mine = mine_fp;
    fp_checked_++;
    if (mine != c.fingerprint()) {
      stats_.divergences++;
      diverged_epoch_.store(c.epoch());
      in_sync_.store(false);
      in_full_ = false;
      char buf[96];
      std::snprintf(buf, sizeof buf, "fingerprint %016llx, the active's %016llx",
                    static_cast<unsigned long long>(mine), static_cast<unsigned long long>(c.fingerprint()));
      return Status(Code::DATA_LOSS, "epoch " + std::to_string(c.epoch()) +
                                         ": this table diverged from the active's at the cut (" + buf +
                                         "); a full sync must follow");
    }
  }
  stats_.records += recs.size();
  stats_.checkpoints++;
  stats_.last_apply_unix_ns = unix_ns();
  if (c.full()) {
    next_chunk_++;
    if (full_expected_) progress_.store(std::min(1.0, double(flows()) / double(full_expected_)));
    if (!c.last_chunk()) return Status::Ok();
    in_full_ = false;
    if (flows() != c.flows_at_cut()) {
      in_sync_.store(false);
      stats_.rejected_corrupt++;
      return Status(Code::DATA_LOSS, "full sync of epoch " + std::to_string(c.epoch()) + " ended with " +
                                         std::to_string(flows()) + " flows, the active had " +
                                         std::to_string(c.flows_at_cut()));
    }
    stats_.full_syncs++;
    progress_.store(1.0);
    in_sync_.store(true);
    diverged_epoch_.store(0);  // the table was replaced whole
  }
  applied_.store(c.epoch());
  log_seq_.store(c.has_log_sequence() ? (uint64_t(1) << 32 | c.log_sequence()) : 0);
  *ack = true;
  a->set_epoch(c.epoch());
  a->set_records_applied(recs.size());
  a->set_flows(flows());
  return Status::Ok();
}

}  // namespace ftpair::ckpt
