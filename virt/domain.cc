#include "virt/domain.h"

#include "virt/commission.h"

#include <cstdio>
#include <sstream>

#include "common/sha256.h"

namespace ftpair::virt {

std::vector<std::string> oem_strings(const PairSpec &pair, const NodeSpec &self) {
  const std::string port = ":" + std::to_string(pair.grpc_port);
  std::vector<std::string> s{
      "ftpair:pair=" + pair.name,
      "ftpair:node.id=" + self.id,
      "ftpair:node.role=" + self.role,
      "ftpair:management.address=" + self.mgmt_address,
      "ftpair:management.grpc=" + self.mgmt_ip() + port,
  };
  if (self.id == "a")
    s.push_back("ftpair:peer.grpc=" + pair.b.mgmt_ip() + port);
  else if (self.id == "b")
    s.push_back("ftpair:peer.grpc=" + pair.a.mgmt_ip() + port);
  else
    s.push_back("ftpair:peer.candidates=" + pair.a.mgmt_ip() + port + "," + pair.b.mgmt_ip() + port);
  if (!self.pool_token.empty()) s.push_back("ftpair:pool.token=" + self.pool_token);
  for (size_t i = 0; i < self.nics.size(); ++i)
    if (!self.nics[i].port.empty()) s.push_back("ftpair:ports." + self.nics[i].port + ".device=" + nic_pci_address(i));
  for (const auto &[k, v] : pair.config) s.push_back("ftpair:" + k + "=" + v);
  // The VM profile's timers where the pair's config says nothing, as defaults: the guest's own
  // base config still decides where it sets them (commission.h, kDefaultPrefix).
  for (const auto &[k, v] : {std::pair<const char *, unsigned>{"failover.heartbeat_interval_ms", kVmHeartbeatMs},
                             {"failover.miss_threshold", kVmMissThreshold},
                             {"worker.stall_ms", kVmStallMs}})
    if (!pair.config.count(k)) s.push_back(std::string("ftpair:") + kDefaultPrefix + k + "=" + std::to_string(v));
  // A member fencing by libvirt fences its peer: by the peer's domain name, or with a warm pool
  // by the pair and node in the domains' metadata (a spare that replaces a member keeps its own
  // domain name, and the metadata follows the replacement). Not where the pair's config names it.
  auto fence = pair.config.find("failover.fence");
  if (fence != pair.config.end() && fence->second == "libvirt" && !pair.config.count("failover.libvirt_domain") &&
      !pair.config.count("failover.libvirt_peer") && (self.id == "a" || self.id == "b")) {
    const std::string peer = self.id == "a" ? "b" : "a";
    if (pair.pool_size == 0)
      s.push_back("ftpair:failover.libvirt_domain=" + pair.domain_name(peer));
    else
      s.push_back("ftpair:failover.libvirt_peer=" + pair.name + "/" + peer);
  }
  return s;
}

std::string image_key(const PairSpec &pair, const NodeSpec &node) {
  std::string text;
  for (const auto &f : node.boot_files()) {
    auto it = pair.allowlist.find(f);
    text += f + "=" + (it == pair.allowlist.end() ? "" : it->second) + "\n";
  }
  return sha256_hex(text);
}

std::string domain_xml(const PairSpec &pair, const NodeSpec &n, const std::string &name, const std::string &uuid,
                       const InstanceMeta &meta) {
  bool vhost_user = false;
  for (const auto &nic : n.nics) vhost_user |= nic.type == "vhost-user";
  std::ostringstream x;
  x << "<domain type='qemu'>\n"
    << "  <name>" << xml_escape(name) << "</name>\n";
  if (!uuid.empty()) x << "  <uuid>" << xml_escape(uuid) << "</uuid>\n";
  x << "  <metadata>\n    " << meta_xml(meta, true) << "\n  </metadata>\n"
    << "  <memory unit='MiB'>" << n.memory_mib << "</memory>\n"
    << "  <vcpu>" << n.vcpus << "</vcpu>\n";
  // vhost-user needs guest memory the backend can map.
  if (vhost_user) x << "  <memoryBacking><source type='memfd'/><access mode='shared'/></memoryBacking>\n";
  x << "  <sysinfo type='smbios'>\n    <oemStrings>\n";
  for (const auto &s : oem_strings(pair, n)) x << "      <entry>" << xml_escape(s) << "</entry>\n";
  x << "    </oemStrings>\n  </sysinfo>\n"
    << "  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n";
  if (!n.kernel.empty()) {
    x << "    <kernel>" << xml_escape(n.kernel) << "</kernel>\n";
    if (!n.initrd.empty()) x << "    <initrd>" << xml_escape(n.initrd) << "</initrd>\n";
    if (!n.cmdline.empty()) x << "    <cmdline>" << xml_escape(n.cmdline) << "</cmdline>\n";
  } else {
    x << "    <boot dev='hd'/>\n";
  }
  x << "    <smbios mode='sysinfo'/>\n  </os>\n"
    << "  <features><acpi/></features>\n"
    // Every feature the hypervisor offers (TCG: -cpu max): DPDK needs at least SSE4.2, which
    // QEMU's default qemu64 model lacks.
    << "  <cpu mode='maximum' check='none'/>\n"
    << "  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>restart</on_reboot>\n  <on_crash>destroy</on_crash>\n"
    << "  <devices>\n";
  if (!n.disk.empty())
    // The image is shared by the pair and the spares, so it is attached read-only.
    x << "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n"
      << "      <source file='" << xml_escape(n.disk) << "'/>\n      <target dev='vda' bus='virtio'/>\n"
      << "      <readonly/>\n    </disk>\n";
  if (!n.mgmt_network.empty())
    x << "    <interface type='network'>\n      <source network='" << xml_escape(n.mgmt_network) << "'/>\n";
  else
    x << "    <interface type='bridge'>\n      <source bridge='" << xml_escape(n.mgmt_bridge) << "'/>\n";
  auto slot = [](unsigned sl) {
    char b[96];
    std::snprintf(b, sizeof b, "      <address type='pci' domain='0x0000' bus='0x00' slot='0x%02x' function='0x0'/>\n", sl);
    return std::string(b);
  };
  x << "      <model type='virtio'/>\n" << slot(kMgmtNicSlot) << "    </interface>\n";
  for (size_t i = 0; i < n.nics.size(); ++i) {
    const NicSpec &nic = n.nics[i];
    if (nic.type == "bridge")
      x << "    <interface type='bridge'>\n      <source bridge='" << xml_escape(nic.source) << "'/>\n";
    else if (nic.type == "macvtap")
      x << "    <interface type='direct'>\n      <source dev='" << xml_escape(nic.source) << "' mode='"
        << xml_escape(nic.mode) << "'/>\n";
    else
      x << "    <interface type='vhostuser'>\n      <source type='unix' path='" << xml_escape(nic.source)
        << "' mode='" << xml_escape(nic.mode) << "'/>\n";
    x << "      <model type='virtio'/>\n" << slot(nic_slot(i)) << "    </interface>\n";
  }
  if (!n.serial_log.empty())
    x << "    <serial type='file'>\n      <source path='" << xml_escape(n.serial_log) << "'/>\n"
      << "      <target port='0'/>\n    </serial>\n";
  else
    x << "    <serial type='pty'><target port='0'/></serial>\n";
  x << "    <video><model type='none'/></video>\n"
    << "    <memballoon model='none'/>\n  </devices>\n</domain>\n";
  return x.str();
}

}  // namespace ftpair::virt
