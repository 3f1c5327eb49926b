// Record codec (formats 1 and 2), the capture encoder and version negotiation.
#include <netinet/in.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "checkpoint/capture_encoder.h"
#include "checkpoint/record_codec.h"
#include "checkpoint/version.h"

namespace ftpair::ckpt {
namespace {

constexpr uint64_t kHz = 2'000'000'000ull;  // a fixed 2 GHz TSC keeps expectations exact
constexpr uint32_t kCapacity = 4096;

dp::FlowState random_state(std::mt19937_64 &rng) {
  static const uint8_t protos[] = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP};
  dp::FlowState s{};
  s.in_ip = static_cast<uint32_t>(rng());
  s.ext_ip = static_cast<uint32_t>(rng());
  s.nat_ip = static_cast<uint32_t>(rng());
  s.in_port = static_cast<uint16_t>(rng());
  s.ext_port = static_cast<uint16_t>(rng());
  s.nat_port = static_cast<uint16_t>(rng());
  s.proto = protos[rng() % 3];
  s.tcp_state = s.proto == IPPROTO_TCP ? static_cast<uint8_t>(1 + rng() % 6) : 0;
  s.flags = static_cast<uint8_t>(dp::kFlowInUse | (rng() & (dp::kFlowPortForward | dp::kFlowFinFromInside |
                                                          dp::kFlowFinFromOutside | dp::kFlowReplied |
                                                          dp::kFlowInbound)));
  if (s.proto == IPPROTO_TCP) {  // window tracking (format 3 and later)
    s.tcp_wscale = static_cast<uint8_t>(rng());
    s.tcp_win_log[0] = static_cast<uint8_t>(rng() % 32);
    s.tcp_win_log[1] = static_cast<uint8_t>(rng() % 32);
    s.tcp_end[0] = static_cast<uint32_t>(rng());
    s.tcp_end[1] = static_cast<uint32_t>(rng());
  }
  return s;
}

// What a format keeps of a state: before format 3, no TCP window state.
dp::FlowState as_in_format(dp::FlowState s, uint32_t format) {
  if (format < kRecordFormatV3) {
    s.tcp_wscale = 0;
    s.tcp_win_log[0] = s.tcp_win_log[1] = 0;
    s.tcp_end[0] = s.tcp_end[1] = 0;
  }
  return s;
}

// Random captured slots: ~20% deletions; last-seen up to 100 s before now (a few in the future).
std::vector<dp::CapturedSlot> random_slots(std::mt19937_64 &rng, size_t n, uint64_t now_tsc) {
  std::vector<dp::CapturedSlot> v;
  for (size_t i = 0; i < n; i++) {
    dp::CapturedSlot c{};
    c.slot = static_cast<uint32_t>(rng() % kCapacity);
    c.in_use = rng() % 5 != 0;
    if (c.in_use) {
      c.st = random_state(rng);
      c.last_seen_tsc = rng() % 10 == 0 ? now_tsc + rng() % kHz : now_tsc - rng() % (100 * kHz);
    }
    v.push_back(c);
  }
  return v;
}

uint32_t expected_idle_ms(uint64_t now, uint64_t last, uint64_t hz = kHz) {
  if (last >= now) return 0;
  unsigned __int128 ms = static_cast<unsigned __int128>(now - last) * 1000 / hz;
  return ms > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(ms);
}

struct Encoded {
  std::string bytes;
  uint32_t crc;
};

Encoded encode(const std::vector<dp::CapturedSlot> &v, uint32_t format, uint64_t now) {
  Encoded e;
  EXPECT_EQ(encode_records(v.data(), v.size(), format, now, kHz, &e.bytes), 0);
  e.crc = crc32c(e.bytes.data(), e.bytes.size());
  return e;
}

DecodeError decode(const Encoded &e, uint32_t format, uint32_t count, std::vector<WireRecord> *out,
                   std::string *detail, uint32_t capacity = kCapacity) {
  return decode_records(e.bytes, format, count, e.crc, capacity, out, detail);
}

class CodecRoundTrip : public ::testing::TestWithParam<uint32_t> {};

TEST_P(CodecRoundTrip, RandomRecordsSurvive) {
  const uint32_t format = GetParam();
  const uint64_t now = 1'000'000 * kHz;
  for (uint64_t seed : {1ull, 2ull, 3ull, 42ull}) {
    std::mt19937_64 rng(seed);
    auto slots = random_slots(rng, 500, now);
    Encoded e = encode(slots, format, now);
    ASSERT_EQ(e.bytes.size(), slots.size() * record_size(format));
    std::vector<WireRecord> out;
    std::string detail;
    ASSERT_EQ(decode(e, format, static_cast<uint32_t>(slots.size()), &out, &detail), DecodeError::OK) << detail;
    ASSERT_EQ(out.size(), slots.size());
    size_t deletions = 0;
    for (size_t i = 0; i < slots.size(); i++) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " record " + std::to_string(i));
      EXPECT_EQ(out[i].slot.slot, slots[i].slot);
      EXPECT_EQ(out[i].slot.in_use, slots[i].in_use);
      if (slots[i].in_use) {
        EXPECT_TRUE(out[i].slot.st == as_in_format(slots[i].st, format));
        EXPECT_EQ(out[i].idle_ms, format >= kRecordFormatV2 ? expected_idle_ms(now, slots[i].last_seen_tsc) : 0u);
      } else {
        deletions++;
        EXPECT_TRUE(out[i].slot.st == dp::FlowState{});
        EXPECT_EQ(out[i].idle_ms, 0u);
      }
      // last_seen_tsc is not on the wire.
      EXPECT_EQ(out[i].slot.last_seen_tsc, 0u);
    }
    EXPECT_GT(deletions, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, CodecRoundTrip,
                         ::testing::Values(kRecordFormatV1, kRecordFormatV2, kRecordFormatV3, kRecordFormatV4));

/* Several workers' records in one stream. Format 4 carries (shard, slot), a deletion
 * included; an older format carries the global slot shard x shard_capacity + slot, which
 * decodes as shard 0. Refused: a shard past the active's count (its own error), nonzero
 * reserved bytes, and a record of shard > 0 for an older format without a shard capacity. */
TEST(Codec, ShardsTravelInFormat4AndAsGlobalSlotsBefore) {
  const uint64_t now = 1'000'000 * kHz;
  std::mt19937_64 rng(7);
  auto slots = random_slots(rng, 400, now);
  constexpr uint32_t kShards = 4, kShardCap = kCapacity / kShards;
  for (size_t i = 0; i < slots.size(); i++) {
    slots[i].shard = static_cast<uint8_t>(i % kShards);
    slots[i].slot %= kShardCap;
  }
  std::string bytes;
  ASSERT_EQ(encode_records(slots.data(), slots.size(), kRecordFormatV4, now, kHz, &bytes), 0);
  std::vector<WireRecord> out;
  std::string detail;
  const uint32_t crc = crc32c(bytes.data(), bytes.size());
  ASSERT_EQ(decode_records(bytes, kRecordFormatV4, uint32_t(slots.size()), crc, kShardCap, &out, &detail, kShards),
            DecodeError::OK)
      << detail;
  for (size_t i = 0; i < slots.size(); i++) {
    EXPECT_EQ(out[i].slot.shard, slots[i].shard) << i;
    EXPECT_EQ(out[i].slot.slot, slots[i].slot) << i;
    EXPECT_EQ(out[i].slot.in_use, slots[i].in_use) << i;
  }
  // A reader that knows fewer shards than the records name refuses with the shard's error.
  out.clear();
  EXPECT_EQ(decode_records(bytes, kRecordFormatV4, uint32_t(slots.size()), crc, kShardCap, &out, &detail, kShards - 1),
            DecodeError::SHARD_RANGE);
  EXPECT_NE(detail.find("shard 3"), std::string::npos) << detail;
  // The reserved bytes after the shard must be zero.
  std::string bad = bytes;
  bad[30] = 1;
  out.clear();
  EXPECT_EQ(decode_records(bad, kRecordFormatV4, uint32_t(slots.size()), crc32c(bad.data(), bad.size()), kShardCap,
                           &out, &detail, kShards),
            DecodeError::BAD_FIELD);
  // Format 3: global slots, within the whole capacity.
  bytes.clear();
  ASSERT_EQ(encode_records(slots.data(), slots.size(), kRecordFormatV3, now, kHz, &bytes, kShardCap), 0);
  out.clear();
  ASSERT_EQ(decode_records(bytes, kRecordFormatV3, uint32_t(slots.size()), crc32c(bytes.data(), bytes.size()),
                           kCapacity, &out, &detail),
            DecodeError::OK)
      << detail;
  for (size_t i = 0; i < slots.size(); i++) {
    EXPECT_EQ(out[i].slot.shard, 0u) << i;
    EXPECT_EQ(out[i].slot.slot, slots[i].shard * kShardCap + slots[i].slot) << i;
  }
  // Without a shard capacity an older format cannot say where shard 1's records go.
  bytes.clear();
  EXPECT_EQ(encode_records(slots.data(), slots.size(), kRecordFormatV3, now, kHz, &bytes), -EINVAL);
  EXPECT_TRUE(bytes.empty());
}

TEST(Codec, SizesAndSupport) {
  EXPECT_EQ(record_size(1), 32u);
  EXPECT_EQ(record_size(2), 40u);
  EXPECT_EQ(record_size(0), 0u);
  EXPECT_EQ(record_size(3), 48u);
  EXPECT_EQ(record_size(4), 48u);
  EXPECT_EQ(record_size(5), 0u);
  EXPECT_TRUE(format_supported(1));
  EXPECT_TRUE(format_supported(2));
  EXPECT_TRUE(format_supported(3));
  EXPECT_TRUE(format_supported(4));
  EXPECT_FALSE(format_supported(0));
  EXPECT_FALSE(format_supported(5));
}

// The wire layout is a cross-version contract: check it byte by byte.
TEST(Codec, ByteLayoutIsStable) {
  dp::CapturedSlot c{};
  c.slot = 0x01020304;
  c.in_use = 1;
  c.st.proto = IPPROTO_TCP;
  c.st.tcp_state = 3;
  c.st.flags = dp::kFlowInUse | dp::kFlowReplied;
  c.st.in_ip = htonl(0x0a000001);
  c.st.ext_ip = htonl(0xc6336401);
  c.st.nat_ip = htonl(0xcb007101);
  c.st.in_port = htons(40000);
  c.st.ext_port = htons(443);
  c.st.nat_port = htons(50000);
  const uint64_t now = 100 * kHz;
  c.last_seen_tsc = now - 3 * kHz / 2;  // 1500 ms idle
  std::string b1, b2;
  ASSERT_EQ(encode_records(&c, 1, 1, now, kHz, &b1), 0);
  ASSERT_EQ(encode_records(&c, 1, 2, now, kHz, &b2), 0);
  ASSERT_EQ(b1.size(), 32u);
  ASSERT_EQ(b2.size(), 40u);
  const unsigned char exp1[32] = {0x04, 0x03, 0x02, 0x01, 1, IPPROTO_TCP, 3, 0x11,
                                  10, 0, 0, 1, 198, 51, 100, 1, 203, 0, 113, 1,
                                  0x9c, 0x40, 0x01, 0xbb, 0xc3, 0x50, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(std::memcmp(b1.data(), exp1, 32), 0);
  EXPECT_EQ(std::memcmp(b2.data(), exp1, 32), 0) << "format 2 starts with format 1";
  const unsigned char idle[8] = {0xdc, 0x05, 0, 0, 0, 0, 0, 0};  // 1500 LE, reserved 0
  EXPECT_EQ(std::memcmp(b2.data() + 32, idle, 8), 0);
  // Format 3: format 2 plus the TCP window state in the reserved bytes and at the end.
  c.st.tcp_wscale = 0x7e;
  c.st.tcp_win_log[0] = 16;
  c.st.tcp_win_log[1] = 20;
  c.st.tcp_end[0] = 0x11223344;
  c.st.tcp_end[1] = 0x55667788;
  std::string b3;
  ASSERT_EQ(encode_records(&c, 1, 3, now, kHz, &b3), 0);
  ASSERT_EQ(b3.size(), 48u);
  EXPECT_EQ(std::memcmp(b3.data(), exp1, 26), 0);
  const unsigned char win[6] = {0x7e, 16, 20, 0, 0, 0};
  EXPECT_EQ(std::memcmp(b3.data() + 26, win, 6), 0);
  EXPECT_EQ(std::memcmp(b3.data() + 32, idle, 8), 0);
  const unsigned char ends[8] = {0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55};
  EXPECT_EQ(std::memcmp(b3.data() + 40, ends, 8), 0);
  // Format 4: format 3 with the shard at byte 29.
  c.shard = 5;
  std::string b4;
  ASSERT_EQ(encode_records(&c, 1, 4, now, kHz, &b4), 0);
  ASSERT_EQ(b4.size(), 48u);
  std::string b3s = b3;
  b3s[29] = 5;
  EXPECT_EQ(b4, b3s);
  c.shard = 0;
  // encode appends.
  ASSERT_EQ(encode_records(&c, 1, 1, now, kHz, &b1), 0);
  EXPECT_EQ(b1.size(), 64u);
  EXPECT_EQ(b1.substr(0, 32), b1.substr(32));
}

TEST(Codec, IdleMsSaturatesInsteadOfWrapping) {
  dp::CapturedSlot c{};
  c.slot = 1;
  c.in_use = 1;
  std::mt19937_64 rng(7);
  c.st = random_state(rng);
  struct Case {
    uint64_t now, last, hz = kHz;
  } cases[] = {
      {uint64_t(1) << 62, 0},                                  // ~73 years of 2 GHz ticks
      {200ull * 86400 * kHz, 0},                               // 200 days idle
      {60ull * 86400 * kHz, 10 * kHz},                         // 60 days: > UINT32_MAX ms
      {49ull * 86400 * kHz + 7 * kHz, 7 * kHz},                // 49 days: fits exactly
      {5 * kHz, 6 * kHz},                                      // last seen "after" now
      {18446744073709552ull, 0, 1},                            // 1 Hz: ticks x 1000 would wrap to 384
  };
  for (const auto &k : cases) {
    c.last_seen_tsc = k.last;
    std::string b;
    ASSERT_EQ(encode_records(&c, 1, 2, k.now, k.hz, &b), 0);
    std::vector<WireRecord> out;
    std::string detail;
    ASSERT_EQ(decode_records(b, 2, 1, crc32c(b.data(), b.size()), kCapacity, &out, &detail), DecodeError::OK);
    EXPECT_EQ(out[0].idle_ms, expected_idle_ms(k.now, k.last, k.hz)) << "now " << k.now << " last " << k.last;
  }
}

TEST(Codec, EmptyBatch) {
  for (uint32_t f : {1u, 2u}) {
    Encoded e = encode({}, f, 0);
    EXPECT_TRUE(e.bytes.empty());
    std::vector<WireRecord> out;
    std::string detail;
    EXPECT_EQ(decode(e, f, 0, &out, &detail), DecodeError::OK);
    EXPECT_TRUE(out.empty());
  }
}

TEST(CodecReject, UnknownFormat) {
  std::mt19937_64 rng(3);
  auto slots = random_slots(rng, 4, kHz);
  std::string bytes;
  EXPECT_EQ(encode_records(slots.data(), slots.size(), 5, kHz, kHz, &bytes), -EINVAL);
  EXPECT_EQ(encode_records(slots.data(), slots.size(), 0, kHz, kHz, &bytes), -EINVAL);
  EXPECT_TRUE(bytes.empty());
  Encoded e = encode(slots, 1, kHz);
  for (uint32_t f : {0u, 5u, 99u}) {
    std::vector<WireRecord> out;
    std::string detail;
    EXPECT_EQ(decode(e, f, 4, &out, &detail), DecodeError::UNKNOWN_FORMAT);
    EXPECT_NE(detail.find(std::to_string(f)), std::string::npos) << detail;
    EXPECT_TRUE(out.empty());
  }
}

TEST(CodecReject, LengthMismatch) {
  std::mt19937_64 rng(4);
  auto slots = random_slots(rng, 10, kHz);
  for (uint32_t f : {1u, 2u}) {
    Encoded e = encode(slots, f, kHz);
    std::vector<WireRecord> out;
    std::string detail;
    EXPECT_EQ(decode(e, f, 11, &out, &detail), DecodeError::BAD_LENGTH);
    EXPECT_EQ(decode(e, f, 9, &out, &detail), DecodeError::BAD_LENGTH);
    Encoded longer = e;
    longer.bytes.push_back('\0');
    longer.crc = crc32c(longer.bytes.data(), longer.bytes.size());
    EXPECT_EQ(decode(longer, f, 10, &out, &detail), DecodeError::BAD_LENGTH);
    // Format 1 bytes read as format 2 (or the reverse) do not fit the count.
    EXPECT_EQ(decode(e, f == 1 ? 2 : 1, 10, &out, &detail), DecodeError::BAD_LENGTH);
    // A count that would overflow 32-bit arithmetic.
    EXPECT_EQ(decode(e, f, 0x80000000u, &out, &detail), DecodeError::BAD_LENGTH);
    EXPECT_TRUE(out.empty());
  }
}

TEST(CodecReject, CrcMismatchOnAnyFlippedByte) {
  std::mt19937_64 rng(5);
  auto slots = random_slots(rng, 20, kHz);
  for (uint32_t f : {1u, 2u}) {
    Encoded e = encode(slots, f, kHz);
    for (size_t pos = 0; pos < e.bytes.size(); pos += 7) {
      Encoded bad = e;
      bad.bytes[pos] = static_cast<char>(bad.bytes[pos] ^ 0x01);
      std::vector<WireRecord> out;
      std::string detail;
      EXPECT_EQ(decode(bad, f, 20, &out, &detail), DecodeError::BAD_CRC) << "byte " << pos;
      EXPECT_TRUE(out.empty());
    }
    Encoded bad = e;
    bad.crc ^= 0x80000000u;
    std::vector<WireRecord> out;
    std::string detail;
    EXPECT_EQ(decode(bad, f, 20, &out, &detail), DecodeError::BAD_CRC);
  }
}

TEST(CodecReject, SlotBeyondCapacity) {
  std::mt19937_64 rng(6);
  std::vector<dp::CapturedSlot> slots(3);
  for (auto &c : slots) {
    c.in_use = 1;
    c.st = random_state(rng);
  }
  slots[0].slot = 0;
  slots[1].slot = 99;
  slots[2].slot = 15;
  Encoded e = encode(slots, 2, kHz);
  std::vector<WireRecord> out;
  std::string detail;
  EXPECT_EQ(decode(e, 2, 3, &out, &detail, 100), DecodeError::OK);  // 99 < 100
  out.clear();
  EXPECT_EQ(decode(e, 2, 3, &out, &detail, 99), DecodeError::SLOT_RANGE);
  EXPECT_NE(detail.find("record 1"), std::string::npos) << detail;
  slots[1].slot = UINT32_MAX;
  slots[1].in_use = 0;  // a deletion is range-checked too
  e = encode(slots, 1, kHz);
  EXPECT_EQ(decode(e, 1, 3, &out, &detail, kCapacity), DecodeError::SLOT_RANGE);
}

// Patches one byte of record `rec` and fixes the CRC, so only the field check can refuse it.
DecodeError decode_patched(uint32_t format, size_t rec, size_t off, uint8_t value, uint8_t proto,
                           std::string *detail) {
  std::mt19937_64 rng(9);
  std::vector<dp::CapturedSlot> slots(4);
  for (uint32_t i = 0; i < slots.size(); i++) {
    slots[i].slot = i;
    slots[i].in_use = 1;
    slots[i].st = random_state(rng);
    slots[i].st.proto = proto;
    slots[i].st.tcp_state = proto == IPPROTO_TCP ? 3 : 0;
  }
  Encoded e = encode(slots, format, kHz);
  e.bytes[rec * record_size(format) + off] = static_cast<char>(value);
  e.crc = crc32c(e.bytes.data(), e.bytes.size());
  std::vector<WireRecord> out;
  return decode(e, format, 4, &out, detail);
}

TEST(CodecReject, BadFields) {
  for (uint32_t f : {1u, 2u}) {
    SCOPED_TRACE("format " + std::to_string(f));
    std::string d;
    EXPECT_EQ(decode_patched(f, 2, 5, IPPROTO_TCP, IPPROTO_TCP, &d), DecodeError::OK) << d;  // control
    EXPECT_EQ(decode_patched(f, 2, 5, 99, IPPROTO_UDP, &d), DecodeError::BAD_FIELD);         // proto 99
    EXPECT_NE(d.find("record 2"), std::string::npos) << d;
    EXPECT_NE(d.find("proto 99"), std::string::npos) << d;
    EXPECT_EQ(decode_patched(f, 1, 5, 0, IPPROTO_UDP, &d), DecodeError::BAD_FIELD);           // proto 0
    EXPECT_EQ(decode_patched(f, 1, 6, 9, IPPROTO_TCP, &d), DecodeError::BAD_FIELD);           // tcp_state 9
    EXPECT_NE(d.find("state 9"), std::string::npos) << d;
    EXPECT_EQ(decode_patched(f, 1, 6, 7, IPPROTO_TCP, &d), DecodeError::BAD_FIELD);           // tcp_state 7
    EXPECT_EQ(decode_patched(f, 1, 6, 0, IPPROTO_TCP, &d), DecodeError::BAD_FIELD);           // TCP without state
    EXPECT_EQ(decode_patched(f, 1, 6, 6, IPPROTO_TCP, &d), DecodeError::OK) << d;             // CLOSED is valid
    EXPECT_EQ(decode_patched(f, 1, 6, 3, IPPROTO_UDP, &d), DecodeError::BAD_FIELD);           // UDP with a state
    EXPECT_EQ(decode_patched(f, 0, 7, dp::kFlowInUse | 0x80, IPPROTO_UDP, &d), DecodeError::BAD_FIELD);
    EXPECT_EQ(decode_patched(f, 0, 7, dp::kFlowInUse | 0x40, IPPROTO_ICMP, &d), DecodeError::BAD_FIELD);
    EXPECT_EQ(decode_patched(f, 0, 7, dp::kFlowInUse | dp::kFlowInbound, IPPROTO_UDP, &d), DecodeError::OK) << d;
    EXPECT_EQ(decode_patched(f, 0, 7, dp::kFlowReplied, IPPROTO_ICMP, &d), DecodeError::BAD_FIELD);  // no in-use flag
    EXPECT_EQ(decode_patched(f, 3, 4, 2, IPPROTO_UDP, &d), DecodeError::BAD_FIELD);           // in_use 2
    EXPECT_NE(d.find("in_use 2"), std::string::npos) << d;
    EXPECT_EQ(decode_patched(f, 3, 4, 0xff, IPPROTO_UDP, &d), DecodeError::BAD_FIELD);
  }
}

TEST(CodecReject, ErrorTextsAreDistinct) {
  std::vector<std::string> seen;
  for (DecodeError e : {DecodeError::OK, DecodeError::UNKNOWN_FORMAT, DecodeError::BAD_LENGTH, DecodeError::BAD_CRC,
                        DecodeError::BAD_FIELD, DecodeError::SLOT_RANGE}) {
    std::string t = decode_error_text(e);
    EXPECT_FALSE(t.empty());
    for (const auto &s : seen) EXPECT_NE(s, t);
    seen.push_back(t);
  }
}

// ---------------------------------------------------------------- versions

VersionRange range(uint32_t lo, uint32_t hi, std::vector<uint32_t> formats) {
  VersionRange v;
  v.protocol_min = lo;
  v.protocol_max = hi;
  v.record_formats = std::move(formats);
  return v;
}

class EnvGuard {
 public:
  explicit EnvGuard(const char *value) {
    if (const char *old = std::getenv(kName)) old_ = old, had_ = true;
    if (value)
      setenv(kName, value, 1);
    else
      unsetenv(kName);
  }
  ~EnvGuard() {
    if (had_)
      setenv(kName, old_.c_str(), 1);
    else
      unsetenv(kName);
  }

 private:
  static constexpr const char *kName = "FTPAIR_RECORD_FORMAT_MAX";
  std::string old_;
  bool had_ = false;
};

TEST(Version, LocalVersions) {
  EnvGuard g(nullptr);
  VersionRange v = local_versions();
  EXPECT_EQ(v.protocol_min, kProtocolVersionMin);
  EXPECT_EQ(v.protocol_max, kProtocolVersionMax);
  EXPECT_EQ(v.record_formats, (std::vector<uint32_t>{4, 3, 2, 1}));
  {
    EnvGuard prev("1");
    EXPECT_EQ(local_versions().record_formats, (std::vector<uint32_t>{1}));
  }
  {
    EnvGuard junk("7");  // unsupported: ignored
    EXPECT_EQ(local_versions().record_formats, (std::vector<uint32_t>{4, 3, 2, 1}));
  }
}

TEST(Version, CompatiblePicksHighestCommon) {
  Negotiated n;
  std::string why;
  ASSERT_TRUE(negotiate(range(1, 1, {2, 1}), range(1, 1, {2, 1}), &n, &why)) << why;
  EXPECT_EQ(n.protocol, 1u);
  EXPECT_EQ(n.record_format, 2u);
  // A newer peer that still speaks our versions.
  ASSERT_TRUE(negotiate(range(1, 2, {2, 1}), range(1, 5, {4, 3, 2, 1}), &n, &why)) << why;
  EXPECT_EQ(n.protocol, 2u);
  EXPECT_EQ(n.record_format, 2u);
  // Order of the lists does not matter.
  ASSERT_TRUE(negotiate(range(1, 3, {1, 3, 2}), range(2, 4, {2, 3}), &n, &why)) << why;
  EXPECT_EQ(n.protocol, 3u);
  EXPECT_EQ(n.record_format, 3u);
}

TEST(Version, PeerTooOld) {
  Negotiated n{};
  std::string why;
  EXPECT_FALSE(negotiate(range(2, 3, {2, 1}), range(1, 1, {2, 1}), &n, &why));
  EXPECT_NE(why.find("too old"), std::string::npos) << why;
  EXPECT_NE(why.find("protocol 1..1"), std::string::npos) << why;
  EXPECT_NE(why.find("protocol 2..3"), std::string::npos) << why;
  EXPECT_EQ(n.record_format, 0u);
  why.clear();
  EXPECT_FALSE(negotiate(range(1, 1, {3, 2}), range(1, 1, {1}), &n, &why));
  EXPECT_NE(why.find("too old"), std::string::npos) << why;
  EXPECT_NE(why.find("[1]"), std::string::npos) << why;
  EXPECT_NE(why.find("[3,2]"), std::string::npos) << why;
}

TEST(Version, PeerTooNew) {
  Negotiated n{};
  std::string why;
  EXPECT_FALSE(negotiate(range(1, 1, {2, 1}), range(2, 4, {3}), &n, &why));
  EXPECT_NE(why.find("too new"), std::string::npos) << why;
  EXPECT_NE(why.find("peer speaks protocol 2..4, record formats [3]"), std::string::npos) << why;
  EXPECT_NE(why.find("this node speaks protocol 1..1, record formats [2,1]"), std::string::npos) << why;
  why.clear();
  EXPECT_FALSE(negotiate(range(1, 1, {2, 1}), range(1, 1, {4, 3}), &n, &why));
  EXPECT_NE(why.find("no common record format"), std::string::npos) << why;
  EXPECT_NE(why.find("too new"), std::string::npos) << why;
  EXPECT_NE(why.find("[4,3]"), std::string::npos) << why;
  EXPECT_NE(why.find("[2,1]"), std::string::npos) << why;
}

TEST(Version, PreviousReleaseNegotiatesFormat1BothWays) {
  VersionRange prev, cur;
  {
    EnvGuard g("1");
    prev = local_versions();
  }
  {
    EnvGuard g(nullptr);
    cur = local_versions();
  }
  ASSERT_EQ(prev.record_formats, (std::vector<uint32_t>{1}));
  ASSERT_EQ(cur.record_formats, (std::vector<uint32_t>{4, 3, 2, 1}));
  Negotiated a, b;
  std::string why;
  ASSERT_TRUE(negotiate(cur, prev, &a, &why)) << why;   // this build is the standby
  ASSERT_TRUE(negotiate(prev, cur, &b, &why)) << why;   // the previous release is the standby
  EXPECT_EQ(a.record_format, 1u);
  EXPECT_EQ(b.record_format, 1u);
  EXPECT_EQ(a.protocol, b.protocol);
}

// Records crossing releases: what one side writes in the negotiated format, the other reads.
TEST(Version, RecordsTranslateAcrossFormats) {
  std::mt19937_64 rng(11);
  const uint64_t now = 500 * kHz;
  auto slots = random_slots(rng, 200, now);
  // Written in format 1 (the previous release, or this build talking to it), read by a
  // reader that knows format 2: same states, idle 0.
  Encoded v1 = encode(slots, 1, now);
  std::vector<WireRecord> r1;
  std::string d;
  ASSERT_EQ(decode(v1, 1, 200, &r1, &d), DecodeError::OK) << d;
  // Written in format 2 by this build, read by this build: states and idle preserved.
  Encoded v2 = encode(slots, 2, now);
  std::vector<WireRecord> r2;
  ASSERT_EQ(decode(v2, 2, 200, &r2, &d), DecodeError::OK) << d;
  // A format-2 record translated down: re-encode what a format-2 reader got in format 1 for
  // an old reader; the result is byte-identical to writing format 1 directly.
  std::vector<dp::CapturedSlot> back;
  for (const auto &w : r2) back.push_back(w.slot);
  Encoded down = encode(back, 1, now);
  EXPECT_EQ(down.bytes, v1.bytes);
  // And format 1 translated up loses only idle_ms.
  std::vector<dp::CapturedSlot> up;
  for (const auto &w : r1) {
    dp::CapturedSlot c = w.slot;
    c.last_seen_tsc = now;  // idle 0
    up.push_back(c);
  }
  Encoded upb = encode(up, 2, now);
  std::vector<WireRecord> r3;
  ASSERT_EQ(decode(upb, 2, 200, &r3, &d), DecodeError::OK) << d;
  for (size_t i = 0; i < slots.size(); i++) {
    EXPECT_EQ(r1[i].slot.slot, slots[i].slot);
    EXPECT_EQ(r1[i].slot.in_use, slots[i].in_use);
    EXPECT_EQ(r1[i].idle_ms, 0u);
    EXPECT_EQ(r2[i].slot.slot, slots[i].slot);
    EXPECT_TRUE(r2[i].slot.st == r1[i].slot.st);
    EXPECT_TRUE(r3[i].slot.st == r1[i].slot.st);
    EXPECT_EQ(r3[i].idle_ms, 0u);
    if (slots[i].in_use) {
      EXPECT_EQ(r2[i].idle_ms, expected_idle_ms(now, slots[i].last_seen_tsc));
    }
  }
}


// The capture encoder: the engine's messages for one stream.
std::vector<WireRecord> decode_all(const std::vector<v1::SyncMessage> &msgs) {
  std::vector<WireRecord> out;
  for (const auto &m : msgs)
    for (const auto &b : m.checkpoint().batches()) {
      std::string d;
      EXPECT_EQ(decode_records(b.records(), b.format(), b.count(), b.crc32c(), kCapacity, &out, &d), DecodeError::OK)
          << d;
    }
  return out;
}

TEST(CaptureEncoder, FullSyncInChunks) {
  std::mt19937_64 rng(11);
  const uint64_t now = 1'000 * kHz;
  const auto slots = random_slots(rng, 25, now);
  uint64_t live = 0;
  for (const auto &c : slots) live += c.in_use;
  CaptureHeader h;
  h.epoch = 7;
  h.generation = 3;
  h.full = true;
  h.format = kRecordFormatV2;
  h.chunk_records = 10;
  h.now_tsc = now;
  h.tsc_hz = kHz;
  h.captured_unix_ns = 123;
  h.has_log_sequence = true;
  h.log_sequence = 0xFFFFFFFEu;
  h.has_fingerprint = true;
  h.fingerprint = 0x8000000000000001ull;
  std::vector<v1::SyncMessage> msgs;
  ASSERT_TRUE(encode_capture(slots.data(), slots.size(), h, &msgs).ok());
  ASSERT_EQ(msgs.size(), 3u);
  for (size_t i = 0; i < msgs.size(); i++) {
    const v1::Checkpoint &c = msgs[i].checkpoint();
    EXPECT_EQ(c.epoch(), 7u);
    EXPECT_EQ(c.generation(), 3u);
    EXPECT_TRUE(c.full());
    EXPECT_EQ(c.chunk(), i);
    EXPECT_EQ(c.last_chunk(), i == 2);
    EXPECT_EQ(c.flows_at_cut(), live);
    EXPECT_EQ(c.captured_unix_ns(), 123);
    EXPECT_TRUE(c.has_log_sequence());  // every chunk says the cut's session-log sequence
    EXPECT_EQ(c.log_sequence(), 0xFFFFFFFEu);
    // The table fingerprint is the whole cut's: on the last chunk, where the epoch completes.
    EXPECT_EQ(c.has_fingerprint(), i == 2);
    if (i == 2) {
      EXPECT_EQ(c.fingerprint(), 0x8000000000000001ull);
    }
    ASSERT_EQ(c.batches_size(), 1);
    EXPECT_EQ(c.batches(0).count(), i == 2 ? 5u : 10u);
  }
  const auto back = decode_all(msgs);
  ASSERT_EQ(back.size(), slots.size());
  for (size_t i = 0; i < slots.size(); i++) {
    EXPECT_EQ(back[i].slot.slot, slots[i].slot);
    EXPECT_EQ(back[i].slot.in_use, slots[i].in_use);
    if (slots[i].in_use) {
      EXPECT_TRUE(back[i].slot.st == as_in_format(slots[i].st, kRecordFormatV2));
      EXPECT_EQ(back[i].idle_ms, expected_idle_ms(now, slots[i].last_seen_tsc));
    }
  }
  EXPECT_EQ(encoded_bytes(msgs), msgs[0].ByteSizeLong() + msgs[1].ByteSizeLong() + msgs[2].ByteSizeLong());
}

// The pipelined full sync makes the same messages one at a time: chunk c byte for byte as
// encode_capture's c-th, for every chunk count, and refuses what encode_capture refuses.
TEST(CaptureEncoder, OneChunkAtATimeIsTheSameFullSync) {
  std::mt19937_64 rng(12);
  const uint64_t now = 1'000 * kHz;
  for (size_t n : {size_t(0), size_t(1), size_t(9), size_t(10), size_t(11), size_t(57)}) {
    SCOPED_TRACE(n);
    const auto slots = random_slots(rng, n, now);
    CaptureHeader h;
    h.epoch = 9;
    h.full = true;
    h.format = kRecordFormatV4;
    h.chunk_records = 10;
    h.now_tsc = now;
    h.tsc_hz = kHz;
    h.has_fingerprint = true;
    h.fingerprint = 42;
    std::vector<v1::SyncMessage> all;
    ASSERT_TRUE(encode_capture(slots.data(), n, h, &all).ok());
    ASSERT_EQ(full_sync_chunks(n, h), all.size());
    const uint64_t live = count_live(slots.data(), n);
    for (size_t c = 0; c < all.size(); c++) {
      v1::SyncMessage one;
      ASSERT_TRUE(encode_full_chunk(slots.data(), n, h, live, c, &one).ok());
      EXPECT_EQ(one.SerializeAsString(), all[c].SerializeAsString()) << "chunk " << c;
    }
    v1::SyncMessage past;
    EXPECT_EQ(encode_full_chunk(slots.data(), n, h, live, all.size(), &past).code(), Code::INVALID_ARGUMENT);
  }
  dp::CapturedSlot c{};
  CaptureHeader bad;
  bad.full = true;
  bad.format = 5;
  v1::SyncMessage m;
  EXPECT_EQ(encode_full_chunk(&c, 1, bad, 0, 0, &m).code(), Code::INVALID_ARGUMENT);
}

TEST(CaptureEncoder, IncrementalIsOneMessageOfBatches) {
  std::mt19937_64 rng(12);
  const auto slots = random_slots(rng, 25, kHz);
  CaptureHeader h;
  h.epoch = 8;
  h.format = kRecordFormatV1;
  h.chunk_records = 0;  // counts as 1
  std::vector<v1::SyncMessage> msgs;
  ASSERT_TRUE(encode_capture(slots.data(), slots.size(), h, &msgs).ok());
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_FALSE(msgs[0].checkpoint().full());
  EXPECT_EQ(msgs[0].checkpoint().flows_at_cut(), 0u);
  EXPECT_EQ(msgs[0].checkpoint().batches_size(), 25);
  EXPECT_FALSE(msgs[0].checkpoint().has_log_sequence()) << "a node that logs nothing sends no sequence";
  EXPECT_FALSE(msgs[0].checkpoint().has_fingerprint()) << "none given, none sent";
  h.has_fingerprint = true;
  h.fingerprint = 42;
  ASSERT_TRUE(encode_capture(slots.data(), slots.size(), h, &msgs).ok());
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_TRUE(msgs[0].checkpoint().has_fingerprint());
  EXPECT_EQ(msgs[0].checkpoint().fingerprint(), 42u);
  EXPECT_EQ(decode_all(msgs).size(), slots.size());
  h.has_log_sequence = true;
  h.log_sequence = 0;  // zero is a sequence, not its absence
  ASSERT_TRUE(encode_capture(slots.data(), slots.size(), h, &msgs).ok());
  EXPECT_TRUE(msgs[0].checkpoint().has_log_sequence());
}

TEST(CaptureEncoder, EmptyFullSyncIsOneEmptyChunk) {
  CaptureHeader h;
  h.full = true;
  h.format = kRecordFormatV2;
  std::vector<v1::SyncMessage> msgs;
  ASSERT_TRUE(encode_capture(nullptr, 0, h, &msgs).ok());
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_TRUE(msgs[0].checkpoint().last_chunk());
  ASSERT_EQ(msgs[0].checkpoint().batches_size(), 1);
  EXPECT_EQ(msgs[0].checkpoint().batches(0).count(), 0u);
}

TEST(CaptureEncoder, UnknownFormatRefused) {
  dp::CapturedSlot c{};
  CaptureHeader h;
  std::vector<v1::SyncMessage> msgs(2);
  for (uint32_t f : {0u, 5u}) {
    h.format = f;
    Status st = encode_capture(&c, 1, h, &msgs);
    EXPECT_EQ(st.code(), Code::INVALID_ARGUMENT);
    EXPECT_NE(st.message().find("format " + std::to_string(f)), std::string::npos) << st.message();
    EXPECT_TRUE(msgs.empty());
  }
}

}  // namespace
}  // namespace ftpair::ckpt
