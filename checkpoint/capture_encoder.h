/* The pure half of a checkpoint: a captured cut of the flow table, as the Sync messages that
 * carry it to one stream. No threads, no gRPC calls, no engine state: the same input gives
 * the same messages, so it is fuzzed alone (fuzz/fuzz_encoder.cc) and the tests build their
 * streams with it. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/status.h"
#include "dataplane/flow_table.h"
#include "replication.pb.h"

namespace ftpair::ckpt {

struct CaptureHeader {
  uint64_t epoch = 0;
  uint64_t generation = 0;
  bool full = false;          // a full sync in chunks, or one incremental checkpoint
  uint32_t format = 0;        // record format negotiated on the stream (record_codec.h)
  size_t chunk_records = 1;   // records per batch, and per message in a full sync (0 counts as 1)
  uint64_t now_tsc = 0;       // the cut, for format 2's idle_ms (now_tsc - last_seen_tsc)
  uint64_t tsc_hz = 0;
  uint32_t shard_capacity = 0;  // each shard's table capacity: global slots below format 4
  int64_t captured_unix_ns = 0;
  bool has_log_sequence = false;  // the session log's sequence at the cut (Engine config)
  uint32_t log_sequence = 0;
  // The table's fingerprint at the cut, on the message that completes the epoch.
  bool has_fingerprint = false;
  uint64_t fingerprint = 0;
};

/* Encodes n captured slots as the Sync messages of one stream, replacing *out.
 *   full: ceil(n / chunk_records) messages (one when n is 0), chunk 0.., last_chunk on the
 *         last, each with one batch and flows_at_cut = the in-use slots of the capture. A full
 *         capture may also carry freed slots (deletions), so that a stream in sync can take it
 *         as the epoch's changes.
 *   incremental: one message with ceil(n / chunk_records) batches.
 * Every batch carries its format, count and CRC32C. INVALID_ARGUMENT for an unknown format
 * (then *out is empty). */
Status encode_capture(const dp::CapturedSlot *cap, size_t n, const CaptureHeader &h,
                      std::vector<v1::SyncMessage> *out);

/* A full sync one message at a time, so that encoding chunk c+1 overlaps the standby's
 * apply of chunk c (the engine's pipelined full sync): full_sync_chunks(n, h) messages,
 * encode_full_chunk(..., c, out) the c-th, exactly as encode_capture's c-th. live: the in-use
 * slots of the capture (count_live). Same errors as encode_capture. */
size_t full_sync_chunks(size_t n, const CaptureHeader &h);
uint64_t count_live(const dp::CapturedSlot *cap, size_t n);
Status encode_full_chunk(const dp::CapturedSlot *cap, size_t n, const CaptureHeader &h, uint64_t live, size_t chunk,
                         v1::SyncMessage *out);

// The bytes that the messages take on the stream (the sync-lag figure counts them).
uint64_t encoded_bytes(const std::vector<v1::SyncMessage> &msgs);

}  // namespace ftpair::ckpt
