/* fuzz_records: the standby side of replication. The record decoder (decode_records) and
 * the Applier take arbitrary Sync-stream messages against one live standby flow table that
 * persists across inputs. After every message the table must agree with itself, and a
 * refused message that changed the table must leave the node out of sync.
 *
 * Input byte 0 selects the mode:
 *   even: structured. A sequence of ops (op byte, then its fields):
 *     0 hello   generation u8, formats u8 (bit0 v1, bit1 v2, bit2 v3), proto max u8, capacity u16
 *     1 checkpoint  epoch delta i8 (from the applied epoch), flags u8 (full, last, crc ok,
 *               generation-1, fingerprint), chunk u8, flows_at_cut u16, [fingerprint u32 x2],
 *               batches u8 (<=4), each batch: format u8, count u8, length u16, bytes
 *     2 begin_stream   3 end_stream   4 set_accepting(bit) u8
 *   odd: serialized SyncMessages (protobuf) as the Sync stream carries them, each preceded
 *     by its length (u16), dispatched as the Sync service does: a Hello or a Checkpoint. */
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "checkpoint/applier.h"
#include "checkpoint/record_codec.h"
#include "dataplane/flow_table.h"
#include "fuzz/fuzz_common.h"
#include "replication.pb.h"

namespace ftpair::fuzz {
namespace {

constexpr uint32_t kCapacity = 128;

struct World {
  std::unique_ptr<Standby> sb;
  uint64_t inputs = 0;
};
World *w = nullptr;

void build_world() {
  w->sb.reset();  // the old table goes before a new one takes its (global) name
  w->sb = std::make_unique<Standby>(kCapacity, "fuzz_records");
}

std::vector<dp::FlowRecord> copy_table() {
  std::vector<dp::FlowRecord> v(kCapacity);
  for (uint32_t i = 0; i < kCapacity; i++) v[i] = w->sb->table->record(i);
  return v;
}

bool same_table(const std::vector<dp::FlowRecord> &before) {
  for (uint32_t i = 0; i < kCapacity; i++) {
    const dp::FlowState &a = before[i].st, &b = w->sb->table->record(i).st;
    if ((a.flags & dp::kFlowInUse) != (b.flags & dp::kFlowInUse)) return false;
    if ((a.flags & dp::kFlowInUse) && !(a == b)) return false;
  }
  return true;
}

void checkpoint(const v1::Checkpoint &c) {
  const auto before = copy_table();
  const uint64_t applied = w->sb->applier->applied_epoch();
  bool ack = false;
  v1::Ack a;
  Status s = w->sb->applier->on_checkpoint(c, &ack, &a);
  if (verbose())
    std::fprintf(stderr, "checkpoint epoch %lu full %d chunk %u: %s ack %d, %u flows, in sync %d\n",
                 (unsigned long)c.epoch(), c.full(), c.chunk(), s.ok() ? "ok" : s.message().c_str(), ack,
                 w->sb->table->size(), w->sb->applier->in_sync());
  check_table(*w->sb->table, "after a checkpoint");
  // The fingerprint kept in O(1) per applied record is the one a recount gives.
  uint64_t recount = 0;
  w->sb->table->for_each([&](uint32_t, const dp::FlowRecord &r) { recount += dp::flow_fingerprint(r.st); });
  FUZZ_CHECK(recount == w->sb->table->applied_fingerprint(), "applied fingerprint %016lx, a recount %016lx",
             (unsigned long)w->sb->table->applied_fingerprint(), (unsigned long)recount);
  // And slot by slot, as the scrub compares them: nothing here writes behind the applier.
  const int64_t bad = w->sb->table->scrub(0, kCapacity);
  FUZZ_CHECK(bad < 0, "the scrub finds slot %ld changed since it was applied", (long)bad);
  if (s.ok() && ack && c.has_fingerprint() && w->sb->applier->record_format() >= ckpt::kRecordFormatV3)
    FUZZ_CHECK(c.fingerprint() == recount, "epoch %lu acknowledged with fingerprint %016lx, the table's %016lx",
               (unsigned long)c.epoch(), (unsigned long)c.fingerprint(), (unsigned long)recount);
  if (!s.ok() && w->sb->applier->diverged_epoch())
    FUZZ_CHECK(!w->sb->applier->in_sync(), "diverged at epoch %lu yet in sync",
               (unsigned long)w->sb->applier->diverged_epoch());
  if (s.ok()) {
    if (ack) {
      FUZZ_CHECK(a.epoch() == c.epoch() && w->sb->applier->applied_epoch() == c.epoch(),
                 "acked epoch %lu, applied %lu, message %lu", (unsigned long)a.epoch(),
                 (unsigned long)w->sb->applier->applied_epoch(), (unsigned long)c.epoch());
      FUZZ_CHECK(a.flows() == w->sb->table->size(), "ack says %lu flows, table has %u", (unsigned long)a.flows(),
                 w->sb->table->size());
    }
    return;
  }
  FUZZ_CHECK(!ack, "refused (%s) yet acknowledged", s.message().c_str());
  FUZZ_CHECK(w->sb->applier->applied_epoch() == applied, "refused (%s) yet the applied epoch moved",
             s.message().c_str());
  // A refusal that touched the table (an apply failing half-way, a full sync that ends with
  // the wrong flow count) must leave the node out of sync, so the active sends a full sync
  // and this table is never promoted.
  if (!same_table(before))
    FUZZ_CHECK(!w->sb->applier->in_sync(), "refused (%s), the table changed, yet the node says in sync",
               s.message().c_str());
}

void hello(const v1::Hello &h, uint64_t local_generation) {
  v1::Hello reply;
  Status s = w->sb->applier->on_hello(h, local_generation, &reply);
  if (verbose()) std::fprintf(stderr, "hello: %s\n", s.ok() ? "ok" : s.message().c_str());
  if (s.ok())
    FUZZ_CHECK(ckpt::format_supported(reply.chosen_record_format()), "hello chose format %u",
               reply.chosen_record_format());
}

void structured(Reader &in) {
  for (unsigned op_n = 0; op_n < 32 && !in.empty(); op_n++) {
    switch (in.u8() % 5) {
      case 0: {
        v1::Hello h;
        h.set_node_id("fuzz-active");
        h.set_generation(in.u8());
        const uint8_t fm = in.u8();
        for (uint32_t f = 3; f >= 1; f--)
          if (fm & (1u << (f - 1))) h.add_record_formats(f);
        h.set_protocol_version_min(1);
        h.set_protocol_version_max(in.u8() % 3);
        h.set_flow_capacity(in.u16());
        hello(h, 0);
        break;
      }
      case 1: {
        v1::Checkpoint c;
        const int8_t delta = static_cast<int8_t>(in.u8());
        const uint8_t flags = in.u8();
        c.set_epoch(w->sb->applier->applied_epoch() + static_cast<uint64_t>(int64_t(delta)));
        c.set_full(flags & 1);
        c.set_last_chunk(flags & 2);
        c.set_generation(flags & 8 ? 0 : 255);
        c.set_chunk(in.u8() % 4);
        c.set_flows_at_cut(in.u16());
        if (flags & 16) c.set_fingerprint(uint64_t(in.u32()) << 32 | in.u32());
        const unsigned nb = in.u8() % 5;
        for (unsigned i = 0; i < nb; i++) {
          v1::RecordBatch *b = c.add_batches();
          b->set_format(in.u8() % 4);
          b->set_count(in.u8());
          std::string recs = in.bytes(in.u16() % 2048);
          b->set_crc32c(flags & 4 ? ckpt::crc32c(recs.data(), recs.size()) : in.u32());
          b->set_records(std::move(recs));
        }
        checkpoint(c);
        break;
      }
      case 2: w->sb->applier->begin_stream(); break;
      case 3: w->sb->applier->end_stream(); break;
      case 4: {
        std::lock_guard<std::mutex> g(w->sb->mu);
        w->sb->applier->set_accepting(in.u8() & 1);
        break;
      }
    }
  }
}

void serialized(Reader &in) {
  for (unsigned n = 0; n < 16 && !in.empty(); n++) {
    const std::string bytes = in.bytes(in.u16());
    v1::SyncMessage m;
    if (!m.ParseFromString(bytes)) continue;
    if (m.has_hello()) hello(m.hello(), 1);
    if (m.has_checkpoint()) checkpoint(m.checkpoint());
  }
}

}  // namespace
}  // namespace ftpair::fuzz

using namespace ftpair;
using namespace ftpair::fuzz;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  init_eal();
  w = new World();
  build_world();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (++w->inputs % 100000 == 0) build_world();
  if (size == 0) return 0;
  w->sb->applier->begin_stream();
  {
    std::lock_guard<std::mutex> g(w->sb->mu);
    w->sb->applier->set_accepting(true);
  }
  Reader in(data + 1, size - 1);
  if (data[0] & 1)
    serialized(in);
  else
    structured(in);
  w->sb->applier->end_stream();
  check_table(*w->sb->table, "after the input");
  return 0;
}
