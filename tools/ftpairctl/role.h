/* ftpairctl: the role a node reports, typed. A daemon sets StatusReply.role_state; one of the
 * previous release sets only the strings, so the state name ("STANDBY_READY") is read then.
 * (ftpairctl talks to the daemon over gRPC only, so it has its own copy of this fallback.) */
#pragma once

#include <string>

#include "control.pb.h"

namespace ftpairctl {

inline ftpair::v1::RoleState role_state(const ftpair::v1::StatusReply &s) {
  namespace v1 = ftpair::v1;
  if (s.role_state() != v1::ROLE_STATE_UNSPECIFIED && v1::RoleState_IsValid(s.role_state())) return s.role_state();
  v1::RoleState r = v1::ROLE_STATE_UNSPECIFIED;
  return v1::RoleState_Parse("ROLE_STATE_" + s.state(), &r) ? r : v1::ROLE_STATE_UNSPECIFIED;
}

// The node holds the active role (ACTIVE, or DRAINING during a switchover).
inline bool is_active(const ftpair::v1::StatusReply &s) {
  const auto r = role_state(s);
  return r == ftpair::v1::ROLE_STATE_ACTIVE || r == ftpair::v1::ROLE_STATE_DRAINING;
}

// The node is a standby, in sync or not.
inline bool is_standby(const ftpair::v1::StatusReply &s) {
  const auto r = role_state(s);
  return r == ftpair::v1::ROLE_STATE_STANDBY_SYNCING || r == ftpair::v1::ROLE_STATE_STANDBY_READY;
}

// A standby in sync with the active: it could take over now.
inline bool is_standby_ready(const ftpair::v1::StatusReply &s) {
  return role_state(s) == ftpair::v1::ROLE_STATE_STANDBY_READY;
}

}  // namespace ftpairctl
