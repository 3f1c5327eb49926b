// Unit tests for the pure parts of virt/: the SMBIOS type 11 parser, commissioning rules, the
// pair spec checks (each bad spec names its field) and the generated domain XML.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "virt/claim.h"
#include "virt/commission.h"
#include "virt/domain.h"
#include "virt/guest.h"
#include "virt/hook.h"
#include "virt/ops.h"
#include "virt/spec.h"

using namespace ftpair;
using namespace ftpair::virt;

namespace {

// Builds a raw type 11 structure: header (type, length 5, handle), count, string set.
std::vector<uint8_t> type11(const std::vector<std::string> &strs, int count = -1, uint16_t handle = 0x1100) {
  std::vector<uint8_t> b{11, 5, static_cast<uint8_t>(handle & 0xff), static_cast<uint8_t>(handle >> 8),
                         static_cast<uint8_t>(count < 0 ? strs.size() : count)};
  for (const auto &s : strs) {
    b.insert(b.end(), s.begin(), s.end());
    b.push_back(0);
  }
  if (strs.empty()) b.push_back(0);
  b.push_back(0);
  return b;
}

const std::vector<std::string> kNodeB{"ftpair:pair=p", "ftpair:node.id=b", "ftpair:node.role=standby",
                                      "ftpair:management.grpc=198.19.253.2:50051",
                                      "ftpair:peer.grpc=198.19.253.1:50051", "vendor:unrelated=1"};

}  // namespace

TEST(Smbios, ParsesStrings) {
  auto b = type11({"a=1", "ftpair:node.role=active"});
  auto r = parse_smbios_type11(b.data(), b.size());
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.strings, (std::vector<std::string>{"a=1", "ftpair:node.role=active"}));
}

TEST(Smbios, EmptySetAndLongerFormattedArea) {
  auto b = type11({});
  auto r = parse_smbios_type11(b.data(), b.size());
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_TRUE(r.strings.empty());
  // A formatted area longer than 5 bytes (a later SMBIOS revision) is skipped by its length.
  std::vector<uint8_t> c{11, 7, 0, 0, 1, 0xaa, 0xbb, 'x', 0, 0};
  r = parse_smbios_type11(c.data(), c.size());
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.strings, std::vector<std::string>{"x"});
}

TEST(Smbios, RefusesMalformed) {
  auto bad = [](std::vector<uint8_t> b) { return parse_smbios_type11(b.data(), b.size()).error; };
  EXPECT_NE(bad({}).find("truncated"), std::string::npos);
  EXPECT_NE(bad({11, 5, 0}).find("truncated"), std::string::npos);
  EXPECT_NE(bad({1, 5, 0, 0, 0, 0, 0}).find("not 11"), std::string::npos);
  EXPECT_NE(bad({11, 3, 0, 0, 0, 0}).find("below"), std::string::npos);
  EXPECT_NE(bad({11, 4, 0, 0, 0, 0}).find("no count byte"), std::string::npos);
  EXPECT_NE(bad({11, 200, 0, 0, 1, 0, 0}).find("runs past"), std::string::npos);
  EXPECT_NE(bad({11, 5, 0, 0, 1, 'a', 'b'}).find("NUL-terminated"), std::string::npos);
  EXPECT_NE(bad({11, 5, 0, 0, 1, 'a', 0}).find("double NUL"), std::string::npos);
  auto b = type11({"one"}, 3);
  EXPECT_NE(parse_smbios_type11(b.data(), b.size()).error.find("count says 3"), std::string::npos);
  EXPECT_FALSE(parse_smbios_type11(nullptr, 10).ok());
}

TEST(Smbios, CountBelowStringsKeepsCount) {
  auto b = type11({"a", "b", "c"}, 2);
  auto r = parse_smbios_type11(b.data(), b.size());
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.strings.size(), 2u);
}

TEST(Smbios, DmiTableWalk) {
  std::vector<uint8_t> t{0, 4, 0, 0, 'v', 'e', 'n', 0, 0};  // type 0 with one string
  auto a = type11({"ftpair:x=1"});
  auto b = type11({"ftpair:y=2", "z"});
  t.insert(t.end(), a.begin(), a.end());
  t.insert(t.end(), b.begin(), b.end());
  std::vector<uint8_t> end{127, 4, 0xff, 0xfe, 0, 0};
  t.insert(t.end(), end.begin(), end.end());
  t.insert(t.end(), {0xde, 0xad});  // junk after the end marker is not read
  auto r = parse_dmi_table_type11(t.data(), t.size());
  ASSERT_TRUE(r.ok()) << r.error;
  EXPECT_EQ(r.strings, (std::vector<std::string>{"ftpair:x=1", "ftpair:y=2", "z"}));
  t.resize(t.size() - 9);  // cut into the second type 11
  EXPECT_FALSE(parse_dmi_table_type11(t.data(), t.size()).ok());
}

TEST(Commission, DerivesStandby) {
  Commission c;
  ASSERT_TRUE(add_oem_strings(kNodeB, "smbios", &c).ok());
  EXPECT_TRUE(validate(c).ok());
  EXPECT_EQ(c.values.at("node.role"), "standby");
  EXPECT_EQ(c.values.count("vendor:unrelated"), 0u);
  std::string y = to_config_yaml(c);
  EXPECT_NE(y.find("role: standby"), std::string::npos) << y;
  EXPECT_NE(y.find("grpc: 198.19.253.1:50051"), std::string::npos) << y;
}

TEST(Commission, RefusesMissingAndContradictory) {
  Commission c;
  ASSERT_TRUE(add_oem_strings({"ftpair:node.role=active", "ftpair:node.id=a"}, "smbios", &c).ok());
  Status st = validate(c);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("peer.grpc is missing"), std::string::npos) << st.message();

  Commission d;
  st = add_oem_strings({"ftpair:node.role=active", "ftpair:node.role=standby"}, "smbios", &d);
  EXPECT_NE(st.message().find("contradictory node.role"), std::string::npos) << st.message();

  Commission e;
  ASSERT_TRUE(add_oem_strings(kNodeB, "smbios", &e).ok());
  st = add_config_drive_yaml("node: {role: active}\n", "drive", &e);
  EXPECT_NE(st.message().find("'standby' from smbios but 'active' from drive"), std::string::npos) << st.message();

  Commission f;
  st = add_oem_strings({"ftpair:novalue"}, "smbios", &f);
  EXPECT_NE(st.message().find("not ftpair:key=value"), std::string::npos);

  Commission g;
  ASSERT_TRUE(add_oem_strings(kNodeB, "smbios", &g).ok());
  g.values["peer.grpc"] = g.values["management.grpc"];
  EXPECT_NE(validate(g).message().find("its own peer"), std::string::npos);

  Commission h;
  ASSERT_TRUE(add_oem_strings(kNodeB, "smbios", &h).ok());
  ASSERT_TRUE(add_oem_strings({"ftpair:peer=x"}, "smbios2", &h).ok());
  EXPECT_NE(validate(h).message().find("makes it a section"), std::string::npos) << validate(h).message();
}

TEST(Commission, FromEnvironmentDirectory) {
  auto dir = std::filesystem::temp_directory_path() / ("ftpair-comm-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  Commission none;
  Status st = commission_from_environment(dir.string(), (dir / "drive").string(), &none);
  EXPECT_NE(st.message().find("nothing to derive a role from"), std::string::npos) << st.message();
  std::filesystem::create_directories(dir / "entries" / "11-0");
  auto b = type11(kNodeB);
  std::ofstream(dir / "entries" / "11-0" / "raw", std::ios::binary).write(reinterpret_cast<char *>(b.data()), b.size());
  Commission c;
  st = commission_from_environment(dir.string(), (dir / "drive").string(), &c);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(c.values.at("node.id"), "b");
  // A config drive that agrees is fine; one that contradicts is refused.
  std::filesystem::create_directories(dir / "drive");
  std::ofstream(dir / "drive" / "ftpair.yaml") << "node: {role: active}\n";
  Commission d;
  st = commission_from_environment(dir.string(), (dir / "drive").string(), &d);
  EXPECT_NE(st.message().find("contradictory node.role"), std::string::npos) << st.message();
  std::filesystem::remove_all(dir);
}

namespace {

std::string spec_text(const std::string &extra_pair = "", const std::string &b_role = "standby") {
  return "pair:\n  name: p\n  allowlist: {/img/n.img: " + std::string(64, 'a') + "}\n" + extra_pair +
         "nodes:\n"
         "  a: {uri: 'qemu:///system', role: active, memory_mib: 64, disk: /img/n.img,\n"
         "      management: {network: m, address: 198.19.253.1/24}}\n"
         "  b: {uri: 'qemu:///system', role: " + b_role + ", memory_mib: 64, disk: /img/n.img,\n"
         "      nics: [{type: bridge, source: br0}, {type: macvtap, source: eth1}, {type: vhost-user, source: /run/v.sock}],\n"
         "      management: {network: m, address: 198.19.253.2/24}}\n";
}

std::string spec_error(const std::string &text) {
  PairSpec s;
  Status st = parse_spec(text, &s);
  return st.ok() ? "" : st.message();
}

std::string replace(std::string s, const std::string &from, const std::string &to) {
  auto p = s.find(from);
  EXPECT_NE(p, std::string::npos) << from;
  if (p != std::string::npos) s.replace(p, from.size(), to);
  return s;
}

}  // namespace

TEST(Spec, GoodSpecParses) {
  PairSpec s;
  Status st = parse_spec(spec_text(), &s);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(s.b.nics.size(), 3u);
  EXPECT_EQ(s.b.nics[1].mode, "bridge");
  EXPECT_EQ(s.b.nics[2].mode, "client");
}

TEST(Spec, BadSpecsNameTheField) {
  const std::string g = spec_text();
  struct Case {
    std::string text, want;
  } cases[] = {
      {"", "must be a YAML map"},
      {"pair: [", "not valid YAML"},
      {replace(g, "  name: p\n", ""), "pair.name: missing"},
      {replace(g, "name: p", "name: P_1"), "pair.name:"},
      {replace(g, "memory_mib: 64, disk: /img/n.img,\n      management: {network: m, address: 198.19.253.1/24}",
               "disk: /img/n.img,\n      management: {network: m, address: 198.19.253.1/24}"),
       "nodes.a.memory_mib: missing"},
      {spec_text("", "active"), "nodes.b.role: both nodes are active"},
      {replace(g, "198.19.253.2/24", "198.19.253.1/24"), "nodes.b.management.address: same address"},
      {replace(g, "198.19.253.2/24", "198.19.253.2"), "nodes.b.management.address:"},
      {replace(g, "type: macvtap", "type: sriov"), "nodes.b.nics[1].type: 'sriov'"},
      {replace(g, "{type: bridge, source: br0}", "{type: bridge}"), "nodes.b.nics[0].source: missing"},
      {replace(g, "memory_mib: 64, disk: /img/n.img,\n      management: {network: m, address: 198.19.253.1/24}",
               "memory_mib: 64, disk: /img/n.img, kernel: /k,\n      management: {network: m, address: 198.19.253.1/24}"),
       "nodes.a.disk: and nodes.a.kernel are both set"},
      {replace(g, "/img/n.img: ", "/img/other.img: "), "nodes.a.disk: '/img/n.img' is not in pair.allowlist"},
      {replace(g, std::string(64, 'a'), "abc"), "pair.allowlist./img/n.img: must be a lowercase sha256"},
      {spec_text("  pool: {size: 2, addresses: [198.19.253.10/24]}\n"), "pair.pool.addresses: 1 given for size 2"},
      {spec_text("  reuse: always\n"), "pair.reuse: 'always'"},
      {spec_text("  guest_daemon: maybe\n"), "pair.guest_daemon: 'maybe' is not true or false"},
      {spec_text("  config: {node.role: active}\n"), "pair.config.node.role: is derived"},
      {spec_text("  colour: red\n"), "pair.colour: unknown field"},
      {replace(g, "memory_mib: 64, disk", "memory_mib: -3, disk"), "nodes.a.memory_mib: must be a whole number"},
      {replace(g, "management: {network: m, address: 198.19.253.1/24}",
               "management: {network: m, bridge: br, address: 198.19.253.1/24}"),
       "nodes.a.management.network: give exactly one"},
      {replace(g, "{type: bridge, source: br0}", "{type: bridge, source: br0, port: lan}"),
       "nodes.b.nics[0].port: 'lan' is not inside or outside"},
      {replace(g, "{type: bridge, source: br0}, {type: macvtap, source: eth1}",
               "{type: bridge, source: br0, port: inside}, {type: macvtap, source: eth1, port: inside}"),
       "nodes.b.nics[1].port: two NICs are the inside port"},
  };
  for (const auto &c : cases) {
    std::string err = spec_error(c.text);
    EXPECT_NE(err.find(c.want), std::string::npos) << "want '" << c.want << "', got '" << err << "'\n" << c.text;
  }
}

TEST(Domain, XmlCarriesOemStringsAndNics) {
  PairSpec s;
  ASSERT_TRUE(parse_spec(spec_text("  config: {failover.fence: libvirt}\n"), &s).ok());
  InstanceMeta m{s.name, "b", "standby", "member", image_key(s, s.b), 64, 1, "", s.b.mgmt_address, ""};
  std::string x = domain_xml(s, s.b, "p-b", "", m);
  for (const char *want : {"<entry>ftpair:node.role=standby</entry>", "<entry>ftpair:peer.grpc=198.19.253.1:50051</entry>",
                           "<entry>ftpair:failover.fence=libvirt</entry>", "<smbios mode='sysinfo'/>",
                           "<sysinfo type='smbios'>", "xmlns:ftpair=\"urn:ftpair:virt:1\"", "<interface type='direct'>",
                           "<interface type='vhostuser'>", "<access mode='shared'/>", "<readonly/>"})
    EXPECT_NE(x.find(want), std::string::npos) << want << "\n" << x;
  InstanceMeta back;
  ASSERT_TRUE(parse_meta_xml(meta_xml(m, false), &back));
  EXPECT_EQ(back.image, m.image);
  EXPECT_EQ(back.address, "198.19.253.2/24");
  // A spare does not know its peer yet: both candidates.
  auto spare = s.spare(0);
  std::string sx = domain_xml(s, spare, "p-spare-0", "", m);
  EXPECT_NE(sx.find("ftpair:peer.candidates=198.19.253.1:50051,198.19.253.2:50051"), std::string::npos);
  EXPECT_EQ(sx.find("pool.token"), std::string::npos);
  // With guest_daemon, pool fill gives the spare a claim token: an OEM string and the metadata.
  spare.pool_token = "00112233445566778899aabbccddeeff";
  InstanceMeta sm = m;
  sm.token = spare.pool_token;
  sx = domain_xml(s, spare, "p-spare-0", "", sm);
  EXPECT_NE(sx.find("<entry>ftpair:pool.token=00112233445566778899aabbccddeeff</entry>"), std::string::npos) << sx;
  ASSERT_TRUE(parse_meta_xml(meta_xml(sm, false), &back));
  EXPECT_EQ(back.token, spare.pool_token);
}

// The dataplane NICs of a VM pair: each NIC at a fixed PCI slot (management 3, nics[i] 4 + i), and
// the ones that are ftpaird ports named to the guest by that address; fencing by libvirt names
// the peer's domain.
TEST(Domain, DataplaneNicsHaveFixedPciAddressesNamedInTheOemStrings) {
  PairSpec s;
  std::string text = replace(spec_text("  config: {failover.fence: libvirt}\n"),
                             "{type: bridge, source: br0}, {type: macvtap, source: eth1}",
                             "{type: bridge, source: br0, port: inside}, {type: macvtap, source: eth1, port: outside}");
  ASSERT_TRUE(parse_spec(text, &s).ok()) << spec_error(text);
  EXPECT_EQ(s.b.nics[0].port, "inside");
  EXPECT_EQ(s.b.nics[2].port, "");
  EXPECT_EQ(nic_pci_address(0), "0000:00:04.0");
  EXPECT_EQ(nic_pci_address(12), "0000:00:10.0");
  InstanceMeta m{s.name, "b", "standby", "member", image_key(s, s.b), 64, 1, "", s.b.mgmt_address, ""};
  std::string x = domain_xml(s, s.b, "p-b", "", m);
  for (const char *want : {"<entry>ftpair:ports.inside.device=0000:00:04.0</entry>",
                           "<entry>ftpair:ports.outside.device=0000:00:05.0</entry>",
                           "<entry>ftpair:failover.libvirt_domain=p-a</entry>",
                           "slot='0x03' function='0x0'/>\n    </interface>\n    <interface type='bridge'>\n"
                           "      <source bridge='br0'/>\n      <model type='virtio'/>\n"
                           "      <address type='pci' domain='0x0000' bus='0x00' slot='0x04'",
                           "slot='0x06'"})
    EXPECT_NE(x.find(want), std::string::npos) << want << "\n" << x;
  // The VM profile's timers, unless the pair's config sets them.
  EXPECT_NE(x.find("<entry>ftpair:default.failover.heartbeat_interval_ms=" + std::to_string(kVmHeartbeatMs) + "</entry>"),
            std::string::npos);
  EXPECT_NE(x.find("<entry>ftpair:default.failover.miss_threshold=" + std::to_string(kVmMissThreshold) + "</entry>"),
            std::string::npos);
  // The vhost-user NIC is no port: no OEM string names slot 6.
  EXPECT_EQ(x.find("device=0000:00:06.0"), std::string::npos);
  // Node a fences b's domain; an explicit libvirt_domain in the pair's config is left alone.
  EXPECT_NE(domain_xml(s, s.a, "p-a", "", m).find("ftpair:failover.libvirt_domain=p-b"), std::string::npos);
  s.config["failover.libvirt_domain"] = "elsewhere";
  s.config["failover.miss_threshold"] = "7";
  x = domain_xml(s, s.b, "p-b", "", m);
  EXPECT_EQ(x.find("libvirt_domain=p-a"), std::string::npos);
  EXPECT_NE(x.find("libvirt_domain=elsewhere"), std::string::npos);
  EXPECT_NE(x.find("ftpair:failover.miss_threshold=7<"), std::string::npos);
  EXPECT_EQ(x.find("miss_threshold=" + std::to_string(kVmMissThreshold) + "<"), std::string::npos);
  // With a warm pool the peer is found by the metadata: a replacement keeps its own name.
  s.config.erase("failover.libvirt_domain");
  s.pool_size = 1;
  x = domain_xml(s, s.a, "p-a", "", m);
  EXPECT_NE(x.find("ftpair:failover.libvirt_peer=" + s.name + "/b<"), std::string::npos) << x;
  EXPECT_EQ(x.find("libvirt_domain="), std::string::npos) << x;
  // A spare knows neither its node nor its peer until it is claimed (apply_assume).
  EXPECT_EQ(domain_xml(s, s.spare(0), "p-spare-0", "", m).find("libvirt_peer"), std::string::npos);
}

// The host's profile defaults give way to the guest's base config and to explicit keys.
TEST(Commission, DefaultKeysGiveWayToTheBaseConfigAndExplicitKeys) {
  Commission c;
  ASSERT_TRUE(add_oem_strings({"ftpair:node.id=a", "ftpair:node.role=active", "ftpair:management.address=198.19.253.1/24",
                               "ftpair:management.grpc=198.19.253.1:50051", "ftpair:peer.grpc=198.19.253.2:50051",
                               "ftpair:default.failover.heartbeat_interval_ms=50", "ftpair:default.failover.miss_threshold=10",
                               "ftpair:default.worker.stall_ms=3000", "ftpair:worker.stall_ms=2000"},
                              "test", &c)
                  .ok());
  std::string out;
  ASSERT_TRUE(merge_into_config("failover:\n  heartbeat_interval_ms: 100\n", c, &out).ok());
  YAML::Node y = YAML::Load(out);
  EXPECT_EQ(y["failover"]["heartbeat_interval_ms"].as<int>(), 100) << "the base config's own value stays\n" << out;
  EXPECT_EQ(y["failover"]["miss_threshold"].as<int>(), 10) << "the default where the base says nothing\n" << out;
  EXPECT_EQ(y["worker"]["stall_ms"].as<int>(), 2000) << "an explicit key beats the default\n" << out;
  EXPECT_FALSE(y["default"]) << out;
}

TEST(Guest, PciAddressesInDpdksForm) {
  EXPECT_TRUE(is_pci_address("0000:00:04.0"));
  EXPECT_TRUE(is_pci_address("0000:af:1f.7"));
  for (const char *bad : {"", "00:04.0", "0000:00:04", "0000-00:04.0", "0000:00:04.g", "net_virtio0", "0000:00:04.00"})
    EXPECT_FALSE(is_pci_address(bad)) << bad;
  // Not a PCI address: refused before sysfs is touched.
  Status st = bind_pci("eth1", "uio_pci_generic");
  EXPECT_NE(st.message().find("'eth1' is not a PCI address"), std::string::npos) << st.message();
  st = bind_pci("0000:7f:1f.7", "uio_pci_generic");
  EXPECT_NE(st.message().find("no PCI device 0000:7f:1f.7"), std::string::npos) << st.message();
}

namespace {

// What a spare commissions: candidates instead of a peer, and its claim token.
Commission spare_commission() {
  Commission c;
  EXPECT_TRUE(add_oem_strings({"ftpair:pair=p", "ftpair:node.id=spare-0", "ftpair:node.role=standby",
                               "ftpair:management.address=198.19.253.10/24", "ftpair:management.grpc=198.19.253.10:50051",
                               "ftpair:peer.candidates=198.19.253.1:50051,198.19.253.2:50051",
                               "ftpair:pool.token=secret0123"},
                              "SMBIOS", &c)
                  .ok());
  EXPECT_TRUE(validate(c).ok());
  return c;
}

}  // namespace

TEST(Guest, AssumeLineParses) {
  Assume a;
  Status st = parse_assume("assume token=secret0123 node=b address=198.19.253.2/24 peer=198.19.253.1:50051\n",
                           "secret0123", &a);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(a.node, "b");
  EXPECT_EQ(a.address.prefix, 24);
  EXPECT_EQ(a.address.text, "198.19.253.2/24");
  EXPECT_EQ(a.peer, "198.19.253.1:50051");
}

TEST(Guest, AssumeRefusesBadLines) {
  const std::string ok = "assume token=secret0123 node=b address=198.19.253.2/24 peer=198.19.253.1:50051";
  struct Case {
    std::string line, token, want;
  } cases[] = {
      {ok, "other-token", "wrong token"},
      {ok, "secret01234", "wrong token"},
      {ok, "", "has no ftpair:pool.token"},
      {"hello", "secret0123", "unknown request 'hello'"},
      {"", "secret0123", "unknown request ''"},
      {replace(ok, "node=b", "node=c"), "secret0123", "node must be a or b"},
      {replace(ok, " node=b", ""), "secret0123", "field 'node' missing"},
      {ok + " node=a", "secret0123", "field 'node' given twice"},
      {ok + " colour=red", "secret0123", "unknown field 'colour'"},
      {replace(ok, "198.19.253.2/24", "198.19.253.2"), "secret0123", "is not ip/prefix"},
      {replace(ok, "198.19.253.2/24", "198.19.253.2/33"), "secret0123", "prefix must be 1..32"},
      {replace(ok, "198.19.253.2/24", "198.19.253.999/24"), "secret0123", "not an IPv4 address"},
      {replace(ok, ":50051", ":70000"), "secret0123", "is not ip:port"},
      {replace(ok, ":50051", ""), "secret0123", "is not ip:port"},
      {replace(ok, "node=b", "node"), "secret0123", "'node' is not key=value"},
      {ok + " " + std::string(600, 'x'), "secret0123", "longer than 512 bytes"},
  };
  for (const auto &c : cases) {
    Assume a;
    Status st = parse_assume(c.line, c.token, &a);
    EXPECT_FALSE(st.ok()) << c.line;
    EXPECT_NE(st.message().find(c.want), std::string::npos) << "want '" << c.want << "', got '" << st.message() << "'";
  }
}

TEST(Claim, BothEndsSpeakTheSameLines) {
  // The host's request, as the spare parses it.
  std::string line = assume_line("secret0123", "a", "198.19.253.1/24", "198.19.253.2:50051");
  Assume a;
  Status st = parse_assume(line + "\n", "secret0123", &a);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(a.node, "a");
  EXPECT_EQ(a.address.text, "198.19.253.1/24");
  EXPECT_EQ(a.peer, "198.19.253.2:50051");
  // The spare's answers, as the host reads them.
  EXPECT_EQ(claim_answer(st), "ok");
  st = parse_assume(line, "another-token", &a);
  EXPECT_EQ(st.code(), Code::PERMISSION_DENIED);
  EXPECT_EQ(claim_answer(st), "refused: assume: wrong token");
  EXPECT_EQ(claim_refusal(ClaimRefusal::MISSING_FIELD, "peer").message(), "assume: field 'peer' missing");
  EXPECT_EQ(claim_refusal(ClaimRefusal::NO_TOKEN).code(), Code::FAILED_PRECONDITION);
}

TEST(Guest, AssumeTakesTheFailedMembersIdentity) {
  Commission c = spare_commission();
  Assume a;
  ASSERT_TRUE(parse_assume("assume token=secret0123 node=b address=198.19.253.2/24 peer=198.19.253.1:50051",
                           "secret0123", &a)
                  .ok());
  Status st = apply_assume(a, &c);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(c.values["node.id"], "b");
  EXPECT_EQ(c.values["node.role"], "standby");
  EXPECT_EQ(c.values["management.grpc"], "198.19.253.2:50051");
  EXPECT_EQ(c.values["management.address"], "198.19.253.2/24");
  EXPECT_EQ(c.values["peer.grpc"], "198.19.253.1:50051");
  EXPECT_EQ(c.values.count("peer.candidates"), 0u);
  EXPECT_EQ(c.values.count("pool.token"), 0u);
  // What ftpaird gets: the member's keys, none of the host's or the init's.
  std::string cfg;
  ASSERT_TRUE(merge_into_config("node:\n  state_dir: /run/s\n", c, &cfg).ok());
  EXPECT_NE(cfg.find("id: b"), std::string::npos) << cfg;
  EXPECT_NE(cfg.find("grpc: 198.19.253.1:50051"), std::string::npos) << cfg;
  for (const char *absent : {"token", "candidates", "address", "pair"}) EXPECT_EQ(cfg.find(absent), std::string::npos) << absent << "\n" << cfg;
  EXPECT_EQ(c.values.count("failover.libvirt_peer"), 0u) << "no libvirt fencing, no peer to fence";
  // With libvirt fencing the spare fences the other node, by the pair's metadata.
  Commission lv = spare_commission();
  ASSERT_TRUE(add_oem_strings({"ftpair:failover.fence=libvirt", "ftpair:failover.libvirt_uri=qemu+tcp://198.19.253.254/system"},
                              "SMBIOS", &lv)
                  .ok());
  ASSERT_TRUE(apply_assume(a, &lv).ok());
  EXPECT_EQ(lv.values["failover.libvirt_peer"], "p/a");
  // A pair whose config names the peer keeps it.
  Commission named = spare_commission();
  ASSERT_TRUE(add_oem_strings({"ftpair:failover.fence=libvirt", "ftpair:failover.libvirt_domain=p-a"}, "SMBIOS", &named).ok());
  ASSERT_TRUE(apply_assume(a, &named).ok());
  EXPECT_EQ(named.values.count("failover.libvirt_peer"), 0u);
  // A spare told to be its own peer is refused.
  Commission c2 = spare_commission();
  ASSERT_TRUE(parse_assume("assume token=secret0123 node=b address=198.19.253.1/24 peer=198.19.253.1:50051",
                           "secret0123", &a)
                  .ok());
  st = apply_assume(a, &c2);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("is the address to assume"), std::string::npos) << st.message();
}

TEST(Guest, DaemonKeys) {
  for (const char *k : {"node.id", "node.role", "peer.grpc", "management.grpc", "failover.fence"}) EXPECT_TRUE(is_daemon_key(k)) << k;
  for (const char *k : {"pair", "management.address", "peer.candidates", "pool.token", "pool.port"}) EXPECT_FALSE(is_daemon_key(k)) << k;
}

TEST(Hook, VerifiesAgainstAllowList) {
  auto dir = std::filesystem::temp_directory_path() / ("ftpair-hook-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string img = (dir / "n.img").string();
  std::ofstream(img) << "image";
  // sha256("image")
  const std::string good = "6105d6cc76af400325e94d588ce511be5bfdbb73b437dc51eca43917d7a43e3d";
  ASSERT_TRUE(write_allowlist((dir / "allow").string(), "p", {{img, good}}).ok());
  auto xml = [&](const std::string &meta) {
    return "<domain type='qemu'><name>d</name><metadata>" + meta + "</metadata><devices><disk type='file'><source file='" +
           img + "'/></disk></devices></domain>";
  };
  const std::string ours = "<ftpair:instance xmlns:ftpair='urn:ftpair:virt:1' pair='p'/>";
  EXPECT_TRUE(verify_domain_xml(xml(ours), (dir / "allow").string()).ok());
  EXPECT_TRUE(verify_domain_xml(xml(""), (dir / "allow").string()).ok());  // not ours
  std::ofstream(img) << "tampered";
  Status st = verify_domain_xml(xml(ours), (dir / "allow").string());
  EXPECT_NE(st.message().find(img + " expected sha256 " + good + ", found "), std::string::npos) << st.message();
  st = verify_domain_xml(xml("<ftpair:instance xmlns:ftpair='urn:ftpair:virt:1' pair='q'/>"), (dir / "allow").string());
  EXPECT_NE(st.message().find("cannot be read"), std::string::npos) << st.message();
  EXPECT_FALSE(verify_domain_xml("<not xml", (dir / "allow").string()).ok());
  std::filesystem::remove_all(dir);
}

TEST(Commission, MergesIntoBaseConfig) {
  Commission c;
  ASSERT_TRUE(add_oem_strings(kNodeB, "smbios", &c).ok());
  std::string out;
  Status st = merge_into_config("node: {id: b, role: auto, state_dir: /var/lib/ftpair}\nflows: {capacity: 1024}\n", c, &out);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_NE(out.find("role: standby"), std::string::npos) << out;
  EXPECT_NE(out.find("state_dir: /var/lib/ftpair"), std::string::npos) << out;
  EXPECT_NE(out.find("capacity: 1024"), std::string::npos) << out;
  EXPECT_NE(out.find("grpc: 198.19.253.1:50051"), std::string::npos) << out;
  st = merge_into_config("node: {role: active}\n", c, &out);
  EXPECT_NE(st.message().find("base config sets node.role: 'active' but the environment"), std::string::npos)
      << st.message();
  st = merge_into_config("peer: 7\n", c, &out);
  EXPECT_NE(st.message().find("peer is not a section"), std::string::npos) << st.message();
  EXPECT_FALSE(merge_into_config("[1, 2]", c, &out).ok());
}

// Not a fuzzer (fuzz/ has the libFuzzer target): a quick sweep of truncations and single-byte
// mutations of a valid structure and table, which must each give strings or an error, and
// never read outside the buffer (the vector is exactly the input, so ASan builds catch it).
TEST(Smbios, MutationsNeverCrash) {
  auto base = type11(kNodeB);
  size_t oks = 0, errors = 0;
  for (size_t cut = 0; cut <= base.size(); ++cut) {
    std::vector<uint8_t> v(base.begin(), base.begin() + cut);
    auto r = parse_smbios_type11(v.data(), v.size());
    (r.ok() ? oks : errors)++;
  }
  EXPECT_EQ(oks, 1u);  // only the whole structure parses
  for (size_t i = 0; i < base.size(); ++i)
    for (int b : {0, 1, 4, 5, 11, 127, 255}) {
      auto v = base;
      v[i] = static_cast<uint8_t>(b);
      auto r = parse_smbios_type11(v.data(), v.size());
      if (r.ok()) {
        EXPECT_EQ(r.strings.size(), v[4]);
      }
      auto t = parse_dmi_table_type11(v.data(), v.size());
      if (!t.ok()) {
        EXPECT_TRUE(t.strings.empty());
      }
    }
}

// ftpair-virt's wait for a replacement in sync: what it makes of the active's word (virt/ops.h).
TEST(SyncVerdict, TheActivesWordEndsTheWaitOnlyForAStreamThatBeganAfterTheFailedNodeWasGone) {
  using virt::ActiveSyncView;
  using virt::judge_active;
  using virt::SyncVerdict;
  const std::string b = "198.19.253.2:50051";
  // The replacement's stream: in sync, READY in its acknowledgement, 0.2 s old, 0.4 s after the
  // failed node was destroyed.
  ActiveSyncView v{true, true, b, "b", virt::kRoleStateStandbyReady, 0.2};
  EXPECT_EQ(judge_active(v, b, 0.4), SyncVerdict::IN_SYNC);
  // The failed node's stream, still in sync: older than its end. Wait for the new one.
  EXPECT_EQ(judge_active(v, b, 0.1), SyncVerdict::NOT_YET);
  EXPECT_EQ(judge_active(v, b, 0.2), SyncVerdict::NOT_YET) << "as old as the wait: not known to be younger";
  // Not in sync, not active, or a stream to another address: not yet, whatever it says.
  for (auto bad : {ActiveSyncView{true, false, b, "b", 3, 0.2}, ActiveSyncView{false, true, b, "b", 3, 0.2},
                   ActiveSyncView{true, true, "198.19.253.9:50051", "b", 3, 0.2}})
    EXPECT_EQ(judge_active(bad, b, 0.4), SyncVerdict::NOT_YET);
  // A young stream whose standby said another state (SYNCING), or no stream at all.
  EXPECT_EQ(judge_active(ActiveSyncView{true, true, b, "b", 2, 0.2}, b, 0.4), SyncVerdict::NOT_YET);
  EXPECT_EQ(judge_active(ActiveSyncView{true, true, b, "b", 3, -1}, b, 0.4), SyncVerdict::NOT_YET);
  // The active cannot say: an older standby (no state, or no node id), or the failed node's end
  // is not known here (negative). The replacement is asked.
  EXPECT_EQ(judge_active(ActiveSyncView{true, true, b, "b", 0, 0.2}, b, 0.4), SyncVerdict::ASK_STANDBY);
  EXPECT_EQ(judge_active(ActiveSyncView{true, true, b, "", 3, 0.2}, b, 0.4), SyncVerdict::ASK_STANDBY);
  EXPECT_EQ(judge_active(v, b, -1), SyncVerdict::ASK_STANDBY);
}
