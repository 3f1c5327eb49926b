/* fuzz_encoder: the capture encoder alone (checkpoint/capture_encoder.h). Random captured
 * slots are encoded as the engine encodes them for one stream, then every message goes
 * through the protobuf wire format, the record decoder and the Applier of a standby table.
 * What comes out must be exactly what went in:
 *   - the messages have the documented shape (chunks, last_chunk, batches, counts, CRCs,
 *     epoch, generation, flows_at_cut);
 *   - the decoded records equal the captured slots, in order, with format 2's idle_ms equal
 *     to (now - last_seen) x 1000 / hz computed independently in 128 bits;
 *   - the standby's table afterwards equals the in-use slots of the capture (an incremental
 *     capture is applied after an empty full sync), acknowledged with the right flow count;
 *   - an unknown format is refused with INVALID_ARGUMENT and no messages.
 *
 * Input: a header, then up to 256 slots of 28 bytes each.
 *   u8 mode      bit 0 full; bits 1-2 format (1, 2 valid; 0, 3 unknown)
 *   u8 chunk     records per batch (0 counts as 1), taken modulo 17
 *   u32 epoch, u8 generation, u32 now_lo, u32 now_hi, u32 hz
 *   slot: u8 slot, u8 kind (bit 0 in use, bits 1-2 proto, bits 3-5 TCP state, bits 6-7
 *         flag bits), u32 in_ip, u32 ext_ip, u32 nat_ip, u16 in_port, u16 ext_port,
 *         u16 nat_port, u32 last_seen_lo, u32 last_seen_hi
 * A slot that repeats a slot number, or an in-use slot that a flow table holding the slots
 * before it refuses (a key taken, a NAT mapping contradicted), is left out: a capture is a
 * cut of a consistent table. */
#include <netinet/in.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "checkpoint/applier.h"
#include "checkpoint/capture_encoder.h"
#include "checkpoint/record_codec.h"
#include "checkpoint/version.h"
#include "dataplane/flow_table.h"
#include "fuzz/fuzz_common.h"
#include "replication.pb.h"

namespace ftpair::fuzz {
namespace {

constexpr uint32_t kCapacity = 256;

Standby *w = nullptr;
dp::FlowTable *cut = nullptr;  // the active's table at the cut, built by read_slots

// Reads the slots of a consistent cut (see the file comment).
std::vector<dp::CapturedSlot> read_slots(Reader &in) {
  static constexpr uint8_t kProtos[4] = {IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_UDP};
  static constexpr uint8_t kFlagBits[4] = {0, dp::kFlowReplied, dp::kFlowPortForward,
                                           dp::kFlowFinFromInside | dp::kFlowFinFromOutside};
  std::vector<dp::CapturedSlot> out;
  std::set<uint32_t> slots;
  cut->clear();
  while (in.left() > 0 && out.size() < kCapacity) {
    dp::CapturedSlot c{};
    c.slot = in.u8();
    const uint8_t kind = in.u8();
    c.in_use = kind & 1;
    dp::FlowState &s = c.st;
    s.in_ip = in.u32();
    s.ext_ip = in.u32();
    s.nat_ip = in.u32();
    s.in_port = in.u16();
    s.ext_port = in.u16();
    s.nat_port = in.u16();
    c.last_seen_tsc = in.u32() | uint64_t(in.u32()) << 32;
    if (c.in_use) {
      s.proto = kProtos[(kind >> 1) & 3];
      s.tcp_state = s.proto == IPPROTO_TCP ? uint8_t(1 + ((kind >> 3) & 7) % 6) : 0;
      s.flags = dp::kFlowInUse | kFlagBits[kind >> 6];
    } else {
      s = dp::FlowState{};  // a freed slot carries no state
    }
    if (!slots.insert(c.slot).second) continue;
    // The active's own rules decide what a consistent cut holds: the slot must go into a
    // table that holds the slots taken so far (keys free, and no contradiction of a NAT
    // mapping: one outside endpoint per inside endpoint, an outside endpoint held by one
    // mapping or one port forward).
    if (c.in_use && cut->apply(c.slot, &s, 0) < 0) {
      slots.erase(c.slot);
      continue;
    }
    out.push_back(c);
  }
  return out;
}

uint32_t expected_idle_ms(const dp::CapturedSlot &c, const ckpt::CaptureHeader &h) {
  if (h.format < ckpt::kRecordFormatV2 || !c.in_use || h.tsc_hz == 0 || h.now_tsc <= c.last_seen_tsc) return 0;
  const unsigned __int128 ms = (unsigned __int128)(h.now_tsc - c.last_seen_tsc) * 1000 / h.tsc_hz;
  return ms > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(ms);
}

// The messages as the standby reads them off the wire.
std::vector<v1::SyncMessage> over_the_wire(const std::vector<v1::SyncMessage> &msgs) {
  std::vector<v1::SyncMessage> out(msgs.size());
  for (size_t i = 0; i < msgs.size(); i++) {
    std::string bytes;
    FUZZ_CHECK(msgs[i].SerializeToString(&bytes), "message %zu does not serialize", i);
    FUZZ_CHECK(out[i].ParseFromString(bytes), "message %zu does not parse back", i);
  }
  return out;
}

void check_shape(const std::vector<v1::SyncMessage> &msgs, const std::vector<dp::CapturedSlot> &cap,
                 const ckpt::CaptureHeader &h) {
  const size_t n = cap.size(), per = h.chunk_records ? h.chunk_records : 1;
  const size_t batches = (n + per - 1) / per;
  uint64_t live = 0;
  for (const auto &c : cap) live += c.in_use;
  FUZZ_CHECK(msgs.size() == (h.full ? std::max<size_t>(1, batches) : 1), "%zu messages for %zu records by %zu",
             msgs.size(), n, per);
  for (size_t i = 0; i < msgs.size(); i++) {
    FUZZ_CHECK(msgs[i].has_checkpoint(), "message %zu is not a checkpoint", i);
    const v1::Checkpoint &c = msgs[i].checkpoint();
    FUZZ_CHECK(c.epoch() == h.epoch && c.generation() == h.generation && c.full() == h.full &&
                   c.captured_unix_ns() == h.captured_unix_ns,
               "message %zu: header fields differ from the capture's", i);
    if (h.full) {
      FUZZ_CHECK(c.chunk() == i && c.last_chunk() == (i + 1 == msgs.size()) && c.flows_at_cut() == live &&
                     c.batches_size() == 1,
                 "full sync message %zu: chunk %u last %d flows_at_cut %lu (live %lu) batches %d", i, c.chunk(),
                 c.last_chunk(), (unsigned long)c.flows_at_cut(), (unsigned long)live, c.batches_size());
    } else {
      FUZZ_CHECK(c.chunk() == 0 && !c.last_chunk() && c.flows_at_cut() == 0 && size_t(c.batches_size()) == batches,
                 "incremental: chunk %u last %d flows_at_cut %lu batches %d (want %zu)", c.chunk(), c.last_chunk(),
                 (unsigned long)c.flows_at_cut(), c.batches_size(), batches);
    }
  }
}

// Decodes every batch in order and compares with the capture, record by record.
void check_records(const std::vector<v1::SyncMessage> &msgs, const std::vector<dp::CapturedSlot> &cap,
                   const ckpt::CaptureHeader &h) {
  const size_t per = h.chunk_records ? h.chunk_records : 1;
  std::vector<ckpt::WireRecord> got;
  for (const auto &m : msgs) {
    for (const auto &b : m.checkpoint().batches()) {
      FUZZ_CHECK(b.format() == h.format, "batch of format %u, encoded as %u", b.format(), h.format);
      FUZZ_CHECK(b.count() >= 1 || cap.empty(), "an empty batch in a capture of %zu records", cap.size());
      FUZZ_CHECK(b.count() <= per, "batch of %u records, at most %zu asked", b.count(), per);
      std::string detail;
      const ckpt::DecodeError e =
          ckpt::decode_records(b.records(), b.format(), b.count(), b.crc32c(), kCapacity, &got, &detail);
      FUZZ_CHECK(e == ckpt::DecodeError::OK, "decode: %s (%s)", ckpt::decode_error_text(e), detail.c_str());
    }
  }
  FUZZ_CHECK(got.size() == cap.size(), "%zu records decoded, %zu encoded", got.size(), cap.size());
  for (size_t i = 0; i < cap.size(); i++) {
    const dp::CapturedSlot &want = cap[i];
    const ckpt::WireRecord &r = got[i];
    FUZZ_CHECK(r.slot.slot == want.slot && r.slot.in_use == want.in_use, "record %zu: slot %u in_use %u, want %u %u",
               i, r.slot.slot, r.slot.in_use, want.slot, want.in_use);
    FUZZ_CHECK(!want.in_use || r.slot.st == want.st, "record %zu (slot %u): the flow state differs", i, want.slot);
    const uint32_t idle = expected_idle_ms(want, h);
    FUZZ_CHECK(r.idle_ms == idle, "record %zu: idle_ms %u, want %u", i, r.idle_ms, idle);
  }
}

void deliver(const v1::SyncMessage &m, bool want_ack, uint64_t want_flows) {
  bool ack = false;
  v1::Ack a;
  Status s = w->applier->on_checkpoint(m.checkpoint(), &ack, &a);
  FUZZ_CHECK(s.ok(), "the standby refused epoch %lu chunk %u: %s", (unsigned long)m.checkpoint().epoch(),
             m.checkpoint().chunk(), s.message().c_str());
  FUZZ_CHECK(ack == want_ack, "epoch %lu chunk %u: ack %d, want %d", (unsigned long)m.checkpoint().epoch(),
             m.checkpoint().chunk(), ack, want_ack);
  if (ack)
    FUZZ_CHECK(a.epoch() == m.checkpoint().epoch() && a.flows() == want_flows,
               "ack of epoch %lu says %lu flows, want %lu", (unsigned long)a.epoch(), (unsigned long)a.flows(),
               (unsigned long)want_flows);
}

// Applies the messages to the standby (after an empty full sync when incremental) and
// compares its table with the capture's in-use slots.
void check_applied(const std::vector<v1::SyncMessage> &msgs, const std::vector<dp::CapturedSlot> &cap,
                   ckpt::CaptureHeader h) {
  uint64_t live = 0;
  for (const auto &c : cap) live += c.in_use;
  w->applier->begin_stream();
  v1::Hello hello, reply;
  hello.set_node_id("fuzz-active");
  hello.set_generation(h.generation);
  hello.set_protocol_version_min(ckpt::kProtocolVersionMin);
  hello.set_protocol_version_max(ckpt::kProtocolVersionMax);
  hello.add_record_formats(h.format);
  hello.set_flow_capacity(kCapacity);
  Status s = w->applier->on_hello(hello, 0, &reply);
  FUZZ_CHECK(s.ok() && reply.chosen_record_format() == h.format, "hello for format %u: %s, chose %u", h.format,
             s.message().c_str(), reply.chosen_record_format());
  if (!h.full) {
    ckpt::CaptureHeader empty = h;
    empty.full = true;
    empty.epoch = h.epoch - 1;
    std::vector<v1::SyncMessage> base;
    s = ckpt::encode_capture(nullptr, 0, empty, &base);
    FUZZ_CHECK(s.ok() && base.size() == 1, "empty full sync: %s", s.message().c_str());
    deliver(base[0], true, 0);
  }
  for (size_t i = 0; i < msgs.size(); i++) deliver(msgs[i], !h.full || i + 1 == msgs.size(), live);
  w->applier->end_stream();
  check_table(*w->table, "standby");
  FUZZ_CHECK(w->table->size() == live && w->applier->in_sync(), "standby has %u flows (in sync %d), want %lu",
             w->table->size(), w->applier->in_sync(), (unsigned long)live);
  for (const auto &c : cap) {
    const dp::FlowState &got = w->table->record(c.slot).st;
    FUZZ_CHECK(bool(got.flags & dp::kFlowInUse) == bool(c.in_use) && (!c.in_use || got == c.st),
               "standby slot %u differs from the capture", c.slot);
  }
}

}  // namespace
}  // namespace ftpair::fuzz

using namespace ftpair;
using namespace ftpair::fuzz;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  init_eal();
  w = new Standby(kCapacity, "fuzz_encoder");
  cut = make_table(kCapacity, "fuzz_encoder_cut").release();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Reader in(data, size);
  const uint8_t mode = in.u8();
  ckpt::CaptureHeader h;
  h.full = mode & 1;
  h.format = (mode >> 1) & 3;
  h.chunk_records = in.u8() % 17;
  h.epoch = 1 + uint64_t(in.u32());  // an incremental epoch follows the empty full sync at epoch - 1
  h.generation = in.u8();
  h.now_tsc = in.u32() | uint64_t(in.u32()) << 32;
  h.tsc_hz = in.u32();
  h.captured_unix_ns = int64_t(h.epoch) * 1000;
  const std::vector<dp::CapturedSlot> cap = read_slots(in);
  std::vector<v1::SyncMessage> msgs;
  Status s = ckpt::encode_capture(cap.data(), cap.size(), h, &msgs);
  if (verbose())
    std::fprintf(stderr, "%s capture of %zu slots, format %u, %zu per batch: %s, %zu messages\n",
                 h.full ? "full" : "incremental", cap.size(), h.format, h.chunk_records, s.str().c_str(), msgs.size());
  if (!ckpt::format_supported(h.format)) {
    FUZZ_CHECK(s.code() == Code::INVALID_ARGUMENT && msgs.empty(), "format %u: %s, %zu messages", h.format,
               s.str().c_str(), msgs.size());
    return 0;
  }
  FUZZ_CHECK(s.ok(), "format %u refused: %s", h.format, s.str().c_str());
  if (h.full) {
    // The engine's pipelined full sync: the same messages, one chunk at a time.
    FUZZ_CHECK(ckpt::full_sync_chunks(cap.size(), h) == msgs.size(), "%zu chunks, encode_capture made %zu",
               ckpt::full_sync_chunks(cap.size(), h), msgs.size());
    const uint64_t live = ckpt::count_live(cap.data(), cap.size());
    for (size_t c = 0; c < msgs.size(); c++) {
      v1::SyncMessage one;
      const Status cs = ckpt::encode_full_chunk(cap.data(), cap.size(), h, live, c, &one);
      FUZZ_CHECK(cs.ok() && one.SerializeAsString() == msgs[c].SerializeAsString(), "chunk %zu made alone differs: %s",
                 c, cs.str().c_str());
    }
  }
  const std::vector<v1::SyncMessage> wire = over_the_wire(msgs);
  check_shape(wire, cap, h);
  check_records(wire, cap, h);
  check_applied(wire, cap, h);
  return 0;
}
