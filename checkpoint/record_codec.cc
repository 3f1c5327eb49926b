#include "checkpoint/record_codec.h"

#include <cerrno>
#include <cstring>
#include <netinet/in.h>

#include <rte_hash_crc.h>

namespace ftpair::ckpt {

namespace {
inline void put32(char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}
inline uint32_t get32(const unsigned char *p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

// Addresses and ports travel as the bytes on the wire (network order): copy them as is.
inline void put_raw(char *p, const void *v, size_t n) { std::memcpy(p, v, n); }
template <typename T> inline T get_raw(const unsigned char *p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
constexpr uint8_t kKnownFlags = dp::kFlowKnownFlags;
}  // namespace

uint32_t record_size(uint32_t format) {
  switch (format) {
    case kRecordFormatV1: return 32;
    case kRecordFormatV2: return 40;
    case kRecordFormatV3: return 48;
    case kRecordFormatV4: return 48;
    default: return 0;
  }
}

bool format_supported(uint32_t format) { return record_size(format) != 0; }

uint32_t crc32c(const void *data, size_t len, uint32_t seed) {
  return rte_hash_crc(data, static_cast<uint32_t>(len), seed);
}

int encode_records(const dp::CapturedSlot *recs, size_t n, uint32_t format, uint64_t now_tsc,
                   uint64_t tsc_hz, std::string *out, uint32_t shard_capacity) {
  const uint32_t size = record_size(format);
  if (size == 0) return -EINVAL;
  if (format < kRecordFormatV4) {
    for (size_t i = 0; i < n; i++)
      if (recs[i].shard && (!shard_capacity || uint64_t(recs[i].shard) * shard_capacity + recs[i].slot > UINT32_MAX))
        return -EINVAL;
  }
  size_t base = out->size();
  out->resize(base + n * size);
  char *p = out->data() + base;
  for (size_t i = 0; i < n; i++, p += size) {
    const dp::CapturedSlot &c = recs[i];
    std::memset(p, 0, size);
    if (format >= kRecordFormatV4) {
      put32(p, c.slot);
      p[29] = static_cast<char>(c.shard);
    } else {
      put32(p, c.shard * shard_capacity + c.slot);
    }
    if (c.in_use) {
      p[4] = 1;
      p[5] = static_cast<char>(c.st.proto);
      p[6] = static_cast<char>(c.st.tcp_state);
      p[7] = static_cast<char>(c.st.flags);
      put_raw(p + 8, &c.st.in_ip, 4);
      put_raw(p + 12, &c.st.ext_ip, 4);
      put_raw(p + 16, &c.st.nat_ip, 4);
      put_raw(p + 20, &c.st.in_port, 2);
      put_raw(p + 22, &c.st.ext_port, 2);
      put_raw(p + 24, &c.st.nat_port, 2);
      if (format >= kRecordFormatV2) {
        // Split the division so a long idle time cannot overflow ticks x 1000 and wrap; an
        // idle time past the field's range (49 days) is clamped before the multiply.
        uint64_t idle = 0;
        if (now_tsc > c.last_seen_tsc && tsc_hz) {
          const uint64_t d = now_tsc - c.last_seen_tsc, secs = d / tsc_hz;
          idle = secs > UINT32_MAX / 1000 ? UINT32_MAX : secs * 1000 + d % tsc_hz * 1000 / tsc_hz;
        }
        put32(p + 32, idle > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(idle));
      }
      if (format >= kRecordFormatV3) {
        p[26] = static_cast<char>(c.st.tcp_wscale);
        p[27] = static_cast<char>(c.st.tcp_win_log[0]);
        p[28] = static_cast<char>(c.st.tcp_win_log[1]);
        put32(p + 40, c.st.tcp_end[0]);
        put32(p + 44, c.st.tcp_end[1]);
      }
    }
  }
  return 0;
}

const char *decode_error_text(DecodeError e) {
  switch (e) {
    case DecodeError::OK: return "ok";
    case DecodeError::UNKNOWN_FORMAT: return "unknown record format";
    case DecodeError::BAD_LENGTH: return "batch length does not match count x record size";
    case DecodeError::BAD_CRC: return "batch CRC32C mismatch (corrupt)";
    case DecodeError::BAD_FIELD: return "record field out of range";
    case DecodeError::SLOT_RANGE: return "slot beyond the flow table capacity";
    case DecodeError::SHARD_RANGE: return "shard beyond the active's workers";
  }
  return "unknown";
}

DecodeError decode_records(const std::string &bytes, uint32_t format, uint32_t count, uint32_t crc,
                           uint32_t capacity, std::vector<WireRecord> *out, std::string *detail,
                           uint32_t shards) {
  const uint32_t size = record_size(format);
  if (size == 0) {
    *detail = "format " + std::to_string(format);
    return DecodeError::UNKNOWN_FORMAT;
  }
  if (uint64_t(count) * size != bytes.size()) {
    *detail = std::to_string(bytes.size()) + " bytes for " + std::to_string(count) + " records of " +
              std::to_string(size);
    return DecodeError::BAD_LENGTH;
  }
  uint32_t got = crc32c(bytes.data(), bytes.size());
  if (got != crc) {
    *detail = "expected " + std::to_string(crc) + ", computed " + std::to_string(got);
    return DecodeError::BAD_CRC;
  }
  const auto *p = reinterpret_cast<const unsigned char *>(bytes.data());
  out->reserve(out->size() + count);
  for (uint32_t i = 0; i < count; i++, p += size) {
    WireRecord w{};
    w.slot.slot = get32(p);
    if (w.slot.slot >= capacity) {
      *detail = "record " + std::to_string(i) + ": slot " + std::to_string(w.slot.slot) + " >= capacity " +
                std::to_string(capacity);
      return DecodeError::SLOT_RANGE;
    }
    if (format >= kRecordFormatV4) {
      w.slot.shard = p[29];
      if (w.slot.shard >= shards) {
        *detail = "record " + std::to_string(i) + ": shard " + std::to_string(w.slot.shard) + ", the active has " +
                  std::to_string(shards);
        return DecodeError::SHARD_RANGE;
      }
      if (p[30] || p[31]) {
        *detail = "record " + std::to_string(i) + ": reserved bytes 30..31 not zero";
        return DecodeError::BAD_FIELD;
      }
    }
    const uint8_t in_use = p[4];
    if (in_use > 1) {
      *detail = "record " + std::to_string(i) + ": in_use " + std::to_string(in_use);
      return DecodeError::BAD_FIELD;
    }
    w.slot.in_use = in_use;
    if (in_use) {
      dp::FlowState &s = w.slot.st;
      s.proto = p[5];
      s.tcp_state = p[6];
      s.flags = p[7];
      s.in_ip = get_raw<uint32_t>(p + 8);
      s.ext_ip = get_raw<uint32_t>(p + 12);
      s.nat_ip = get_raw<uint32_t>(p + 16);
      s.in_port = get_raw<uint16_t>(p + 20);
      s.ext_port = get_raw<uint16_t>(p + 22);
      s.nat_port = get_raw<uint16_t>(p + 24);
      bool proto_ok = s.proto == IPPROTO_TCP || s.proto == IPPROTO_UDP || s.proto == IPPROTO_ICMP;
      bool state_ok = s.proto == IPPROTO_TCP ? (s.tcp_state >= 1 && s.tcp_state <= 6) : s.tcp_state == 0;
      if (!proto_ok || !state_ok || (s.flags & ~kKnownFlags) || !(s.flags & dp::kFlowInUse)) {
        *detail = "record " + std::to_string(i) + ": proto " + std::to_string(s.proto) + " state " +
                  std::to_string(s.tcp_state) + " flags " + std::to_string(s.flags);
        return DecodeError::BAD_FIELD;
      }
      if (format >= kRecordFormatV2) w.idle_ms = get32(p + 32);
      if (format >= kRecordFormatV3) {
        s.tcp_wscale = p[26];
        s.tcp_win_log[0] = p[27];
        s.tcp_win_log[1] = p[28];
        s.tcp_end[0] = get32(p + 40);
        s.tcp_end[1] = get32(p + 44);
        if (s.tcp_win_log[0] > 31 || s.tcp_win_log[1] > 31) {
          *detail = "record " + std::to_string(i) + ": window log " + std::to_string(s.tcp_win_log[0]) + "/" +
                    std::to_string(s.tcp_win_log[1]);
          return DecodeError::BAD_FIELD;
        }
      }
    }
    out->push_back(w);
  }
  return DecodeError::OK;
}

}  // namespace ftpair::ckpt
