/* The libvirt fencer: destroy (or suspend) the peer's domain and confirm through libvirt that it
 * no longer runs. The peer is named by its domain (failover.libvirt_domain) or, where a warm
 * pool may replace it by a domain of another name, by its pair and node in the domains' ftpair
 * metadata (failover.libvirt_peer: PAIR/NODE; virt/meta.h). */
#pragma once

#include <memory>
#include <string>

#include "failover/fencer.h"

namespace ftpair::virt {

using fo::PeerRef;

/* A fencer at `uri` (qemu:///system, qemu+ssh://host/system, ...) for `domain`, or for `peer`
 * ("PAIR/NODE": every domain whose metadata says it is that node of that pair and is not a
 * spare; none at all means nothing runs as that node); `action` is destroy or suspend. The
 * whole fence (connect, lookup, stop, confirm) is bounded by its deadline. INVALID_ARGUMENT
 * naming the config key, and nullptr, on an empty URI, neither or both of domain and peer, a
 * peer not PAIR/NODE, or another action. */
std::unique_ptr<fo::Fencer> make_libvirt_fencer(const std::string &uri, const std::string &domain,
                                                const std::string &peer, const std::string &action, Status *st);

}  // namespace ftpair::virt
