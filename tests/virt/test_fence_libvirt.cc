// The libvirt fencer finding its peer by the domains' ftpair metadata (failover.libvirt_peer),
// against libvirt's own test driver (test:///default: real libvirt API calls, an in-process
// hypervisor; qemu domains need a running libvirtd, which the virt suite has). Fencing by name
// is exercised against a real libvirtd by the virt tests.
#include <libvirt/libvirt.h>

#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "virt/fence_libvirt.h"
#include "virt/fencers.h"
#include "virt/meta.h"

namespace ftpair::virt {
namespace {

using namespace std::chrono_literals;

constexpr char kUri[] = "test:///default";

// A transient running domain of the test driver carrying `meta` (none when meta.pair is empty).
bool start_domain(virConnectPtr c, const std::string &name, const InstanceMeta &meta) {
  std::string xml = "<domain type='test'><name>" + name + "</name><memory>65536</memory><os><type>hvm</type></os>";
  if (!meta.pair.empty()) xml += "<metadata>" + meta_xml(meta, true) + "</metadata>";
  xml += "</domain>";
  virDomainPtr d = virDomainCreateXML(c, xml.c_str(), 0);
  if (d == nullptr) return false;
  virDomainFree(d);
  return true;
}

InstanceMeta meta(const std::string &pair, const std::string &node, const std::string &state) {
  InstanceMeta m;
  m.pair = pair;
  m.node = node;
  m.role = "standby";
  m.state = state;
  m.memory_mib = 64;
  m.vcpus = 1;
  return m;
}

// Running, or (a transient domain undefined once stopped) gone: false.
bool running(virConnectPtr c, const std::string &name) {
  virDomainPtr d = virDomainLookupByName(c, name.c_str());
  if (d == nullptr) return false;
  int state = 0, reason = 0;
  const bool r = virDomainGetState(d, &state, &reason, 0) == 0 && state == VIR_DOMAIN_RUNNING;
  virDomainFree(d);
  return r;
}

class FenceLibvirt : public ::testing::Test {
 protected:
  void SetUp() override {
    // Kept open for the test: the driver's state lives while a connection to it does, and the
    // fencer's own connection sees the same domains.
    conn_ = virConnectOpen(kUri);
    ASSERT_NE(conn_, nullptr);
  }
  void TearDown() override {
    for (const char *n : {"p-a", "p-b", "p-spare1", "q-b", "plain"}) {
      if (virDomainPtr d = virDomainLookupByName(conn_, n)) {
        virDomainDestroy(d);
        virDomainFree(d);
      }
    }
    virConnectClose(conn_);
  }
  std::unique_ptr<fo::Fencer> by_peer(const std::string &peer, Status *st, const std::string &action = "destroy") {
    fo::FenceConfig fc;
    fc.kind = fo::FenceKind::LIBVIRT;
    fc.libvirt_uri = kUri;
    fc.libvirt_peer = peer;
    fc.libvirt_action = action;
    return make_fencer(fc, st);
  }
  virConnectPtr conn_ = nullptr;
};

TEST_F(FenceLibvirt, ByPeerStopsThatNodeOfThatPairAndNothingElse) {
  ASSERT_TRUE(start_domain(conn_, "p-a", meta("p", "a", "member")));
  ASSERT_TRUE(start_domain(conn_, "p-b", meta("p", "b", "member")));
  // A spare says node b too until it is claimed: it is not the peer yet.
  ASSERT_TRUE(start_domain(conn_, "p-spare1", meta("p", "b", "spare")));
  ASSERT_TRUE(start_domain(conn_, "q-b", meta("q", "b", "member")));  // another pair's node b
  ASSERT_TRUE(start_domain(conn_, "plain", InstanceMeta{}));          // not ftpair's
  Status st;
  auto f = by_peer("p/b", &st);
  ASSERT_TRUE(f) << st.message();
  EXPECT_NE(f->target().find("node b of pair p"), std::string::npos) << f->target();
  Status r = f->fence(5000ms);
  EXPECT_TRUE(r.ok()) << r.message();
  EXPECT_FALSE(running(conn_, "p-b"));
  for (const char *n : {"p-a", "p-spare1", "q-b", "plain"}) EXPECT_TRUE(running(conn_, n)) << n;

  // The spare that replaces b carries node b as a member now: it is the peer.
  virDomainPtr d = virDomainLookupByName(conn_, "p-spare1");
  ASSERT_NE(d, nullptr);
  ASSERT_EQ(virDomainSetMetadata(d, VIR_DOMAIN_METADATA_ELEMENT, meta_xml(meta("p", "b", "member"), false).c_str(),
                                 kMetaPrefix, kMetaNs, VIR_DOMAIN_AFFECT_LIVE),
            0);
  virDomainFree(d);
  r = f->fence(5000ms);
  EXPECT_TRUE(r.ok()) << r.message();
  EXPECT_FALSE(running(conn_, "p-spare1"));
  EXPECT_TRUE(running(conn_, "p-a"));
}

TEST_F(FenceLibvirt, ByPeerWithNoSuchNodeIsFencedAndSuspendCounts) {
  // No domain is node b of pair p: nothing can run as it.
  Status st;
  auto f = by_peer("p/b", &st);
  ASSERT_TRUE(f) << st.message();
  Status r = f->fence(5000ms);
  EXPECT_TRUE(r.ok()) << r.message();

  ASSERT_TRUE(start_domain(conn_, "p-b", meta("p", "b", "member")));
  auto s = by_peer("p/b", &st, "suspend");
  ASSERT_TRUE(s) << st.message();
  r = s->fence(5000ms);
  EXPECT_TRUE(r.ok()) << r.message();
  virDomainPtr d = virDomainLookupByName(conn_, "p-b");
  ASSERT_NE(d, nullptr);
  int state = 0, reason = 0;
  ASSERT_EQ(virDomainGetState(d, &state, &reason, 0), 0);
  EXPECT_EQ(state, VIR_DOMAIN_PAUSED);
  virDomainFree(d);
}

// Metadata in our namespace that does not parse: which node that domain is, is unknown.
TEST_F(FenceLibvirt, UnreadableMetadataLeavesThePeerUnknown) {
  const std::string xml = std::string("<domain type='test'><name>plain</name><memory>65536</memory><os><type>hvm</type></os>") +
                          "<metadata><ftpair:instance xmlns:ftpair='" + kMetaNs + "' pair='p' node='b'/></metadata></domain>";
  virDomainPtr d = virDomainCreateXML(conn_, xml.c_str(), 0);
  ASSERT_NE(d, nullptr);
  virDomainFree(d);
  Status st;
  auto f = by_peer("p/b", &st);
  ASSERT_TRUE(f) << st.message();
  Status r = f->fence(5000ms);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.message().find("does not parse"), std::string::npos) << r.message();
  EXPECT_TRUE(running(conn_, "plain"));
}

TEST_F(FenceLibvirt, AnUnreachableLibvirtIsNotFenced) {
  fo::FenceConfig fc;
  fc.kind = fo::FenceKind::LIBVIRT;
  fc.libvirt_uri = "test:///nonexistent/ftpair-no-such-file.xml";
  fc.libvirt_peer = "p/b";
  Status st;
  auto f = make_fencer(fc, &st);
  ASSERT_TRUE(f) << st.message();
  Status r = f->fence(2000ms);
  EXPECT_FALSE(r.ok());
}

TEST(FenceLibvirtConfig, PeerRefusalsNameTheKey) {
  fo::FenceConfig fc;
  fc.kind = fo::FenceKind::LIBVIRT;
  fc.libvirt_uri = kUri;
  Status st;
  EXPECT_FALSE(make_fencer(fc, &st));
  EXPECT_NE(st.message().find("failover.libvirt_peer"), std::string::npos) << st.message();
  for (const char *bad : {"p", "/b", "p/", "p/b/c"}) {
    fc.libvirt_peer = bad;
    st = Status::Ok();
    EXPECT_FALSE(make_fencer(fc, &st)) << bad;
    EXPECT_NE(st.message().find("is not PAIR/NODE"), std::string::npos) << bad << ": " << st.message();
  }
  fc.libvirt_peer = "p/b";
  fc.domain = "p-b";
  st = Status::Ok();
  EXPECT_FALSE(make_fencer(fc, &st));
  EXPECT_NE(st.message().find("not both"), std::string::npos) << st.message();
  PeerRef ref;
  ASSERT_TRUE(fo::parse_peer_ref("pair-1/a", &ref));
  EXPECT_EQ(ref.pair, "pair-1");
  EXPECT_EQ(ref.node, "a");
}

}  // namespace
}  // namespace ftpair::virt
