/* Domain XML for a pair node or spare (its ftpair metadata: virt/meta.h).
 * Role, peer and config travel to the guest as SMBIOS type 11 OEM strings "ftpair:key=value". */
#pragma once

#include <string>
#include <vector>

#include "common/status.h"
#include "virt/meta.h"
#include "virt/spec.h"

namespace ftpair::virt {

// The OEM strings for `self`: pair, node.id, node.role, management.{address,grpc}, peer.grpc
// (or peer.candidates for a spare) and the pair's extra config keys.
std::vector<std::string> oem_strings(const PairSpec &pair, const NodeSpec &self);

// The full domain XML. `uuid` may be empty (libvirt assigns one).
std::string domain_xml(const PairSpec &pair, const NodeSpec &node, const std::string &name, const std::string &uuid,
                       const InstanceMeta &meta);

// The identity of a node's boot image for reuse and the allow-list file: sha256 over
// "path=digest\n" of each boot file, from the allow-list (not from the files).
std::string image_key(const PairSpec &pair, const NodeSpec &node);


}  // namespace ftpair::virt
