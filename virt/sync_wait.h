/* ftpair-virt's SyncWait and DaemonOps (virt/ops.h) over the Control gRPC API. The wait ends
 * when the active sees its stream to the replacement's address in sync and the replacement is
 * a standby in sync (STANDBY_READY): it long-polls the active, which reports the state the
 * standby sent in its acknowledgement; only an active of an older release makes it ask the
 * replacement (virt/sync_wait.cc). Only the ftpair-virt executable links it. */
#pragma once

#include "virt/ops.h"

namespace ftpair::virt {

Status wait_standby_in_sync(const std::string &standby, const std::string &active, Ms deadline, Json *detail);

// The shutdown's daemon operations (virt/ops.h) over Control.Status and Control.Checkpoint.
DaemonOps grpc_daemon_ops();

}  // namespace ftpair::virt
