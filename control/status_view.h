/* The status view: everything that reads the daemon's state for display, in one place:
 * Control.Status (v1::StatusReply), the Control.Flows dump and the DPDK telemetry command
 * /ftpair/state. It reads through the daemon's public accessors and changes nothing. */
#pragma once

#include <cstdint>

#include "common/status.h"
#include "control.pb.h"

namespace ftpair {

class Daemon;

namespace status_view {

// Control.Status: role, generation, dataplane, flows, checkpoints, sync (the active's view or
// the standby's), reloads, upgrade.
void fill_status(Daemon &d, v1::StatusReply *out);

/* Control.Flows: up to `limit` flows (0 = all). The active's table is read with the workers
 * parked (an error if they do not park); a standby's under the table lock. */
Status fill_flows(Daemon &d, uint32_t limit, v1::FlowsReply *out);

/* Registers /ftpair/state with DPDK telemetry (dpdk.telemetry) for `d`; unregister_telemetry
 * detaches it again (the command stays registered and answers an error). One daemon per
 * process: DPDK's callback has no user pointer. */
void register_telemetry(Daemon &d);
void unregister_telemetry(Daemon &d);

}  // namespace status_view
}  // namespace ftpair
