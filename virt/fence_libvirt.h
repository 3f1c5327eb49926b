/* The libvirt fencer: destroy (or suspend) the peer's domain and confirm through libvirt that it
 * no longer runs. */
#pragma once

#include <memory>
#include <string>

#include "failover/fencer.h"

namespace ftpair::virt {

/* A fencer for `domain` at `uri` (qemu:///system, qemu+ssh://host/system, ...); `action` is
 * destroy or suspend. The whole fence (connect, lookup, stop, confirm) is bounded by its
 * deadline. INVALID_ARGUMENT naming the config key, and nullptr, on an empty URI or domain or
 * another action. */
std::unique_ptr<fo::Fencer> make_libvirt_fencer(const std::string &uri, const std::string &domain,
                                                const std::string &action, Status *st);

}  // namespace ftpair::virt
