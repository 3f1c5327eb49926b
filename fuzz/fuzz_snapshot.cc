/* fuzz_snapshot: the snapshot loader (checkpoint/snapshot.cc) on arbitrary file contents,
 * then snapshot_usable and restore_snapshot into an empty table. The input is the file; it
 * is written to a memfd and read through /proc/self/fd, so read_snapshot runs unchanged.
 * A file that loads must restore into a consistent table or be refused with a Status. */
#include <sys/mman.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include <rte_cycles.h>

#include "checkpoint/snapshot.h"
#include "fuzz/fuzz_common.h"

namespace ftpair::fuzz {
namespace {
constexpr uint32_t kCapacity = 128;
int g_fd = -1;
std::string g_path;
std::unique_ptr<dp::FlowTable> g_flows;
}  // namespace
}  // namespace ftpair::fuzz

using namespace ftpair;
using namespace ftpair::fuzz;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  init_eal();
  g_fd = memfd_create("ftpair-fuzz-snapshot", MFD_CLOEXEC);
  FUZZ_CHECK(g_fd >= 0, "memfd_create failed");
  g_path = "/proc/self/fd/" + std::to_string(g_fd);
  g_flows = make_table(kCapacity, "fuzz_snapshot");
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FUZZ_CHECK(ftruncate(g_fd, 0) == 0, "ftruncate");
  for (size_t off = 0; off < size;) {
    ssize_t n = pwrite(g_fd, data + off, size - off, static_cast<off_t>(off));
    FUZZ_CHECK(n > 0, "pwrite");
    off += static_cast<size_t>(n);
  }
  ckpt::SnapshotMeta meta;
  std::vector<ckpt::WireRecord> recs;
  Status s = ckpt::read_snapshot(g_path, kCapacity, &meta, &recs);
  if (verbose()) std::fprintf(stderr, "read_snapshot: %s\n", s.ok() ? "ok" : s.message().c_str());
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == Code::DATA_LOSS, "read_snapshot: code %d: %s", int(s.code()), s.message().c_str());
    return 0;
  }
  FUZZ_CHECK(recs.size() == meta.count && meta.count <= kCapacity, "%zu records, header says %lu", recs.size(),
             (unsigned long)meta.count);
  FUZZ_CHECK(meta.node_id.size() <= 32 && meta.software_version.size() <= 32, "string fields too long");
  (void)ckpt::snapshot_usable(meta, 0, 600, meta.created_unix_ns);
  g_flows->clear();
  s = ckpt::restore_snapshot(recs, *g_flows, rte_rdtsc(), rte_get_tsc_hz());
  if (verbose())
    std::fprintf(stderr, "restore: %s, %u flows\n", s.ok() ? "ok" : s.message().c_str(), g_flows->size());
  check_table(*g_flows, s.ok() ? "restored" : "restore refused");
  if (s.ok()) {
    uint32_t in_use = 0;
    for (const auto &r : recs) in_use += r.slot.in_use;
    // Duplicate slots in a file: a later record replaces an earlier one.
    FUZZ_CHECK(g_flows->size() <= in_use, "restored %u flows from %u in-use records", g_flows->size(), in_use);
  }
  g_flows->clear();
  return 0;
}
