/* The process fencer (the pair lab only: both nodes on one host): SIGKILL the peer whose pid
 * its pidfile holds, and confirm that it can no longer run its own code. */
#pragma once

#include <memory>
#include <string>

#include "failover/fencer.h"

namespace ftpair::virt {

/* A fencer for the process named by `pidfile`. A missing or unreadable pidfile counts as
 * "nothing runs" (the lab removes it when a node stops). INVALID_ARGUMENT (naming
 * failover.fence_pidfile) and nullptr when the path is empty. */
std::unique_ptr<fo::Fencer> make_process_fencer(const std::string &pidfile, Status *st);

}  // namespace ftpair::virt
