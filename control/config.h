/* The daemon's one configuration file (YAML, parsed by yaml-cpp) and its validation.
 * Every error names the dotted key and the reason. */
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/log.h"
#include "common/status.h"
#include "control/ipfix.h"
#include "dataplane/agent.h"
#include "dataplane/nf.h"
#include "failover/fencer.h"

namespace ftpair {

struct Endpoint {
  std::string host;  // empty = unset
  uint16_t port = 0;
  bool set() const { return !host.empty(); }
  std::string str() const { return host + ":" + std::to_string(port); }
};

struct SideConfig {
  std::string device;
  uint32_t vip = 0;  // network byte order
  uint8_t prefix_len = 24;
  uint8_t vmac_id = 1;
  uint32_t gateway = 0;  // network byte order, 0 = none
  uint16_t mtu = 1500;   // IPv4 MTU of the link
  std::vector<uint32_t> pool;  // outside only: addresses for mappings (network order)
};

enum class ReplicationMode { STRICT, RELAXED };
// node.role: take the role the peer leaves (auto), or start as this one.
enum class ConfigRole { AUTO, ACTIVE, STANDBY };
const char *config_role_name(ConfigRole r);

// PEM files for mutual TLS. All empty = plaintext; otherwise ca, cert and key are all set.
// The peer's certificate must name its address (subjectAltName IP).
struct BeatKeyRef {
  uint32_t id = 0;   // 1..255, carried in each datagram
  std::string file;  // hex text
};

struct TlsConfig {
  std::string ca, cert, key;
  bool enabled() const { return !ca.empty(); }
};

struct Config {
  // node
  std::string node_id;
  std::string state_dir = "/var/lib/ftpair";
  ConfigRole role = ConfigRole::AUTO;
  std::string pidfile;        // this node's pidfile (written at start; an upgrade rewrites it)
  // dpdk
  uint32_t memory_mb = 256;
  uint32_t mbufs = 8191;
  bool no_huge = true;
  std::string file_prefix;  // default: "ftpair-" + node_id
  /* The main lcore and one per worker; unless set, made from worker.count (Config::load):
   * lcore 0 and the workers 1..count, each free to run on CPUs 0-1. */
  std::string lcores = "0@(0-1),1@(0-1)";
  bool lcores_set = false;
  std::vector<std::string> eal_args;
  bool telemetry = false;  // DPDK telemetry socket (dpdk-telemetry.py, /ftpair/state)
  uint16_t rx_desc = 1024, tx_desc = 1024;
  // ports
  SideConfig inside, outside;
  // nat / flows / arp
  uint16_t nat_port_min = 1024, nat_port_max = 65535;
  std::vector<dp::PortForward> forwards;
  dp::Filtering filtering = dp::Filtering::ADDRESS;
  bool tcp_liberal = true;
  uint32_t max_sessions_per_host = 4096;
  uint32_t evict_embryonic_pct = 90;
  uint32_t icmp_rate = 100, icmp_burst = 50;
  uint32_t fragment_timeout_ms = 2000;
  IpfixConfig session_log;  // collector empty = no session logging
  uint32_t flow_capacity = 65536;
  dp::Timeouts timeouts;
  uint32_t arp_capacity = 1024;
  uint32_t arp_timeout_s = 300;
  // worker
  uint32_t worker_count = 1;  // workers, each with its own RX/TX queue on both ports and its own flows
  uint32_t idle_sleep_max_us = 100;
  // Loop counter frozen this long while the worker had the CPU (or slept) = dataplane
  // unhealthy; a worker only kept off its CPU by the scheduler is starved, not stalled
  // (failover/stall.h), and tolerated up to 10x this.
  uint32_t stall_ms = 40;
  bool test_hooks = false;
  // management
  Endpoint metrics;
  Endpoint grpc;
  Endpoint peer_grpc;
  TlsConfig management_tls;  // gRPC server: requires and verifies client certificates
  TlsConfig peer_tls;        // client of the peer (defaults to management_tls)
  /* With management.tls: the names (subjectAltName DNS/IP, or common name) a client
   * certificate must carry to call the peer RPCs (Peer.*, Replication.Sync). Default: the
   * address of peer.grpc. */
  std::vector<std::string> peer_identities;
  // checkpoint
  ReplicationMode mode = ReplicationMode::RELAXED;
  uint32_t checkpoint_interval_us = 1000;
  uint32_t checkpoint_dirty_threshold = 4096;
  uint32_t quiesce_timeout_us = 2000;
  uint32_t hold_capacity = 16384;
  dp::HoldFallback hold_fallback = dp::HoldFallback::RELAXED;
  // The commit path's threads at real-time priority: for nodes whose control plane has cores
  // of its own (off by default; see docs/BENCHMARKS.md, issue 18's commit path).
  bool checkpoint_realtime = false;

  // failover
  uint32_t heartbeat_interval_ms = 5;  // with fast beats: silence after 40 ms fails over
  uint32_t miss_threshold = 8;
  uint32_t beat_udp_port = 50052;  // fast beats (UDP, real-time threads); 0 = gRPC beats only
  bool beat_realtime = true;
  /* Dataplane beats (issue 19, dataplane/dp_beat.h): every worker sends one frame per interval
   * on the LAN port, and a peer worker silent dataplane_miss intervals is probed over the fast
   * beats (answer within dataplane_probe_us) and failed over when dead or stalled
   * (failover/dp_verdict.h). 0 = off. Needs the fast beats (beat_udp_port). */
  uint32_t dataplane_beat_us = 0;
  uint32_t dataplane_miss = 3;
  uint32_t dataplane_probe_us = 2000;  // sent 3 times within it; a peer heard meanwhile is alive
  /* A silence is acted on only this long after this node, a standby in sync, first heard the
   * peer's dataplane beats (control/dp_watch.h: a node starting takes the CPUs for a moment). */
  uint32_t dataplane_arm_ms = 3000;
  fo::FenceKind fence = fo::FenceKind::NONE;
  bool allow_fence_none = false;
  std::string fence_pidfile;
  // fence: process. A missing pidfile is "peer state unknown" (fencing fails) unless this is
  // set, where whatever stops the peer removes its pidfile only once it is gone (the lab).
  bool fence_missing_pidfile_ok = false;
  /* Fast-beat keys (hex files, failover/beat_auth.h): the first signs, all verify. Empty:
   * beats are not authenticated, which the daemon reports at start, in status and metrics. */
  std::vector<BeatKeyRef> beat_keys;
  std::string libvirt_uri, libvirt_domain, libvirt_action = "destroy";
  std::string libvirt_peer;  // PAIR/NODE: the peer found by the domains' ftpair metadata (warm pools)
  // The peer domain's lifecycle events (crash, destroy, shutdown, paused by an error) promote at
  // once, still fencing first (failover/peer_events.h). Only with fence: libvirt, where it is on
  // unless set to false.
  bool libvirt_events = true;
  // The peer domain's lifecycle events: by name only (not with libvirt_peer alone).
  bool peer_events_on() const { return fence == fo::FenceKind::LIBVIRT && libvirt_events && !libvirt_domain.empty(); }
  uint32_t fence_timeout_ms = 1000;
  uint32_t garp_count = 3;
  /* A stop (SIGTERM, SIGINT) of the active with a standby in sync hands over first, as
   * `ftpairctl switchover` does: drain, a final checkpoint, the standby takes over, and only
   * then this node stops. A service stop then costs no connection and no failure detection.
   * Off: the active just stops, and the standby fails over when the beats fall silent. */
  bool handover_on_stop = true;
  uint32_t snapshot_max_age_s = 600;

  // upgrade (in-service, `ftpairctl upgrade`)
  std::vector<std::string> upgrade_allowed_sha256;  // binaries this node may run; empty = none
  uint32_t upgrade_health_window_ms = 10000;        // a new version must stay healthy this long
  uint32_t upgrade_sync_timeout_ms = 60000;         // ... and reach sync within this

  // log (ftpaird --log-level / --log-format win)
  log::Level log_level = log::Level::INFO;
  log::Format log_format = log::Format::AUTO;

  std::string source_text;  // the file as read, then the overrides (Control.Config)

  std::string eal_file_prefix() const { return file_prefix.empty() ? "ftpair-" + node_id : file_prefix; }
  // EAL argument vector derived from the dpdk section.
  std::vector<std::string> eal_argv() const;
  // The dataplane's NF settings derived from the ports/nat/flows sections.
  dp::NfConfig nf_config() const;
};

/* Parses YAML text, then applies overrides ("dotted.key=value", value parsed as YAML),
 * then validates. On error returns INVALID_ARGUMENT naming the key. */
Status parse_config(const std::string &yaml_text, const std::vector<std::string> &overrides,
                    Config *out);
// Reads and parses a file; a missing or unreadable file is an error naming the path.
Status load_config(const std::string &path, const std::vector<std::string> &overrides,
                   Config *out);

/* Every effective setting as dotted key -> value text (defaults included), so two configs
 * can be compared key by key (SIGHUP reload). */
std::map<std::string, std::string> config_fields(const Config &c);

// "198.18.1.1/24" -> ip (network order) and prefix length.
bool parse_prefix(const std::string &s, uint32_t *ip_be, uint8_t *plen);
bool parse_ipv4(const std::string &s, uint32_t *ip_be);
bool parse_endpoint(const std::string &s, Endpoint *ep);
std::string ipv4_to_string(uint32_t ip_be);

}  // namespace ftpair
