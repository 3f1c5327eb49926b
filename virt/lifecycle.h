/* The pair's lifecycle on libvirt: deploy, ordered shutdown and teardown (with reuse), and
 * fencing a member. Each operation fills a JSON report (virt/ops.h). */
#pragma once

#include <string>

#include "virt/conn.h"
#include "virt/ops.h"
#include "virt/spec.h"

namespace ftpair::virt {

// Writes the allow-list file the qemu hook reads, creates the management network if it does not
// exist (recorded as created by the pair), then defines (or, with reuse, picks up a retained
// instance) and starts both nodes. Refuses if the pair already has members.
Status deploy(const PairSpec &spec, const Timeouts &t, Json *report);

/* Ordered shutdown, each step with a deadline and reported:
 *   1. roles: ask each running member's daemon what it is now (a failover since the deploy
 *      may have swapped them; the metadata's role is only the fallback);
 *   2. final checkpoint: the active closes an epoch, the standby in sync acknowledges it, and the
 *      active writes a snapshot;
 *   3. the VMs, in dependency order: the standby, then the active (it forwards to the last
 *      moment), then the spares. ACPI first: the guest's init stops ftpaird cleanly (its own
 *      snapshot) and powers off; destroy after the ACPI timeout;
 *   4. the networks the pair created.
 * With `undefine`, the domains are undefined afterwards except those kept as retained (reuse).
 * A drain that fails (the checkpoint is not acknowledged, no snapshot) does not stop the
 * shutdown; the result is then an error naming it. No active daemon answering, or no standby in
 * sync, skips the final checkpoint (reported, not an error: the active's clean shutdown writes
 * its own snapshot). */
Status shutdown(const PairSpec &spec, const Timeouts &t, const DaemonOps &ops, bool undefine, bool reuse, Json *report);

// Fences the domain of node `node` with the libvirt fencer (virt/fence_libvirt.h; destroy|suspend).
// `domain` names the domain directly (no lookup of the member by metadata) when not empty.
Status fence_node(const PairSpec &spec, const std::string &node, const std::string &domain, const std::string &action,
                  Ms deadline, Json *report);

// Defines `xml` as domain `name` and starts it, waiting up to start_timeout for "running".
// UNAVAILABLE with libvirt's error, or DEADLINE_EXCEEDED.
Status define_and_start(Conn &conn, const std::string &xml, const std::string &name, Ms start_timeout, Dom *out);

}  // namespace ftpair::virt
