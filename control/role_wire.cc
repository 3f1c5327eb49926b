#include "control/role_wire.h"

#include <atomic>

namespace ftpair::wire {

namespace {
std::atomic<bool> g_previous_release{false};

constexpr struct {
  fo::Role role;
  v1::RoleState proto;
} kRoles[] = {
    {fo::Role::BOOT, v1::ROLE_STATE_BOOT},
    {fo::Role::STANDBY_SYNCING, v1::ROLE_STATE_STANDBY_SYNCING},
    {fo::Role::STANDBY_READY, v1::ROLE_STATE_STANDBY_READY},
    {fo::Role::ACTIVE, v1::ROLE_STATE_ACTIVE},
    {fo::Role::DRAINING, v1::ROLE_STATE_DRAINING},
    {fo::Role::FAULT, v1::ROLE_STATE_FAULT},
};
}  // namespace

void set_previous_release(bool on) { g_previous_release.store(on); }
bool previous_release() { return g_previous_release.load(); }

v1::RoleState to_proto(fo::Role r) {
  for (const auto &e : kRoles)
    if (e.role == r) return e.proto;
  return v1::ROLE_STATE_UNSPECIFIED;
}

bool from_wire(v1::RoleState typed, const std::string &state, const std::string &kind, fo::Role *out) {
  auto found = [out](fo::Role r) {
    *out = r;
    return true;
  };
  if (!g_previous_release.load())
    for (const auto &e : kRoles)
      if (e.proto == typed) return found(e.role);
  for (const auto &e : kRoles)
    if (state == fo::role_name(e.role)) return found(e.role);
  // role_kind() is many to one: a standby is taken as not yet in sync, an active as ACTIVE.
  for (fo::Role r : {fo::Role::ACTIVE, fo::Role::STANDBY_SYNCING, fo::Role::BOOT, fo::Role::FAULT})
    if (kind == fo::role_kind(r)) return found(r);
  return false;
}

fo::Role role_of(const v1::Beat &b) {
  fo::Role r = fo::Role::BOOT;
  return from_wire(b.role_state(), b.state(), b.role(), &r) ? r : fo::Role::BOOT;
}

void fill(fo::Role r, v1::Beat *b) {
  b->set_role(fo::role_kind(r));
  b->set_state(fo::role_name(r));
  if (!g_previous_release.load()) b->set_role_state(to_proto(r));
}

void fill(fo::Role r, v1::StatusReply *s) {
  s->set_role(fo::role_kind(r));
  s->set_state(fo::role_name(r));
  if (!g_previous_release.load()) s->set_role_state(to_proto(r));
}

void fill_peer(fo::Role r, v1::StatusReply *s) {
  s->set_peer_role(fo::role_name(r));
  if (!g_previous_release.load()) s->set_peer_role_state(to_proto(r));
}

}  // namespace ftpair::wire
