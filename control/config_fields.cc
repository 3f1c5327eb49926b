// The config's derived and listed forms: names and addresses as text, every setting as a
// dotted key (config_fields, for reload), the EAL arguments and the NF settings.
#include <arpa/inet.h>
#include <netinet/in.h>

#include "control/config.h"

namespace ftpair {

const char *config_role_name(ConfigRole r) {
  switch (r) {
    case ConfigRole::AUTO: return "auto";
    case ConfigRole::ACTIVE: return "active";
    case ConfigRole::STANDBY: return "standby";
  }
  return "?";
}

bool parse_ipv4(const std::string &s, uint32_t *ip_be) {
  in_addr a{};
  if (inet_pton(AF_INET, s.c_str(), &a) != 1) return false;
  *ip_be = a.s_addr;
  return true;
}

bool parse_prefix(const std::string &s, uint32_t *ip_be, uint8_t *plen) {
  auto slash = s.find('/');
  if (slash == std::string::npos) return false;
  std::string len = s.substr(slash + 1);
  if (len.empty() || len.size() > 2 || len.find_first_not_of("0123456789") != std::string::npos) return false;
  int l = std::stoi(len);
  if (l > 32) return false;
  *plen = static_cast<uint8_t>(l);
  return parse_ipv4(s.substr(0, slash), ip_be);
}

bool parse_endpoint(const std::string &s, Endpoint *ep) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos) return false;
  std::string host = s.substr(0, colon), port = s.substr(colon + 1);
  uint32_t ip;
  if (!parse_ipv4(host, &ip)) return false;
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  int p = std::stoi(port);
  if (p < 0 || p > 65535) return false;
  ep->host = host;
  ep->port = static_cast<uint16_t>(p);
  return true;
}

std::string ipv4_to_string(uint32_t ip_be) {
  char buf[INET_ADDRSTRLEN];
  in_addr a{};
  a.s_addr = ip_be;
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

std::vector<std::string> Config::eal_argv() const {
  std::vector<std::string> a;
  if (no_huge) a.push_back("--no-huge");
  if (!telemetry) a.push_back("--no-telemetry");
  a.insert(a.end(), {"-m", std::to_string(memory_mb), "--no-shconf",
                     "--file-prefix", eal_file_prefix(), "--lcores", lcores, "--log-level", "*:warning"});
  // Only vdevs in the lab: skip the PCI scan unless a device looks like a PCI address.
  auto is_pci = [](const std::string &d) { return d.find(':') != std::string::npos && d.rfind("net_", 0) != 0; };
  if (!is_pci(inside.device) && !is_pci(outside.device)) a.push_back("--no-pci");
  a.insert(a.end(), eal_args.begin(), eal_args.end());
  return a;
}

std::map<std::string, std::string> config_fields(const Config &c) {
  std::map<std::string, std::string> m;
  auto u = [](uint64_t v) { return std::to_string(v); };
  auto b = [](bool v) { return std::string(v ? "true" : "false"); };
  auto prefix = [](uint32_t ip, uint8_t len) { return ipv4_to_string(ip) + "/" + std::to_string(len); };
  m["node.id"] = c.node_id;
  m["node.state_dir"] = c.state_dir;
  m["node.pidfile"] = c.pidfile;
  {
    std::string l;
    for (const auto &d : c.upgrade_allowed_sha256) l += (l.empty() ? "" : ",") + d;
    m["upgrade.allowed_sha256"] = "[" + l + "]";
  }
  m["upgrade.health_window_ms"] = u(c.upgrade_health_window_ms);
  m["upgrade.sync_timeout_ms"] = u(c.upgrade_sync_timeout_ms);
  m["node.role"] = config_role_name(c.role);
  m["dpdk.memory_mb"] = u(c.memory_mb);
  m["dpdk.mbufs"] = u(c.mbufs);
  m["dpdk.no_huge"] = b(c.no_huge);
  m["dpdk.file_prefix"] = c.eal_file_prefix();
  m["dpdk.lcores"] = c.lcores;
  std::string eal;
  for (const auto &a : c.eal_args) eal += (eal.empty() ? "" : " ") + a;
  m["dpdk.eal_args"] = eal;
  m["dpdk.rx_desc"] = u(c.rx_desc);
  m["dpdk.tx_desc"] = u(c.tx_desc);
  m["dpdk.telemetry"] = b(c.telemetry);
  for (const auto &[name, side] : {std::pair<const char *, const SideConfig *>{"inside", &c.inside}, {"outside", &c.outside}}) {
    const std::string p = std::string("ports.") + name + ".";
    m[p + "device"] = side->device;
    m[p + "vip"] = prefix(side->vip, side->prefix_len);
    m[p + "vmac_id"] = u(side->vmac_id);
    m[p + "gateway"] = side->gateway ? ipv4_to_string(side->gateway) : "";
    m[p + "mtu"] = u(side->mtu);
    std::string pool;
    for (uint32_t a : side->pool) pool += (pool.empty() ? "" : ",") + ipv4_to_string(a);
    m[p + "pool"] = pool;
  }
  m["nat.port_min"] = u(c.nat_port_min);
  m["nat.port_max"] = u(c.nat_port_max);
  std::string fw;
  for (const auto &f : c.forwards)
    fw += (fw.empty() ? "" : ",") + std::string(f.proto == IPPROTO_TCP ? "tcp/" : "udp/") + u(f.outside_port) + "->" +
          ipv4_to_string(f.inside_ip) + ":" + u(f.inside_port);
  m["nat.port_forwards"] = fw;
  m["nat.filtering"] = dp::filtering_name(c.filtering);
  m["nat.tcp_liberal"] = b(c.tcp_liberal);
  m["nat.max_sessions_per_host"] = u(c.max_sessions_per_host);
  m["nat.evict_embryonic_pct"] = u(c.evict_embryonic_pct);
  m["nat.icmp_rate"] = u(c.icmp_rate);
  m["nat.icmp_burst"] = u(c.icmp_burst);
  m["nat.fragment_timeout_ms"] = u(c.fragment_timeout_ms);
  m["nat.session_log.collector"] = c.session_log.collector;
  m["nat.session_log.observation_domain"] = u(c.session_log.observation_domain);
  m["nat.session_log.flush_ms"] = u(c.session_log.flush_ms);
  m["nat.session_log.template_refresh_s"] = u(c.session_log.template_refresh_s);
  m["flows.capacity"] = u(c.flow_capacity);
  m["flows.timeouts.tcp_syn"] = u(c.timeouts.tcp_syn);
  m["flows.timeouts.tcp_established"] = u(c.timeouts.tcp_established);
  m["flows.timeouts.tcp_fin"] = u(c.timeouts.tcp_fin);
  m["flows.timeouts.tcp_time_wait"] = u(c.timeouts.tcp_time_wait);
  m["flows.timeouts.tcp_closed"] = u(c.timeouts.tcp_closed);
  m["flows.timeouts.udp"] = u(c.timeouts.udp);
  m["flows.timeouts.icmp"] = u(c.timeouts.icmp);
  m["arp.capacity"] = u(c.arp_capacity);
  m["arp.timeout_s"] = u(c.arp_timeout_s);
  m["worker.count"] = u(c.worker_count);
  m["worker.idle_sleep_max_us"] = u(c.idle_sleep_max_us);
  m["worker.stall_ms"] = u(c.stall_ms);
  m["worker.test_hooks"] = b(c.test_hooks);
  m["management.metrics"] = c.metrics.set() ? c.metrics.str() : "";
  m["management.grpc"] = c.grpc.set() ? c.grpc.str() : "";
  m["management.tls.ca"] = c.management_tls.ca;
  m["management.tls.cert"] = c.management_tls.cert;
  m["management.tls.key"] = c.management_tls.key;
  m["peer.grpc"] = c.peer_grpc.set() ? c.peer_grpc.str() : "";
  {
    std::string ids;
    for (const auto &i : c.peer_identities) ids += (ids.empty() ? "" : ",") + i;
    m["peer.identities"] = ids;
  }
  m["peer.tls.ca"] = c.peer_tls.ca;
  m["peer.tls.cert"] = c.peer_tls.cert;
  m["peer.tls.key"] = c.peer_tls.key;
  m["checkpoint.mode"] = c.mode == ReplicationMode::STRICT ? "strict" : "relaxed";
  m["checkpoint.interval_us"] = u(c.checkpoint_interval_us);
  m["checkpoint.dirty_threshold"] = u(c.checkpoint_dirty_threshold);
  m["checkpoint.quiesce_timeout_us"] = u(c.quiesce_timeout_us);
  m["checkpoint.hold_capacity"] = u(c.hold_capacity);
  m["checkpoint.hold_fallback"] = c.hold_fallback == dp::HoldFallback::DROP ? "drop" : "relaxed";
  m["checkpoint.realtime"] = b(c.checkpoint_realtime);
  m["failover.heartbeat_interval_ms"] = u(c.heartbeat_interval_ms);
  m["failover.miss_threshold"] = u(c.miss_threshold);
  m["failover.beat_udp_port"] = u(c.beat_udp_port);
  m["failover.beat_realtime"] = b(c.beat_realtime);
  m["failover.dataplane_beat_us"] = u(c.dataplane_beat_us);
  m["failover.dataplane_miss"] = u(c.dataplane_miss);
  m["failover.dataplane_probe_us"] = u(c.dataplane_probe_us);
  m["failover.dataplane_arm_ms"] = u(c.dataplane_arm_ms);
  m["failover.fence"] = fo::fence_kind_name(c.fence);
  m["failover.allow_fence_none"] = b(c.allow_fence_none);
  m["failover.fence_pidfile"] = c.fence_pidfile;
  m["failover.fence_missing_pidfile_ok"] = b(c.fence_missing_pidfile_ok);
  {
    std::string keys;  // ids and files, never the secrets
    for (const auto &k : c.beat_keys) keys += (keys.empty() ? "" : ", ") + std::to_string(k.id) + ":" + k.file;
    m["failover.beat_keys"] = keys;
  }
  m["failover.libvirt_uri"] = c.libvirt_uri;
  m["failover.libvirt_domain"] = c.libvirt_domain;
  m["failover.libvirt_peer"] = c.libvirt_peer;
  m["failover.libvirt_action"] = c.libvirt_action;
  m["failover.libvirt_events"] = b(c.peer_events_on());
  m["failover.fence_timeout_ms"] = u(c.fence_timeout_ms);
  m["failover.garp_count"] = u(c.garp_count);
  m["failover.handover_on_stop"] = b(c.handover_on_stop);
  m["failover.snapshot_max_age_s"] = u(c.snapshot_max_age_s);
  m["log.level"] = log::level_name(c.log_level);
  m["log.format"] = log::format_name(c.log_format);
  return m;
}

dp::NfConfig Config::nf_config() const {
  dp::NfConfig nf;
  nf.vip[dp::kPortInside] = inside.vip;
  nf.vip[dp::kPortOutside] = outside.vip;
  nf.prefix_len[dp::kPortInside] = inside.prefix_len;
  nf.prefix_len[dp::kPortOutside] = outside.prefix_len;
  nf.gateway_out = outside.gateway;
  const uint8_t ids[2] = {inside.vmac_id, outside.vmac_id};
  for (int p = 0; p < 2; p++) {
    nf.vmac[p] = rte_ether_addr{{0x00, 0x00, 0x5e, 0x00, 0x01, ids[p]}};
  }
  nf.nat_port_min = nat_port_min;
  nf.nat_port_max = nat_port_max;
  nf.timeouts = timeouts;
  nf.forwards = forwards;
  nf.mtu[dp::kPortInside] = inside.mtu;
  nf.mtu[dp::kPortOutside] = outside.mtu;
  nf.pool = outside.pool;
  nf.filtering = filtering;
  nf.tcp_liberal = tcp_liberal;
  nf.max_sessions_per_host = max_sessions_per_host;
  nf.evict_embryonic_pct = evict_embryonic_pct;
  nf.icmp_rate = icmp_rate;
  nf.icmp_burst = icmp_burst;
  nf.fragment_timeout_ms = fragment_timeout_ms;
  return nf;
}

}  // namespace ftpair
