/* The pair's lifecycle on libvirt: deploy, ordered shutdown, teardown (with reuse), the warm
 * standby pool. Each operation returns a JSON report of what it did, step by step, with times. */
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "control/status.h"
#include "virt/spec.h"

namespace ftpair::virt {

using Json = nlohmann::json;
using Ms = std::chrono::milliseconds;

struct Timeouts {
  Ms connect{5000};   // opening a libvirt connection
  Ms drain{1000};     // reaching a node's ftpaird to drain it
  Ms acpi{10000};     // ACPI shutdown before falling back to destroy
  Ms start{30000};    // a domain reaching "running"
};

// Writes the allow-list file the qemu hook reads, creates the management network if it does not
// exist (recorded as created by the pair), then defines (or, with reuse, picks up a retained
// instance) and starts both nodes. Refuses if the pair already has members.
Status deploy(const PairSpec &spec, const Timeouts &t, Json *report);

// Ordered shutdown: drain the daemons (standby first, active last), then the VMs (standby, active,
// spares; ACPI with a timeout, then destroy), then the networks the pair created. With
// `undefine`, the domains are undefined afterwards except those kept as retained (reuse).
Status shutdown(const PairSpec &spec, const Timeouts &t, bool undefine, bool reuse, Json *report);

// Warm pool: define, start and pause spares up to pair.pool.size.
Status pool_fill(const PairSpec &spec, const Timeouts &t, Json *report);
Status pool_status(const PairSpec &spec, const Timeouts &t, Json *report);
// Replaces node `failed` (a or b) by a spare: the failed domain must not be running (fenced);
// the spare is resumed and becomes that member as standby; the failed one is undefined; the
// pool is refilled. Reports replace_s (resume to running as standby) and refill_s.
Status pool_replace(const PairSpec &spec, const std::string &failed, const Timeouts &t, Json *report);
// The baseline for replace: define and start a new domain for node `failed` instead.
Status replace_fresh(const PairSpec &spec, const std::string &failed, const Timeouts &t, Json *report);

// Fences the domain of node `node` with the failover Fencer (destroy|suspend).
// `domain` names the domain directly (no lookup of the member by metadata) when not empty.
Status fence_node(const PairSpec &spec, const std::string &node, const std::string &domain, const std::string &action,
                  Ms deadline, Json *report);

}  // namespace ftpair::virt
