// Roles on the wire: the typed RoleState beside the strings, and a previous-release peer that
// sends only the strings.
#include "control/role_wire.h"

#include <gtest/gtest.h>

namespace ftpair {
namespace {

constexpr fo::Role kAll[] = {fo::Role::BOOT,   fo::Role::STANDBY_SYNCING, fo::Role::STANDBY_READY,
                             fo::Role::ACTIVE, fo::Role::DRAINING,        fo::Role::FAULT};

TEST(RoleWire, EveryRoleRoundTripsThroughABeat) {
  for (fo::Role r : kAll) {
    v1::Beat b;
    wire::fill(r, &b);
    EXPECT_NE(b.role_state(), v1::ROLE_STATE_UNSPECIFIED) << fo::role_name(r);
    EXPECT_EQ(b.role(), fo::role_kind(r));
    EXPECT_EQ(b.state(), fo::role_name(r));
    EXPECT_EQ(wire::role_of(b), r) << fo::role_name(r);
  }
}

TEST(RoleWire, TheTypedFieldWinsOverTheStrings) {
  v1::Beat b;
  b.set_role("standby");
  b.set_state("STANDBY_READY");
  b.set_role_state(v1::ROLE_STATE_DRAINING);
  EXPECT_EQ(wire::role_of(b), fo::Role::DRAINING);
}

TEST(RoleWire, APreviousReleasePeerIsReadFromItsStrings) {
  for (fo::Role r : kAll) {
    v1::Beat b;  // what the previous release sends: the strings only
    b.set_role(fo::role_kind(r));
    b.set_state(fo::role_name(r));
    EXPECT_EQ(wire::role_of(b), r) << fo::role_name(r);
  }
  // Only the kind (a Hello): an active is ACTIVE, a standby is not yet taken as in sync.
  fo::Role r;
  ASSERT_TRUE(wire::from_wire(v1::ROLE_STATE_UNSPECIFIED, "", "active", &r));
  EXPECT_EQ(r, fo::Role::ACTIVE);
  ASSERT_TRUE(wire::from_wire(v1::ROLE_STATE_UNSPECIFIED, "", "standby", &r));
  EXPECT_EQ(r, fo::Role::STANDBY_SYNCING);
  // Nothing usable: a beat that names no role reads as BOOT, never as active.
  EXPECT_FALSE(wire::from_wire(v1::ROLE_STATE_UNSPECIFIED, "LEADER", "primary", &r));
  v1::Beat empty;
  EXPECT_EQ(wire::role_of(empty), fo::Role::BOOT);
  // A RoleState from a newer release that this one does not know: the strings decide.
  v1::Beat future;
  future.set_role_state(static_cast<v1::RoleState>(42));
  future.set_state("STANDBY_READY");
  EXPECT_EQ(wire::role_of(future), fo::Role::STANDBY_READY);
}

TEST(RoleWire, PlayingThePreviousReleaseSendsAndReadsOnlyStrings) {
  wire::set_previous_release(true);
  v1::StatusReply s;
  wire::fill(fo::Role::ACTIVE, &s);
  EXPECT_EQ(s.role_state(), v1::ROLE_STATE_UNSPECIFIED);
  EXPECT_EQ(s.role(), "active");
  EXPECT_EQ(s.state(), "ACTIVE");
  v1::Beat b;
  b.set_state("STANDBY_READY");
  b.set_role_state(v1::ROLE_STATE_ACTIVE);  // ignored, as the previous release knew no such field
  EXPECT_EQ(wire::role_of(b), fo::Role::STANDBY_READY);
  wire::set_previous_release(false);
  EXPECT_EQ(wire::role_of(b), fo::Role::ACTIVE);
}

}  // namespace
}  // namespace ftpair
