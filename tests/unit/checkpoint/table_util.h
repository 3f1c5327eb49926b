// Flow-table helpers shared by the checkpoint unit tests.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "dataplane/flow_table.h"

namespace ftpair::ckpt::testutil {

using FlowMap = std::map<uint32_t, dp::FlowState>;

// A table named prefix + a counter (DPDK object names must be unique in the process).
inline std::unique_ptr<dp::FlowTable> make_table(uint32_t capacity, const std::string &prefix) {
  static std::atomic<unsigned> n{0};
  dp::FlowTableConfig c;
  c.capacity = capacity;
  c.name = prefix + std::to_string(n++);
  std::string err;
  auto t = dp::FlowTable::create(c, &err);
  EXPECT_NE(t, nullptr) << err;
  return t;
}

// slot -> state of every flow in the table.
inline FlowMap dump(const dp::FlowTable &t) {
  FlowMap m;
  t.for_each([&](uint32_t slot, const dp::FlowRecord &r) { m.emplace(slot, r.st); });
  return m;
}

}  // namespace ftpair::ckpt::testutil
