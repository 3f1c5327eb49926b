/* Flow-table snapshots in the state directory, for a node that cold-starts alone.
 *
 * File: a fixed header (magic, versions, generation, epoch, software version, node id,
 * clean-shutdown flag, record count, CRC32C of the records and of the header) followed by
 * the records in a record_codec format, written with write_file_atomic (the rename and its
 * folder fsynced). */
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "checkpoint/record_codec.h"
#include "common/status.h"
#include "dataplane/flow_table.h"

namespace ftpair::ckpt {

struct SnapshotMeta {
  uint64_t generation = 0;
  uint64_t epoch = 0;
  std::string software_version;
  std::string node_id;
  bool clean_shutdown = false;
  uint32_t record_format = kRecordFormatNewest;
  uint64_t count = 0;
  int64_t created_unix_ns = 0;
};

// Writes records (in-use slots) atomically to path. INVALID_ARGUMENT for an unknown record
// format; INTERNAL naming the file on I/O errors.
Status write_snapshot(const std::string &path, const SnapshotMeta &meta,
                      const std::vector<dp::CapturedSlot> &records, uint64_t now_tsc, uint64_t tsc_hz);

/* Reads and verifies a snapshot: NOT_FOUND when absent, INTERNAL when it cannot be read,
 * DATA_LOSS for a bad magic, header or record checksum, a truncated file, or records that do
 * not decode. */
Status read_snapshot(const std::string &path, uint32_t capacity, SnapshotMeta *meta,
                     std::vector<WireRecord> *records);

/* Whether a lone node may resume from this snapshot: it must come from a clean shutdown,
 * be no older than max_age_s, carry a generation no older than the node's persisted one,
 * and use a record format this build reads. FAILED_PRECONDITION says which rule failed. */
Status snapshot_usable(const SnapshotMeta &meta, uint64_t persisted_generation, uint64_t max_age_s,
                       int64_t now_unix_ns);

// Loads records into an empty table. INTERNAL if a record cannot be applied.
Status restore_snapshot(const std::vector<WireRecord> &records, dp::FlowTable &flows, uint64_t now_tsc,
                        uint64_t tsc_hz);
/* Several workers' empty tables: each flow goes to tables[home(state)], at its recorded slot
 * when free there (the same layout restores slot for slot), else at any free one. */
Status restore_snapshot(const std::vector<WireRecord> &records, const std::vector<dp::FlowTable *> &tables,
                        const std::function<unsigned(const dp::FlowState &)> &home, uint64_t now_tsc,
                        uint64_t tsc_hz);

}  // namespace ftpair::ckpt
