// A node of two workers on ports whose PMD has a programmable RSS (net_null keeps the key and
// the redirection table, though it never hashes): the outside port's RSS is read back into the
// NAT's port choice (control/node.cc, dataplane/return_rss.h), and /metrics has its counter.
#include <thread>

#include <gtest/gtest.h>

#include "control/config.h"
#include "control/exposition.h"
#include "control/node.h"
#include "control/node_metrics.h"
#include "dataplane/port.h"

namespace ftpair {
namespace {

TEST(NodeRss, TwoWorkersOnAPortWithRssSteerTheirReplies) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs 2 CPUs for worker.count 2";
  // Device names of their own each time: a closed null port cannot be probed again.
  static int seq = 0;
  const std::string id = std::to_string(seq++);
  const std::string yaml = R"YAML(
node: {id: rss}
flows: {capacity: 1024}
dpdk: {mbufs: 4095}
worker: {count: 2}
ports:
  inside: {device: "net_null_nrin)YAML" + id + R"YAML(,no-rx=1", vip: 198.18.1.1/24}
  outside: {device: "net_null_nrout)YAML" + id + R"YAML(,no-rx=1", vip: 198.18.2.1/24}
)YAML";
  Config cfg;
  Status st = parse_config(yaml, {}, &cfg);
  ASSERT_TRUE(st.ok()) << st.message();
  auto node = Node::create(cfg, &st);
  ASSERT_NE(node, nullptr) << st.message();
  const dp::ReturnRss *rss = node->return_rss();
  ASSERT_NE(rss, nullptr) << "the outside port's RSS was not taken up";
  // Every worker's NAT chooses its ports by it.
  for (unsigned w = 0; w < 2; w++) EXPECT_EQ(node->nf(w).return_rss(), rss) << "worker " << w;
  // The table as port_open programs it (entry i -> queue i % 2), and queue w is worker w's.
  for (unsigned i = 0; i < rss->entries(); i++) EXPECT_EQ(rss->entry_worker(i), i % 2) << "entry " << i;
  // The key is kRssKey: the RSS verification suite's first IPv4 TCP vector.
  EXPECT_EQ(rss->hash(rte_cpu_to_be_32(0x420995bb), rte_cpu_to_be_32(0xa18e6450), 2794, 1766), 0x51ccc178u);
  Exposition x;
  expose_dataplane(*node, x);
  EXPECT_NE(x.text().find("ftpair_nat_rss_ports_total{steered=\"yes\"} 0"), std::string::npos) << x.text();
  EXPECT_NE(x.text().find("ftpair_nat_rss_ports_total{steered=\"no\"} 0"), std::string::npos);
}

}  // namespace
}  // namespace ftpair
