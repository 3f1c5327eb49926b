/* Shared by the libFuzzer targets: one EAL per process, brought up without hugepages, PCI,
 * shared config or telemetry, and a flow-table invariant check that aborts (so libFuzzer
 * records the input) when the table disagrees with itself. */
#pragma once

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "checkpoint/applier.h"
#include "dataplane/flow_table.h"
#include "dataplane/port.h"

#define FUZZ_CHECK(cond, ...)                                              \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "fuzz invariant failed: %s: ", #cond);          \
      std::fprintf(stderr, __VA_ARGS__);                                   \
      std::fprintf(stderr, "\n");                                          \
      std::abort();                                                        \
    }                                                                      \
  } while (0)

namespace ftpair::fuzz {

/* Brings the EAL up once. extra: more EAL arguments (e.g. vdevs). Exits the process with a
 * message if the EAL refuses: no target can run without it. */
inline void init_eal(std::vector<std::string> extra = {}) {
  static bool done = false;
  if (done) return;
  done = true;
  std::vector<std::string> args = {"--no-huge", "-m", "64", "--no-pci", "--no-shconf", "--no-telemetry", "-l", "0",
                                   "--file-prefix", "ftpair-fuzz-" + std::to_string(getpid()),
                                   "--log-level", "*:error"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::string err;
  if (dp::eal_init(args, &err) != 0) {
    std::fprintf(stderr, "ftpair-fuzz: %s\n", err.c_str());
    std::exit(1);
  }
}

// A flow table of `capacity` named `name` (DPDK object names are global), or abort.
inline std::unique_ptr<dp::FlowTable> make_table(uint32_t capacity, const char *name) {
  std::string err;
  dp::FlowTableConfig fc;
  fc.capacity = capacity;
  fc.name = name;
  std::unique_ptr<dp::FlowTable> t = dp::FlowTable::create(fc, &err);
  FUZZ_CHECK(t != nullptr, "flow table %s: %s", name, err.c_str());
  return t;
}

/* The standby side of the replication targets: a flow table and the Applier that writes it
 * under its mutex. Members are built in this order and torn down in reverse (applier first). */
struct Standby {
  Standby(uint32_t capacity, const char *name)
      : table(make_table(capacity, name)), applier(std::make_unique<ckpt::Applier>(*table, mu, "fuzz-standby")) {}
  std::unique_ptr<dp::FlowTable> table;
  std::mutex mu;
  std::unique_ptr<ckpt::Applier> applier;
};

/* The table agrees with itself: size() counts the in-use records, both keys of every
 * in-use record find that record, and ports_in_use counts the distinct NAT endpoints
 * (address, port) of each protocol. */
inline void check_table(const dp::FlowTable &t, const char *what) {
  uint32_t n = 0;
  std::set<std::tuple<uint8_t, uint32_t, uint16_t>> ports;  // (proto, NAT address, NAT port)
  t.for_each([&](uint32_t slot, const dp::FlowRecord &r) {
    n++;
    int in = t.lookup(dp::inside_key(r.st)), out = t.lookup(dp::outside_key(r.st));
    FUZZ_CHECK(in == static_cast<int>(slot) && out == static_cast<int>(slot),
               "%s: slot %u: inside key -> %d, outside key -> %d", what, slot, in, out);
    ports.insert({r.st.proto, r.st.nat_ip, r.st.nat_port});
  });
  FUZZ_CHECK(n == t.size(), "%s: %u records in use, size() says %u", what, n, t.size());
  for (uint8_t proto : {uint8_t(6), uint8_t(17), uint8_t(1)}) {
    uint32_t distinct = 0;
    for (const auto &p : ports) distinct += std::get<0>(p) == proto;
    FUZZ_CHECK(distinct == t.ports_in_use(proto), "%s: proto %u: %u distinct NAT endpoints, ports_in_use says %u",
               what, proto, distinct, t.ports_in_use(proto));
  }
}

// FTPAIR_FUZZ_VERBOSE=1: targets print what they decided (for reading a seed or a crash).
inline bool verbose() {
  static const bool v = std::getenv("FTPAIR_FUZZ_VERBOSE") != nullptr;
  return v;
}

// Reads bytes off the front of the input; past the end it yields zeros.
class Reader {
 public:
  Reader(const uint8_t *d, size_t n) : d_(d), n_(n) {}
  bool empty() const { return n_ == 0; }
  size_t left() const { return n_; }
  uint8_t u8() {
    if (n_ == 0) return 0;
    n_--;
    return *d_++;
  }
  uint16_t u16() { return static_cast<uint16_t>(u8() | u8() << 8); }
  uint32_t u32() { return u16() | uint32_t(u16()) << 16; }
  // Up to n bytes (fewer at the end of the input).
  std::string bytes(size_t n) {
    if (n > n_) n = n_;
    std::string s(reinterpret_cast<const char *>(d_), n);
    d_ += n;
    n_ -= n;
    return s;
  }

 private:
  const uint8_t *d_;
  size_t n_;
};

}  // namespace ftpair::fuzz
