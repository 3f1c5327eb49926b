// The config file: YAML parsing, --set overrides and validation (control/config.h).
#include "control/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "common/file.h"

namespace ftpair {

namespace {

struct ConfigError {
  std::string key, reason;
};

[[noreturn]] void fail(const std::string &key, const std::string &reason) {
  throw ConfigError{key, reason};
}

std::string join(const std::string &path, const std::string &key) {
  return path.empty() ? key : path + "." + key;
}

void check_keys(const YAML::Node &n, const std::string &path, std::set<std::string> allowed) {
  if (!n) return;
  if (!n.IsMap()) fail(path.empty() ? "(top level)" : path, "must be a mapping");
  for (const auto &kv : n) {
    auto k = kv.first.as<std::string>();
    if (!allowed.count(k)) fail(join(path, k), "unknown key");
  }
}

template <typename T>
bool get_uint(const YAML::Node &parent, const std::string &key, const std::string &path,
              uint64_t min, uint64_t max, T *out) {
  YAML::Node n = parent[key];
  if (!n) return false;
  std::string full = join(path, key);
  if (!n.IsScalar()) fail(full, "must be a number");
  const std::string s = n.Scalar();
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos)
    fail(full, "'" + s + "' is not a non-negative integer");
  unsigned long long v;
  try {
    v = std::stoull(s);
  } catch (...) {
    fail(full, "'" + s + "' is out of range");
  }
  if (v < min || v > max)
    fail(full, std::to_string(v) + " is outside [" + std::to_string(min) + ", " + std::to_string(max) + "]");
  *out = static_cast<T>(v);
  return true;
}

bool get_str(const YAML::Node &parent, const std::string &key, const std::string &path, std::string *out) {
  YAML::Node n = parent[key];
  if (!n) return false;
  if (!n.IsScalar()) fail(join(path, key), "must be a string");
  *out = n.Scalar();
  return true;
}

bool get_bool(const YAML::Node &parent, const std::string &key, const std::string &path, bool *out) {
  YAML::Node n = parent[key];
  if (!n) return false;
  try {
    *out = n.as<bool>();
  } catch (...) {
    fail(join(path, key), "must be true or false");
  }
  return true;
}

void get_endpoint(const YAML::Node &parent, const std::string &key, const std::string &path, Endpoint *out) {
  std::string s;
  if (!get_str(parent, key, path, &s)) return;
  if (!parse_endpoint(s, out)) fail(join(path, key), "'" + s + "' is not host:port (IPv4 address, port 1-65535)");
}

void read_tls(const YAML::Node &parent, const std::string &path, TlsConfig *t) {
  YAML::Node n = parent["tls"];
  if (!n) return;
  const std::string p = join(path, "tls");
  check_keys(n, p, {"ca", "cert", "key"});
  get_str(n, "ca", p, &t->ca);
  get_str(n, "cert", p, &t->cert);
  get_str(n, "key", p, &t->key);
  for (const auto &[k, v] : {std::pair<const char *, const std::string *>{"ca", &t->ca}, {"cert", &t->cert},
                             {"key", &t->key}}) {
    if (v->empty()) fail(join(p, k), "missing (mutual TLS needs ca, cert and key, as PEM file paths)");
    std::ifstream f(*v);
    if (!f) fail(join(p, k), "cannot read '" + *v + "'");
  }
}

void read_side(const YAML::Node &n, const std::string &path, SideConfig *side) {
  if (!n) fail(path, "missing");
  check_keys(n, path, {"device", "vip", "vmac_id", "gateway", "mtu", "pool"});
  if (!get_str(n, "device", path, &side->device) || side->device.empty())
    fail(join(path, "device"), "missing (a DPDK device, e.g. net_af_packet0,iface=lan0)");
  std::string vip;
  if (!get_str(n, "vip", path, &vip)) fail(join(path, "vip"), "missing (e.g. 198.18.1.1/24)");
  if (!parse_prefix(vip, &side->vip, &side->prefix_len) || side->prefix_len < 8 || side->prefix_len > 30)
    fail(join(path, "vip"), "'" + vip + "' is not an IPv4 address with a prefix length 8..30");
  get_uint(n, "vmac_id", path, 1, 255, &side->vmac_id);
  std::string gw;
  if (get_str(n, "gateway", path, &gw) && !parse_ipv4(gw, &side->gateway))
    fail(join(path, "gateway"), "'" + gw + "' is not an IPv4 address");
  get_uint(n, "mtu", path, 576, 9000, &side->mtu);
  if (YAML::Node pl = n["pool"]) {
    const std::string pp = join(path, "pool");
    if (!pl.IsSequence() || pl.size() == 0 || pl.size() > 64)
      fail(pp, "must be a list of 1 to 64 IPv4 addresses on the side's subnet");
    const uint32_t mask = htonl(~0u << (32 - side->prefix_len));
    for (size_t i = 0; i < pl.size(); i++) {
      const std::string key = pp + "[" + std::to_string(i) + "]";
      if (!pl[i].IsScalar()) fail(key, "must be an IPv4 address");
      uint32_t a;
      const std::string v = pl[i].Scalar();
      if (!parse_ipv4(v, &a)) fail(key, "'" + v + "' is not an IPv4 address");
      if ((a & mask) != (side->vip & mask)) fail(key, "'" + v + "' is not on the side's subnet");
      // Neither end of the subnet: a mapping there would answer to a broadcast (the VIP's
      // prefix is at most /30, so both ends exist).
      if ((a & ~mask) == 0) fail(key, "'" + v + "' is the subnet's network address");
      if ((a | mask) == 0xffffffffu) fail(key, "'" + v + "' is the subnet's broadcast address");
      for (uint32_t o : side->pool)
        if (o == a) fail(key, "'" + v + "' is listed twice");
      side->pool.push_back(a);
    }
  }
}

void read_node(const YAML::Node &node, Config *c) {
  if (!node) fail("node", "missing");
  check_keys(node, "node", {"id", "state_dir", "role", "pidfile"});
  if (!get_str(node, "id", "node", &c->node_id) || c->node_id.empty())
    fail("node.id", "missing (a short name such as 'a')");
  if (c->node_id.size() > 32 || c->node_id.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-_") != std::string::npos)
    fail("node.id", "'" + c->node_id + "' must be 1-32 characters of [a-z0-9-_]");
  get_str(node, "state_dir", "node", &c->state_dir);
  get_str(node, "pidfile", "node", &c->pidfile);
  if (std::string role; get_str(node, "role", "node", &role)) {
    if (role == "auto") c->role = ConfigRole::AUTO;
    else if (role == "active") c->role = ConfigRole::ACTIVE;
    else if (role == "standby") c->role = ConfigRole::STANDBY;
    else fail("node.role", "'" + role + "' is not one of auto, active, standby");
  }
}

void read_dpdk(const YAML::Node &d, Config *c) {
  check_keys(d, "dpdk", {"memory_mb", "mbufs", "no_huge", "file_prefix", "lcores", "eal_args", "rx_desc", "tx_desc",
                       "telemetry"});
  get_bool(d, "telemetry", "dpdk", &c->telemetry);
  get_uint(d, "memory_mb", "dpdk", 32, 1 << 20, &c->memory_mb);
  get_uint(d, "mbufs", "dpdk", 1023, 1 << 24, &c->mbufs);
  get_bool(d, "no_huge", "dpdk", &c->no_huge);
  get_str(d, "file_prefix", "dpdk", &c->file_prefix);
  c->lcores_set = get_str(d, "lcores", "dpdk", &c->lcores);
  get_uint(d, "rx_desc", "dpdk", 64, 16384, &c->rx_desc);
  get_uint(d, "tx_desc", "dpdk", 64, 16384, &c->tx_desc);
  if (YAML::Node a = d["eal_args"]) {
    if (!a.IsSequence()) fail("dpdk.eal_args", "must be a list of strings");
    for (const auto &x : a) c->eal_args.push_back(x.as<std::string>());
  }
}

void read_ports(const YAML::Node &ports, Config *c) {
  if (!ports) fail("ports", "missing");
  check_keys(ports, "ports", {"inside", "outside"});
  c->inside.vmac_id = 1;
  c->outside.vmac_id = 2;
  read_side(ports["inside"], "ports.inside", &c->inside);
  read_side(ports["outside"], "ports.outside", &c->outside);
  if (c->inside.gateway) fail("ports.inside.gateway", "the inside is on-link only; remove the key");
  if (!c->inside.pool.empty()) fail("ports.inside.pool", "the pool is of outside addresses; remove the key");
  auto same_net = [](const SideConfig &a, const SideConfig &b) {
    uint8_t p = a.prefix_len < b.prefix_len ? a.prefix_len : b.prefix_len;
    uint32_t mask = htonl(~0u << (32 - p));
    return (a.vip & mask) == (b.vip & mask);
  };
  if (same_net(c->inside, c->outside)) fail("ports.outside.vip", "overlaps the inside subnet");
  if (c->inside.device == c->outside.device) fail("ports.outside.device", "is the same device as ports.inside.device");
}

// log: the daemon's log lines (ftpaird --log-level / --log-format win over these).
void read_log(const YAML::Node &n, Config *c) {
  check_keys(n, "log", {"level", "format"});
  if (std::string v; get_str(n, "level", "log", &v)) {
    Status st = log::parse_level(v, &c->log_level);
    if (!st.ok()) fail("log.level", st.message());
  }
  if (std::string v; get_str(n, "format", "log", &v)) {
    Status st = log::parse_format(v, &c->log_format);
    if (!st.ok()) fail("log.format", st.message());
  }
}

void read_nat(const YAML::Node &n, Config *c) {
  check_keys(n, "nat", {"port_min", "port_max", "port_forwards", "filtering", "tcp_liberal",
                        "max_sessions_per_host", "evict_embryonic_pct", "icmp_rate", "icmp_burst",
                        "session_log", "fragment_timeout_ms"});
  get_uint(n, "fragment_timeout_ms", "nat", 10, 60000, &c->fragment_timeout_ms);
  if (YAML::Node sl = n["session_log"]) {
    const std::string p = "nat.session_log";
    check_keys(sl, p, {"collector", "observation_domain", "flush_ms", "template_refresh_s"});
    IpfixConfig &ic = c->session_log;
    if (!get_str(sl, "collector", p, &ic.collector) || ic.collector.empty())
      fail(join(p, "collector"), "missing (host:port of an IPFIX collector)");
    get_uint(sl, "observation_domain", p, 0, UINT32_MAX, &ic.observation_domain);
    get_uint(sl, "flush_ms", p, 1, 60000, &ic.flush_ms);
    get_uint(sl, "template_refresh_s", p, 1, 86400, &ic.template_refresh_s);
    std::string host;
    uint16_t port;
    Status st = parse_ipfix_config(ic, &host, &port);
    if (!st.ok()) fail(join(p, "collector"), st.message());
  }
  if (std::string v; get_str(n, "filtering", "nat", &v) && !dp::parse_filtering(v, &c->filtering))
    fail("nat.filtering", "'" + v + "' is not one of endpoint-independent, address-dependent, address-and-port-dependent");
  get_bool(n, "tcp_liberal", "nat", &c->tcp_liberal);
  get_uint(n, "max_sessions_per_host", "nat", 0, 1u << 26, &c->max_sessions_per_host);
  get_uint(n, "evict_embryonic_pct", "nat", 0, 100, &c->evict_embryonic_pct);
  get_uint(n, "icmp_rate", "nat", 0, 1000000, &c->icmp_rate);
  get_uint(n, "icmp_burst", "nat", 1, 1000000, &c->icmp_burst);
  get_uint(n, "port_min", "nat", 1, 65535, &c->nat_port_min);
  get_uint(n, "port_max", "nat", 1, 65535, &c->nat_port_max);
  if (c->nat_port_min > c->nat_port_max) fail("nat.port_min", "is greater than nat.port_max");
  if (YAML::Node f = n["port_forwards"]) {
    if (!f.IsSequence()) fail("nat.port_forwards", "must be a list");
    for (size_t i = 0; i < f.size(); i++) {
      std::string path = "nat.port_forwards[" + std::to_string(i) + "]";
      check_keys(f[i], path, {"proto", "port", "to"});
      std::string proto, to;
      if (!get_str(f[i], "proto", path, &proto) || (proto != "tcp" && proto != "udp"))
        fail(join(path, "proto"), "must be tcp or udp");
      dp::PortForward pf{};
      pf.proto = proto == "tcp" ? IPPROTO_TCP : IPPROTO_UDP;
      if (!get_uint(f[i], "port", path, 1, 65535, &pf.outside_port)) fail(join(path, "port"), "missing");
      Endpoint ep;
      if (!get_str(f[i], "to", path, &to) || !parse_endpoint(to, &ep))
        fail(join(path, "to"), "must be inside-host:port");
      parse_ipv4(ep.host, &pf.inside_ip);
      pf.inside_port = ep.port;
      uint32_t mask = htonl(~0u << (32 - c->inside.prefix_len));
      if ((pf.inside_ip & mask) != (c->inside.vip & mask))
        fail(join(path, "to"), "'" + to + "' is not on the inside subnet");
      for (const auto &o : c->forwards)
        if (o.proto == pf.proto && o.outside_port == pf.outside_port)
          fail(join(path, "port"), "duplicates an earlier rule");
      c->forwards.push_back(pf);
    }
  }
}

void read_flows(const YAML::Node &n, Config *c) {
  check_keys(n, "flows", {"capacity", "timeouts"});
  get_uint(n, "capacity", "flows", 16, 1u << 26, &c->flow_capacity);
  if (YAML::Node t = n["timeouts"]) {
    const std::string p = "flows.timeouts";
    check_keys(t, p, {"tcp_syn", "tcp_established", "tcp_fin", "tcp_time_wait", "tcp_closed", "udp", "icmp"});
    get_uint(t, "tcp_syn", p, 1, 86400, &c->timeouts.tcp_syn);
    get_uint(t, "tcp_established", p, 1, 864000, &c->timeouts.tcp_established);
    get_uint(t, "tcp_fin", p, 1, 86400, &c->timeouts.tcp_fin);
    get_uint(t, "tcp_time_wait", p, 1, 86400, &c->timeouts.tcp_time_wait);
    get_uint(t, "tcp_closed", p, 1, 86400, &c->timeouts.tcp_closed);
    get_uint(t, "udp", p, dp::kUdpTimeoutMin, 86400, &c->timeouts.udp);  // RFC 4787 REQ-5
    get_uint(t, "icmp", p, 1, 86400, &c->timeouts.icmp);
  }
}

void read_failover(const YAML::Node &n, Config *c) {
  const std::string p = "failover";
  check_keys(n, p, {"heartbeat_interval_ms", "miss_threshold", "fence", "allow_fence_none", "fence_pidfile",
                    "fence_missing_pidfile_ok", "libvirt_uri", "libvirt_domain", "libvirt_peer", "libvirt_action", "fence_timeout_ms", "garp_count",
                    "snapshot_max_age_s", "beat_udp_port", "beat_realtime", "libvirt_events", "beat_keys",
                    "dataplane_beat_us", "dataplane_miss", "dataplane_probe_us", "dataplane_arm_ms",
                    "handover_on_stop"});
  if (YAML::Node k = n["beat_keys"]) {
    if (!k.IsSequence()) fail("failover.beat_keys", "must be a list of {id, file}");
    for (size_t i = 0; i < k.size(); i++) {
      const std::string path = "failover.beat_keys[" + std::to_string(i) + "]";
      check_keys(k[i], path, {"id", "file"});
      BeatKeyRef ref;
      if (!get_uint(k[i], "id", path, 1, 255, &ref.id)) fail(join(path, "id"), "missing (1..255)");
      if (!get_str(k[i], "file", path, &ref.file) || ref.file.empty()) fail(join(path, "file"), "missing");
      for (const auto &o : c->beat_keys)
        if (o.id == ref.id) fail(join(path, "id"), std::to_string(ref.id) + " is listed twice");
      c->beat_keys.push_back(ref);
    }
  }
  get_uint(n, "heartbeat_interval_ms", p, 1, 10000, &c->heartbeat_interval_ms);
  get_uint(n, "miss_threshold", p, 1, 1000, &c->miss_threshold);
  get_uint(n, "beat_udp_port", p, 0, 65535, &c->beat_udp_port);
  get_bool(n, "beat_realtime", p, &c->beat_realtime);
  if (get_uint(n, "dataplane_beat_us", p, 0, 1000000, &c->dataplane_beat_us) && c->dataplane_beat_us &&
      c->dataplane_beat_us < 100)
    fail("failover.dataplane_beat_us", "must be 0 (off) or 100 to 1000000 us");
  get_uint(n, "dataplane_miss", p, 2, 1000, &c->dataplane_miss);
  get_uint(n, "dataplane_probe_us", p, 100, 1000000, &c->dataplane_probe_us);
  get_uint(n, "dataplane_arm_ms", p, 0, 600000, &c->dataplane_arm_ms);
  if (c->dataplane_beat_us && c->beat_udp_port == 0)
    fail("failover.dataplane_beat_us", "needs the fast beats (failover.beat_udp_port): a silence is confirmed by a probe over them");
  if (std::string fence; get_str(n, "fence", p, &fence) && !fo::parse_fence_kind(fence, &c->fence))
    fail("failover.fence", "'" + fence + "' is not none, process or libvirt");
  get_bool(n, "allow_fence_none", p, &c->allow_fence_none);
  get_str(n, "fence_pidfile", p, &c->fence_pidfile);
  if (get_bool(n, "fence_missing_pidfile_ok", p, &c->fence_missing_pidfile_ok) && c->fence_missing_pidfile_ok &&
      c->fence != fo::FenceKind::PROCESS)
    fail("failover.fence_missing_pidfile_ok", "applies only to fence: process");
  get_str(n, "libvirt_uri", p, &c->libvirt_uri);
  get_str(n, "libvirt_domain", p, &c->libvirt_domain);
  if (get_str(n, "libvirt_peer", p, &c->libvirt_peer)) {
    fo::PeerRef ref;
    if (!fo::parse_peer_ref(c->libvirt_peer, &ref))
      fail("failover.libvirt_peer", "'" + c->libvirt_peer + "' is not PAIR/NODE (the pair's and the peer node's names in the domains' ftpair metadata)");
    else if (!c->libvirt_domain.empty())
      fail("failover.libvirt_peer", "set libvirt_domain or libvirt_peer, not both");
    else if (ref.node == c->node_id)
      fail("failover.libvirt_peer", "names node " + ref.node + ", which is this node: it must name the peer");
  }
  if (get_str(n, "libvirt_action", p, &c->libvirt_action) && c->libvirt_action != "destroy" &&
      c->libvirt_action != "suspend")
    fail("failover.libvirt_action", "'" + c->libvirt_action + "' is not destroy or suspend");
  get_uint(n, "fence_timeout_ms", p, 1, 60000, &c->fence_timeout_ms);
  get_uint(n, "garp_count", p, 1, 20, &c->garp_count);
  get_bool(n, "handover_on_stop", p, &c->handover_on_stop);
  get_uint(n, "snapshot_max_age_s", p, 1, 86400 * 7, &c->snapshot_max_age_s);
  if (!c->libvirt_peer.empty() && c->fence != fo::FenceKind::LIBVIRT)
    fail("failover.libvirt_peer", "applies only to fence: libvirt");
  if (c->fence == fo::FenceKind::PROCESS && c->fence_pidfile.empty())
    fail("failover.fence_pidfile", "required with fence: process");
  if (c->fence == fo::FenceKind::LIBVIRT && (c->libvirt_uri.empty() || (c->libvirt_domain.empty() && c->libvirt_peer.empty())))
    fail(c->libvirt_uri.empty() ? "failover.libvirt_uri" : "failover.libvirt_domain",
         c->libvirt_uri.empty() ? "required with fence: libvirt" : "required with fence: libvirt (or failover.libvirt_peer)");
  const bool events_set = get_bool(n, "libvirt_events", p, &c->libvirt_events);
  if (events_set && c->libvirt_events && c->fence != fo::FenceKind::LIBVIRT)
    fail("failover.libvirt_events", "needs fence: libvirt (the events come from the peer's libvirt_uri and libvirt_domain)");
  else if (events_set && c->libvirt_events && c->libvirt_domain.empty() && !c->libvirt_peer.empty())
    fail("failover.libvirt_events", "needs failover.libvirt_domain: the events are the named domain's, and libvirt_peer names none");
}

void read_upgrade(const YAML::Node &n, Config *c) {
  const std::string p = "upgrade";
  check_keys(n, p, {"allowed_sha256", "health_window_ms", "sync_timeout_ms"});
  if (YAML::Node l = n["allowed_sha256"]) {
    if (!l.IsSequence()) fail("upgrade.allowed_sha256", "must be a list of sha256 digests (64 hex digits)");
    for (size_t i = 0; i < l.size(); i++) {
      const std::string key = "upgrade.allowed_sha256[" + std::to_string(i) + "]";
      if (!l[i].IsScalar()) fail(key, "must be a sha256 digest (64 hex digits)");
      std::string d = l[i].as<std::string>();
      for (auto &ch : d) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (d.size() != 64 || d.find_first_not_of("0123456789abcdef") != std::string::npos)
        fail(key, "'" + l[i].as<std::string>() + "' is not a sha256 digest (64 hex digits)");
      c->upgrade_allowed_sha256.push_back(d);
    }
  }
  get_uint(n, "health_window_ms", p, 0, 3600000, &c->upgrade_health_window_ms);
  get_uint(n, "sync_timeout_ms", p, 100, 3600000, &c->upgrade_sync_timeout_ms);
}

void read_checkpoint(const YAML::Node &n, Config *c) {
  const std::string p = "checkpoint";
  check_keys(n, p, {"mode", "interval_us", "dirty_threshold", "quiesce_timeout_us", "hold_capacity", "hold_fallback",
                    "realtime"});
  std::string mode;
  if (get_str(n, "mode", p, &mode)) {
    if (mode == "strict") c->mode = ReplicationMode::STRICT;
    else if (mode == "relaxed") c->mode = ReplicationMode::RELAXED;
    else fail("checkpoint.mode", "'" + mode + "' is not strict or relaxed");
  }
  get_uint(n, "interval_us", p, 100, 10000000, &c->checkpoint_interval_us);
  get_uint(n, "dirty_threshold", p, 1, 1u << 26, &c->checkpoint_dirty_threshold);
  get_uint(n, "quiesce_timeout_us", p, 10, 1000000, &c->quiesce_timeout_us);
  get_uint(n, "hold_capacity", p, 64, 1u << 20, &c->hold_capacity);
  get_bool(n, "realtime", p, &c->checkpoint_realtime);
  if (std::string fb; get_str(n, "hold_fallback", p, &fb)) {
    if (fb == "drop") c->hold_fallback = dp::HoldFallback::DROP;
    else if (fb == "relaxed") c->hold_fallback = dp::HoldFallback::RELAXED;
    else fail("checkpoint.hold_fallback", "'" + fb + "' is not drop or relaxed");
  }
}

void read_config(const YAML::Node &root, Config *c) {
  if (!root || root.IsNull()) fail("(top level)", "the file is empty");
  check_keys(root, "", {"node", "dpdk", "ports", "nat", "flows", "arp", "worker", "management",
                        "peer", "checkpoint", "failover", "upgrade", "log"});
  read_node(root["node"], c);
  if (YAML::Node d = root["dpdk"]) read_dpdk(d, c);
  read_ports(root["ports"], c);
  if (YAML::Node n = root["nat"]) read_nat(n, c);
  if (YAML::Node n = root["flows"]) read_flows(n, c);
  if (YAML::Node n = root["arp"]) {
    check_keys(n, "arp", {"capacity", "timeout_s"});
    get_uint(n, "capacity", "arp", 4, 1 << 20, &c->arp_capacity);
    get_uint(n, "timeout_s", "arp", 1, 86400, &c->arp_timeout_s);
  }
  if (YAML::Node n = root["worker"]) {
    check_keys(n, "worker", {"count", "idle_sleep_max_us", "stall_ms", "test_hooks"});
    get_uint(n, "count", "worker", 1, dp::kMaxWorkers, &c->worker_count);
    get_uint(n, "idle_sleep_max_us", "worker", 0, 100000, &c->idle_sleep_max_us);
    get_uint(n, "stall_ms", "worker", 1, 60000, &c->stall_ms);
    get_bool(n, "test_hooks", "worker", &c->test_hooks);
  }
  if (YAML::Node n = root["management"]) {
    check_keys(n, "management", {"metrics", "grpc", "tls"});
    get_endpoint(n, "metrics", "management", &c->metrics);
    get_endpoint(n, "grpc", "management", &c->grpc);
    read_tls(n, "management", &c->management_tls);
  }
  if (YAML::Node n = root["peer"]) {
    check_keys(n, "peer", {"grpc", "tls", "identities"});
    get_endpoint(n, "grpc", "peer", &c->peer_grpc);
    read_tls(n, "peer", &c->peer_tls);
    if (YAML::Node l = n["identities"]) {
      if (!l.IsSequence() || l.size() == 0 || l.size() > 16)
        fail("peer.identities", "must be a list of 1 to 16 names (subjectAltName DNS or IP, or common name)");
      for (const auto &x : l) {
        const std::string id = x.as<std::string>();
        if (id.empty()) fail("peer.identities", "an empty name");
        c->peer_identities.push_back(id);
      }
    }
  }
  // With mTLS, only the peer may call the peer RPCs: by default the certificate must name the
  // peer's address (as its subjectAltName IP does for the peer's own server side).
  if (c->peer_identities.empty() && c->peer_grpc.set()) c->peer_identities.push_back(c->peer_grpc.host);
  if (!c->peer_tls.enabled()) {
    c->peer_tls.ca = c->management_tls.ca;
    c->peer_tls.cert = c->management_tls.cert;
    c->peer_tls.key = c->management_tls.key;
  }
  if (YAML::Node n = root["failover"]) read_failover(n, c);
  if (YAML::Node n = root["upgrade"]) read_upgrade(n, c);
  if (YAML::Node n = root["checkpoint"]) read_checkpoint(n, c);
  if (YAML::Node n = root["log"]) read_log(n, c);
}

void apply_override(YAML::Node &root, const std::string &ov) {
  auto eq = ov.find('=');
  if (eq == std::string::npos || eq == 0) fail(ov, "override must be dotted.key=value");
  std::string key = ov.substr(0, eq), value = ov.substr(eq + 1);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) {
    if (part.empty()) fail(key, "empty path component in override");
    parts.push_back(part);
  }
  YAML::Node val;
  try {
    val = YAML::Load(value);
  } catch (const YAML::Exception &e) {
    fail(key, "override value does not parse: " + e.msg);
  }
  // Walk down with fresh handles, creating maps as needed (YAML::Node assignment rebinds).
  std::vector<YAML::Node> chain{root};
  for (size_t i = 0; i + 1 < parts.size(); i++) {
    YAML::Node next = chain.back()[parts[i]];
    if (!next || !next.IsMap()) {
      chain.back()[parts[i]] = YAML::Node(YAML::NodeType::Map);
      next = chain.back()[parts[i]];
    }
    chain.push_back(next);
  }
  chain.back()[parts.back()] = val;
}

}  // namespace

Status parse_config(const std::string &yaml_text, const std::vector<std::string> &overrides, Config *out) {
  Config c;
  try {
    YAML::Node root;
    try {
      root = YAML::Load(yaml_text);
    } catch (const YAML::ParserException &e) {
      return InvalidArgument("config: YAML syntax error at line " + std::to_string(e.mark.line + 1) +
                             ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
    }
    if (!root || root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
    for (const auto &ov : overrides) apply_override(root, ov);
    read_config(root, &c);
    if (!c.lcores_set) {
      // lcore 0 for the control threads, then one per worker.
      c.lcores = "0@(0-1)";
      for (uint32_t w = 1; w <= c.worker_count; w++) c.lcores += "," + std::to_string(w) + "@(0-1)";
    }
  } catch (const ConfigError &e) {
    return InvalidArgument("config: " + e.key + ": " + e.reason);
  } catch (const YAML::Exception &e) {
    return InvalidArgument("config: " + e.msg);
  }
  c.source_text = yaml_text;
  for (const auto &ov : overrides) c.source_text += "\n# override: " + ov;
  *out = std::move(c);
  return Status::Ok();
}

Status load_config(const std::string &path, const std::vector<std::string> &overrides, Config *out) {
  std::string text;
  if (!read_file(path, &text).ok()) return InvalidArgument("config: cannot read '" + path + "'");
  return parse_config(text, overrides, out);
}

}  // namespace ftpair
