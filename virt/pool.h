/* The warm standby pool: pre-defined, pre-commissioned spare domains (copies of node b), paused,
 * so that a pair is re-protected quickly after a failover. With pair.guest_daemon, spares are
 * claimed over the claim protocol (virt/claim.h). Each operation fills a JSON report. */
#pragma once

#include <string>

#include "virt/ops.h"
#include "virt/spec.h"

namespace ftpair::virt {

// Define, start and pause spares up to pair.pool.size. With pair.guest_daemon, each spare gets a
// claim token (OEM string and metadata) and is paused only once its guest answers on the claim
// port: a warm spare has booted and commissioned itself.
Status pool_fill(const PairSpec &spec, const Timeouts &t, Json *report);
// The pair's domains (members, spares) and how many spares are ready (paused).
Status pool_status(const PairSpec &spec, const Timeouts &t, Json *report);
// Replaces node `failed` (a or b) by a spare: the failed domain must not be running (fenced);
// the spare is resumed and becomes that member as standby; the failed one is undefined; the
// pool is refilled. Reports replace_s (resume to running as standby) and refill_s. With
// pair.guest_daemon, the spare is then told to assume the failed member's identity (id, address,
// peer; virt/claim.h) and `wait` runs until it is a standby in sync with the surviving active:
// claimed_s and in_sync_s (from the start of the replace) are reported too.
Status pool_replace(const PairSpec &spec, const std::string &failed, const Timeouts &t, const SyncWait &wait,
                    Json *report);
// The baseline for replace: define and start a new domain for node `failed` instead (with
// pair.guest_daemon, also waited for until in sync).
Status replace_fresh(const PairSpec &spec, const std::string &failed, const Timeouts &t, const SyncWait &wait,
                     Json *report);

}  // namespace ftpair::virt
