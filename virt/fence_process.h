/* The process fencer (the pair lab only: both nodes on one host): SIGKILL the peer whose pid
 * its pidfile holds, and confirm that it can no longer run its own code. */
#pragma once

#include <memory>
#include <string>

#include "failover/fencer.h"

namespace ftpair::virt {

/* A fencer for the process named by `pidfile`. It fails closed: a pidfile that cannot be
 * read or holds no pid leaves the peer's state unknown (UNAVAILABLE), and so does a missing
 * one unless missing_ok (failover.fence_missing_pidfile_ok: whatever stops the peer removes
 * its pidfile only once it is gone, as the lab does). INVALID_ARGUMENT (naming
 * failover.fence_pidfile) and nullptr when the path is empty. */
std::unique_ptr<fo::Fencer> make_process_fencer(const std::string &pidfile, bool missing_ok, Status *st);

}  // namespace ftpair::virt
