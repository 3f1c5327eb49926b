/* The ftpair metadata that marks a domain as managed: one <instance> element in libvirt's
 * <metadata>, in its own namespace. In the platform library, as ftpaird's libvirt fencer finds
 * its peer by it (failover.libvirt_peer); ftpair-virt writes it (virt/managed.h). */
#pragma once

#include <cstdint>
#include <string>

#include <libvirt/libvirt.h>

namespace ftpair::virt {

// Namespace of the <metadata> element that marks a domain as managed by ftpair.
inline constexpr char kMetaNs[] = "urn:ftpair:virt:1";
inline constexpr char kMetaPrefix[] = "ftpair";

// What the metadata element records. state: member (a pair node), spare (warm pool),
// retained (kept by teardown --reuse for the next deploy).
struct InstanceMeta {
  std::string pair, node, role, state;
  std::string image;      // sha256 over the boot files' allow-listed digests
  uint32_t memory_mib = 0, vcpus = 0;
  std::string created_network;  // a management network that deploy created for the pair
  std::string address;          // management ip/prefix given to the guest
  std::string token;            // a spare's claim secret (also its ftpair:pool.token OEM string)
};

// The element, with its namespace declared (for a domain XML) or bare (for virDomainSetMetadata).
std::string meta_xml(const InstanceMeta &m, bool with_namespace);
// Parses the metadata element (as virDomainGetMetadata returns it). False if it is not ours.
bool parse_meta_xml(const std::string &xml, InstanceMeta *m);
// Reads the ftpair metadata of a domain; false if it has none or it is not ours.
bool get_meta(virDomainPtr d, InstanceMeta *m);

// XML-escapes text for element content and attribute values.
std::string xml_escape(const std::string &s);

}  // namespace ftpair::virt
