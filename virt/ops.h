/* The pair's lifecycle on libvirt: deploy, ordered shutdown, teardown (with reuse), the warm
 * standby pool. Each operation returns a JSON report of what it did, step by step, with times. */
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"
#include "virt/spec.h"

namespace ftpair::virt {

using Json = nlohmann::json;
using Ms = std::chrono::milliseconds;

struct Timeouts {
  Ms connect{5000};   // opening a libvirt connection
  Ms drain{1000};     // reaching a node's ftpaird to drain it
  Ms acpi{10000};     // ACPI shutdown before falling back to destroy
  Ms start{30000};    // a domain reaching "running"
  Ms ready{180000};   // guest_daemon: a spare booting to its claim listener (TCG boots are slow)
  Ms sync{120000};    // guest_daemon: a replacement becoming a standby in sync
};

// The port of a spare's claim listener (virt/guest.h); pair.config pool.port overrides it.
inline constexpr uint16_t kClaimPort = 50059;

// Waits until the ftpaird at `standby` (ip:port) is a standby in sync with the one at `active`,
// filling `detail` with what both reported. ftpair-virt implements it over the Control gRPC API;
// virt/ itself does not link gRPC.
using SyncWait = std::function<Status(const std::string &standby, const std::string &active, Ms deadline, Json *detail)>;

// Writes the allow-list file the qemu hook reads, creates the management network if it does not
// exist (recorded as created by the pair), then defines (or, with reuse, picks up a retained
// instance) and starts both nodes. Refuses if the pair already has members.
Status deploy(const PairSpec &spec, const Timeouts &t, Json *report);

// Ordered shutdown: drain the daemons (standby first, active last), then the VMs (standby, active,
// spares; ACPI with a timeout, then destroy), then the networks the pair created. With
// `undefine`, the domains are undefined afterwards except those kept as retained (reuse).
Status shutdown(const PairSpec &spec, const Timeouts &t, bool undefine, bool reuse, Json *report);

// Warm pool: define, start and pause spares up to pair.pool.size. With pair.guest_daemon, each
// spare gets a claim token (OEM string and metadata) and is paused only once its guest answers on
// the claim port: a warm spare has booted and commissioned itself.
Status pool_fill(const PairSpec &spec, const Timeouts &t, Json *report);
Status pool_status(const PairSpec &spec, const Timeouts &t, Json *report);
// Replaces node `failed` (a or b) by a spare: the failed domain must not be running (fenced);
// the spare is resumed and becomes that member as standby; the failed one is undefined; the
// pool is refilled. Reports replace_s (resume to running as standby) and refill_s. With
// pair.guest_daemon, the spare is then told to assume the failed member's identity (id, address,
// peer; virt/guest.h) and `wait` runs until it is a standby in sync with the surviving active:
// claimed_s and in_sync_s (from the start of the replace) are reported too.
Status pool_replace(const PairSpec &spec, const std::string &failed, const Timeouts &t, const SyncWait &wait,
                    Json *report);
// The baseline for replace: define and start a new domain for node `failed` instead (with
// pair.guest_daemon, also waited for until in sync).
Status replace_fresh(const PairSpec &spec, const std::string &failed, const Timeouts &t, const SyncWait &wait,
                     Json *report);

// Fences the domain of node `node` with the failover Fencer (destroy|suspend).
// `domain` names the domain directly (no lookup of the member by metadata) when not empty.
Status fence_node(const PairSpec &spec, const std::string &node, const std::string &domain, const std::string &action,
                  Ms deadline, Json *report);

}  // namespace ftpair::virt
