/* ftpair-virt's SyncWait and DaemonOps (virt/ops.h) over the Control gRPC API. The wait ends
 * when the active sees its stream to the replacement's address in sync and the replacement is a
 * standby in sync (STANDBY_READY). It long-polls the active, which reports the state the standby
 * sent in its acknowledgement; the replacement itself is asked only when the active cannot say
 * (judge_active in virt/ops.h: an older release at either end, or a failed node whose fate is
 * not known here). Only the ftpair-virt executable links it. */
#pragma once

#include "virt/ops.h"

namespace ftpair::virt {

Status wait_standby_in_sync(const std::string &standby, const std::string &active, Ms deadline,
                            Clock::time_point gone_since, Json *detail);

// The shutdown's daemon operations (virt/ops.h) over Control.Status and Control.Checkpoint.
DaemonOps grpc_daemon_ops();

}  // namespace ftpair::virt
