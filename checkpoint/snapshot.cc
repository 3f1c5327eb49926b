#include "checkpoint/snapshot.h"

#include <cstring>

#include "common/file.h"

namespace ftpair::ckpt {

namespace {
constexpr char kMagic[8] = {'F', 'T', 'P', 'S', 'N', 'A', 'P', '1'};
constexpr uint32_t kHeaderVersion = 1;
constexpr size_t kHeaderSize = 8 + 4 + 4 + 8 + 8 + 8 + 8 + 8 + 4 + 32 + 32 + 4;  // 128

template <typename T> void put(std::string &s, T v) {
  for (size_t i = 0; i < sizeof(T); i++) s.push_back(static_cast<char>((uint64_t(v) >> (8 * i)) & 0xff));
}
template <typename T> T get(const unsigned char *&p) {
  uint64_t v = 0;
  for (size_t i = 0; i < sizeof(T); i++) v |= uint64_t(p[i]) << (8 * i);
  p += sizeof(T);
  return static_cast<T>(v);
}
void put_str(std::string &s, const std::string &v, size_t n) {
  std::string f = v.substr(0, n);
  f.resize(n, '\0');
  s += f;
}
}  // namespace

Status write_snapshot(const std::string &path, const SnapshotMeta &meta,
                      const std::vector<dp::CapturedSlot> &records, uint64_t now_tsc, uint64_t tsc_hz) {
  std::string body;
  if (encode_records(records.data(), records.size(), meta.record_format, now_tsc, tsc_hz, &body) != 0)
    return InvalidArgument("snapshot: unknown record format " + std::to_string(meta.record_format));
  std::string h(kMagic, sizeof(kMagic));
  put<uint32_t>(h, kHeaderVersion);
  put<uint32_t>(h, meta.record_format);
  put<uint64_t>(h, meta.generation);
  put<uint64_t>(h, meta.epoch);
  put<uint64_t>(h, meta.clean_shutdown ? 1 : 0);
  put<uint64_t>(h, static_cast<uint64_t>(meta.created_unix_ns));
  put<uint64_t>(h, records.size());
  put<uint32_t>(h, crc32c(body.data(), body.size()));
  put_str(h, meta.software_version, 32);
  put_str(h, meta.node_id, 32);
  put<uint32_t>(h, crc32c(h.data(), h.size()));

  Status st = write_file_atomic(path, h + body, 0600);
  if (!st.ok()) return Status(st.code(), "snapshot: " + st.message());
  return Status::Ok();
}

Status read_snapshot(const std::string &path, uint32_t capacity, SnapshotMeta *meta,
                     std::vector<WireRecord> *records) {
  std::string all;
  Status st = read_file(path, &all);
  if (st.code() == Code::NOT_FOUND) return NotFound("no snapshot at " + path);
  if (!st.ok()) return Status(st.code(), "snapshot: " + st.message());
  if (all.size() < kHeaderSize) return Status(Code::DATA_LOSS, "snapshot " + path + ": truncated header");
  if (std::memcmp(all.data(), kMagic, sizeof(kMagic)) != 0)
    return Status(Code::DATA_LOSS, "snapshot " + path + ": not an ftpair snapshot (bad magic)");
  const auto *p = reinterpret_cast<const unsigned char *>(all.data()) + sizeof(kMagic);
  uint32_t hv = get<uint32_t>(p);
  if (hv != kHeaderVersion)
    return Status(Code::DATA_LOSS, "snapshot " + path + ": header version " + std::to_string(hv) + " unknown");
  meta->record_format = get<uint32_t>(p);
  meta->generation = get<uint64_t>(p);
  meta->epoch = get<uint64_t>(p);
  meta->clean_shutdown = get<uint64_t>(p) == 1;
  meta->created_unix_ns = static_cast<int64_t>(get<uint64_t>(p));
  meta->count = get<uint64_t>(p);
  uint32_t body_crc = get<uint32_t>(p);
  meta->software_version = std::string(reinterpret_cast<const char *>(p), strnlen(reinterpret_cast<const char *>(p), 32));
  p += 32;
  meta->node_id = std::string(reinterpret_cast<const char *>(p), strnlen(reinterpret_cast<const char *>(p), 32));
  p += 32;
  uint32_t header_crc = get<uint32_t>(p);
  if (crc32c(all.data(), kHeaderSize - 4) != header_crc)
    return Status(Code::DATA_LOSS, "snapshot " + path + ": header checksum mismatch (corrupt)");
  if (!format_supported(meta->record_format))
    return Status(Code::DATA_LOSS, "snapshot " + path + ": record format " + std::to_string(meta->record_format) +
                                       " is not readable by this build");
  if (meta->count > capacity)
    return Status(Code::DATA_LOSS, "snapshot " + path + ": " + std::to_string(meta->count) +
                                       " flows exceed this node's capacity " + std::to_string(capacity));
  std::string body = all.substr(kHeaderSize);
  std::string detail;
  // A record names the worker whose table held it (format 4); a restore homes every flow by
  // the restarted node's own rule, whatever its worker count now.
  DecodeError e = decode_records(body, meta->record_format, static_cast<uint32_t>(meta->count), body_crc, capacity,
                                 records, &detail, kMaxShards);
  if (e != DecodeError::OK)
    return Status(Code::DATA_LOSS, "snapshot " + path + ": " + decode_error_text(e) + " (" + detail + ")");
  return Status::Ok();
}

Status snapshot_usable(const SnapshotMeta &meta, uint64_t persisted_generation, uint64_t max_age_s,
                       int64_t now_unix_ns) {
  if (!meta.clean_shutdown)
    return FailedPrecondition("snapshot is not from a clean shutdown: the pair may have moved on since");
  if (meta.generation < persisted_generation)
    return FailedPrecondition("snapshot generation " + std::to_string(meta.generation) +
                              " is older than this node's generation " + std::to_string(persisted_generation) +
                              ": another node was active since");
  if (!format_supported(meta.record_format))
    return FailedPrecondition("snapshot record format " + std::to_string(meta.record_format) +
                              " is not readable by this build");
  int64_t age_s = (now_unix_ns - meta.created_unix_ns) / 1000000000;
  if (age_s < 0) return FailedPrecondition("snapshot is dated in the future (clock moved back?)");
  if (uint64_t(age_s) > max_age_s)
    return FailedPrecondition("snapshot is " + std::to_string(age_s) + " s old, more than the " +
                              std::to_string(max_age_s) + " s allowed");
  return Status::Ok();
}

Status restore_snapshot(const std::vector<WireRecord> &records, dp::FlowTable &flows, uint64_t now_tsc,
                        uint64_t tsc_hz) {
  return restore_snapshot(records, std::vector<dp::FlowTable *>{&flows}, nullptr, now_tsc, tsc_hz);
}

Status restore_snapshot(const std::vector<WireRecord> &records, const std::vector<dp::FlowTable *> &tables,
                        const std::function<unsigned(const dp::FlowState &)> &home, uint64_t now_tsc,
                        uint64_t tsc_hz) {
  for (const auto &w : records) {
    if (!w.slot.in_use) continue;
    const uint64_t idle = uint64_t(w.idle_ms) * tsc_hz / 1000;
    const unsigned t = home ? home(w.slot.st) : 0;
    if (t >= tables.size()) return Internal("snapshot restore: a flow homed on worker " + std::to_string(t) + " of " +
                                            std::to_string(tables.size()));
    // Same layout as written: the same slot; another worker count: any free one.
    int rc = tables[t]->place(w.slot.st, w.slot.slot, now_tsc > idle ? now_tsc - idle : 0);
    if (rc < 0)
      return Internal("snapshot restore: shard " + std::to_string(w.slot.shard) + " slot " +
                      std::to_string(w.slot.slot) + " refused by worker " + std::to_string(t) + " (" +
                      std::to_string(rc) + ")");
  }
  return Status::Ok();
}

}  // namespace ftpair::ckpt
