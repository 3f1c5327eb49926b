// Operations settings of the config: mutual TLS keys, the DPDK telemetry switch, and the
// key-by-key view a SIGHUP reload compares.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "control/config.h"

namespace ftpair {
namespace {

const char *kBase = R"(
node: {id: b}
ports:
  inside: {device: net_ring0, vip: 10.1.0.1/16}
  outside: {device: net_ring1, vip: 192.0.2.1/24}
)";

void expect_error(const Status &s, const std::string &key, const std::string &what) {
  EXPECT_FALSE(s.ok()) << "accepted";
  EXPECT_EQ(s.code(), Code::INVALID_ARGUMENT);
  EXPECT_NE(s.message().find(key), std::string::npos) << "does not name " << key << ": " << s.message();
  EXPECT_NE(s.message().find(what), std::string::npos) << "does not say '" << what << "': " << s.message();
}

class TlsFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ftpair-tls-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    for (const char *n : {"ca.pem", "node.pem", "node.key"}) std::ofstream(dir_ + "/" + n) << "PEM\n";
  }
  void TearDown() override {
    for (const char *n : {"ca.pem", "node.pem", "node.key"}) std::remove((dir_ + "/" + n).c_str());
    rmdir(dir_.c_str());
  }
  std::vector<std::string> tls(const std::string &section) {
    return {section + ".tls.ca=" + dir_ + "/ca.pem", section + ".tls.cert=" + dir_ + "/node.pem",
            section + ".tls.key=" + dir_ + "/node.key"};
  }
  std::string dir_;
};

TEST_F(TlsFiles, ManagementTlsAlsoSecuresThePeer) {
  Config c;
  ASSERT_TRUE(parse_config(kBase, tls("management"), &c).ok());
  EXPECT_TRUE(c.management_tls.enabled());
  EXPECT_TRUE(c.peer_tls.enabled());
  EXPECT_EQ(c.peer_tls.cert, dir_ + "/node.pem");
}

TEST_F(TlsFiles, PeerTlsOnItsOwn) {
  Config c;
  ASSERT_TRUE(parse_config(kBase, tls("peer"), &c).ok());
  EXPECT_FALSE(c.management_tls.enabled());
  EXPECT_TRUE(c.peer_tls.enabled());
}

TEST_F(TlsFiles, IncompleteOrUnreadableOrUnknownIsRefusedByKey) {
  Config c;
  auto ov = tls("management");
  ov.pop_back();  // no key
  expect_error(parse_config(kBase, ov, &c), "management.tls.key", "missing");
  ov = tls("management");
  ov[0] = "management.tls.ca=" + dir_ + "/nope.pem";
  expect_error(parse_config(kBase, ov, &c), "management.tls.ca", "cannot read");
  ov = tls("management");
  ov.push_back("management.tls.crl=x");
  expect_error(parse_config(kBase, ov, &c), "management.tls.crl", "unknown key");
  expect_error(parse_config(kBase, {"peer.tls=yes"}, &c), "peer.tls", "must be a mapping");
}

TEST(OpsConfig, TelemetryIsOffUnlessAskedFor) {
  Config c;
  ASSERT_TRUE(parse_config(kBase, {}, &c).ok());
  auto argv = c.eal_argv();
  EXPECT_NE(std::find(argv.begin(), argv.end(), "--no-telemetry"), argv.end());
  ASSERT_TRUE(parse_config(kBase, {"dpdk.telemetry=true"}, &c).ok());
  argv = c.eal_argv();
  EXPECT_EQ(std::find(argv.begin(), argv.end(), "--no-telemetry"), argv.end());
  expect_error(parse_config(kBase, {"dpdk.telemetry=maybe"}, &c), "dpdk.telemetry", "true or false");
}

TEST(OpsConfig, FieldsNameEveryChangedKey) {
  Config a, b;
  ASSERT_TRUE(parse_config(kBase, {}, &a).ok());
  ASSERT_TRUE(parse_config(kBase, {"flows.capacity=1024", "worker.stall_ms=300", "flows.timeouts.udp=500"}, &b).ok());
  auto fa = config_fields(a), fb = config_fields(b);
  std::vector<std::string> changed;
  for (const auto &[k, v] : fb)
    if (fa.at(k) != v) changed.push_back(k);
  EXPECT_EQ(changed, (std::vector<std::string>{"flows.capacity", "flows.timeouts.udp", "worker.stall_ms"}));
  // Defaults spelled out compare equal to defaults left out.
  ASSERT_TRUE(parse_config(kBase, {"flows.capacity=65536", "checkpoint.mode=relaxed"}, &b).ok());
  EXPECT_EQ(config_fields(a), config_fields(b));
}

}  // namespace
}  // namespace ftpair
