/* The pair spec: what `ftpair-virt` deploys. YAML, every field checked; a bad spec is refused
 * with the field named (for example "nodes.b.nics[1].source: missing").
 *
 *   pair:
 *     name: p1                      # domains are <name>-a, <name>-b, spares <name>-spare-<i>
 *     grpc_port: 50051              # ftpaird management/peer gRPC port in the guests
 *     allowlist: {/images/node.img: <sha256 hex>, ...}   # boot digest allow-list
 *     allowlist_dir: /etc/ftpair/virt   # where deploy writes <name>.allow for the qemu hook
 *     reuse: none | same-image      # teardown --reuse keeps instances with the same image
 *                                   # digest, memory and vCPUs; the next deploy picks them up
 *     host_address: 198.18.3.254/24 # optional: the host's address on a management network
 *                                   # that deploy creates (so drain reaches the guests locally)
 *     pool: {size: 1, addresses: [198.18.3.10/24]}   # warm standby spares (copies of node b)
 *     guest_daemon: false           # true: the guests' initramfs runs ftpaird (virt/guest.h), so
 *                                   # pool fill pauses a spare only once it waits to be claimed,
 *                                   # and replace hands it the failed member's identity and waits
 *                                   # until it is a standby in sync
 *     config: {failover.fence: libvirt, ...}         # extra ftpaird keys, as OEM strings
 *   nodes:
 *     a: &node
 *       uri: qemu:///system
 *       role: active                # active | standby
 *       memory_mib: 64
 *       vcpus: 1
 *       disk: /images/node.img      # or kernel: + initrd: (+ cmdline:)
 *       nics: [{type: bridge, source: br-lan}, {type: macvtap, source: eth1, mode: bridge},
 *              {type: vhost-user, source: /run/vhu.sock, mode: client}]
 *                                   # a NIC with port: inside|outside is that ftpaird port: it
 *                                   # gets a fixed PCI address (slot 4 + its index; the management
 *                                   # NIC is slot 3), and the guest learns it from the OEM string
 *                                   # ftpair:ports.<port>.device=0000:00:<slot>.0 (the guest's init
 *                                   # binds it to uio_pci_generic; DPDK's net_virtio drives it)
 *       management: {network: default, address: 198.18.3.1/24}   # or bridge: br-mgmt
 *       serial_log: /var/log/ftpair/a.serial   # optional: console to a file
 *     b: ...
 */
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace ftpair::virt {

struct NicSpec {
  std::string type;    // bridge | macvtap | vhost-user
  std::string source;  // bridge name, host device, or vhost-user socket path
  std::string mode;    // macvtap: bridge|vepa|private|passthrough; vhost-user: client|server
  std::string port;    // "" (the guest kernel's), inside or outside: driven by ftpaird's DPDK
};

/* The VM profile: the failover timers ftpaird in a guest gets (OEM strings) unless the pair's
 * config sets them. Guests lose their vCPU to the hypervisor for long stretches (TCG here: hundreds
 * of ms), so the beats are coarser than on bare metal: 50 ms x 10 had no spurious failover in
 * 300 s of two TCG guests under traffic on a 2-vCPU host (docs/BENCHMARKS.md, "The VM pair"). */
inline constexpr unsigned kVmHeartbeatMs = 50;
inline constexpr unsigned kVmMissThreshold = 10;
inline constexpr unsigned kVmStallMs = 3000;

// The guest PCI address of a node's NICs: the management NIC, then nics[i] (fixed, so the
// commissioning data can name them before the domain exists).
constexpr unsigned kMgmtNicSlot = 3;
inline unsigned nic_slot(size_t i) { return 4 + static_cast<unsigned>(i); }
std::string nic_pci_address(size_t i);  // "0000:00:04.0" for nics[0]

struct NodeSpec {
  std::string id;  // a | b | spare-<i>
  std::string uri;
  std::string role;  // active | standby
  uint32_t memory_mib = 0;
  uint32_t vcpus = 1;
  std::string disk, kernel, initrd, cmdline;
  std::vector<NicSpec> nics;
  std::string mgmt_network, mgmt_bridge, mgmt_address;  // address is ip/prefix
  std::string serial_log;
  std::string pool_token;  // a spare's claim secret (ftpair:pool.token), set by pool fill

  // The boot files the allow-list must cover: the disk, or kernel and initrd.
  std::vector<std::string> boot_files() const;
  std::string mgmt_ip() const { return mgmt_address.substr(0, mgmt_address.find('/')); }
};

struct PairSpec {
  std::string name;
  uint16_t grpc_port = 50051;
  std::map<std::string, std::string> allowlist;  // path -> sha256 hex
  std::string allowlist_dir = "/etc/ftpair/virt";
  std::string reuse = "none";
  std::string host_address;  // ip/prefix, optional
  uint32_t pool_size = 0;
  std::vector<std::string> pool_addresses;
  bool guest_daemon = false;
  std::map<std::string, std::string> config;  // extra dotted ftpaird keys
  NodeSpec a, b;

  std::string domain_name(const std::string &node_id) const { return name + "-" + node_id; }
  // Node "a" or "b"; nullptr for anything else.
  const NodeSpec *node(const std::string &id) const { return id == "a" ? &a : id == "b" ? &b : nullptr; }
  // Spare i: a copy of node b (same image, size, URI, NICs) with its own address and no role
  // preference beyond standby.
  NodeSpec spare(uint32_t i) const;
};

// Parses and checks a spec. Errors name the field: "nodes.a.memory_mib: missing".
Status parse_spec(const std::string &yaml_text, PairSpec *out);
Status load_spec(const std::string &path, PairSpec *out);

}  // namespace ftpair::virt
