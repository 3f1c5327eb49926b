// The daemon configuration (control/config.h): a full file, defaults, every kind of error
// naming its key, and "--set" style overrides.
#include "control/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ftpair {
namespace {

uint32_t ip(const char *s) {
  in_addr a{};
  inet_pton(AF_INET, s, &a);
  return a.s_addr;
}

const char *kFull = R"YAML(# a complete node configuration
node:
  id: a
  state_dir: /tmp/ftpair-state-a
  role: active
dpdk:
  memory_mb: 512
  mbufs: 16383
  no_huge: false
  file_prefix: lab-a
  lcores: "0@(0-1),1@(0-1)"
  eal_args: ["--log-level", "lib.eal:debug"]
  rx_desc: 2048
  tx_desc: 512
ports:
  inside:
    device: net_af_packet0,iface=lan0
    vip: 198.18.1.1/24
    vmac_id: 11
  outside:
    device: net_af_packet1,iface=wan0
    vip: 198.18.2.1/25
    vmac_id: 12
    gateway: 198.18.2.126
nat:
  port_min: 20000
  port_max: 60999
  port_forwards:
    - {proto: tcp, port: 8080, to: "198.18.1.10:8080"}
    - {proto: udp, port: 5353, to: "198.18.1.11:53"}
flows:
  capacity: 131072
  timeouts:
    tcp_syn: 30
    tcp_established: 3600
    tcp_fin: 60
    tcp_time_wait: 90
    tcp_closed: 5
    udp: 150
    icmp: 20
arp:
  capacity: 2048
  timeout_s: 600
worker:
  idle_sleep_max_us: 50
  stall_ms: 40
  test_hooks: true
management:
  metrics: 198.18.3.1:9108
  grpc: 198.18.3.1:50051
peer:
  grpc: 198.18.3.2:50051
failover:
  heartbeat_interval_ms: 20
  miss_threshold: 4
  fence: process
  fence_pidfile: /run/ftpair-b.pid
  fence_timeout_ms: 500
  garp_count: 5
  snapshot_max_age_s: 300
checkpoint:
  mode: strict
  interval_us: 2000
  dirty_threshold: 1000
  quiesce_timeout_us: 3000
  hold_capacity: 4096
  hold_fallback: drop
)YAML";

const char *kMinimal = R"(
node: {id: b}
ports:
  inside: {device: net_ring0, vip: 10.1.0.1/16}
  outside: {device: net_ring1, vip: 192.0.2.1/24}
)";

Status parse(const std::string &text, const std::vector<std::string> &ov = {}, Config *out = nullptr) {
  Config scratch;
  return parse_config(text, ov, out ? out : &scratch);
}

// The error is INVALID_ARGUMENT and names the key.
void expect_error(const Status &s, const std::string &key, const std::string &what) {
  EXPECT_FALSE(s.ok()) << what << ": accepted";
  EXPECT_EQ(s.code(), Code::INVALID_ARGUMENT) << what;
  EXPECT_NE(s.message().find(key), std::string::npos)
      << what << ": message does not name '" << key << "': " << s.message();
}

// kFull with one line replaced (first occurrence of `from`).
std::string full_with(const std::string &from, const std::string &to) {
  std::string s = kFull;
  auto pos = s.find(from);
  EXPECT_NE(pos, std::string::npos) << from;
  if (pos != std::string::npos) s.replace(pos, from.size(), to);
  return s;
}

TEST(Config, FullFileParses) {
  Config c;
  Status s = parse_config(kFull, {}, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.node_id, "a");
  EXPECT_EQ(c.state_dir, "/tmp/ftpair-state-a");
  EXPECT_EQ(c.role, ConfigRole::ACTIVE);
  EXPECT_EQ(c.memory_mb, 512u);
  EXPECT_EQ(c.mbufs, 16383u);
  EXPECT_FALSE(c.no_huge);
  EXPECT_EQ(c.file_prefix, "lab-a");
  EXPECT_EQ(c.eal_file_prefix(), "lab-a");
  EXPECT_EQ(c.lcores, "0@(0-1),1@(0-1)");
  EXPECT_EQ(c.eal_args, (std::vector<std::string>{"--log-level", "lib.eal:debug"}));
  EXPECT_EQ(c.rx_desc, 2048);
  EXPECT_EQ(c.tx_desc, 512);
  EXPECT_EQ(c.inside.device, "net_af_packet0,iface=lan0");
  EXPECT_EQ(c.inside.vip, ip("198.18.1.1"));
  EXPECT_EQ(c.inside.prefix_len, 24);
  EXPECT_EQ(c.inside.vmac_id, 11);
  EXPECT_EQ(c.inside.gateway, 0u);
  EXPECT_EQ(c.outside.device, "net_af_packet1,iface=wan0");
  EXPECT_EQ(c.outside.vip, ip("198.18.2.1"));
  EXPECT_EQ(c.outside.prefix_len, 25);
  EXPECT_EQ(c.outside.vmac_id, 12);
  EXPECT_EQ(c.outside.gateway, ip("198.18.2.126"));
  EXPECT_EQ(c.nat_port_min, 20000);
  EXPECT_EQ(c.nat_port_max, 60999);
  ASSERT_EQ(c.forwards.size(), 2u);
  EXPECT_EQ(c.forwards[0].proto, IPPROTO_TCP);
  EXPECT_EQ(c.forwards[0].outside_port, 8080);
  EXPECT_EQ(c.forwards[0].inside_ip, ip("198.18.1.10"));
  EXPECT_EQ(c.forwards[0].inside_port, 8080);
  EXPECT_EQ(c.forwards[1].proto, IPPROTO_UDP);
  EXPECT_EQ(c.forwards[1].outside_port, 5353);
  EXPECT_EQ(c.forwards[1].inside_ip, ip("198.18.1.11"));
  EXPECT_EQ(c.forwards[1].inside_port, 53);
  EXPECT_EQ(c.flow_capacity, 131072u);
  EXPECT_EQ(c.timeouts.tcp_syn, 30u);
  EXPECT_EQ(c.timeouts.tcp_established, 3600u);
  EXPECT_EQ(c.timeouts.tcp_fin, 60u);
  EXPECT_EQ(c.timeouts.tcp_time_wait, 90u);
  EXPECT_EQ(c.timeouts.tcp_closed, 5u);
  EXPECT_EQ(c.timeouts.udp, 150u);
  EXPECT_EQ(c.timeouts.icmp, 20u);
  EXPECT_EQ(c.arp_capacity, 2048u);
  EXPECT_EQ(c.arp_timeout_s, 600u);
  EXPECT_EQ(c.idle_sleep_max_us, 50u);
  EXPECT_EQ(c.stall_ms, 40u);
  EXPECT_TRUE(c.test_hooks);
  EXPECT_EQ(c.metrics.str(), "198.18.3.1:9108");
  EXPECT_EQ(c.grpc.host, "198.18.3.1");
  EXPECT_EQ(c.grpc.port, 50051);
  EXPECT_EQ(c.peer_grpc.str(), "198.18.3.2:50051");
  EXPECT_EQ(c.mode, ReplicationMode::STRICT);
  EXPECT_EQ(c.checkpoint_interval_us, 2000u);
  EXPECT_EQ(c.checkpoint_dirty_threshold, 1000u);
  EXPECT_EQ(c.quiesce_timeout_us, 3000u);
  EXPECT_EQ(c.hold_capacity, 4096u);
  EXPECT_EQ(c.hold_fallback, dp::HoldFallback::DROP);
  EXPECT_EQ(c.heartbeat_interval_ms, 20u);
  EXPECT_EQ(c.miss_threshold, 4u);
  EXPECT_EQ(c.fence, fo::FenceKind::PROCESS);
  EXPECT_EQ(c.fence_pidfile, "/run/ftpair-b.pid");
  EXPECT_EQ(c.fence_timeout_ms, 500u);
  EXPECT_EQ(c.garp_count, 5u);
  EXPECT_EQ(c.snapshot_max_age_s, 300u);
  EXPECT_EQ(c.source_text, kFull);

  // Derived settings.
  dp::NfConfig nf = c.nf_config();
  EXPECT_EQ(nf.vip[dp::kPortInside], ip("198.18.1.1"));
  EXPECT_EQ(nf.vip[dp::kPortOutside], ip("198.18.2.1"));
  EXPECT_EQ(nf.prefix_len[dp::kPortOutside], 25);
  EXPECT_EQ(nf.gateway_out, ip("198.18.2.126"));
  const rte_ether_addr vin{{0x00, 0x00, 0x5e, 0x00, 0x01, 11}}, vout{{0x00, 0x00, 0x5e, 0x00, 0x01, 12}};
  EXPECT_TRUE(rte_is_same_ether_addr(&nf.vmac[dp::kPortInside], &vin));
  EXPECT_TRUE(rte_is_same_ether_addr(&nf.vmac[dp::kPortOutside], &vout));
  EXPECT_EQ(nf.nat_port_min, 20000);
  EXPECT_EQ(nf.nat_port_max, 60999);
  EXPECT_EQ(nf.forwards.size(), 2u);
  EXPECT_EQ(nf.timeouts.udp, 150u);
  auto argv = c.eal_argv();
  auto has = [&](const std::string &a) { return std::find(argv.begin(), argv.end(), a) != argv.end(); };
  EXPECT_FALSE(has("--no-huge"));
  EXPECT_TRUE(has("lab-a"));
  EXPECT_TRUE(has("512"));
  EXPECT_TRUE(has("--no-pci")) << "vdevs only";
  EXPECT_TRUE(has("lib.eal:debug"));
}

TEST(Config, MinimalFileTakesDefaults) {
  Config c;
  Status s = parse_config(kMinimal, {}, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  const Config d;
  EXPECT_EQ(c.node_id, "b");
  EXPECT_EQ(c.role, ConfigRole::AUTO);
  EXPECT_EQ(c.eal_file_prefix(), "ftpair-b");
  EXPECT_EQ(c.inside.vip, ip("10.1.0.1"));
  EXPECT_EQ(c.inside.prefix_len, 16);
  EXPECT_EQ(c.inside.vmac_id, 1) << "inside defaults to vmac id 1";
  EXPECT_EQ(c.outside.vmac_id, 2) << "outside defaults to vmac id 2";
  EXPECT_EQ(c.nat_port_min, d.nat_port_min);
  EXPECT_EQ(c.nat_port_max, d.nat_port_max);
  EXPECT_TRUE(c.forwards.empty());
  EXPECT_EQ(c.flow_capacity, d.flow_capacity);
  EXPECT_EQ(c.timeouts.tcp_established, d.timeouts.tcp_established);
  EXPECT_EQ(c.mode, ReplicationMode::RELAXED);
  EXPECT_EQ(c.hold_fallback, dp::HoldFallback::RELAXED);
  EXPECT_FALSE(c.metrics.set());
  EXPECT_FALSE(c.peer_grpc.set());
  EXPECT_TRUE(c.no_huge);
}

TEST(Config, MissingNodeId) {
  expect_error(parse(R"(
node: {role: auto}
ports:
  inside: {device: a, vip: 10.1.0.1/16}
  outside: {device: b, vip: 192.0.2.1/24}
)"), "node.id", "no node.id");
  expect_error(parse(full_with("  id: a\n", "  id: \"\"\n")), "node.id", "empty node.id");
  expect_error(parse(full_with("  id: a\n", "  id: Node_A!\n")), "node.id", "bad characters");
  expect_error(parse(full_with("node:\n  id: a\n  state_dir: /tmp/ftpair-state-a\n  role: active\n", "")), "node",
               "no node section");
}

TEST(Config, BadVip) {
  for (const char *bad : {"198.18.1.1", "198.18.1.1/33", "198.18.1.300/24", "198.18.1.1/31", "198.18.1.1/7",
                          "vip/24", "198.18.1.1/", "198.18.1.1/2x"}) {
    expect_error(parse(full_with("vip: 198.18.1.1/24", std::string("vip: \"") + bad + "\"")), "ports.inside.vip", bad);
  }
  expect_error(parse(full_with("    vip: 198.18.1.1/24\n", "")), "ports.inside.vip", "missing vip");
  expect_error(parse(full_with("vip: 198.18.2.1/25", "vip: 198.18.1.2/24")), "ports.outside.vip", "overlap");
  expect_error(parse(full_with("gateway: 198.18.2.126", "gateway: 198.18.2")), "ports.outside.gateway", "bad gateway");
  expect_error(parse(full_with("    vmac_id: 11\n", "    vmac_id: 11\n    gateway: 198.18.1.254\n")),
               "ports.inside.gateway", "inside gateway");
  expect_error(parse(full_with("net_af_packet1,iface=wan0", "net_af_packet0,iface=lan0")), "ports.outside.device", "same device");
  expect_error(parse(full_with("    device: net_af_packet0,iface=lan0\n", "")), "ports.inside.device", "no device");
}

TEST(Config, UnknownKeys) {
  expect_error(parse(std::string(kFull) + "bogus: 1\n"), "bogus", "top level");
  expect_error(parse(full_with("  port_min: 20000\n", "  port_min: 20000\n  port_mni: 1\n")), "nat.port_mni", "nat");
  expect_error(parse(full_with("    vmac_id: 12\n", "    vmac_id: 12\n    mtux: 9000\n")), "ports.outside.mtux",
               "ports.outside");
  expect_error(parse(full_with("    icmp: 20\n", "    icmp: 20\n    sctp: 5\n")), "flows.timeouts.sctp", "timeouts");
  expect_error(parse(full_with("{proto: tcp, port: 8080,", "{proto: tcp, port: 8080, via: x,")),
               "nat.port_forwards[0].via", "port forward");
  expect_error(parse(full_with("checkpoint:\n", "checkpoint:\n  speed: 11\n")), "checkpoint.speed", "checkpoint");
}

TEST(Config, NatPortRange) {
  expect_error(parse(full_with("port_min: 20000", "port_min: 61000")), "nat.port_min", "min > max");
  expect_error(parse(full_with("port_max: 60999", "port_max: 70000")), "nat.port_max", "max out of range");
  expect_error(parse(full_with("port_min: 20000", "port_min: 0")), "nat.port_min", "min 0");
  expect_error(parse(full_with("port_min: 20000", "port_min: -5")), "nat.port_min", "negative");
  expect_error(parse(full_with("port_min: 20000", "port_min: lots")), "nat.port_min", "not a number");
  Config c;
  ASSERT_TRUE(parse(full_with("port_min: 20000", "port_min: 60999"), {}, &c).ok()) << "min == max is fine";
  EXPECT_EQ(c.nat_port_min, 60999);
}

TEST(Config, NatBehaviourKeys) {
  Config c;
  ASSERT_TRUE(parse(full_with("port_min: 20000", "port_min: 20000\n  filtering: endpoint-independent\n"
                                                 "  tcp_liberal: false\n  max_sessions_per_host: 50\n"
                                                 "  evict_embryonic_pct: 80\n  icmp_rate: 10\n  icmp_burst: 5"),
                    {}, &c)
                  .ok());
  EXPECT_EQ(c.filtering, dp::Filtering::ENDPOINT);
  EXPECT_FALSE(c.tcp_liberal);
  dp::NfConfig nf = c.nf_config();
  EXPECT_EQ(nf.max_sessions_per_host, 50u);
  EXPECT_EQ(nf.evict_embryonic_pct, 80u);
  EXPECT_EQ(nf.icmp_rate, 10u);
  EXPECT_EQ(nf.icmp_burst, 5u);
  EXPECT_EQ(nf.filtering, dp::Filtering::ENDPOINT);
  Config d;
  ASSERT_TRUE(parse(kFull, {}, &d).ok());
  EXPECT_EQ(d.filtering, dp::Filtering::ADDRESS) << "the default";
  EXPECT_TRUE(d.tcp_liberal) << "the default";
  expect_error(parse(full_with("port_min: 20000", "port_min: 20000\n  filtering: symmetric")), "nat.filtering",
               "unknown mode");
  expect_error(parse(full_with("port_min: 20000", "port_min: 20000\n  evict_embryonic_pct: 101")),
               "nat.evict_embryonic_pct", "over 100");
  expect_error(parse(full_with("    udp: 150", "    udp: 119")), "flows.timeouts.udp", "below RFC 4787's 2 minutes");
}

TEST(Config, PortMtuAndPool) {
  Config c;
  ASSERT_TRUE(parse(kFull, {"ports.outside.mtu=1400", "ports.outside.pool=[198.18.2.1, 198.18.2.5]"}, &c).ok());
  EXPECT_EQ(c.outside.mtu, 1400);
  EXPECT_EQ(c.inside.mtu, 1500) << "the default";
  dp::NfConfig nf = c.nf_config();
  EXPECT_EQ(nf.mtu[dp::kPortOutside], 1400);
  ASSERT_EQ(nf.nat_addresses().size(), 2u);
  expect_error(parse(kFull, {"ports.outside.mtu=500"}), "ports.outside.mtu", "below 576");
  expect_error(parse(kFull, {"ports.outside.pool=[10.0.0.1]"}), "ports.outside.pool[0]", "off the subnet");
  expect_error(parse(kFull, {"ports.outside.pool=[198.18.2.1, 198.18.2.1]"}), "ports.outside.pool[1]", "twice");
  // kFull's outside subnet is 198.18.2.0/25.
  expect_error(parse(kFull, {"ports.outside.pool=[198.18.2.5, 198.18.2.127]"}),
               "ports.outside.pool[1]: '198.18.2.127' is the subnet's broadcast address", "broadcast");
  expect_error(parse(kFull, {"ports.outside.pool=[198.18.2.0]"}),
               "ports.outside.pool[0]: '198.18.2.0' is the subnet's network address", "network address");
  expect_error(parse(kFull, {"ports.inside.pool=[198.18.1.2]"}), "ports.inside.pool", "inside pool");
}

TEST(Config, BadPortForward) {
  expect_error(parse(full_with("\"198.18.1.10:8080\"", "\"10.0.0.5:8080\"")), "nat.port_forwards[0].to",
               "target off the inside subnet");
  expect_error(parse(full_with("\"198.18.1.10:8080\"", "\"198.18.1.10\"")), "nat.port_forwards[0].to", "no port");
  expect_error(parse(full_with("\"198.18.1.10:8080\"", "\"server:8080\"")), "nat.port_forwards[0].to", "a name");
  expect_error(parse(full_with("\"198.18.1.10:8080\"", "\"198.18.1.10:99999\"")), "nat.port_forwards[0].to",
               "port out of range");
  expect_error(parse(full_with("\"198.18.1.11:53\"", "\"198.18.2.11:53\"")), "nat.port_forwards[1].to",
               "target on the outside");
  expect_error(parse(full_with("{proto: tcp, port: 8080", "{proto: icmp, port: 8080")),
               "nat.port_forwards[0].proto", "icmp");
  expect_error(parse(full_with("{proto: tcp, port: 8080", "{proto: tcp, port: 0")), "nat.port_forwards[0].port",
               "port 0");
  expect_error(parse(full_with("{proto: udp, port: 5353", "{proto: tcp, port: 8080")), "nat.port_forwards[1].port",
               "duplicate rule");
  expect_error(parse(full_with("    - {proto: tcp, port: 8080, to: \"198.18.1.10:8080\"}\n"
                               "    - {proto: udp, port: 5353, to: \"198.18.1.11:53\"}\n",
                               "    x: 1\n")),
               "nat.port_forwards", "not a list");
}

TEST(Config, BadCheckpointSettings) {
  expect_error(parse(full_with("mode: strict", "mode: paranoid")), "checkpoint.mode", "mode");
  expect_error(parse(full_with("hold_fallback: drop", "hold_fallback: drop\n  realtime: sometimes")),
               "checkpoint.realtime", "not a boolean");
  {
    Config rc;
    ASSERT_TRUE(parse_config(full_with("hold_fallback: drop", "hold_fallback: drop\n  realtime: true"), {}, &rc).ok());
    EXPECT_TRUE(rc.checkpoint_realtime);
    EXPECT_FALSE(Config{}.checkpoint_realtime) << "the commit path at real-time priority is opt-in";
  }
  expect_error(parse(full_with("hold_fallback: drop", "hold_fallback: maybe")), "checkpoint.hold_fallback",
               "fallback");
  expect_error(parse(full_with("interval_us: 2000", "interval_us: 5")), "checkpoint.interval_us", "too small");
  expect_error(parse(full_with("role: active", "role: leader")), "node.role", "role");
  expect_error(parse(full_with("test_hooks: true", "test_hooks: perhaps")), "worker.test_hooks", "bool");
  expect_error(parse(full_with("metrics: 198.18.3.1:9108", "metrics: localhost:9108")), "management.metrics",
               "endpoint");
  expect_error(parse(full_with("capacity: 131072", "capacity: 8")), "flows.capacity", "tiny table");
  expect_error(parse(full_with("tcp_syn: 30", "tcp_syn: 0")), "flows.timeouts.tcp_syn", "zero timeout");
  expect_error(parse(full_with("eal_args: [\"--log-level\", \"lib.eal:debug\"]", "eal_args: --foo")),
               "dpdk.eal_args", "eal_args scalar");
}

TEST(Config, BadFailoverSettings) {
  expect_error(parse(full_with("fence: process", "fence: stonith")), "failover.fence", "fence kind");
  expect_error(parse(full_with("  fence_pidfile: /run/ftpair-b.pid\n", "")), "failover.fence_pidfile",
               "process fencing without a pidfile");
  expect_error(parse(full_with("fence: process", "fence: libvirt")), "failover.libvirt_uri",
               "libvirt fencing without a URI");
  expect_error(parse(full_with("fence: process", "fence: libvirt\n  libvirt_uri: qemu:///system")),
               "failover.libvirt_domain", "libvirt fencing without a domain");
  expect_error(parse(full_with("garp_count: 5", "garp_count: 50")), "failover.garp_count", "too many GARPs");
  expect_error(parse(full_with("garp_count: 5", "garp_count: 5\n  beat_udp_port: 70000")), "failover.beat_udp_port",
               "fast-beat port out of range");
  expect_error(parse(full_with("garp_count: 5", "garp_count: 5\n  beat_realtime: sometimes")),
               "failover.beat_realtime", "not a boolean");
  Config c;
  ASSERT_TRUE(parse_config(full_with("garp_count: 5", "garp_count: 5\n  beat_udp_port: 0\n  beat_realtime: false"), {},
                           &c).ok());
  EXPECT_EQ(c.beat_udp_port, 0u) << "0 turns fast beats off";
  EXPECT_FALSE(c.beat_realtime);
  // Dataplane beats (issue 19): off by default, 100 us at the least, and only with the fast beats
  // that carry the probe confirming a silence.
  EXPECT_EQ(c.dataplane_beat_us, 0u) << "dataplane beats are off unless asked for";
  ASSERT_TRUE(parse_config(full_with("garp_count: 5", "garp_count: 5\n  dataplane_beat_us: 1000\n  dataplane_miss: 4\n"
                                     "  dataplane_probe_us: 500"), {}, &c).ok());
  EXPECT_EQ(c.dataplane_beat_us, 1000u);
  EXPECT_EQ(c.dataplane_miss, 4u);
  EXPECT_EQ(c.dataplane_probe_us, 500u);
  EXPECT_EQ(c.dataplane_arm_ms, 3000u) << "a silence counts only after 3 s of steady beats as a standby in sync";
  ASSERT_TRUE(parse_config(full_with("garp_count: 5", "garp_count: 5\n  dataplane_beat_us: 1000\n  dataplane_arm_ms: 0"),
                           {}, &c).ok());
  EXPECT_EQ(c.dataplane_arm_ms, 0u) << "0: armed as soon as a standby in sync";
  expect_error(parse(full_with("garp_count: 5", "garp_count: 5\n  dataplane_arm_ms: 600001")), "failover.dataplane_arm_ms",
               "an arm delay over ten minutes");
  expect_error(parse(full_with("garp_count: 5", "garp_count: 5\n  dataplane_beat_us: 50")), "failover.dataplane_beat_us",
               "beats faster than 100 us");
  expect_error(parse(full_with("garp_count: 5", "garp_count: 5\n  dataplane_beat_us: 1000\n  beat_udp_port: 0")),
               "failover.dataplane_beat_us", "dataplane beats without the fast beats' probe");
  expect_error(parse(full_with("garp_count: 5", "garp_count: 5\n  dataplane_miss: 1")), "failover.dataplane_miss",
               "one missed beat is noise");
  expect_error(parse(full_with("miss_threshold: 4", "miss_threshold: 0")), "failover.miss_threshold", "zero");
  expect_error(parse(full_with("miss_threshold: 4", "miss_treshold: 4")), "failover.miss_treshold", "typo");
}

// peer.identities: who may call the peer RPCs under mTLS; by default the peer's own address.
TEST(Config, PeerIdentities) {
  Config c;
  ASSERT_TRUE(parse_config(kFull, {}, &c).ok());
  EXPECT_EQ(c.peer_identities, std::vector<std::string>{"198.18.3.2"});
  ASSERT_TRUE(parse_config(full_with("  grpc: 198.18.3.2:50051", "  grpc: 198.18.3.2:50051\n  identities: [pair1-b.example, 198.18.3.9]"),
                           {}, &c)
                  .ok());
  EXPECT_EQ(c.peer_identities, (std::vector<std::string>{"pair1-b.example", "198.18.3.9"}));
  expect_error(parse(full_with("  grpc: 198.18.3.2:50051", "  grpc: 198.18.3.2:50051\n  identities: []")),
               "peer.identities", "an empty list");
  expect_error(parse(full_with("  grpc: 198.18.3.2:50051", "  grpc: 198.18.3.2:50051\n  identities: ['']")),
               "peer.identities", "an empty name");
  ASSERT_TRUE(parse_config(kMinimal, {}, &c).ok());
  EXPECT_TRUE(c.peer_identities.empty()) << "no peer, nobody";
}

TEST(Config, YamlSyntaxErrorGivesTheLine) {
  const std::string text = "node:\n  id: a\n  role: active: x\nports: {}\n";
  Status s = parse(text);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::INVALID_ARGUMENT);
  EXPECT_NE(s.message().find("line 3"), std::string::npos) << s.message();
  // An unclosed flow sequence further down.
  std::string bad = full_with("eal_args: [\"--log-level\", \"lib.eal:debug\"]", "eal_args: [\"--log-level\"");
  s = parse(bad);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("line "), std::string::npos) << s.message();
  // Empty text: every required section is missing.
  expect_error(parse(""), "node", "empty file");
}

TEST(Config, OverridesApply) {
  Config c;
  Status s = parse_config(kFull, {"flows.capacity=1024", "checkpoint.mode=relaxed", "nat.port_max=30000",
                                   "node.role=standby", "worker.test_hooks=false"},
                          &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.flow_capacity, 1024u);
  EXPECT_EQ(c.mode, ReplicationMode::RELAXED);
  EXPECT_EQ(c.nat_port_max, 30000);
  EXPECT_EQ(c.role, ConfigRole::STANDBY);
  EXPECT_FALSE(c.test_hooks);
  EXPECT_NE(c.source_text.find("flows.capacity=1024"), std::string::npos) << "overrides are recorded";
  // An override can add a section the file does not have.
  s = parse_config(kMinimal, {"checkpoint.mode=strict", "flows.timeouts.udp=133", "peer.grpc=10.9.0.2:50051"}, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.mode, ReplicationMode::STRICT);
  EXPECT_EQ(c.timeouts.udp, 133u);
  EXPECT_EQ(c.peer_grpc.str(), "10.9.0.2:50051");
  EXPECT_EQ(c.node_id, "b");
  // Overrides alone can make a configuration.
  s = parse_config("", {"node.id=z", "ports.inside.device=x", "ports.inside.vip=10.0.0.1/24",
                        "ports.outside.device=y", "ports.outside.vip=10.0.1.1/24"}, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.node_id, "z");
  // The last override of a key wins.
  s = parse_config(kFull, {"flows.capacity=1024", "flows.capacity=2048"}, &c);
  ASSERT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.flow_capacity, 2048u);
}

TEST(Config, BadOverridesAreRefusedNamingTheKey) {
  Config c;
  c.node_id = "untouched";
  expect_error(parse_config(kFull, {"flows.capacity=lots"}, &c), "flows.capacity", "not a number");
  EXPECT_EQ(c.node_id, "untouched") << "a refused config leaves the output alone";
  expect_error(parse(kFull, {"flows.capacity=8"}), "flows.capacity", "out of range");
  expect_error(parse(kFull, {"flows.capacity=[1"}), "flows.capacity", "unparsable value");
  expect_error(parse(kFull, {"checkpoint.mode=fast"}), "checkpoint.mode", "bad enum");
  expect_error(parse(kFull, {"nat.portmin=1"}), "nat.portmin", "unknown key");
  expect_error(parse(kFull, {"flows.capacity"}), "flows.capacity", "no '='");
  expect_error(parse(kFull, {"=5"}), "=5", "no key");
  expect_error(parse(kFull, {"flows..capacity=5"}), "flows..capacity", "empty component");
  expect_error(parse(kFull, {"ports.inside.vip=10.0.0.1"}), "ports.inside.vip", "vip without a prefix");
}

TEST(Config, LoadConfigReadsAFileAndNamesAMissingOne) {
  char path[] = "/tmp/ftpair-config-test-XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream f(path);
    f << kFull;
  }
  Config c;
  Status s = load_config(path, {"flows.capacity=4096"}, &c);
  EXPECT_TRUE(s.ok()) << s.message();
  EXPECT_EQ(c.flow_capacity, 4096u);
  std::remove(path);
  s = load_config(path, {}, &c);
  expect_error(s, path, "missing file");
}

TEST(Config, Helpers) {
  uint32_t a = 0;
  uint8_t len = 0;
  EXPECT_TRUE(parse_prefix("10.1.2.3/8", &a, &len));
  EXPECT_EQ(a, ip("10.1.2.3"));
  EXPECT_EQ(len, 8);
  EXPECT_FALSE(parse_prefix("10.1.2.3", &a, &len));
  EXPECT_FALSE(parse_prefix("10.1.2.3/33", &a, &len));
  EXPECT_FALSE(parse_prefix("10.1.2/8", &a, &len));
  EXPECT_TRUE(parse_ipv4("255.255.255.255", &a));
  EXPECT_EQ(a, 0xffffffffu);
  EXPECT_FALSE(parse_ipv4("1.2.3.4.5", &a));
  Endpoint ep;
  EXPECT_TRUE(parse_endpoint("127.0.0.1:0", &ep));
  EXPECT_EQ(ep.port, 0);
  EXPECT_TRUE(parse_endpoint("10.0.0.1:65535", &ep));
  EXPECT_EQ(ep.str(), "10.0.0.1:65535");
  EXPECT_FALSE(parse_endpoint("10.0.0.1:65536", &ep));
  EXPECT_FALSE(parse_endpoint("10.0.0.1", &ep));
  EXPECT_FALSE(parse_endpoint("10.0.0.1:", &ep));
  EXPECT_FALSE(parse_endpoint("host:80", &ep));
  EXPECT_EQ(ipv4_to_string(ip("198.18.2.1")), "198.18.2.1");
}

}  // namespace
}  // namespace ftpair

// ---- failover.libvirt_events (moved here from the failover tests: config is control's) ----
namespace ftpair {

namespace {
std::string node_yaml(const std::string &failover) {
  return "node: {id: b}\n"
         "ports:\n"
         "  inside: {device: \"net_af_packet0,iface=lan0\", vip: 198.18.1.1/24}\n"
         "  outside: {device: \"net_af_packet1,iface=wan0\", vip: 198.18.2.1/24}\n"
         "failover:\n" +
         failover;
}
const std::string kLibvirt = "  fence: libvirt\n  libvirt_uri: qemu:///system\n  libvirt_domain: pair-a\n";
// The failover section refused, the message naming the key and saying why.
void expect_refused(const std::string &failover, const std::string &key, const std::string &why) {
  Config c;
  const Status st = parse_config(node_yaml(failover), {}, &c);
  expect_error(st, key, why);
  EXPECT_NE(st.message().find(why), std::string::npos) << failover << ": " << st.message();
}
}  // namespace

TEST(PeerEventsConfig, OnByDefaultWithLibvirtFencing) {
  Config c;
  Status st = parse_config(node_yaml(kLibvirt), {}, &c);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_TRUE(c.peer_events_on());
  EXPECT_EQ(config_fields(c).at("failover.libvirt_events"), "true");
  ASSERT_TRUE(parse_config(node_yaml(kLibvirt + "  libvirt_events: false\n"), {}, &c).ok());
  EXPECT_FALSE(c.peer_events_on());
  ASSERT_TRUE(parse_config(node_yaml(kLibvirt), {"failover.libvirt_events=false"}, &c).ok());
  EXPECT_FALSE(c.peer_events_on());
  // Other fencing: no events, and no error for leaving the default.
  ASSERT_TRUE(parse_config(node_yaml("  fence: process\n  fence_pidfile: /run/x.pid\n"), {}, &c).ok());
  EXPECT_FALSE(c.peer_events_on());
  EXPECT_EQ(config_fields(c).at("failover.libvirt_events"), "false");
}

// failover.libvirt_peer: the peer by the domains' metadata (PAIR/NODE), for pairs with a pool.
TEST(PeerEventsConfig, LibvirtPeerInsteadOfADomain) {
  Config c;
  const std::string uri = "  fence: libvirt\n  libvirt_uri: qemu:///system\n";
  Status st = parse_config(node_yaml(uri + "  libvirt_peer: pair/a\n"), {}, &c);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(c.libvirt_peer, "pair/a");
  EXPECT_EQ(config_fields(c).at("failover.libvirt_peer"), "pair/a");
  EXPECT_FALSE(c.peer_events_on()) << "the events are a named domain's";
  expect_refused(uri + "  libvirt_peer: pair/a\n  libvirt_events: true\n", "failover.libvirt_events",
                 "needs failover.libvirt_domain");
  expect_refused(kLibvirt + "  libvirt_peer: pair/a\n", "failover.libvirt_peer", "not both");
  expect_refused(uri + "  libvirt_peer: pair/b\n", "failover.libvirt_peer", "which is this node");
  expect_refused("  fence: process\n  fence_pidfile: /run/x.pid\n  libvirt_peer: pair/a\n", "failover.libvirt_peer",
                 "applies only to fence: libvirt");
  for (const char *bad : {"pair", "pair/", "/a", "p/a/b"})
    expect_refused(uri + "  libvirt_peer: " + bad + "\n", "failover.libvirt_peer", "is not PAIR/NODE");
}

TEST(PeerEventsConfig, BadValuesNameTheKey) {
  expect_refused("  fence: process\n  fence_pidfile: /run/x.pid\n  libvirt_events: true\n", "failover.libvirt_events",
                 "needs fence: libvirt");
  expect_refused(kLibvirt + "  libvirt_events: sometimes\n", "failover.libvirt_events", "true or false");
}

// failover.handover_on_stop: on unless set false; anything but a boolean is refused by name.
TEST(HandoverOnStopConfig, OnByDefaultOffWhenSetAndBadValuesNameTheKey) {
  Config c;
  ASSERT_TRUE(parse_config(node_yaml("  fence: none\n  allow_fence_none: true\n"), {}, &c).ok());
  EXPECT_TRUE(c.handover_on_stop);
  EXPECT_EQ(config_fields(c).at("failover.handover_on_stop"), "true");
  ASSERT_TRUE(parse_config(node_yaml("  handover_on_stop: false\n"), {}, &c).ok());
  EXPECT_FALSE(c.handover_on_stop);
  EXPECT_EQ(config_fields(c).at("failover.handover_on_stop"), "false");
  ASSERT_TRUE(parse_config(node_yaml("  garp_count: 3\n"), {"failover.handover_on_stop=false"}, &c).ok());
  EXPECT_FALSE(c.handover_on_stop);
  expect_refused("  handover_on_stop: maybe\n", "failover.handover_on_stop", "true or false");
}

// failover.beat_keys: a list of {id, file}; ids 1..255, each once. The files are read at start.
TEST(BeatKeysConfig, ListOfIdAndFile) {
  Config c;
  ASSERT_TRUE(parse_config(node_yaml("  beat_keys:\n    - {id: 2, file: /etc/ftpair/new.key}\n"
                                     "    - {id: 1, file: /etc/ftpair/old.key}\n"),
                           {}, &c)
                  .ok());
  ASSERT_EQ(c.beat_keys.size(), 2u);
  EXPECT_EQ(c.beat_keys[0].id, 2u) << "the first listed signs";
  EXPECT_EQ(c.beat_keys[1].file, "/etc/ftpair/old.key");
  EXPECT_EQ(config_fields(c).at("failover.beat_keys"), "2:/etc/ftpair/new.key, 1:/etc/ftpair/old.key");
  for (const char *bad : {"  beat_keys: /etc/k\n", "  beat_keys:\n    - {id: 0, file: /k}\n",
                          "  beat_keys:\n    - {id: 256, file: /k}\n", "  beat_keys:\n    - {id: 1}\n",
                          "  beat_keys:\n    - {id: 1, file: /a}\n    - {id: 1, file: /b}\n",
                          "  beat_keys:\n    - {id: 1, file: /a, secret: x}\n"}) {
    SCOPED_TRACE(bad);
    Status st = parse_config(node_yaml(bad), {}, &c);
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("failover.beat_keys"), std::string::npos) << st.message();
  }
}

// The process fencer fails closed unless the operator says a missing pidfile means stopped.
TEST(FenceConfig, MissingPidfileOkIsExplicitAndOnlyForProcess) {
  Config c;
  ASSERT_TRUE(parse_config(node_yaml("  fence: process\n  fence_pidfile: /run/x.pid\n"), {}, &c).ok());
  EXPECT_FALSE(c.fence_missing_pidfile_ok);
  ASSERT_TRUE(
      parse_config(node_yaml("  fence: process\n  fence_pidfile: /run/x.pid\n  fence_missing_pidfile_ok: true\n"), {}, &c)
          .ok());
  EXPECT_TRUE(c.fence_missing_pidfile_ok);
  EXPECT_EQ(config_fields(c).at("failover.fence_missing_pidfile_ok"), "true");
  Status st = parse_config(node_yaml(kLibvirt + "  fence_missing_pidfile_ok: true\n"), {}, &c);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("failover.fence_missing_pidfile_ok"), std::string::npos) << st.message();
}
}  // namespace ftpair

namespace ftpair {

TEST(LogConfig, LevelAndFormatDefaultsAndErrors) {
  const std::string plain = node_yaml("  garp_count: 3\n");
  Config c;
  ASSERT_TRUE(parse_config(plain, {}, &c).ok());
  EXPECT_EQ(c.log_level, log::Level::INFO);
  EXPECT_EQ(c.log_format, log::Format::AUTO);
  EXPECT_EQ(config_fields(c).at("log.level"), "info");
  EXPECT_EQ(config_fields(c).at("log.format"), "auto");
  Status st = parse_config(plain, {"log.level=debug", "log.format=json"}, &c);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(c.log_level, log::Level::DEBUG);
  EXPECT_EQ(c.log_format, log::Format::JSON);
  EXPECT_EQ(config_fields(c).at("log.format"), "json");
  st = parse_config(plain, {"log.level=loud"}, &c);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("log.level"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("'loud'"), std::string::npos) << st.message();
  st = parse_config(plain, {"log.colour=yes"}, &c);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("log.colour: unknown key"), std::string::npos) << st.message();
}

}  // namespace ftpair
