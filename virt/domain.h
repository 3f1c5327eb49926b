/* Domain XML for a pair node or spare, and the ftpair metadata that marks a domain as managed.
 * Role, peer and config travel to the guest as SMBIOS type 11 OEM strings "ftpair:key=value". */
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "virt/spec.h"

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

// The OEM strings for `self`: pair, node.id, node.role, management.{address,grpc}, peer.grpc
// (or peer.candidates for a spare) and the pair's extra config keys.
std::vector<std::string> oem_strings(const PairSpec &pair, const NodeSpec &self);

// The full domain XML. `uuid` may be empty (libvirt assigns one).
std::string domain_xml(const PairSpec &pair, const NodeSpec &node, const std::string &name, const std::string &uuid,
                       const InstanceMeta &meta);

// The identity of a node's boot image for reuse and the allow-list file: sha256 over
// "path=digest\n" of each boot file, from the allow-list (not from the files).
std::string image_key(const PairSpec &pair, const NodeSpec &node);

// XML-escapes text for element content and attribute values.
std::string xml_escape(const std::string &s);

}  // namespace ftpair::virt
