/* The packed flow-record layouts that travel in RecordBatch and in snapshots.
 *
 * Format 1 (32 bytes, little-endian, addresses and ports as on the wire):
 *   u32 slot | u8 in_use | u8 proto | u8 tcp_state | u8 flags |
 *   u32 in_ip | u32 ext_ip | u32 nat_ip | u16 in_port | u16 ext_port | u16 nat_port |
 *   u16 reserved (0) | u32 reserved (0)
 * Format 2 (40 bytes): format 1 followed by u32 idle_ms (time since the flow was last
 * seen, at the cut) and u32 reserved. A reader of format 2 reads format 1 with idle_ms 0;
 * a writer asked for format 1 drops idle_ms.
 * Format 3 (48 bytes): format 2, with TCP window tracking (soft state, dp::FlowState):
 *   byte 26 u8 tcp_wscale | 27 u8 tcp_win_log[0] | 28 u8 tcp_win_log[1] | 29..31 zero,
 *   and at 40 u32 tcp_end[0] | u32 tcp_end[1]. Readers of older formats get a TCP flow
 *   without window state, which the NF picks up again from traffic.
 * Format 4 (48 bytes): format 3, and byte 29 u8 shard: the worker whose table holds the
 *   flow, the slot being that table's. A deletion carries its shard too. Written to an older
 *   format, a record of shard s travels at the global slot s x shard_capacity + slot, which a
 *   standby of one table with the active's whole capacity applies as it always did.
 *
 * Decoding never trusts the input: lengths, counts, formats, flags and the CRC are
 * checked, and each failure has its own error. */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/flow_table.h"

namespace ftpair::ckpt {

inline constexpr uint32_t kRecordFormatV1 = 1;
inline constexpr uint32_t kRecordFormatV2 = 2;
inline constexpr uint32_t kRecordFormatV3 = 3;
inline constexpr uint32_t kRecordFormatV4 = 4;
inline constexpr uint32_t kRecordFormatNewest = kRecordFormatV4;
// The most shards (workers) a record can name.
inline constexpr uint32_t kMaxShards = 256;
inline constexpr uint32_t kRecordFormatOldest = kRecordFormatV1;

struct WireRecord {
  dp::CapturedSlot slot;
  uint32_t idle_ms = 0;
};

// Size of one record in a format, or 0 for an unknown format.
uint32_t record_size(uint32_t format);
bool format_supported(uint32_t format);

/* Appends n records in the given format to out; idle_ms is derived from each record's
 * last-seen time against now_tsc. Below format 4 a record of shard s > 0 is written at the
 * global slot s x shard_capacity + slot. Returns 0, or -EINVAL for an unknown format or a
 * record of shard > 0 with no shard_capacity (or a global slot past 32 bits). */
int encode_records(const dp::CapturedSlot *recs, size_t n, uint32_t format, uint64_t now_tsc,
                   uint64_t tsc_hz, std::string *out, uint32_t shard_capacity = 0);

enum class DecodeError { OK, UNKNOWN_FORMAT, BAD_LENGTH, BAD_CRC, BAD_FIELD, SLOT_RANGE, SHARD_RANGE };
const char *decode_error_text(DecodeError e);

/* Decodes count records of format from bytes, checking crc (CRC32C of bytes), that every
 * slot is below capacity and (format 4) every shard below shards. capacity is a shard's
 * in format 4, the whole table's (global slots) below it. Records below format 4 decode as
 * shard 0. On error *detail says which record and why. */
DecodeError decode_records(const std::string &bytes, uint32_t format, uint32_t count, uint32_t crc,
                           uint32_t capacity, std::vector<WireRecord> *out, std::string *detail,
                           uint32_t shards = 1);

uint32_t crc32c(const void *data, size_t len, uint32_t seed = 0xffffffff);

}  // namespace ftpair::ckpt
