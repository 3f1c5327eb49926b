#include "checkpoint/capture_encoder.h"

#include <algorithm>
#include <string>

#include "checkpoint/record_codec.h"

namespace ftpair::ckpt {

namespace {
void add_batch(const dp::CapturedSlot *cap, size_t lo, size_t count, const CaptureHeader &h, v1::Checkpoint *cp) {
  v1::RecordBatch *b = cp->add_batches();
  b->set_format(h.format);
  b->set_count(static_cast<uint32_t>(count));
  // The format was checked by the caller: encode_records cannot refuse it here.
  (void)encode_records(cap + lo, count, h.format, h.now_tsc, h.tsc_hz, b->mutable_records(), h.shard_capacity);
  b->set_crc32c(crc32c(b->records().data(), b->records().size()));
}

v1::Checkpoint *new_checkpoint(const CaptureHeader &h, std::vector<v1::SyncMessage> *out) {
  v1::Checkpoint *cp = out->emplace_back().mutable_checkpoint();
  cp->set_epoch(h.epoch);
  cp->set_generation(h.generation);
  cp->set_captured_unix_ns(h.captured_unix_ns);
  if (h.has_log_sequence) cp->set_log_sequence(h.log_sequence);
  return cp;
}
}  // namespace

namespace {
Status check_format(const dp::CapturedSlot *cap, size_t n, const CaptureHeader &h) {
  if (!format_supported(h.format)) return InvalidArgument("encode: unknown record format " + std::to_string(h.format));
  if (h.format < kRecordFormatV4) {
    // Global slots: every record must have one that fits the field.
    for (size_t i = 0; i < n; i++)
      if (cap[i].shard && (!h.shard_capacity || uint64_t(cap[i].shard) * h.shard_capacity + cap[i].slot > UINT32_MAX))
        return InvalidArgument("encode: a record of shard " + std::to_string(cap[i].shard) + " in format " +
                               std::to_string(h.format) + " needs a shard capacity (have " +
                               std::to_string(h.shard_capacity) + ")");
  }
  return Status::Ok();
}

// The c-th message of a full sync of `chunks`, appended to *out (format already checked).
void add_full_chunk(const dp::CapturedSlot *cap, size_t n, const CaptureHeader &h, uint64_t live, size_t chunks,
                    size_t c, std::vector<v1::SyncMessage> *out) {
  const size_t per = std::max<size_t>(1, h.chunk_records);
  v1::Checkpoint *cp = new_checkpoint(h, out);
  cp->set_full(true);
  cp->set_chunk(static_cast<uint32_t>(c));
  cp->set_last_chunk(c + 1 == chunks);
  cp->set_flows_at_cut(live);
  if (h.has_fingerprint && c + 1 == chunks) cp->set_fingerprint(h.fingerprint);
  const size_t lo = c * per;
  add_batch(cap, lo, std::min(per, n - std::min(n, lo)), h, cp);
}
}  // namespace

size_t full_sync_chunks(size_t n, const CaptureHeader &h) {
  const size_t per = std::max<size_t>(1, h.chunk_records);
  return n == 0 ? 1 : (n + per - 1) / per;
}

uint64_t count_live(const dp::CapturedSlot *cap, size_t n) {
  uint64_t live = 0;
  for (size_t i = 0; i < n; i++) live += cap[i].in_use ? 1 : 0;
  return live;
}

Status encode_full_chunk(const dp::CapturedSlot *cap, size_t n, const CaptureHeader &h, uint64_t live, size_t chunk,
                         v1::SyncMessage *out) {
  // The format check scans the capture below format 4: once, at chunk 0.
  if (chunk == 0 || !format_supported(h.format)) {
    Status st = check_format(cap, n, h);
    if (!st.ok()) return st;
  }
  const size_t chunks = full_sync_chunks(n, h);
  if (chunk >= chunks) return InvalidArgument("encode: chunk " + std::to_string(chunk) + " of " + std::to_string(chunks));
  std::vector<v1::SyncMessage> one;
  add_full_chunk(cap, n, h, live, chunks, chunk, &one);
  *out = std::move(one[0]);
  return Status::Ok();
}

Status encode_capture(const dp::CapturedSlot *cap, size_t n, const CaptureHeader &h,
                      std::vector<v1::SyncMessage> *out) {
  out->clear();
  Status st = check_format(cap, n, h);
  if (!st.ok()) return st;
  const size_t per = std::max<size_t>(1, h.chunk_records);
  if (!h.full) {
    // flows_at_cut is a full-sync cross-check only.
    v1::Checkpoint *cp = new_checkpoint(h, out);
    for (size_t lo = 0; lo < n; lo += per) add_batch(cap, lo, std::min(per, n - lo), h, cp);
    if (h.has_fingerprint) cp->set_fingerprint(h.fingerprint);
    return Status::Ok();
  }
  const uint64_t live = count_live(cap, n);
  const size_t chunks = full_sync_chunks(n, h);
  out->reserve(chunks);
  for (size_t c = 0; c < chunks; c++) add_full_chunk(cap, n, h, live, chunks, c, out);
  return Status::Ok();
}

uint64_t encoded_bytes(const std::vector<v1::SyncMessage> &msgs) {
  uint64_t bytes = 0;
  for (const auto &m : msgs) bytes += m.ByteSizeLong();
  return bytes;
}

}  // namespace ftpair::ckpt
