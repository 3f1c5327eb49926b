// fo::PeerEvents with a scripted EventSource: which events signal "peer down", that subscribing
// never blocks start, and that failed or lost subscriptions are counted and retried. The libvirt
// source itself (virt::LifecycleSource) runs against a real libvirtd in tests/virt/ (suite virt).
#include "failover/peer_events.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

using namespace ftpair;
using namespace ftpair::fo;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

struct Script {
  std::mutex mu;
  std::function<void(const DomainEvent &)> on_event;
  std::function<void(const std::string &)> on_lost;
  int subscribes = 0, unsubscribes = 0;
  int fail_first = 0;                        // this many subscribes fail
  std::chrono::milliseconds subscribe_delay{0};  // each subscribe blocks this long
  bool active = false;
  // Delivers like a source thread would (not the PeerEvents thread).
  bool emit(const DomainEvent &e) {
    std::function<void(const DomainEvent &)> f;
    {
      std::lock_guard<std::mutex> l(mu);
      if (!active) return false;
      f = on_event;
    }
    std::thread([&] { f(e); }).join();
    return true;
  }
  bool lose(const std::string &why) {
    std::function<void(const std::string &)> f;
    {
      std::lock_guard<std::mutex> l(mu);
      if (!active) return false;
      f = on_lost;
    }
    f(why);
    return true;
  }
};

class FakeSource final : public EventSource {
 public:
  explicit FakeSource(std::shared_ptr<Script> s) : s_(std::move(s)) {}
  std::string describe() const override { return "fake:///events"; }
  Status subscribe(std::function<void(const DomainEvent &)> on_event, std::function<void(const std::string &)> on_lost) override {
    std::chrono::milliseconds delay;
    {
      std::lock_guard<std::mutex> l(s_->mu);
      delay = s_->subscribe_delay;
    }
    std::this_thread::sleep_for(delay);
    std::lock_guard<std::mutex> l(s_->mu);
    if (s_->subscribes++ < s_->fail_first) return Unavailable("cannot reach fake:///events");
    s_->on_event = std::move(on_event);
    s_->on_lost = std::move(on_lost);
    s_->active = true;
    return Status::Ok();
  }
  void unsubscribe() override {
    std::lock_guard<std::mutex> l(s_->mu);
    if (!s_->active) return;
    s_->active = false;
    s_->unsubscribes++;
  }

 private:
  std::shared_ptr<Script> s_;
};

struct Harness {
  std::shared_ptr<Script> script = std::make_shared<Script>();
  std::mutex mu;
  std::vector<PeerDown> downs;
  std::vector<std::string> logs;
  std::unique_ptr<PeerEvents> pe;
  void make(std::chrono::milliseconds retry_min = 10ms, std::function<void(const PeerDown &)> extra = nullptr) {
    PeerEventsConfig c;
    c.domain = "pair-a";
    c.retry_min = retry_min;
    c.retry_max = 40ms;
    pe = std::make_unique<PeerEvents>(
        c, std::make_unique<FakeSource>(script),
        [this, extra](const PeerDown &d) {
          if (extra) extra(d);
          std::lock_guard<std::mutex> l(mu);
          downs.push_back(d);
        },
        [this](const std::string &m) {
          std::lock_guard<std::mutex> l(mu);
          logs.push_back(m);
        });
  }
  size_t down_count() {
    std::lock_guard<std::mutex> l(mu);
    return downs.size();
  }
  bool logged(const std::string &needle) {
    std::lock_guard<std::mutex> l(mu);
    for (auto &m : logs)
      if (m.find(needle) != std::string::npos) return true;
    return false;
  }
};

template <class F>
bool eventually(F f, std::chrono::milliseconds limit = 2000ms) {
  auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return f();
}

}  // namespace

TEST(PeerDownLabel, DomainStoppedRunning) {
  EXPECT_STREQ(peer_down_label({"d", "crashed", "panicked"}), "crashed");
  EXPECT_STREQ(peer_down_label({"d", "crashed", "crashloaded"}), "crashed");
  for (const char *d : {"destroyed", "failed", "crashed", "shutdown", "saved", "from-snapshot"})
    EXPECT_STREQ(peer_down_label({"d", "stopped", d}), "stopped") << d;
  EXPECT_STREQ(peer_down_label({"d", "shutdown", "guest"}), "shutdown");
  EXPECT_STREQ(peer_down_label({"d", "shutdown", "finished"}), "shutdown");
  for (const char *d : {"ioerror", "watchdog", "api-error", "postcopy-failed"})
    EXPECT_STREQ(peer_down_label({"d", "suspended", d}), "paused_error") << d;
}

TEST(PeerDownLabel, RunningOrElsewhereSaysNothing) {
  // A migrated domain runs on another host; an operator's pause, a start or a resume is no death.
  EXPECT_EQ(peer_down_label({"d", "stopped", "migrated"}), nullptr);
  for (const char *d : {"paused", "migrated", "restored", "from-snapshot", "postcopy"})
    EXPECT_EQ(peer_down_label({"d", "suspended", d}), nullptr) << d;
  for (const char *ev : {"started", "resumed", "defined", "undefined", "pmsuspended", "unknown", ""})
    EXPECT_EQ(peer_down_label({"d", ev, "0"}), nullptr) << ev;
}

TEST(PeerEvents, OnlyThePeersDeathSignals) {
  Harness h;
  h.make();
  h.pe->start();
  ASSERT_TRUE(eventually([&] { return h.pe->subscribed(); }));
  EXPECT_TRUE(h.logged("subscribed at fake:///events, watching domain pair-a"));
  // Another domain dies; the peer starts and resumes: nothing.
  ASSERT_TRUE(h.script->emit({"pair-b", "stopped", "destroyed"}));
  ASSERT_TRUE(h.script->emit({"pair-a-spare-0", "crashed", "panicked"}));
  ASSERT_TRUE(h.script->emit({"pair-a", "started", "booted"}));
  ASSERT_TRUE(h.script->emit({"pair-a", "resumed", "unpaused"}));
  ASSERT_TRUE(h.script->emit({"pair-a", "suspended", "paused"}));
  std::this_thread::sleep_for(50ms);
  EXPECT_EQ(h.down_count(), 0u);
  EXPECT_EQ(h.pe->other_domain_events(), 2u);
  EXPECT_EQ(h.pe->peer_events("other"), 3u);
  // The peer is destroyed: one signal with what happened.
  const auto before = Clock::now();
  ASSERT_TRUE(h.script->emit({"pair-a", "stopped", "destroyed"}));
  ASSERT_TRUE(eventually([&] { return h.down_count() == 1; }));
  {
    std::lock_guard<std::mutex> l(h.mu);
    EXPECT_EQ(h.downs[0].domain, "pair-a");
    EXPECT_EQ(h.downs[0].event, "stopped");
    EXPECT_EQ(h.downs[0].detail, "destroyed");
    EXPECT_STREQ(h.downs[0].label, "stopped");
    EXPECT_GE(h.downs[0].seen, before);
  }
  ASSERT_TRUE(h.script->emit({"pair-a", "suspended", "ioerror"}));
  ASSERT_TRUE(eventually([&] { return h.down_count() == 2; }));
  EXPECT_EQ(h.pe->peer_events("stopped"), 1u);
  EXPECT_EQ(h.pe->peer_events("paused_error"), 1u);
  EXPECT_EQ(h.pe->signals(), 2u);
  h.pe->stop();
  EXPECT_EQ(h.script->unsubscribes, 1);
  EXPECT_FALSE(h.pe->subscribed());
}

// The host's callback (fencing, promotion) may block: the source's thread never waits for it.
TEST(PeerEvents, HostCallbackRunsOffTheSourceThread) {
  Harness h;
  std::atomic<bool> release{false};
  h.make(10ms, [&](const PeerDown &) {
    while (!release.load()) std::this_thread::sleep_for(1ms);
  });
  h.pe->start();
  ASSERT_TRUE(eventually([&] { return h.pe->subscribed(); }));
  auto t0 = Clock::now();
  ASSERT_TRUE(h.script->emit({"pair-a", "crashed", "panicked"}));
  ASSERT_TRUE(h.script->emit({"pair-a", "stopped", "crashed"}));
  EXPECT_LT(Clock::now() - t0, 200ms);
  release = true;
  ASSERT_TRUE(eventually([&] { return h.down_count() == 2; }));
}

// An unreachable hypervisor: start returns at once, failures are logged and counted, retried
// with backoff, and a later success subscribes.
TEST(PeerEvents, FailedSubscribeNeitherBlocksNorStops) {
  Harness h;
  h.script->fail_first = 3;
  h.script->subscribe_delay = 100ms;
  h.make();
  auto t0 = Clock::now();
  h.pe->start();
  EXPECT_LT(Clock::now() - t0, 50ms);
  ASSERT_TRUE(eventually([&] { return h.pe->subscribed(); }, 3000ms));
  EXPECT_EQ(h.pe->subscribe_failures(), 3u);
  EXPECT_EQ(h.pe->subscriptions(), 1u);
  EXPECT_EQ(h.pe->last_error(), "cannot reach fake:///events");
  EXPECT_TRUE(h.logged("libvirt events: cannot subscribe at fake:///events: cannot reach fake:///events; retrying in"));
  EXPECT_TRUE(h.logged("failover still runs on beats"));
  ASSERT_TRUE(h.script->emit({"pair-a", "stopped", "failed"}));
  ASSERT_TRUE(eventually([&] { return h.down_count() == 1; }));
}

TEST(PeerEvents, LostConnectionResubscribes) {
  Harness h;
  h.make();
  h.pe->start();
  ASSERT_TRUE(eventually([&] { return h.pe->subscribed(); }));
  ASSERT_TRUE(h.script->lose("libvirtd closed the connection"));
  ASSERT_TRUE(eventually([&] { return h.pe->subscriptions() == 2 && h.pe->subscribed(); }));
  EXPECT_EQ(h.pe->connections_lost(), 1u);
  EXPECT_EQ(h.script->unsubscribes, 1);
  EXPECT_TRUE(h.logged("connection to fake:///events lost (libvirtd closed the connection); resubscribing"));
  // The new subscription delivers.
  ASSERT_TRUE(h.script->emit({"pair-a", "shutdown", "guest"}));
  ASSERT_TRUE(eventually([&] { return h.down_count() == 1; }));
}

// stop() while the hypervisor is unreachable returns within one subscribe attempt, and nothing
// is delivered after it.
TEST(PeerEvents, StopIsBoundedAndFinal) {
  Harness h;
  h.script->fail_first = 1000;
  h.script->subscribe_delay = 50ms;
  h.make(5ms);
  h.pe->start();
  std::this_thread::sleep_for(120ms);
  auto t0 = Clock::now();
  h.pe->stop();
  EXPECT_LT(Clock::now() - t0, 200ms);
  EXPECT_FALSE(h.pe->subscribed());
  EXPECT_GE(h.pe->subscribe_failures(), 1u);

  Harness g;
  g.make();
  g.pe->start();
  ASSERT_TRUE(eventually([&] { return g.pe->subscribed(); }));
  g.pe->stop();
  EXPECT_FALSE(g.script->emit({"pair-a", "stopped", "destroyed"}));  // unsubscribed
  EXPECT_EQ(g.down_count(), 0u);
}

