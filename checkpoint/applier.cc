#include "checkpoint/applier.h"

#include <rte_cycles.h>

#include "checkpoint/record_codec.h"
#include "common/clock.h"

namespace ftpair::ckpt {

Applier::Applier(dp::FlowTable &flows, std::mutex &table_mu, std::string node_id)
    : flows_(flows), mu_(table_mu), node_id_(std::move(node_id)) {}

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
  if (in.flow_capacity() != 0 && in.flow_capacity() > flows_.capacity()) {
    in_sync_.store(false);
    return FailedPrecondition("flow table too small: the active has capacity " + std::to_string(in.flow_capacity()) +
                              ", this node " + std::to_string(flows_.capacity()));
  }
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
  reply->set_flow_capacity(flows_.capacity());
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
                              " after hello of generation " + std::to_string(peer_generation_));
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
    DecodeError e = decode_records(batch.records(), batch.format(), batch.count(), batch.crc32c(),
                                   flows_.capacity(), &recs, &detail);
    if (e != DecodeError::OK) {
      stats_.rejected_corrupt++;
      return Status(Code::DATA_LOSS, "epoch " + std::to_string(c.epoch()) + " batch " + std::to_string(b) + ": " +
                                         decode_error_text(e) + " (" + detail + ")");
    }
  }
  const uint64_t now = rte_rdtsc(), hz = rte_get_tsc_hz();
  {
    std::lock_guard<std::mutex> g(mu_);
    if (!accepting_.load()) {
      stats_.rejected_protocol++;
      return FailedPrecondition("this node has taken the active role: checkpoint refused");
    }
    if (c.full() && c.chunk() == 0) {
      in_sync_.store(false);  // a half-filled table is no copy to promote
      flows_.clear();
    }
    // Free first every slot that is deleted or changes flow, so a flow that moved to
    // another slot in this epoch finds its keys free wherever it lands.
    for (const auto &w : recs) {
      const dp::FlowState &cur = flows_.record(w.slot.slot).st;
      if ((cur.flags & dp::kFlowInUse) &&
          (!w.slot.in_use || !(dp::inside_key(cur) == dp::inside_key(w.slot.st)) ||
           !(dp::outside_key(cur) == dp::outside_key(w.slot.st))))
        flows_.apply(w.slot.slot, nullptr, now);
    }
    for (const auto &w : recs) {
      if (!w.slot.in_use) continue;
      const uint64_t idle = uint64_t(w.idle_ms) * hz / 1000;
      int rc = flows_.apply(w.slot.slot, &w.slot.st, now > idle ? now - idle : 0);
      if (rc < 0) {
        stats_.rejected_corrupt++;
        in_sync_.store(false);
        in_full_ = false;
        return Status(Code::DATA_LOSS, "epoch " + std::to_string(c.epoch()) + ": slot " +
                                           std::to_string(w.slot.slot) + " cannot be applied (error " +
                                           std::to_string(rc) + "); the table needs a full sync");
      }
    }
  }
  stats_.records += recs.size();
  stats_.checkpoints++;
  stats_.last_apply_unix_ns = unix_ns();
  if (c.full()) {
    next_chunk_++;
    if (full_expected_) progress_.store(std::min(1.0, double(flows_.size()) / double(full_expected_)));
    if (!c.last_chunk()) return Status::Ok();
    in_full_ = false;
    if (flows_.size() != c.flows_at_cut()) {
      in_sync_.store(false);
      stats_.rejected_corrupt++;
      return Status(Code::DATA_LOSS, "full sync of epoch " + std::to_string(c.epoch()) + " ended with " +
                                         std::to_string(flows_.size()) + " flows, the active had " +
                                         std::to_string(c.flows_at_cut()));
    }
    stats_.full_syncs++;
    progress_.store(1.0);
    in_sync_.store(true);
  }
  applied_.store(c.epoch());
  log_seq_.store(c.has_log_sequence() ? (uint64_t(1) << 32 | c.log_sequence()) : 0);
  *ack = true;
  a->set_epoch(c.epoch());
  a->set_records_applied(recs.size());
  a->set_flows(flows_.size());
  return Status::Ok();
}

}  // namespace ftpair::ckpt
