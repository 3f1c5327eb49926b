/* What ftpair-virt's operations share: their timeouts, the JSON report each returns (what it
 * did, step by step, with times) and the wait for a replacement to be in sync. The operations
 * themselves: virt/lifecycle.h (deploy, ordered shutdown, fencing a member) and virt/pool.h
 * (the warm standby pool). */
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace ftpair::virt {

using Json = nlohmann::json;
using Ms = std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

struct Timeouts {
  Ms connect{5000};   // opening a libvirt connection
  Ms drain{5000};     // reaching a node's ftpaird to drain it (its status; a loaded guest is slow)
  Ms checkpoint{15000};  // the active's final checkpoint (acknowledged by the standby) and snapshot
  Ms acpi{10000};     // ACPI shutdown before falling back to destroy
  Ms start{30000};    // a domain reaching "running"
  Ms ready{180000};   // guest_daemon: a spare booting to its claim listener (TCG boots are slow)
  Ms sync{120000};    // guest_daemon: a replacement becoming a standby in sync
};

/* Waits until the ftpaird at `standby` (ip:port) is a standby in sync with the one at `active`,
 * filling `detail` with what was reported. `gone_since`: from when the failed node can open no
 * stream (its domain destroyed here, or found shut off), so that a stream the active says began
 * later is the replacement's; kNotKnownGone when the failed node was not found here.
 * ftpair-virt implements it over the Control gRPC API; virt/ itself does not link gRPC. */
inline constexpr Clock::time_point kNotKnownGone = Clock::time_point::max();
using SyncWait = std::function<Status(const std::string &standby, const std::string &active, Ms deadline,
                                      Clock::time_point gone_since, Json *detail)>;

// What an active says of its standby's stream (Control.Status, sync), for the wait's verdict.
struct ActiveSyncView {
  bool active = false, in_sync = false;
  std::string peer;          // the address its standby stream goes to
  std::string peer_node;     // the node id of that stream's hello reply
  int peer_state = 0;        // v1::RoleState of the standby's last acknowledgement; 0: unset
  double stream_age_s = -1;  // since the stream's hello was answered; -1: no stream
};
inline constexpr int kRoleStateStandbyReady = 3;  // v1::ROLE_STATE_STANDBY_READY (static_assert in sync_wait.cc)

enum class SyncVerdict {
  NOT_YET,      // the active's stream to `standby` is not in sync, or is the failed node's: wait
  IN_SYNC,      // the standby said STANDBY_READY on a stream that began after the failed node was gone
  ASK_STANDBY,  // the active cannot say (a release before Ack.role_state, or the failed node's fate is not known)
};
/* The verdict on what the active said, `gone_for_s` seconds (on this host's clock, at the
 * answer's receipt) after the failed node was gone (negative: not known). The stream's age is
 * the active's, at its answer: "younger than gone_for_s" errs only by the answer's transit. */
inline SyncVerdict judge_active(const ActiveSyncView &v, const std::string &standby, double gone_for_s) {
  if (!(v.active && v.in_sync && v.peer == standby)) return SyncVerdict::NOT_YET;
  if (v.peer_state == 0 || v.peer_node.empty() || gone_for_s < 0) return SyncVerdict::ASK_STANDBY;
  if (v.stream_age_s < 0 || v.stream_age_s >= gone_for_s) return SyncVerdict::NOT_YET;  // the failed node's stream
  return v.peer_state == kRoleStateStandbyReady ? SyncVerdict::IN_SYNC : SyncVerdict::NOT_YET;
}

// What the ordered shutdown asks of the daemons in the guests. ftpair-virt implements it over the
// Control gRPC API (virt/sync_wait.h); without it (empty functions) the shutdown can only check
// that a daemon listens and stop the VMs.
struct DaemonView {
  std::string node_id, role, state;  // role: active | standby | ...; state: ACTIVE, STANDBY_READY, ...
  bool in_sync = false;
  uint64_t flows = 0;
};
struct DaemonOps {
  std::function<Status(const std::string &addr, Ms deadline, DaemonView *out)> status;
  // Closes an epoch now and waits for the standby's acknowledgement, then writes a snapshot;
  // fills what it did (epoch, acked_epoch, records, snapshot path).
  std::function<Status(const std::string &addr, Ms deadline, Json *detail)> final_checkpoint;
};

// Seconds since t0, as the reports give them.
inline double secs_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
inline double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// The status with "<what>: " before its message (OK stays OK).
inline Status with_name(const std::string &what, Status st) {
  if (st.ok()) return st;
  return Status(st.code(), what + ": " + st.message());
}

// The address part of "ip/prefix".
inline std::string ip_of(const std::string &cidr) { return cidr.substr(0, cidr.find('/')); }

}  // namespace ftpair::virt
