#include "virt/spec.h"

#include <cstdio>
#include <arpa/inet.h>

#include <fstream>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

namespace ftpair::virt {

namespace {

// Thrown only inside parse_spec and turned into a Status there.
struct SpecError {
  std::string field, why;
};

[[noreturn]] void fail(const std::string &field, const std::string &why) { throw SpecError{field, why}; }

void check_keys(const YAML::Node &n, const std::string &path, const std::set<std::string> &allowed) {
  if (!n.IsMap()) fail(path, "must be a map");
  for (auto it = n.begin(); it != n.end(); ++it) {
    std::string k = it->first.as<std::string>();
    if (!allowed.count(k)) fail(path.empty() ? k : path + "." + k, "unknown field");
  }
}

std::string str(const YAML::Node &parent, const std::string &key, const std::string &path, bool required) {
  YAML::Node n = parent[key];
  if (!n) {
    if (required) fail(path + "." + key, "missing");
    return "";
  }
  if (!n.IsScalar()) fail(path + "." + key, "must be a string");
  std::string v = n.as<std::string>();
  if (required && v.empty()) fail(path + "." + key, "empty");
  return v;
}

uint32_t uint_in(const YAML::Node &parent, const std::string &key, const std::string &path, uint32_t lo, uint32_t hi,
                 bool required, uint32_t dflt) {
  YAML::Node n = parent[key];
  if (!n) {
    if (required) fail(path + "." + key, "missing");
    return dflt;
  }
  uint64_t v = 0;
  try {
    long long s = n.as<long long>();
    if (s < 0) throw YAML::Exception(YAML::Mark(), "negative");
    v = static_cast<uint64_t>(s);
  } catch (const YAML::Exception &) {
    fail(path + "." + key, "must be a whole number");
  }
  if (v < lo || v > hi)
    fail(path + "." + key, std::to_string(v) + " is outside " + std::to_string(lo) + ".." + std::to_string(hi));
  return static_cast<uint32_t>(v);
}

bool valid_cidr(const std::string &s) {
  auto slash = s.find('/');
  if (slash == std::string::npos) return false;
  in_addr a;
  if (inet_pton(AF_INET, s.substr(0, slash).c_str(), &a) != 1) return false;
  std::string p = s.substr(slash + 1);
  if (p.empty() || p.size() > 2 || p.find_first_not_of("0123456789") != std::string::npos) return false;
  int n = std::stoi(p);
  return n >= 1 && n <= 32;
}

bool valid_name(const std::string &s) {
  if (s.empty() || s.size() > 40) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return true;
}

bool is_hex64(const std::string &s) {
  return s.size() == 64 && s.find_first_not_of("0123456789abcdef") == std::string::npos;
}

NodeSpec parse_node(const YAML::Node &n, const std::string &id) {
  const std::string p = "nodes." + id;
  check_keys(n, p, {"uri", "role", "memory_mib", "vcpus", "disk", "kernel", "initrd", "cmdline", "nics",
                    "management", "serial_log"});
  NodeSpec s;
  s.id = id;
  s.uri = str(n, "uri", p, true);
  s.role = str(n, "role", p, true);
  if (s.role != "active" && s.role != "standby") fail(p + ".role", "'" + s.role + "' is not active or standby");
  s.memory_mib = uint_in(n, "memory_mib", p, 16, 1 << 20, true, 0);
  s.vcpus = uint_in(n, "vcpus", p, 1, 64, false, 1);
  s.disk = str(n, "disk", p, false);
  s.kernel = str(n, "kernel", p, false);
  s.initrd = str(n, "initrd", p, false);
  s.cmdline = str(n, "cmdline", p, false);
  s.serial_log = str(n, "serial_log", p, false);
  if (!s.disk.empty() && !s.kernel.empty()) fail(p + ".disk", "and " + p + ".kernel are both set: boot from one");
  if (s.disk.empty() && s.kernel.empty()) fail(p + ".disk", "missing (or kernel + initrd)");
  if (!s.initrd.empty() && s.kernel.empty()) fail(p + ".initrd", "set without " + p + ".kernel");
  if (!s.cmdline.empty() && s.kernel.empty()) fail(p + ".cmdline", "set without " + p + ".kernel");
  for (const auto *f : {&s.disk, &s.kernel, &s.initrd, &s.serial_log})
    if (!f->empty() && f->front() != '/') fail(p, "paths must be absolute ('" + *f + "')");
  if (YAML::Node nics = n["nics"]) {
    if (!nics.IsSequence()) fail(p + ".nics", "must be a list");
    for (size_t i = 0; i < nics.size(); ++i) {
      const std::string np = p + ".nics[" + std::to_string(i) + "]";
      check_keys(nics[i], np, {"type", "source", "mode", "port"});
      NicSpec nic{str(nics[i], "type", np, true), str(nics[i], "source", np, true), str(nics[i], "mode", np, false),
                  str(nics[i], "port", np, false)};
      if (!nic.port.empty() && nic.port != "inside" && nic.port != "outside")
        fail(np + ".port", "'" + nic.port + "' is not inside or outside");
      for (const auto &other : s.nics)
        if (!nic.port.empty() && other.port == nic.port) fail(np + ".port", "two NICs are the " + nic.port + " port");
      if (nic_slot(i) > 0x1f) fail(np, "too many NICs (PCI slots 4 to 31)");
      if (nic.type == "bridge") {
        if (!nic.mode.empty()) fail(np + ".mode", "not used with type bridge");
      } else if (nic.type == "macvtap") {
        if (nic.mode.empty()) nic.mode = "bridge";
        if (nic.mode != "bridge" && nic.mode != "vepa" && nic.mode != "private" && nic.mode != "passthrough")
          fail(np + ".mode", "'" + nic.mode + "' is not bridge, vepa, private or passthrough");
      } else if (nic.type == "vhost-user") {
        if (nic.mode.empty()) nic.mode = "client";
        if (nic.mode != "client" && nic.mode != "server") fail(np + ".mode", "'" + nic.mode + "' is not client or server");
        if (nic.source.front() != '/') fail(np + ".source", "must be an absolute socket path");
      } else {
        fail(np + ".type", "'" + nic.type + "' is not bridge, macvtap or vhost-user");
      }
      s.nics.push_back(nic);
    }
  }
  YAML::Node m = n["management"];
  if (!m) fail(p + ".management", "missing");
  check_keys(m, p + ".management", {"network", "bridge", "address"});
  s.mgmt_network = str(m, "network", p + ".management", false);
  s.mgmt_bridge = str(m, "bridge", p + ".management", false);
  s.mgmt_address = str(m, "address", p + ".management", true);
  if (s.mgmt_network.empty() == s.mgmt_bridge.empty())
    fail(p + ".management.network", "give exactly one of network or bridge");
  if (!valid_cidr(s.mgmt_address)) fail(p + ".management.address", "'" + s.mgmt_address + "' is not ip/prefix");
  return s;
}

}  // namespace

std::vector<std::string> NodeSpec::boot_files() const {
  std::vector<std::string> f;
  if (!disk.empty()) f.push_back(disk);
  if (!kernel.empty()) f.push_back(kernel);
  if (!initrd.empty()) f.push_back(initrd);
  return f;
}

NodeSpec PairSpec::spare(uint32_t i) const {
  NodeSpec s = b;
  s.id = "spare-" + std::to_string(i);
  s.role = "standby";
  s.mgmt_address = i < pool_addresses.size() ? pool_addresses[i] : "";
  if (!s.serial_log.empty()) s.serial_log += "." + s.id;
  return s;
}

Status parse_spec(const std::string &yaml_text, PairSpec *out) {
  PairSpec s;
  try {
    YAML::Node root = YAML::Load(yaml_text);
    if (!root || !root.IsMap()) return InvalidArgument("spec: must be a YAML map with pair: and nodes:");
    check_keys(root, "", {"pair", "nodes"});
    YAML::Node pr = root["pair"];
    if (!pr) fail("pair", "missing");
    check_keys(pr, "pair", {"name", "grpc_port", "allowlist", "allowlist_dir", "reuse", "host_address", "pool", "guest_daemon", "config"});
    s.name = str(pr, "name", "pair", true);
    if (!valid_name(s.name)) fail("pair.name", "'" + s.name + "' must be 1-40 characters of [a-z0-9-]");
    s.grpc_port = static_cast<uint16_t>(uint_in(pr, "grpc_port", "pair", 1, 65535, false, 50051));
    YAML::Node al = pr["allowlist"];
    if (!al) fail("pair.allowlist", "missing (a managed domain boots only allow-listed images)");
    if (!al.IsMap()) fail("pair.allowlist", "must be a map of path: sha256");
    for (auto it = al.begin(); it != al.end(); ++it) {
      std::string path = it->first.as<std::string>();
      std::string dig = it->second.IsScalar() ? it->second.as<std::string>() : "";
      if (path.empty() || path.front() != '/') fail("pair.allowlist", "'" + path + "' is not an absolute path");
      if (!is_hex64(dig)) fail("pair.allowlist." + path, "must be a lowercase sha256 hex digest (64 characters)");
      s.allowlist[path] = dig;
    }
    if (pr["host_address"]) {
      s.host_address = str(pr, "host_address", "pair", true);
      if (!valid_cidr(s.host_address)) fail("pair.host_address", "'" + s.host_address + "' is not ip/prefix");
    }
    if (pr["guest_daemon"]) {
      std::string g = str(pr, "guest_daemon", "pair", true);
      if (g != "true" && g != "false") fail("pair.guest_daemon", "'" + g + "' is not true or false");
      s.guest_daemon = g == "true";
    }
    if (pr["allowlist_dir"]) s.allowlist_dir = str(pr, "allowlist_dir", "pair", true);
    if (pr["reuse"]) s.reuse = str(pr, "reuse", "pair", true);
    if (s.reuse != "none" && s.reuse != "same-image") fail("pair.reuse", "'" + s.reuse + "' is not none or same-image");
    if (YAML::Node pool = pr["pool"]) {
      check_keys(pool, "pair.pool", {"size", "addresses"});
      s.pool_size = uint_in(pool, "size", "pair.pool", 0, 16, true, 0);
      if (YAML::Node ad = pool["addresses"]) {
        if (!ad.IsSequence()) fail("pair.pool.addresses", "must be a list of ip/prefix");
        for (size_t i = 0; i < ad.size(); ++i) {
          std::string a = ad[i].IsScalar() ? ad[i].as<std::string>() : "";
          if (!valid_cidr(a)) fail("pair.pool.addresses[" + std::to_string(i) + "]", "'" + a + "' is not ip/prefix");
          s.pool_addresses.push_back(a);
        }
      }
      if (s.pool_addresses.size() < s.pool_size)
        fail("pair.pool.addresses", std::to_string(s.pool_addresses.size()) + " given for size " +
                                        std::to_string(s.pool_size) + " (each spare needs its own address)");
    }
    if (YAML::Node cfg = pr["config"]) {
      if (!cfg.IsMap()) fail("pair.config", "must be a map of dotted ftpaird keys");
      for (auto it = cfg.begin(); it != cfg.end(); ++it) {
        std::string k = it->first.as<std::string>();
        if (!it->second.IsScalar()) fail("pair.config." + k, "must be a scalar");
        if (k == "node.role" || k == "node.id" || k == "peer.grpc" || k == "management.grpc")
          fail("pair.config." + k, "is derived by deploy; set it through nodes.*");
        s.config[k] = it->second.as<std::string>();
      }
    }
    YAML::Node nodes = root["nodes"];
    if (!nodes) fail("nodes", "missing");
    check_keys(nodes, "nodes", {"a", "b"});
    if (!nodes["a"]) fail("nodes.a", "missing");
    if (!nodes["b"]) fail("nodes.b", "missing");
    s.a = parse_node(nodes["a"], "a");
    s.b = parse_node(nodes["b"], "b");
    if (s.a.role == s.b.role)
      fail("nodes.b.role", "both nodes are " + s.a.role + ": a pair has one active and one standby");
    std::set<std::string> ips{s.a.mgmt_ip()};
    if (!s.host_address.empty() && s.host_address.substr(0, s.host_address.find('/')) == s.a.mgmt_ip())
      fail("pair.host_address", "same address as nodes.a");
    if (!ips.insert(s.b.mgmt_ip()).second) fail("nodes.b.management.address", "same address as nodes.a");
    for (size_t i = 0; i < s.pool_size; ++i)
      if (!ips.insert(s.pool_addresses[i].substr(0, s.pool_addresses[i].find('/'))).second)
        fail("pair.pool.addresses[" + std::to_string(i) + "]", "address already used by a node or spare");
    for (const NodeSpec *n : {&s.a, &s.b})
      for (const auto &f : n->boot_files())
        if (!s.allowlist.count(f))
          fail("nodes." + n->id + (f == n->disk ? ".disk" : f == n->kernel ? ".kernel" : ".initrd"),
               "'" + f + "' is not in pair.allowlist: the hook would refuse to start it");
  } catch (const SpecError &e) {
    return InvalidArgument("spec: " + e.field + ": " + e.why);
  } catch (const YAML::Exception &e) {
    return InvalidArgument(std::string("spec: not valid YAML: ") + e.what());
  }
  *out = std::move(s);
  return Status::Ok();
}

Status load_spec(const std::string &path, PairSpec *out) {
  std::ifstream f(path);
  if (!f) return InvalidArgument("spec: cannot read " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  Status st = parse_spec(ss.str(), out);
  if (!st.ok()) return Status(st.code(), path + ": " + st.message());
  return st;
}

std::string nic_pci_address(size_t i) {
  char b[16];
  std::snprintf(b, sizeof b, "0000:00:%02x.0", nic_slot(i));
  return b;
}

}  // namespace ftpair::virt
