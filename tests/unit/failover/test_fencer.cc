// The fencing policy: "none" only when the operator allowed it, fence() hands back exactly what
// the platform's stop_peer() said, and the kinds parse and print as the config names them.
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "failover/fencer.h"

namespace ftpair::fo {
namespace {

using namespace std::chrono_literals;

// A platform fencer that answers what it is told to, and counts the calls.
class ScriptedFencer final : public Fencer {
 public:
  explicit ScriptedFencer(Status answer) : answer_(std::move(answer)) {}
  const char *kind() const override { return "scripted"; }
  std::string target() const override { return "the test's peer"; }
  int calls = 0;
  std::chrono::milliseconds last_deadline{0};

 protected:
  Status stop_peer(std::chrono::milliseconds deadline) override {
    calls++;
    last_deadline = deadline;
    return answer_;
  }

 private:
  Status answer_;
};

TEST(Fencer, NoneMustBeChosenExplicitly) {
  FenceConfig fc;
  Status st;
  EXPECT_FALSE(make_none_fencer(fc, &st));
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find("failover.allow_fence_none"), std::string::npos) << st.message();
  fc.allow_none = true;
  auto f = make_none_fencer(fc, &st);
  ASSERT_TRUE(f) << st.message();
  EXPECT_STREQ(f->kind(), "none");
  EXPECT_TRUE(f->fence(10ms).ok());
}

TEST(Fencer, FenceReturnsWhatThePlatformSaid) {
  ScriptedFencer ok(Status::Ok());
  EXPECT_TRUE(ok.fence(250ms).ok());
  EXPECT_EQ(ok.calls, 1);
  EXPECT_EQ(ok.last_deadline, 250ms);

  ScriptedFencer down(Unavailable("fence: peer state unknown"));
  for (int i = 0; i < 5; i++) {  // a stuck fence is retried; every attempt still reaches the platform
    Status st = down.fence(10ms);
    EXPECT_EQ(st.code(), Code::UNAVAILABLE);
    EXPECT_EQ(st.message(), "fence: peer state unknown");
  }
  EXPECT_EQ(down.calls, 5);
}

TEST(Fencer, KindsRoundTrip) {
  for (FenceKind k : {FenceKind::NONE, FenceKind::PROCESS, FenceKind::LIBVIRT}) {
    FenceKind back = FenceKind::NONE;
    ASSERT_TRUE(parse_fence_kind(fence_kind_name(k), &back)) << fence_kind_name(k);
    EXPECT_EQ(back, k);
  }
  FenceKind k;
  EXPECT_FALSE(parse_fence_kind("stonith", &k));
  EXPECT_FALSE(parse_fence_kind("", &k));
}

}  // namespace
}  // namespace ftpair::fo
