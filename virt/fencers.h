/* The platform's fencers: the implementations of fo::Fencer that ftpaird can be configured
 * with. failover/ holds the interface and the policy; the daemon (control/) wires in the one
 * that the config names through this factory. */
#pragma once

#include <memory>

#include "common/status.h"
#include "failover/fencer.h"

namespace ftpair::virt {

/* The fencer that cfg names: none (only with allow_none; fo::make_none_fencer), process (lab:
 * SIGKILL by pidfile; virt/fence_process.h), libvirt (destroy or suspend the peer's domain;
 * virt/fence_libvirt.h). nullptr with *st naming the config key on a bad configuration. */
std::unique_ptr<fo::Fencer> make_fencer(const fo::FenceConfig &cfg, Status *st);

}  // namespace ftpair::virt
