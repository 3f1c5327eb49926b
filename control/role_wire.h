/* Roles on the wire: the one place that converts between fo::Role and what the messages carry.
 * A Beat, a Hello and a StatusReply carry the role twice: the typed RoleState and the strings
 * operators and the previous release read ("active"/"standby", and the state name). Senders
 * fill both; a receiver reads RoleState when it is set, else the strings (a sender of the
 * previous release). */
#pragma once

#include <string>

#include "control.pb.h"
#include "failover/role.h"
#include "peer.pb.h"

namespace ftpair::wire {

v1::RoleState to_proto(fo::Role r);

/* The role a message carries: `typed` when set (and known), else `state` (fo::role_name text,
 * "STANDBY_READY"), else `kind` ("active", "standby", "boot", "fault"; "standby" reads as not
 * yet in sync). False when none of them names a role. */
bool from_wire(v1::RoleState typed, const std::string &state, const std::string &kind, fo::Role *out);

// The peer's role from its beat; BOOT when the beat names none.
fo::Role role_of(const v1::Beat &b);
// Fills role, state and role_state.
void fill(fo::Role r, v1::Beat *b);
void fill(fo::Role r, v1::StatusReply *s);
// The peer's role as this node last heard it: peer_role (the state name) and peer_role_state.
void fill_peer(fo::Role r, v1::StatusReply *s);

/* ftpaird-prev (the previous release played by this source, control/main_prev.cc): send only
 * the strings and ignore RoleState, as that release did. Set once at start. */
void set_previous_release(bool on);
bool previous_release();

}  // namespace ftpair::wire
