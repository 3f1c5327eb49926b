// The network function (dataplane/nf.h): NAT both ways, connection tracking, expiry, ARP,
// every drop reason, a full table, port exhaustion and output commit (strict mode).
// Packets go through Nat44::process and leave through a real InterfaceAgent onto ring ports.
#include "dataplane/nf.h"

#include <array>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include <gtest/gtest.h>
#include <rte_cycles.h>
#include <rte_random.h>

#include "tests/unit/dataplane/pktgen.h"

namespace ftpair::dp {
namespace {

using test::Frame;
using test::ip4;
using test::mac;

const rte_ether_addr kVmacIn = mac(0x00, 0x00, 0x5e, 0x00, 0x01, 0x01);
const rte_ether_addr kVmacOut = mac(0x00, 0x00, 0x5e, 0x00, 0x01, 0x02);
const rte_ether_addr kOwnIn = mac(0x02, 0xaa, 0, 0, 0, 0x01);
const rte_ether_addr kOwnOut = mac(0x02, 0xaa, 0, 0, 0, 0x02);
const rte_ether_addr kMacH = mac(0x02, 0, 0, 0, 0x01, 0x0a);   // LAN host 198.18.1.10
const rte_ether_addr kMacH2 = mac(0x02, 0, 0, 0, 0x01, 0x0b);  // LAN host 198.18.1.11
const rte_ether_addr kMacR = mac(0x02, 0, 0, 0, 0x02, 0x0a);   // WAN host 198.18.2.10
const rte_ether_addr kMacR2 = mac(0x02, 0, 0, 0, 0x02, 0x0b);  // WAN host 198.18.2.11

using Drops = std::array<uint64_t, kDropReasonCount>;

NfConfig default_config() {
  NfConfig c;
  c.vip[kPortInside] = ip4("198.18.1.1");
  c.vip[kPortOutside] = ip4("198.18.2.1");
  c.prefix_len[kPortInside] = 24;
  c.prefix_len[kPortOutside] = 24;
  c.vmac[kPortInside] = kVmacIn;
  c.vmac[kPortOutside] = kVmacOut;
  c.own_mac[kPortInside] = kOwnIn;
  c.own_mac[kPortOutside] = kOwnOut;
  c.nat_port_min = 20000;
  c.nat_port_max = 60999;
  c.forwards.push_back(PortForward{IPPROTO_TCP, 8080, ip4("198.18.1.10"), 8080});
  return c;
}

struct Out {
  std::vector<Frame> lan, wan;
};

class NfTest : public ::testing::Test {
 protected:
  void SetUp() override { build(default_config()); }

  void build(const NfConfig &cfg, uint32_t flow_capacity = 1024, rte_mempool *pool = nullptr,
             bool strict = false) {
    teardown_parts();
    cfg_ = cfg;
    lan_ = std::make_unique<test::RingPort>();
    wan_ = std::make_unique<test::RingPort>();
    ASSERT_TRUE(lan_->ok() && wan_->ok());
    FlowTableConfig fc;
    fc.capacity = flow_capacity;
    fc.name = test::unique_name("nf_flows");
    std::string err;
    flows_ = FlowTable::create(fc, &err);
    ASSERT_TRUE(flows_) << err;
    hz_ = rte_get_tsc_hz();
    arp_ = std::make_unique<ArpTable>(arp_capacity_, 300 * hz_);
    AgentConfig ac;
    ac.nb_ports = 2;
    ac.port_ids[kPortInside] = lan_->id();
    ac.port_ids[kPortOutside] = wan_->id();
    ac.nb_workers = 1;
    ac.strict = strict;
    ac.hold_capacity = 1024;
    agent_ = std::make_unique<InterfaceAgent>(ac);
    nf_ = std::make_unique<Nat44>(cfg, *flows_, *arp_, *agent_, pool ? pool : test::test_pool(), 0);
    now_ = rte_rdtsc();
    arp_->learn(H, kMacH, kPortInside, now_);
    arp_->learn(R, kMacR, kPortOutside, now_);
    arp_->learn(R2, kMacR2, kPortOutside, now_);
    avail_ = rte_mempool_avail_count(test::test_pool());
  }

  void teardown_parts() {
    if (nf_) {
      // Drop whatever waits for ARP so every mbuf goes back to the pool.
      nf_->housekeeping(now_ + 1000 * hz_);
    }
    if (agent_) agent_->flush(0);
    nf_.reset();
    agent_.reset();
    lan_.reset();
    wan_.reset();
    arp_.reset();
    flows_.reset();
  }

  void TearDown() override {
    bool check = nf_ != nullptr;
    teardown_parts();
    if (check) {
      EXPECT_EQ(rte_mempool_avail_count(test::test_pool()), avail_) << "mbufs leaked";
    }
  }

  // Runs frames through the NF on port, flushes the agent, and collects what each port sent.
  Out run(uint16_t port, const std::vector<Frame> &frames) {
    std::vector<rte_mbuf *> pkts;
    for (const auto &f : frames) pkts.push_back(test::to_mbuf(f));
    nf_->process(port, pkts.data(), static_cast<uint16_t>(pkts.size()), now_);
    agent_->flush(0);
    return collect();
  }
  Out run(uint16_t port, const Frame &f) { return run(port, std::vector<Frame>{f}); }
  Out collect() {
    Out o;
    o.lan = lan_->take_frames();
    o.wan = wan_->take_frames();
    return o;
  }

  Drops drops() const {
    Drops d{};
    for (unsigned i = 0; i < kDropReasonCount; i++) d[i] = nf_->drops(static_cast<DropReason>(i));
    return d;
  }
  // Exactly one counter moved, by exactly one.
  void expect_one_drop(const Drops &before, DropReason r, const std::string &what) {
    Drops after = drops();
    for (unsigned i = 0; i < kDropReasonCount; i++) {
      uint64_t want = before[i] + (i == static_cast<unsigned>(r) ? 1 : 0);
      EXPECT_EQ(after[i], want) << what << ": counter " << drop_reason_label(static_cast<DropReason>(i))
                                << " (expected " << drop_reason_label(r) << " +1)";
    }
  }

  test::L2 from_lan(const rte_ether_addr &src = kMacH) { return test::L2{src, kVmacIn}; }
  test::L2 from_wan(const rte_ether_addr &src = kMacR) { return test::L2{src, kVmacOut}; }

  int lookup_in(uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport, uint8_t proto) {
    FlowKey k{src, dst, rte_cpu_to_be_16(sport), rte_cpu_to_be_16(dport), proto, 0, 0};
    return flows_->lookup(k);
  }
  const FlowState &st(int slot) { return flows_->record(static_cast<uint32_t>(slot)).st; }

  // Sweeps the whole table for expiry at time t.
  void sweep(uint64_t t) {
    const uint32_t calls = flows_->capacity() / cfg_.expiry_scan_per_loop + 2;
    for (uint32_t i = 0; i < calls; i++) nf_->housekeeping(t);
  }

  // TCP handshake H:sport -> R:80; returns the NAT port (host order).
  uint16_t handshake(uint16_t sport, uint32_t host = 0, uint32_t remote = 0) {
    if (!host) host = H;
    if (!remote) remote = R;
    const rte_ether_addr &hmac = host == H ? kMacH : kMacH2;
    const rte_ether_addr &rmac = remote == R ? kMacR : kMacR2;
    Out o = run(kPortInside, test::tcp_frame(from_lan(hmac), host, sport, remote, 80, RTE_TCP_SYN_FLAG));
    EXPECT_EQ(o.wan.size(), 1u);
    if (o.wan.size() != 1) return 0;
    uint16_t nat = rte_be_to_cpu_16(test::tcp_of(o.wan[0])->src_port);
    o = run(kPortOutside, test::tcp_frame(from_wan(rmac), remote, 80, WAN_VIP, nat,
                                          RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG));
    EXPECT_EQ(o.lan.size(), 1u);
    o = run(kPortInside, test::tcp_frame(from_lan(hmac), host, sport, remote, 80, RTE_TCP_ACK_FLAG));
    EXPECT_EQ(o.wan.size(), 1u);
    return nat;
  }

  // Checks a translated frame: addresses, TTL, checksums, MACs.
  void expect_frame(Frame &f, const rte_ether_addr &src_mac, const rte_ether_addr &dst_mac, uint32_t src_ip,
                    uint32_t dst_ip, uint8_t ttl, const std::string &what) {
    EXPECT_TRUE(test::mac_eq(test::eth_of(f)->src_addr, src_mac))
        << what << ": src MAC " << test::macstr(test::eth_of(f)->src_addr);
    EXPECT_TRUE(test::mac_eq(test::eth_of(f)->dst_addr, dst_mac))
        << what << ": dst MAC " << test::macstr(test::eth_of(f)->dst_addr);
    EXPECT_EQ(test::ip_of(f)->src_addr, src_ip) << what << ": src " << test::ip4str(test::ip_of(f)->src_addr);
    EXPECT_EQ(test::ip_of(f)->dst_addr, dst_ip) << what << ": dst " << test::ip4str(test::ip_of(f)->dst_addr);
    EXPECT_EQ(test::ip_of(f)->time_to_live, ttl) << what;
    EXPECT_TRUE(test::ip_csum_ok(f)) << what << ": IP checksum";
    EXPECT_TRUE(test::l4_csum_ok(f)) << what << ": L4 checksum";
  }

  const uint32_t H = ip4("198.18.1.10"), H2 = ip4("198.18.1.11");
  const uint32_t R = ip4("198.18.2.10"), R2 = ip4("198.18.2.11");
  const uint32_t LAN_VIP = ip4("198.18.1.1"), WAN_VIP = ip4("198.18.2.1");
  Out o_;
  static constexpr unsigned kFragContexts = Nat44::kFragContexts;

  NfConfig cfg_;
  std::unique_ptr<test::RingPort> lan_, wan_;
  std::unique_ptr<FlowTable> flows_;
  std::unique_ptr<ArpTable> arp_;
  std::unique_ptr<InterfaceAgent> agent_;
  std::unique_ptr<Nat44> nf_;
  uint64_t now_ = 0, hz_ = 1;
  unsigned avail_ = 0;
  uint32_t arp_capacity_ = 256;  // build()'s ARP table
};

bool in_nat_range(uint16_t p) { return p >= 20000 && p <= 60999; }

/* An ICMP error from src to dst about `about` (a frame whose IP packet is quoted whole,
 * or the first quote bytes of it). */
Frame icmp_error_frame(const test::L2 &l2, uint32_t src, uint32_t dst, uint8_t type, uint8_t code,
                       Frame about, size_t quote = 0, uint16_t mtu = 0) {
  const size_t ip_len = about.size() - test::kEthLen;
  if (quote == 0 || quote > ip_len) quote = ip_len;
  Frame f = test::ipv4_frame(l2, src, dst, IPPROTO_ICMP, 8 + quote);
  test::ip_of(f)->fragment_offset = 0;
  auto *c = test::icmp_of(f);
  c->icmp_type = type;
  c->icmp_code = code;
  c->icmp_ident = 0;
  c->icmp_seq_nb = rte_cpu_to_be_16(mtu);
  std::memcpy(f.data() + test::kL4Off + 8, about.data() + test::kEthLen, quote);
  test::fix_csums(f);
  return f;
}

// The IP packet quoted in an ICMP error frame, as a frame of its own (for the test helpers).
Frame embedded(Frame &icmp) {
  const size_t off = test::kL4Off + 8, n = icmp.size() > off ? icmp.size() - off : 0;
  Frame f(test::kEthLen + n, 0);
  if (n) std::memcpy(f.data() + test::kEthLen, icmp.data() + off, n);
  return f;
}

// ------------------------------------------------------------------ NAT both ways

TEST_F(NfTest, TcpNatBothWaysAndStateMachine) {
  Out o = run(kPortInside, test::tcp_frame(from_lan(), H, 40000, R, 80, RTE_TCP_SYN_FLAG, 0, 64));
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_TRUE(o.lan.empty());
  Frame &syn = o.wan[0];
  expect_frame(syn, kVmacOut, kMacR, WAN_VIP, R, 63, "SYN out");
  const uint16_t nat = rte_be_to_cpu_16(test::tcp_of(syn)->src_port);
  EXPECT_TRUE(in_nat_range(nat)) << nat;
  EXPECT_EQ(rte_be_to_cpu_16(test::tcp_of(syn)->dst_port), 80);
  int slot = lookup_in(H, 40000, R, 80, IPPROTO_TCP);
  ASSERT_GE(slot, 0);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::SYN_SENT));
  EXPECT_EQ(rte_be_to_cpu_16(st(slot).nat_port), nat);
  EXPECT_EQ(st(slot).nat_ip, WAN_VIP);
  EXPECT_EQ(nf_->counters().flows_created.load(), 1u);

  o = run(kPortOutside, test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG, 0, 50));
  ASSERT_EQ(o.lan.size(), 1u);
  EXPECT_TRUE(o.wan.empty());
  expect_frame(o.lan[0], kVmacIn, kMacH, R, H, 49, "SYN/ACK in");
  EXPECT_EQ(rte_be_to_cpu_16(test::tcp_of(o.lan[0])->dst_port), 40000);
  EXPECT_EQ(rte_be_to_cpu_16(test::tcp_of(o.lan[0])->src_port), 80);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::SYN_RECV));
  EXPECT_TRUE(st(slot).flags & kFlowReplied);

  o = run(kPortInside, test::tcp_frame(from_lan(), H, 40000, R, 80, RTE_TCP_ACK_FLAG, 100));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "ACK+data out");
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::ESTABLISHED));

  o = run(kPortOutside, test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG, 300));
  ASSERT_EQ(o.lan.size(), 1u);
  expect_frame(o.lan[0], kVmacIn, kMacH, R, H, 63, "data in");
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::ESTABLISHED));

  o = run(kPortInside, test::tcp_frame(from_lan(), H, 40000, R, 80, RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG));
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::FIN_WAIT));
  EXPECT_TRUE(st(slot).flags & kFlowFinFromInside);
  o = run(kPortOutside, test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG));
  ASSERT_EQ(o.lan.size(), 1u);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::TIME_WAIT));
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 40000, R, 80, RTE_TCP_ACK_FLAG));
  ASSERT_EQ(o.wan.size(), 1u) << "the last ACK passes";
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::TIME_WAIT));
  // The tuple is reused by a new connection after TIME_WAIT.
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 40000, R, 80, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::SYN_SENT));
  EXPECT_FALSE(st(slot).flags & (kFlowFinFromInside | kFlowFinFromOutside));
  EXPECT_EQ(nf_->counters().forwarded[kPortInside].load(), 5u);
  EXPECT_EQ(nf_->counters().forwarded[kPortOutside].load(), 3u);
  Drops none{};
  EXPECT_EQ(drops(), none);
}

TEST_F(NfTest, TcpRstClosesAndLaterSegmentsAreInvalid) {
  const uint16_t nat = handshake(41000);
  ASSERT_NE(nat, 0);
  int slot = lookup_in(H, 41000, R, 80, IPPROTO_TCP);
  ASSERT_GE(slot, 0);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::ESTABLISHED));
  Out o = run(kPortOutside, test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_RST_FLAG));
  ASSERT_EQ(o.lan.size(), 1u) << "the RST itself is forwarded";
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::CLOSED));
  Drops before = drops();
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 41000, R, 80, RTE_TCP_ACK_FLAG, 10));
  EXPECT_TRUE(o.wan.empty());
  expect_one_drop(before, DropReason::TCP_INVALID, "ACK after RST");
}

TEST_F(NfTest, TcpWithoutFlowNeedsSyn) {
  for (uint8_t flags : {uint8_t(RTE_TCP_ACK_FLAG), uint8_t(RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG),
                        uint8_t(RTE_TCP_RST_FLAG), uint8_t(RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG)}) {
    Drops before = drops();
    Out o = run(kPortInside, test::tcp_frame(from_lan(), H, 42000, R, 80, flags));
    EXPECT_TRUE(o.wan.empty());
    expect_one_drop(before, DropReason::TCP_NO_FLOW, "flags " + std::to_string(flags));
  }
  EXPECT_EQ(flows_->size(), 0u);
}

TEST_F(NfTest, UdpNatBothWays) {
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 5353, R, 53, 40));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "UDP out");
  const uint16_t nat = rte_be_to_cpu_16(test::udp_of(o.wan[0])->src_port);
  EXPECT_TRUE(in_nat_range(nat));
  EXPECT_EQ(rte_be_to_cpu_16(test::udp_of(o.wan[0])->dst_port), 53);
  int slot = lookup_in(H, 5353, R, 53, IPPROTO_UDP);
  ASSERT_GE(slot, 0);
  EXPECT_FALSE(st(slot).flags & kFlowReplied);

  o = run(kPortOutside, test::udp_frame(from_wan(), R, 53, WAN_VIP, nat, 100));
  ASSERT_EQ(o.lan.size(), 1u);
  expect_frame(o.lan[0], kVmacIn, kMacH, R, H, 63, "UDP in");
  EXPECT_EQ(rte_be_to_cpu_16(test::udp_of(o.lan[0])->dst_port), 5353);
  EXPECT_EQ(rte_be_to_cpu_16(test::udp_of(o.lan[0])->src_port), 53);
  EXPECT_TRUE(st(slot).flags & kFlowReplied);

  // A second inside host with the same source port gets its own mapping.
  o = run(kPortInside, test::udp_frame(from_lan(kMacH2), H2, 5353, R, 53, 40));
  ASSERT_EQ(o.wan.size(), 1u);
  const uint16_t nat2 = rte_be_to_cpu_16(test::udp_of(o.wan[0])->src_port);
  EXPECT_NE(nat2, nat);
  o = run(kPortOutside, test::udp_frame(from_wan(), R, 53, WAN_VIP, nat2, 10));
  ASSERT_EQ(o.lan.size(), 1u);
  expect_frame(o.lan[0], kVmacIn, kMacH2, R, H2, 63, "UDP in, second host");
  // Address-dependent filtering (the default): another address cannot reach in.
  Drops before = drops();
  o = run(kPortOutside, test::udp_frame(from_wan(kMacR2), R2, 53, WAN_VIP, nat, 10));
  EXPECT_TRUE(o.lan.empty());
  expect_one_drop(before, DropReason::FILTERED, "UDP from another remote address");
}

TEST_F(NfTest, UdpZeroChecksumStaysZeroAndZeroResultIsAllOnes) {
  // Sender did not checksum: the NF leaves it so.
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 25000, R, 53, 16, 64, false));
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_EQ(test::udp_of(o.wan[0])->dgram_cksum, 0);
  EXPECT_TRUE(test::ip_csum_ok(o.wan[0]));
  const uint16_t nat = rte_be_to_cpu_16(test::udp_of(o.wan[0])->src_port);
  o = run(kPortOutside, test::udp_frame(from_wan(), R, 53, WAN_VIP, nat, 16, 64, false));
  ASSERT_EQ(o.lan.size(), 1u);
  EXPECT_EQ(test::udp_of(o.lan[0])->dgram_cksum, 0);

  // Craft a datagram whose translated checksum is exactly 0: it must leave as 0xffff.
  // A first datagram from 26000 makes the mapping whose port the crafted one will get.
  o = run(kPortInside, test::udp_frame(from_lan(), H, 26000, R, 54, 8));
  ASSERT_EQ(o.wan.size(), 1u);
  const uint16_t mapped = test::udp_of(o.wan[0])->src_port;
  Frame f = test::udp_frame(from_lan(), H, 26000, R, 53, 8);
  Frame after = f;
  test::ip_of(after)->src_addr = WAN_VIP;
  test::udp_of(after)->src_port = mapped;
  uint8_t *last = after.data() + after.size() - 2;
  std::memset(last, 0, 2);
  uint16_t c = test::l4_csum(test::ip_of(after), after.data() + test::kL4Off);
  std::memcpy(f.data() + f.size() - 2, &c, 2);  // makes the translated sum 0xffff
  test::fix_csums(f);
  ASSERT_TRUE(test::l4_csum_ok(f));
  o = run(kPortInside, f);
  ASSERT_EQ(o.wan.size(), 1u);
  ASSERT_EQ(test::udp_of(o.wan[0])->src_port, mapped) << "the endpoint's mapping";
  EXPECT_EQ(test::udp_of(o.wan[0])->dgram_cksum, 0xffff);
  EXPECT_TRUE(test::l4_csum_ok(o.wan[0]));
  // Again, now a known flow's: the fast loop's own update (HC - D) gives 0xffff too.
  const uint64_t fast0 = nf_->counters().fast_forwarded.load();
  o = run(kPortInside, f);
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_EQ(nf_->counters().fast_forwarded.load(), fast0 + 1) << "the fast loop took it";
  EXPECT_EQ(test::udp_of(o.wan[0])->dgram_cksum, 0xffff);
  EXPECT_TRUE(test::l4_csum_ok(o.wan[0]));
  // And a reply crafted the same way (after a first reply, which marks the flow replied).
  o = run(kPortOutside, test::udp_frame(from_wan(), R, 53, WAN_VIP, rte_be_to_cpu_16(mapped), 8));
  ASSERT_EQ(o.lan.size(), 1u);
  Frame g = test::udp_frame(from_wan(), R, 53, WAN_VIP, rte_be_to_cpu_16(mapped), 8);
  Frame g_after = g;
  test::ip_of(g_after)->dst_addr = H;
  test::udp_of(g_after)->dst_port = rte_cpu_to_be_16(26000);
  std::memset(g_after.data() + g_after.size() - 2, 0, 2);
  const uint16_t gc = test::l4_csum(test::ip_of(g_after), g_after.data() + test::kL4Off);
  std::memcpy(g.data() + g.size() - 2, &gc, 2);
  test::fix_csums(g);
  ASSERT_TRUE(test::l4_csum_ok(g));
  const uint64_t fast1 = nf_->counters().fast_forwarded.load();
  o = run(kPortOutside, g);
  ASSERT_EQ(o.lan.size(), 1u);
  EXPECT_EQ(nf_->counters().fast_forwarded.load(), fast1 + 1) << "the fast loop took it";
  EXPECT_EQ(test::udp_of(o.lan[0])->dst_port, rte_cpu_to_be_16(26000));
  EXPECT_EQ(test::udp_of(o.lan[0])->dgram_cksum, 0xffff);
  EXPECT_TRUE(test::l4_csum_ok(o.lan[0]));
}

TEST_F(NfTest, IcmpEchoNatBothWays) {
  Out o = run(kPortInside, test::icmp_frame(from_lan(), H, R, RTE_IP_ICMP_ECHO_REQUEST, 0x1234, 7));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "echo out");
  const uint16_t id = rte_be_to_cpu_16(test::icmp_of(o.wan[0])->icmp_ident);
  EXPECT_TRUE(in_nat_range(id)) << id;
  EXPECT_EQ(rte_be_to_cpu_16(test::icmp_of(o.wan[0])->icmp_seq_nb), 7);
  int slot = lookup_in(H, 0x1234, R, 0, IPPROTO_ICMP);
  ASSERT_GE(slot, 0);

  o = run(kPortOutside, test::icmp_frame(from_wan(), R, WAN_VIP, RTE_IP_ICMP_ECHO_REPLY, id, 7));
  ASSERT_EQ(o.lan.size(), 1u);
  expect_frame(o.lan[0], kVmacIn, kMacH, R, H, 63, "echo reply in");
  EXPECT_EQ(rte_be_to_cpu_16(test::icmp_of(o.lan[0])->icmp_ident), 0x1234);
  EXPECT_EQ(test::icmp_of(o.lan[0])->icmp_type, RTE_IP_ICMP_ECHO_REPLY);

  // A reply with an unknown identifier has no mapping.
  Drops before = drops();
  o = run(kPortOutside, test::icmp_frame(from_wan(), R, WAN_VIP, RTE_IP_ICMP_ECHO_REPLY, id == 20000 ? 20001 : 20000));
  EXPECT_TRUE(o.lan.empty());
  expect_one_drop(before, DropReason::NO_MAPPING, "echo reply without mapping");
}

TEST_F(NfTest, EchoRequestsToTheVipsAreAnswered) {
  Out o = run(kPortInside, test::icmp_frame(from_lan(), H, LAN_VIP, RTE_IP_ICMP_ECHO_REQUEST, 9, 1));
  ASSERT_EQ(o.lan.size(), 1u);
  expect_frame(o.lan[0], kVmacIn, kMacH, LAN_VIP, H, 64, "echo reply from the LAN VIP");
  EXPECT_EQ(test::icmp_of(o.lan[0])->icmp_type, RTE_IP_ICMP_ECHO_REPLY);
  o = run(kPortOutside, test::icmp_frame(from_wan(), R, WAN_VIP, RTE_IP_ICMP_ECHO_REQUEST, 9, 1));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 64, "echo reply from the WAN VIP");
  o = run(kPortInside, test::icmp_frame(from_lan(), H, WAN_VIP, RTE_IP_ICMP_ECHO_REQUEST, 9, 1));
  ASSERT_EQ(o.lan.size(), 1u) << "echo to the WAN VIP from the LAN";
  expect_frame(o.lan[0], kVmacIn, kMacH, WAN_VIP, H, 64, "echo reply from the WAN VIP to the LAN");
  EXPECT_EQ(flows_->size(), 0u);
}

TEST_F(NfTest, EthernetPaddingIsTrimmed) {
  Frame f = test::udp_frame(from_lan(), H, 27000, R, 53, 2);  // 44 bytes: pad to 60
  f.resize(60, 0xee);
  Out o = run(kPortInside, f);
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_EQ(o.wan[0].size(), test::kL4Off + 8 + 2);
  EXPECT_TRUE(test::l4_csum_ok(o.wan[0]));
  // Both the new flow's packet and a known flow's (the fast loop's) leave as mbufs whose
  // segment and packet both end with the datagram: a port sends a segment's data_len.
  for (int pass = 0; pass < 2; pass++) {
    SCOPED_TRACE(pass == 0 ? "a new flow" : "a known flow");
    Frame g = test::udp_frame(from_lan(), H, static_cast<uint16_t>(27001), R, 53, 2);
    g.resize(60, 0xee);
    rte_mbuf *m = test::to_mbuf(g);
    nf_->process(kPortInside, &m, 1, now_);
    agent_->flush(0);
    std::vector<rte_mbuf *> sent = wan_->take();
    ASSERT_EQ(sent.size(), 1u);
    EXPECT_EQ(rte_pktmbuf_data_len(sent[0]), test::kL4Off + 8 + 2);
    EXPECT_EQ(rte_pktmbuf_pkt_len(sent[0]), test::kL4Off + 8 + 2);
    for (rte_mbuf *s : sent) rte_pktmbuf_free(s);
  }
}

TEST_F(NfTest, PortForwardCreatesAFlow) {
  Out o = run(kPortOutside, test::tcp_frame(from_wan(), R, 5555, WAN_VIP, 8080, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.lan.size(), 1u);
  expect_frame(o.lan[0], kVmacIn, kMacH, R, H, 63, "forwarded SYN");
  EXPECT_EQ(rte_be_to_cpu_16(test::tcp_of(o.lan[0])->dst_port), 8080);
  int slot = lookup_in(H, 8080, R, 5555, IPPROTO_TCP);
  ASSERT_GE(slot, 0);
  EXPECT_TRUE(st(slot).flags & kFlowPortForward);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::SYN_SENT));
  // The server answers; it leaves from the forwarded port.
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 8080, R, 5555, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "SYN/ACK of the server");
  EXPECT_EQ(rte_be_to_cpu_16(test::tcp_of(o.wan[0])->src_port), 8080);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::SYN_RECV));
  o = run(kPortOutside, test::tcp_frame(from_wan(), R, 5555, WAN_VIP, 8080, RTE_TCP_ACK_FLAG));
  ASSERT_EQ(o.lan.size(), 1u);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::ESTABLISHED));
  // A non-SYN to the forwarded port without a flow is refused.
  Drops before = drops();
  o = run(kPortOutside, test::tcp_frame(from_wan(), R, 5556, WAN_VIP, 8080, RTE_TCP_ACK_FLAG));
  EXPECT_TRUE(o.lan.empty());
  expect_one_drop(before, DropReason::TCP_NO_FLOW, "ACK to a forwarded port");
}

TEST_F(NfTest, ForwardedPortIsNeverUsedForSourceNat) {
  NfConfig c = default_config();
  c.nat_port_min = 8070;  // the range covers the forwarded port 8080
  c.nat_port_max = 8090;
  build(c);
  std::set<uint16_t> used;
  for (uint16_t i = 0; i < 20; i++) {
    // Source port 8080 would be kept if it were free; every other one takes the hint walk.
    Out o = run(kPortInside, test::tcp_frame(from_lan(kMacH2), H2, static_cast<uint16_t>(8080 + i), R, 80,
                                             RTE_TCP_SYN_FLAG));
    ASSERT_EQ(o.wan.size(), 1u) << i;
    uint16_t nat = rte_be_to_cpu_16(test::tcp_of(o.wan[0])->src_port);
    EXPECT_NE(nat, 8080) << i;
    EXPECT_TRUE(nat >= 8070 && nat <= 8090) << nat;
    EXPECT_TRUE(used.insert(nat).second) << "port " << nat << " handed out twice to one destination";
  }
}

TEST_F(NfTest, TtlOneFromTheWanIsNotForwarded) {
  const uint16_t nat = handshake(50000);
  ASSERT_NE(nat, 0);
  for (uint8_t ttl : {uint8_t(1), uint8_t(0)}) {
    Drops before = drops();
    Out o = run(kPortOutside, test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_ACK_FLAG, 10, ttl));
    EXPECT_TRUE(o.lan.empty()) << "TTL " << int(ttl) << " forwarded into the LAN";
    expect_one_drop(before, DropReason::TTL_EXCEEDED, "WAN TTL " + std::to_string(ttl));
    // The gateway shows up as a hop: Time Exceeded back to the sender, from the WAN VIP.
    ASSERT_EQ(o.wan.size(), 1u) << "TTL " << int(ttl) << ": no Time Exceeded";
    expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 64, "time exceeded");
    EXPECT_EQ(test::icmp_of(o.wan[0])->icmp_type, kIcmpTimeExceeded);
  }
  // Echo to the VIP itself is answered whatever the TTL.
  Out o = run(kPortOutside, test::icmp_frame(from_wan(), R, WAN_VIP, RTE_IP_ICMP_ECHO_REQUEST, 4, 1, 0, 1));
  EXPECT_EQ(o.wan.size(), 1u);
}

// ------------------------------------------------------------------ expiry

TEST_F(NfTest, ExpiryRemovesIdleFlowsPerStateTimeout) {
  const uint16_t nat_est = handshake(43000);  // established: 7440 s
  ASSERT_NE(nat_est, 0);
  run(kPortInside, test::tcp_frame(from_lan(), H, 43001, R, 80, RTE_TCP_SYN_FLAG));  // syn: 240 s
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 5000, R, 53));               // udp: 300 s
  ASSERT_EQ(o.wan.size(), 1u);
  const uint16_t nat_udp = rte_be_to_cpu_16(test::udp_of(o.wan[0])->src_port);
  run(kPortInside, test::icmp_frame(from_lan(), H, R, RTE_IP_ICMP_ECHO_REQUEST, 77));  // icmp: 60 s
  ASSERT_EQ(flows_->size(), 4u);
  const Timeouts &t = cfg_.timeouts;

  sweep(now_ + uint64_t(t.icmp) * hz_);
  EXPECT_EQ(flows_->size(), 4u) << "not past the timeout yet";
  sweep(now_ + uint64_t(t.icmp) * hz_ + 1);
  EXPECT_EQ(flows_->size(), 3u);
  EXPECT_LT(lookup_in(H, 77, R, 0, IPPROTO_ICMP), 0);
  sweep(now_ + uint64_t(t.tcp_syn) * hz_ + 1);
  EXPECT_EQ(flows_->size(), 2u);
  EXPECT_LT(lookup_in(H, 43001, R, 80, IPPROTO_TCP), 0);
  EXPECT_GE(lookup_in(H, 5000, R, 53, IPPROTO_UDP), 0);
  sweep(now_ + uint64_t(t.udp) * hz_ + 1);
  EXPECT_EQ(flows_->size(), 1u);
  EXPECT_GE(lookup_in(H, 43000, R, 80, IPPROTO_TCP), 0) << "established outlives the others";
  sweep(now_ + uint64_t(t.tcp_established) * hz_ + 1);
  EXPECT_EQ(flows_->size(), 0u);
  EXPECT_EQ(nf_->counters().flows_expired.load(), 4u);
  EXPECT_EQ(flows_->ports_in_use(IPPROTO_TCP), 0u);
  // The mapping is gone: the remote can no longer reach in.
  Drops before = drops();
  now_ += uint64_t(t.tcp_established) * hz_ + 2;
  arp_->learn(H, kMacH, kPortInside, now_);
  o = run(kPortOutside, test::udp_frame(from_wan(), R, 53, WAN_VIP, nat_udp));
  EXPECT_TRUE(o.lan.empty());
  expect_one_drop(before, DropReason::NO_MAPPING, "after expiry");
}

/* The sweep's one test per slot (expire_slice): last_seen >= now - the shortest timeout,
 * signed. A free slot carries kFreeSlotSeen, from the table's start and again when its flow
 * goes; a stamp ahead of the sweep's own clock (taken later, on another thread) is fresh,
 * not an age of nearly 2^64 ticks. */
TEST_F(NfTest, ExpiryTakesAStampAheadOfItsClockAsFreshAndPassesOverFreeSlots) {
  EXPECT_EQ(flows_->record(0).last_seen_tsc, kFreeSlotSeen) << "a slot never used";
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 5001, R, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  const int slot = lookup_in(H, 5001, R, 53, IPPROTO_UDP);
  ASSERT_GE(slot, 0);
  ASSERT_EQ(flows_->record(uint32_t(slot)).last_seen_tsc, now_);
  // The whole table at once (housekeeping() would not sweep at a time before its last).
  EXPECT_EQ(nf_->expire_all(now_ - 1000), 0u);
  EXPECT_EQ(flows_->size(), 1u) << "a flow stamped after the sweep's clock was taken for idle";
  EXPECT_EQ(nf_->expire_all(now_ + uint64_t(cfg_.timeouts.udp) * hz_), 0u);
  EXPECT_EQ(nf_->expire_all(now_ + uint64_t(cfg_.timeouts.udp) * hz_ + 1), 1u);
  EXPECT_EQ(flows_->size(), 0u);
  EXPECT_EQ(flows_->record(uint32_t(slot)).last_seen_tsc, kFreeSlotSeen) << "a slot freed by expiry";
  EXPECT_EQ(nf_->counters().flows_expired.load(), 1u);
}

TEST_F(NfTest, ActivityRefreshesAndClosedFlowsCountAsClosed) {
  const uint16_t nat = handshake(44000);
  ASSERT_NE(nat, 0);
  run(kPortInside, test::tcp_frame(from_lan(), H, 44000, R, 80, RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG));
  run(kPortOutside, test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG));
  int slot = lookup_in(H, 44000, R, 80, IPPROTO_TCP);
  ASSERT_GE(slot, 0);
  ASSERT_EQ(st(slot).tcp_state, uint8_t(TcpState::TIME_WAIT));
  // Traffic later on refreshes the last-seen time.
  const uint64_t later = now_ + 100 * hz_;
  now_ = later;
  run(kPortInside, test::tcp_frame(from_lan(), H, 44000, R, 80, RTE_TCP_ACK_FLAG));
  EXPECT_EQ(flows_->record(slot).last_seen_tsc, later);
  sweep(later + uint64_t(cfg_.timeouts.tcp_time_wait) * hz_);
  EXPECT_EQ(flows_->size(), 1u);
  sweep(later + uint64_t(cfg_.timeouts.tcp_time_wait) * hz_ + 1);
  EXPECT_EQ(flows_->size(), 0u);
  EXPECT_EQ(nf_->counters().flows_closed.load(), 1u);
  EXPECT_EQ(nf_->counters().flows_expired.load(), 0u);
}

TEST_F(NfTest, TimeoutSecondsPerState) {
  FlowState s{};
  s.proto = IPPROTO_UDP;
  EXPECT_EQ(nf_->timeout_s(s), cfg_.timeouts.udp);
  s.proto = IPPROTO_ICMP;
  EXPECT_EQ(nf_->timeout_s(s), cfg_.timeouts.icmp);
  s.proto = IPPROTO_TCP;
  s.tcp_state = uint8_t(TcpState::SYN_SENT);
  EXPECT_EQ(nf_->timeout_s(s), cfg_.timeouts.tcp_syn);
  s.tcp_state = uint8_t(TcpState::ESTABLISHED);
  EXPECT_EQ(nf_->timeout_s(s), cfg_.timeouts.tcp_established);
  s.tcp_state = uint8_t(TcpState::FIN_WAIT);
  EXPECT_EQ(nf_->timeout_s(s), cfg_.timeouts.tcp_fin);
  s.tcp_state = uint8_t(TcpState::CLOSED);
  EXPECT_EQ(nf_->timeout_s(s), cfg_.timeouts.tcp_closed);
}

// ------------------------------------------------------------------ ARP

TEST_F(NfTest, ArpRequestForVipAnsweredOnlyWhileOwner) {
  const rte_ether_addr zero{};
  Out o = run(kPortInside, test::arp_frame(RTE_ARP_OP_REQUEST, kMacH, H, zero, LAN_VIP));
  ASSERT_EQ(o.lan.size(), 1u);
  EXPECT_TRUE(o.wan.empty());
  Frame &r = o.lan[0];
  auto *arp = test::hdr<rte_arp_hdr>(r, test::kEthLen);
  EXPECT_TRUE(test::mac_eq(test::eth_of(r)->src_addr, kVmacIn));
  EXPECT_TRUE(test::mac_eq(test::eth_of(r)->dst_addr, kMacH));
  EXPECT_EQ(rte_be_to_cpu_16(arp->arp_opcode), RTE_ARP_OP_REPLY);
  EXPECT_TRUE(test::mac_eq(arp->arp_data.arp_sha, kVmacIn));
  EXPECT_EQ(arp->arp_data.arp_sip, LAN_VIP);
  EXPECT_TRUE(test::mac_eq(arp->arp_data.arp_tha, kMacH));
  EXPECT_EQ(arp->arp_data.arp_tip, H);
  EXPECT_EQ(nf_->counters().arp_replies.load(), 1u);

  o = run(kPortOutside, test::arp_frame(RTE_ARP_OP_REQUEST, kMacR, R, zero, WAN_VIP));
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_TRUE(test::mac_eq(test::eth_of(o.wan[0])->src_addr, kVmacOut));

  nf_->set_vip_owner(false);
  Drops before = drops();
  o = run(kPortInside, test::arp_frame(RTE_ARP_OP_REQUEST, kMacH, H, zero, LAN_VIP));
  EXPECT_TRUE(o.lan.empty() && o.wan.empty()) << "a non-owner never answers for the VIP";
  EXPECT_EQ(drops(), before) << "consumed, not a drop";
  EXPECT_EQ(nf_->counters().arp_replies.load(), 2u);
  // The sender was learnt all the same.
  rte_ether_addr m;
  ASSERT_TRUE(arp_->lookup(H, now_, &m));
  EXPECT_TRUE(test::mac_eq(m, kMacH));
}

TEST_F(NfTest, NonOwnerDropsIpAsNotActive) {
  nf_->set_vip_owner(false);
  EXPECT_FALSE(nf_->vip_owner());
  Drops before = drops();
  Out o = run(kPortInside, test::tcp_frame(from_lan(), H, 45000, R, 80, RTE_TCP_SYN_FLAG));
  EXPECT_TRUE(o.wan.empty() && o.lan.empty());
  expect_one_drop(before, DropReason::NOT_ACTIVE, "LAN SYN while standby");
  before = drops();
  o = run(kPortOutside, test::tcp_frame(from_wan(), R, 5555, WAN_VIP, 8080, RTE_TCP_SYN_FLAG));
  EXPECT_TRUE(o.wan.empty() && o.lan.empty());
  expect_one_drop(before, DropReason::NOT_ACTIVE, "WAN SYN while standby");
  EXPECT_EQ(flows_->size(), 0u);
  // Owner again: traffic flows.
  nf_->set_vip_owner(true);
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 45000, R, 80, RTE_TCP_SYN_FLAG));
  EXPECT_EQ(o.wan.size(), 1u);
}

TEST_F(NfTest, ArpMissSendsRequestHoldsAndReleasesOnReply) {
  const uint32_t R3 = ip4("198.18.2.20");
  const rte_ether_addr mac3 = mac(0x02, 0, 0, 0, 0x02, 0x14);
  Frame p1 = test::udp_frame(from_lan(), H, 6000, R3, 53, 10);
  test::ip_of(p1)->packet_id = rte_cpu_to_be_16(1);
  test::fix_csums(p1);
  Frame p2 = p1;
  test::ip_of(p2)->packet_id = rte_cpu_to_be_16(2);
  test::fix_csums(p2);
  Out o = run(kPortInside, p1);
  ASSERT_EQ(o.wan.size(), 1u) << "only the ARP request leaves";
  Frame &req = o.wan[0];
  EXPECT_EQ(rte_be_to_cpu_16(test::eth_of(req)->ether_type), RTE_ETHER_TYPE_ARP);
  EXPECT_TRUE(rte_is_broadcast_ether_addr(&test::eth_of(req)->dst_addr));
  EXPECT_TRUE(test::mac_eq(test::eth_of(req)->src_addr, kVmacOut));
  auto *a = test::hdr<rte_arp_hdr>(req, test::kEthLen);
  EXPECT_EQ(rte_be_to_cpu_16(a->arp_opcode), RTE_ARP_OP_REQUEST);
  EXPECT_TRUE(test::mac_eq(a->arp_data.arp_sha, kVmacOut));
  EXPECT_EQ(a->arp_data.arp_sip, WAN_VIP);
  EXPECT_EQ(a->arp_data.arp_tip, R3);
  EXPECT_EQ(nf_->counters().arp_requests.load(), 1u);
  // A second packet waits too, without a second request within the retry interval.
  o = run(kPortInside, p2);
  EXPECT_TRUE(o.wan.empty());
  EXPECT_EQ(nf_->counters().arp_requests.load(), 1u);
  // The answer releases both, in order, to the learnt MAC.
  Drops before = drops();
  o = run(kPortOutside, test::arp_frame(RTE_ARP_OP_REPLY, mac3, R3, kVmacOut, WAN_VIP, &kVmacOut));
  ASSERT_EQ(o.wan.size(), 2u);
  for (unsigned i = 0; i < 2; i++) {
    expect_frame(o.wan[i], kVmacOut, mac3, WAN_VIP, R3, 63, "released " + std::to_string(i));
    EXPECT_EQ(rte_be_to_cpu_16(test::ip_of(o.wan[i])->packet_id), i + 1);
  }
  EXPECT_EQ(drops(), before) << "the ARP reply is consumed, not dropped";
  rte_ether_addr m;
  ASSERT_TRUE(arp_->lookup(R3, now_, &m));
  EXPECT_TRUE(test::mac_eq(m, mac3));
}

// A packet parked for ARP leaves before a later packet of its flow, also when the host's MAC
// is learnt some other way than an ARP reply (here: from the host's own new flow), and the
// later packet finds it through the next-hop cache (the fast path's cache_next_hop).
TEST_F(NfTest, AParkedPacketLeavesBeforeALaterOneOfItsFlowWhenTheMacIsLearntWithoutAReply) {
  const uint32_t H3 = ip4("198.18.1.12");
  const rte_ether_addr mac3 = mac(0x02, 0, 0, 0, 0x01, 0x0c);
  NfConfig c = default_config();
  c.forwards.push_back(PortForward{IPPROTO_UDP, 5300, H3, 53});
  build(c);
  auto inbound = [&](uint16_t id) {
    Frame f = test::udp_frame(from_wan(), R, 4000, WAN_VIP, 5300, 10);
    test::ip_of(f)->packet_id = rte_cpu_to_be_16(id);
    test::fix_csums(f);
    return f;
  };
  Out o = run(kPortOutside, inbound(1));
  ASSERT_EQ(o.lan.size(), 1u) << "only the ARP request for H3 leaves";
  EXPECT_EQ(rte_be_to_cpu_16(test::eth_of(o.lan[0])->ether_type), RTE_ETHER_TYPE_ARP);
  // H3 opens a flow of its own: its MAC is learnt from that packet, and no reply comes.
  o = run(kPortInside, test::udp_frame(from_lan(mac3), H3, 7000, R, 53, 10));
  ASSERT_EQ(o.wan.size(), 1u);
  o = run(kPortOutside, inbound(2));
  ASSERT_EQ(o.lan.size(), 2u);
  for (unsigned i = 0; i < 2; i++) {
    expect_frame(o.lan[i], kVmacIn, mac3, R, H3, 63, "inbound " + std::to_string(i + 1));
    EXPECT_EQ(rte_be_to_cpu_16(test::ip_of(o.lan[i])->packet_id), i + 1) << "in the order they came";
  }
}

TEST_F(NfTest, ArpMissExpiresAsArpMiss) {
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 6001, ip4("198.18.2.21"), 53));
  ASSERT_EQ(o.wan.size(), 1u);  // the request
  Drops before = drops();
  nf_->housekeeping(now_ + uint64_t(cfg_.arp_retry_ms) * hz_ / 1000 + 1);
  expect_one_drop(before, DropReason::ARP_MISS, "unanswered ARP");
}

/* The next-hop cache (Nat44::nh_) keeps ARP's answers across bursts. A MAC that ARP input
 * changes is used from the next packet on, through the fast loop (a UDP flow's later
 * packets) and the general way (a new flow) alike. */
TEST_F(NfTest, TheNextHopCacheTakesAChangedMacAtOnce) {
  const rte_ether_addr moved = mac(0x02, 0, 0, 0, 0x02, 0x99);
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 6100, R, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "first packet");
  o = run(kPortInside, {test::udp_frame(from_lan(), H, 6100, R, 53), test::udp_frame(from_lan(), H, 6100, R, 53)});
  ASSERT_EQ(o.wan.size(), 2u);
  for (auto &f : o.wan) expect_frame(f, kVmacOut, kMacR, WAN_VIP, R, 63, "from the cache");
  // R moves to another MAC and says so (a gratuitous ARP reply). A TCP SYN, the next
  // packet, takes the general way only (the fast loop is for UDP).
  o = run(kPortOutside, test::arp_frame(RTE_ARP_OP_REPLY, moved, R, kVmacOut, WAN_VIP, &kVmacOut));
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 6104, R, 80, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_TRUE(test::mac_eq(test::eth_of(o.wan[0])->dst_addr, moved)) << "a SYN, after the move";
  o = run(kPortInside, {test::udp_frame(from_lan(), H, 6100, R, 53), test::udp_frame(from_lan(), H, 6101, R, 53)});
  ASSERT_EQ(o.wan.size(), 2u);
  expect_frame(o.wan[0], kVmacOut, moved, WAN_VIP, R, 63, "the known flow, after the move");
  expect_frame(o.wan[1], kVmacOut, moved, WAN_VIP, R, 63, "a new flow, after the move");
  // Learnt from a LAN host's own packet, without ARP: its replies go to its new MAC.
  const rte_ether_addr h_moved = mac(0x02, 0, 0, 0, 0x01, 0x99);
  o = run(kPortInside, test::udp_frame(from_lan(), H, 6102, R, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  const uint16_t nat = test::udp_of(o.wan[0])->src_port;
  o = run(kPortOutside, {test::udp_frame(from_wan(moved), R, 53, WAN_VIP, rte_be_to_cpu_16(nat)),
                         test::udp_frame(from_wan(moved), R, 53, WAN_VIP, rte_be_to_cpu_16(nat))});
  ASSERT_EQ(o.lan.size(), 2u);
  for (auto &f : o.lan) expect_frame(f, kVmacIn, kMacH, R, H, 63, "a reply, before H moves");
  o = run(kPortInside, test::udp_frame(from_lan(h_moved), H, 6103, R, 53));  // a new flow learns
  ASSERT_EQ(o.wan.size(), 1u);
  o = run(kPortOutside, test::udp_frame(from_wan(moved), R, 53, WAN_VIP, rte_be_to_cpu_16(nat)));
  ASSERT_EQ(o.lan.size(), 1u);
  expect_frame(o.lan[0], kVmacIn, h_moved, R, H, 63, "a reply, after H moved");
}

/* An answer is not kept past the time ARP would give it: then the next hop is asked for
 * again. The cache holds R, then R2, confirmed 100 s later: the earlier of the two times
 * counts, and R2 is still sent to after R has gone stale. (At the timeout itself the frame
 * is the same whether the cache or ARP answered: the exact tick is ArpTable's test.) */
TEST_F(NfTest, TheNextHopCacheForgetsAnAnswerWhenArpDoes) {
  const uint64_t t0 = now_;
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 6110, R, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "while fresh");
  now_ = t0 + 100 * hz_;
  arp_->learn(R2, kMacR2, kPortOutside, now_);  // confirmed again
  o = run(kPortInside, test::udp_frame(from_lan(), H, 6111, R2, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR2, WAN_VIP, R2, 63, "R2");
  now_ = t0 + 300 * hz_;  // the fixture's ARP timeout after R was learnt: fresh to the tick
  o = run(kPortInside, test::udp_frame(from_lan(), H, 6110, R, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "at the timeout");
  now_ += 1;
  ASSERT_FALSE(arp_->lookup(R, now_));
  // First a TCP SYN, which takes the general way alone: the burst's own test of the clock.
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 6112, R, 80, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.wan.size(), 1u) << "the ARP request only";
  EXPECT_EQ(rte_be_to_cpu_16(test::eth_of(o.wan[0])->ether_type), RTE_ETHER_TYPE_ARP);
  EXPECT_EQ(test::hdr<rte_arp_hdr>(o.wan[0], test::kEthLen)->arp_data.arp_tip, R);
  o = run(kPortInside, test::udp_frame(from_lan(), H, 6110, R, 53));
  EXPECT_TRUE(o.wan.empty()) << "parked with the SYN; no second request within the retry time";
  o = run(kPortInside, test::udp_frame(from_lan(), H, 6111, R2, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR2, WAN_VIP, R2, 63, "R2, still fresh");
}

/* A cached next hop whose ARP entry is evicted, then learnt again with another MAC (a full
 * set in a small table: the LAN's new hosts crowding out the WAN's): the next packet goes to
 * the new MAC. No entry of R ever changes in place; only the evictions tell. */
TEST_F(NfTest, TheNextHopCacheDropsAnAnswerArpEvicted) {
  arp_capacity_ = 4;  // one set of 4 ways: H, R and R2 from build(), one free
  build(default_config());
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 6120, R, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "before");
  now_ += hz_;
  arp_->learn(H, kMacH, kPortInside, now_);  // R is now the least recently confirmed
  arp_->learn(R2, kMacR2, kPortOutside, now_);
  arp_->learn(ip4("198.18.1.20"), mac(0x02, 0, 0, 0, 0x01, 0x14), kPortInside, now_);  // the free way
  arp_->learn(ip4("198.18.1.21"), mac(0x02, 0, 0, 0, 0x01, 0x15), kPortInside, now_);  // evicts R
  ASSERT_FALSE(arp_->lookup(R, now_));
  const rte_ether_addr moved = mac(0x02, 0, 0, 0, 0x02, 0x77);
  now_ += 1;
  arp_->learn(R, moved, kPortOutside, now_);  // back, with another MAC (evicting again)
  o = run(kPortInside, test::udp_frame(from_lan(), H, 6120, R, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, moved, WAN_VIP, R, 63, "after");
}

/* An ARP entry evicted in the middle of a burst (a 4-way table: R the least recently
 * confirmed) is not answered for by the next-hop cache later in that burst. Evicted by a new
 * LAN host's flow (its MAC learnt), then a TCP SYN to R (the general way: address_frame's
 * test); evicted by an ARP request from a LAN host, which classify handles before the forward
 * loop runs, then a UDP packet of a known flow to R (the forward loop's test at its entry). */
TEST_F(NfTest, TheNextHopCacheSeesAnEvictionInTheMiddleOfABurst) {
  const rte_ether_addr zero{};
  for (bool by_arp : {false, true}) {
    SCOPED_TRACE(by_arp ? "evicted by an ARP request, then the forward loop" : "evicted by a flow, then a SYN");
    arp_capacity_ = 4;  // one set: H, R and R2 from build(), one free
    build(default_config());
    Out o = run(kPortInside, test::udp_frame(from_lan(), H, 6130, R, 53));
    ASSERT_EQ(o.wan.size(), 1u);
    expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "R cached");
    now_ += 1;
    arp_->learn(H, kMacH, kPortInside, now_);  // R is now the least recently confirmed
    arp_->learn(R2, kMacR2, kPortOutside, now_);
    arp_->learn(ip4("198.18.1.20"), mac(0x02, 0, 0, 0, 0x01, 0x14), kPortInside, now_);  // the free way
    const uint32_t X = ip4("198.18.1.30");
    const rte_ether_addr mac_x = mac(0x02, 0, 0, 0, 0x01, 0x1e);
    if (!by_arp) {
      o = run(kPortInside, {test::udp_frame(from_lan(mac_x), X, 7000, R2, 53),
                            test::tcp_frame(from_lan(), H, 6131, R, 80, RTE_TCP_SYN_FLAG)});
      ASSERT_EQ(o.wan.size(), 2u);
      expect_frame(o.wan[0], kVmacOut, kMacR2, WAN_VIP, R2, 63, "the new host's datagram");
    } else {
      o = run(kPortInside, {test::arp_frame(RTE_ARP_OP_REQUEST, mac_x, X, zero, LAN_VIP),
                            test::udp_frame(from_lan(), H, 6130, R, 53)});
      ASSERT_EQ(o.lan.size(), 1u) << "the ARP reply to X";
      ASSERT_EQ(o.wan.size(), 1u);
    }
    ASSERT_FALSE(arp_->lookup(R, now_)) << "R evicted";
    Frame &req = o.wan.back();
    EXPECT_EQ(rte_be_to_cpu_16(test::eth_of(req)->ether_type), RTE_ETHER_TYPE_ARP) << "R asked for, not sent to";
    EXPECT_EQ(test::hdr<rte_arp_hdr>(req, test::kEthLen)->arp_data.arp_tip, R);
  }
}

/* Replies to several LAN hosts in one burst, interleaved (most return traffic): each goes to
 * its own host's MAC. Two of the hosts share a slot of the cache (.10 and .74: the same last
 * octet modulo 64) and take it from each other. */
TEST_F(NfTest, RepliesToSeveralLanHostsInOneBurstEachGoToTheirOwnMac) {
  const uint32_t H3 = ip4("198.18.1.74");
  const rte_ether_addr mac3 = mac(0x02, 0, 0, 0, 0x01, 0x4a);
  const uint32_t hosts[3] = {H, H2, H3};
  const rte_ether_addr macs[3] = {kMacH, kMacH2, mac3};
  uint16_t nat[3];
  for (unsigned h = 0; h < 3; h++) {
    Out o = run(kPortInside, test::udp_frame(from_lan(macs[h]), hosts[h], 6200, R, 53));
    ASSERT_EQ(o.wan.size(), 1u);
    nat[h] = rte_be_to_cpu_16(test::udp_of(o.wan[0])->src_port);
    o = run(kPortOutside, test::udp_frame(from_wan(), R, 53, WAN_VIP, nat[h]));  // the first reply
    ASSERT_EQ(o.lan.size(), 1u);
  }
  const uint64_t fast = nf_->counters().fast_forwarded.load();
  std::vector<Frame> burst;
  for (unsigned i = 0; i < 12; i++) burst.push_back(test::udp_frame(from_wan(), R, 53, WAN_VIP, nat[i % 3]));
  Out o = run(kPortOutside, burst);
  ASSERT_EQ(o.lan.size(), 12u);
  for (unsigned i = 0; i < 12; i++)
    expect_frame(o.lan[i], kVmacIn, macs[i % 3], R, hosts[i % 3], 63, "reply " + std::to_string(i));
  EXPECT_EQ(nf_->counters().fast_forwarded.load(), fast + 12);
}

/* A flow whose destination has no next hop here (made where a gateway was configured: a
 * peer's checkpoint) is dropped as no_route by the fast path, whatever the cache holds: the
 * slot a next hop of 0 maps to is empty, then holds an on-link host (.64, its last octet 0
 * modulo 64). */
TEST_F(NfTest, ANextHopOfNoneIsNeverFoundInTheNextHopCache) {
  const uint32_t far = ip4("198.19.0.5"), R64 = ip4("198.18.2.64");
  const rte_ether_addr mac64 = mac(0x02, 0, 0, 0, 0x02, 0x40);
  ASSERT_EQ(cfg_.gateway_out, 0u);
  FlowState st{};
  st.in_ip = H;
  st.ext_ip = far;
  st.nat_ip = WAN_VIP;
  st.in_port = rte_cpu_to_be_16(6300);
  st.ext_port = rte_cpu_to_be_16(53);
  st.nat_port = rte_cpu_to_be_16(30300);
  st.proto = IPPROTO_UDP;
  st.flags = kFlowReplied;
  ASSERT_GE(flows_->insert(st, now_), 0);
  arp_->learn(R64, mac64, kPortOutside, now_);
  for (bool cached : {false, true}) {
    SCOPED_TRACE(cached ? "slot 0 holds .64" : "slot 0 empty");
    Drops before = drops();
    Out o = run(kPortInside, {test::udp_frame(from_lan(), H, 6300, far, 53), test::udp_frame(from_lan(), H, 6300, far, 53)});
    EXPECT_TRUE(o.wan.empty());
    EXPECT_EQ(drops()[static_cast<unsigned>(DropReason::NO_ROUTE)], before[static_cast<unsigned>(DropReason::NO_ROUTE)] + 2);
    o = run(kPortInside, test::udp_frame(from_lan(), H, 6301, R64, 53));  // caches .64
    ASSERT_EQ(o.wan.size(), 1u);
    expect_frame(o.wan[0], kVmacOut, mac64, WAN_VIP, R64, 63, "to .64");
  }
}

TEST_F(NfTest, GratuitousArpOnAnnounce) {
  nf_->request_announce();
  nf_->housekeeping(now_);
  agent_->flush(0);
  Out o = collect();
  ASSERT_EQ(o.lan.size(), 1u);
  ASSERT_EQ(o.wan.size(), 1u);
  auto *a = test::hdr<rte_arp_hdr>(o.wan[0], test::kEthLen);
  EXPECT_TRUE(test::mac_eq(test::eth_of(o.wan[0])->src_addr, kVmacOut));
  EXPECT_EQ(a->arp_data.arp_sip, WAN_VIP);
  EXPECT_EQ(a->arp_data.arp_tip, WAN_VIP);
  EXPECT_EQ(nf_->counters().garps.load(), 2u);
  nf_->housekeeping(now_);
  agent_->flush(0);
  o = collect();
  EXPECT_TRUE(o.lan.empty() && o.wan.empty()) << "once per request";
}

// ------------------------------------------------------------------ every drop reason

struct DropCase {
  std::string name;
  uint16_t port;
  Frame frame;
  DropReason reason;
};

TEST_F(NfTest, EveryStatelessDropReasonCountsExactlyOnce) {
  const rte_ether_addr zero{};
  auto lan = from_lan();
  auto wan = from_wan();
  std::vector<DropCase> cases;
  auto tcp_syn = [&] { return test::tcp_frame(lan, H, 46000, R, 80, RTE_TCP_SYN_FLAG); };
  auto mutate = [&](Frame f, auto fn, bool fix = true) {
    fn(f);
    if (fix) test::fix_csums(f);
    return f;
  };

  cases.push_back({"10-byte frame", kPortInside, Frame(10, 0xab), DropReason::TRUNCATED_L2});
  cases.push_back({"empty frame", kPortOutside, Frame(), DropReason::TRUNCATED_L2});
  cases.push_back({"IPv6 ethertype", kPortInside,
                   mutate(tcp_syn(), [](Frame &f) { test::eth_of(f)->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV6); }, false),
                   DropReason::IPV6});
  cases.push_back({"VLAN tag", kPortOutside,
                   mutate(tcp_syn(), [](Frame &f) { test::eth_of(f)->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_VLAN); }, false),
                   DropReason::VLAN});
  cases.push_back({"QinQ tag", kPortInside,
                   mutate(tcp_syn(), [](Frame &f) { test::eth_of(f)->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_QINQ); }, false),
                   DropReason::VLAN});
  cases.push_back({"LLDP", kPortOutside,
                   mutate(tcp_syn(), [](Frame &f) { test::eth_of(f)->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_LLDP); }, false),
                   DropReason::UNKNOWN_ETHERTYPE});
  {
    Frame f = tcp_syn();
    f.resize(test::kEthLen + 12);
    cases.push_back({"IPv4 header cut short", kPortInside, f, DropReason::TRUNCATED_L3});
  }
  cases.push_back({"version 6", kPortInside, mutate(tcp_syn(), [](Frame &f) { test::ip_of(f)->version_ihl = 0x65; }),
                   DropReason::BAD_IP_VERSION});
  cases.push_back({"IHL 4", kPortInside, mutate(tcp_syn(), [](Frame &f) { test::ip_of(f)->version_ihl = 0x44; }),
                   DropReason::BAD_IHL});
  cases.push_back({"IHL 0", kPortOutside, mutate(tcp_syn(), [](Frame &f) { test::ip_of(f)->version_ihl = 0x40; }, false),
                   DropReason::BAD_IHL});
  cases.push_back({"IHL 6 (options)", kPortInside,
                   mutate(tcp_syn(), [](Frame &f) { test::ip_of(f)->version_ihl = 0x46; }, false),
                   DropReason::IPV4_OPTIONS});
  cases.push_back({"total length past the frame", kPortInside,
                   mutate(tcp_syn(), [](Frame &f) { test::ip_of(f)->total_length = rte_cpu_to_be_16(41); }),
                   DropReason::BAD_IP_LENGTH});
  cases.push_back({"total length below IHL", kPortInside,
                   mutate(tcp_syn(), [](Frame &f) { test::ip_of(f)->total_length = rte_cpu_to_be_16(19); }),
                   DropReason::BAD_IP_LENGTH});
  cases.push_back({"bad header checksum", kPortInside,
                   mutate(tcp_syn(), [](Frame &f) { test::ip_of(f)->hdr_checksum ^= 0x0101; }, false),
                   DropReason::BAD_IP_CHECKSUM});
  {
    Frame tiny = test::ipv4_frame(lan, H, R, IPPROTO_UDP, 4);  // a first fragment without its ports
    test::ip_of(tiny)->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG);
    test::fix_csums(tiny);
    cases.push_back({"tiny first fragment", kPortInside, tiny, DropReason::BAD_FRAGMENT});
    Frame tcp_tiny = mutate(tcp_syn(), [](Frame &f) {
      test::ip_of(f)->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG);
      test::tcp_of(f)->data_off = 6 << 4;  // says 24 bytes of header; the fragment has 20
    });
    cases.push_back({"first fragment cutting the TCP header", kPortInside, tcp_tiny, DropReason::BAD_FRAGMENT});
  }
  cases.push_back({"fragment ending past 64 KiB", kPortOutside,
                   mutate(test::udp_frame(wan, R, 53, WAN_VIP, 30000),
                          [](Frame &f) { test::ip_of(f)->fragment_offset = rte_cpu_to_be_16(8190); }),
                   DropReason::BAD_FRAGMENT});
  cases.push_back({"loopback source", kPortInside,
                   test::tcp_frame(lan, ip4("127.0.0.1"), 46000, R, 80, RTE_TCP_SYN_FLAG), DropReason::BAD_SOURCE});
  cases.push_back({"multicast source", kPortOutside,
                   test::udp_frame(wan, ip4("224.0.0.5"), 53, WAN_VIP, 30000), DropReason::BAD_SOURCE});
  cases.push_back({"spoofed LAN source", kPortInside,
                   test::tcp_frame(lan, ip4("10.9.9.9"), 46000, R, 80, RTE_TCP_SYN_FLAG), DropReason::BAD_SOURCE});
  cases.push_back({"limited broadcast", kPortInside,
                   test::udp_frame(lan, H, 68, ip4("255.255.255.255"), 67), DropReason::BROADCAST_DST});
  cases.push_back({"directed broadcast", kPortInside,
                   test::udp_frame(lan, H, 137, ip4("198.18.1.255"), 137), DropReason::BROADCAST_DST});
  cases.push_back({"multicast", kPortOutside,
                   test::udp_frame(wan, R, 5353, ip4("224.0.0.251"), 5353), DropReason::BROADCAST_DST});
  cases.push_back({"TCP to the LAN VIP", kPortInside,
                   test::tcp_frame(lan, H, 46000, LAN_VIP, 22, RTE_TCP_SYN_FLAG), DropReason::TO_VIP});
  cases.push_back({"UDP to an unmapped WAN VIP port from the LAN", kPortInside,
                   test::udp_frame(lan, H, 46000, WAN_VIP, 53), DropReason::NO_MAPPING});
  cases.push_back({"echo reply to the WAN VIP from the LAN", kPortInside,
                   test::icmp_frame(lan, H, WAN_VIP, RTE_IP_ICMP_ECHO_REPLY, 1), DropReason::TO_VIP});
  {
    Frame f = test::ipv4_frame(lan, H, R, 47 /* GRE */, 8);
    test::fix_csums(f);
    cases.push_back({"GRE", kPortInside, f, DropReason::UNKNOWN_PROTOCOL});
  }
  {
    Frame f = test::ipv4_frame(lan, H, R, IPPROTO_TCP, 10);
    test::fix_csums(f);
    cases.push_back({"TCP header cut short", kPortInside, f, DropReason::TRUNCATED_L4});
    Frame u = test::ipv4_frame(wan, R, WAN_VIP, IPPROTO_UDP, 4);
    test::fix_csums(u);
    cases.push_back({"UDP header cut short", kPortOutside, u, DropReason::TRUNCATED_L4});
    Frame i = test::ipv4_frame(lan, H, R, IPPROTO_ICMP, 6);
    test::fix_csums(i);
    cases.push_back({"ICMP header cut short", kPortInside, i, DropReason::TRUNCATED_L4});
  }
  cases.push_back({"UDP length past the datagram", kPortInside,
                   mutate(test::udp_frame(lan, H, 5000, R, 53, 8),
                          [](Frame &f) { test::udp_of(f)->dgram_len = rte_cpu_to_be_16(40); }),
                   DropReason::TRUNCATED_L4});
  cases.push_back({"UDP length below the header", kPortInside,
                   mutate(test::udp_frame(lan, H, 5000, R, 53, 8),
                          [](Frame &f) { test::udp_of(f)->dgram_len = rte_cpu_to_be_16(4); }),
                   DropReason::TRUNCATED_L4});
  cases.push_back({"TCP offset 4", kPortInside,
                   mutate(tcp_syn(), [](Frame &f) { test::tcp_of(f)->data_off = 4 << 4; }), DropReason::BAD_TCP_OFFSET});
  cases.push_back({"TCP offset past the segment", kPortInside,
                   mutate(tcp_syn(), [](Frame &f) { test::tcp_of(f)->data_off = 15 << 4; }), DropReason::BAD_TCP_OFFSET});
  cases.push_back({"SYN+FIN", kPortInside, test::tcp_frame(lan, H, 46000, R, 80, RTE_TCP_SYN_FLAG | RTE_TCP_FIN_FLAG),
                   DropReason::BAD_TCP_FLAGS});
  cases.push_back({"SYN+RST", kPortOutside,
                   test::tcp_frame(wan, R, 80, WAN_VIP, 8080, RTE_TCP_SYN_FLAG | RTE_TCP_RST_FLAG),
                   DropReason::BAD_TCP_FLAGS});
  cases.push_back({"no flags", kPortInside, test::tcp_frame(lan, H, 46000, R, 80, 0), DropReason::BAD_TCP_FLAGS});
  cases.push_back({"FIN without ACK", kPortInside, test::tcp_frame(lan, H, 46000, R, 80, RTE_TCP_FIN_FLAG),
                   DropReason::BAD_TCP_FLAGS});
  cases.push_back({"ICMP unreachable cut short", kPortInside, test::icmp_frame(lan, H, R, 3, 0),
                   DropReason::BAD_ICMP_ERROR});
  cases.push_back({"ICMP timestamp", kPortInside, test::icmp_frame(lan, H, R, 13, 0),
                   DropReason::ICMP_UNSUPPORTED});
  cases.push_back({"port unreachable about no flow", kPortOutside,
                   icmp_error_frame(wan, R, WAN_VIP, 3, 3, test::udp_frame(wan, WAN_VIP, 30000, R, 53)),
                   DropReason::ICMP_ERROR_NO_FLOW});
  cases.push_back({"time exceeded about no flow", kPortInside,
                   icmp_error_frame(lan, H, R, 11, 0, test::udp_frame(wan, R, 53, H, 5000)),
                   DropReason::ICMP_ERROR_NO_FLOW});
  {
    Frame inner = test::udp_frame(wan, WAN_VIP, 30000, R, 53);
    test::ip_of(inner)->version_ihl = 0x65;
    cases.push_back({"ICMP error embedding IPv6", kPortOutside, icmp_error_frame(wan, R, WAN_VIP, 3, 3, inner),
                     DropReason::BAD_ICMP_ERROR});
  }
  cases.push_back({"echo with code 1", kPortOutside, test::icmp_frame(wan, R, WAN_VIP, RTE_IP_ICMP_ECHO_REQUEST, 5, 1, 1),
                   DropReason::ICMP_UNSUPPORTED});
  cases.push_back({"echo reply from the LAN without a flow", kPortInside,
                   test::icmp_frame(lan, H, R, RTE_IP_ICMP_ECHO_REPLY, 5), DropReason::ICMP_UNSUPPORTED});
  {
    Frame f = test::arp_frame(RTE_ARP_OP_REQUEST, kMacH, H, zero, LAN_VIP);
    test::hdr<rte_arp_hdr>(f, test::kEthLen)->arp_hardware = rte_cpu_to_be_16(6);
    cases.push_back({"ARP hardware type 6", kPortInside, f, DropReason::BAD_ARP});
    Frame s = test::arp_frame(RTE_ARP_OP_REQUEST, kMacH, H, zero, LAN_VIP);
    s.resize(test::kEthLen + 20);
    cases.push_back({"ARP cut short", kPortInside, s, DropReason::BAD_ARP});
    Frame o = test::arp_frame(7, kMacH, H, zero, LAN_VIP);
    cases.push_back({"ARP opcode 7", kPortInside, o, DropReason::BAD_ARP});
    Frame m = test::arp_frame(RTE_ARP_OP_REQUEST, mac(0x01, 0, 0x5e, 0, 0, 1), H, zero, LAN_VIP);
    cases.push_back({"ARP from a multicast MAC", kPortInside, m, DropReason::BAD_ARP});
    cases.push_back({"ARP for another host", kPortInside,
                     test::arp_frame(RTE_ARP_OP_REQUEST, kMacH, H, zero, ip4("198.18.1.77")), DropReason::ARP_NOT_FOR_US});
    cases.push_back({"ARP from off-link about another host", kPortOutside,
                     test::arp_frame(RTE_ARP_OP_REPLY, kMacR, ip4("10.1.1.1"), kVmacOut, ip4("10.1.1.2")),
                     DropReason::ARP_NOT_FOR_US});
  }
  cases.push_back({"WAN to another address", kPortOutside,
                   test::udp_frame(wan, R, 53, ip4("198.18.2.99"), 30000), DropReason::NOT_FOR_VIP});
  cases.push_back({"WAN to a LAN host directly", kPortOutside,
                   test::tcp_frame(wan, R, 5000, H, 80, RTE_TCP_SYN_FLAG), DropReason::NOT_FOR_VIP});
  cases.push_back({"WAN UDP without a mapping", kPortOutside, test::udp_frame(wan, R, 53, WAN_VIP, 30000),
                   DropReason::NO_MAPPING});
  cases.push_back({"WAN SYN to an unforwarded port", kPortOutside,
                   test::tcp_frame(wan, R, 5000, WAN_VIP, 9999, RTE_TCP_SYN_FLAG), DropReason::NO_MAPPING});
  cases.push_back({"LAN ACK without a flow", kPortInside, test::tcp_frame(lan, H, 46000, R, 80, RTE_TCP_ACK_FLAG),
                   DropReason::TCP_NO_FLOW});
  cases.push_back({"off-link destination, no gateway", kPortInside,
                   test::tcp_frame(lan, H, 46000, ip4("8.8.8.8"), 53, RTE_TCP_SYN_FLAG), DropReason::NO_ROUTE});
  cases.push_back({"LAN to LAN", kPortInside, test::tcp_frame(lan, H, 46000, ip4("198.18.1.20"), 80, RTE_TCP_SYN_FLAG),
                   DropReason::LAN_TO_LAN});

  std::set<DropReason> covered;
  for (auto &c : cases) {
    const unsigned avail = rte_mempool_avail_count(test::test_pool());
    Drops before = drops();
    Out o = run(c.port, c.frame);
    EXPECT_TRUE(o.lan.empty() && o.wan.empty()) << c.name << ": something was sent";
    expect_one_drop(before, c.reason, c.name);
    EXPECT_EQ(rte_mempool_avail_count(test::test_pool()), avail) << c.name << ": mbuf not freed";
    covered.insert(c.reason);
  }
  EXPECT_EQ(flows_->size(), 0u) << "no malformed packet created a flow";

  // The stateful reasons are covered by their own tests in this file:
  //   TCP_INVALID (TcpRstClosesAndLaterSegmentsAreInvalid, TcpInvalidInSynSent), NOT_ACTIVE,
  //   FLOW_TABLE_FULL, NAT_PORTS_EXHAUSTED, ARP_MISS, NO_MBUF.
  //   TTL_EXCEEDED, TOO_BIG, NEEDS_FRAGMENTATION (OriginatedIcmp*), FILTERED
  //   (FilteringModes), HOST_SESSION_LIMIT (HostSessionLimit), TCP_OUT_OF_WINDOW (TcpRst*),
  //   FRAG_* (Fragment*), FRAG_CROSS_WORKER (test_shards: AFragmentHairpinnedToAnotherWorker...).
  const std::set<DropReason> elsewhere = {DropReason::TCP_INVALID, DropReason::NOT_ACTIVE,
                                          DropReason::FLOW_TABLE_FULL, DropReason::NAT_PORTS_EXHAUSTED,
                                          DropReason::ARP_MISS, DropReason::NO_MBUF,
                                          DropReason::TTL_EXCEEDED, DropReason::TOO_BIG,
                                          DropReason::NEEDS_FRAGMENTATION, DropReason::FILTERED,
                                          DropReason::HOST_SESSION_LIMIT, DropReason::TCP_OUT_OF_WINDOW,
                                          DropReason::FRAG_TIMEOUT, DropReason::FRAG_BUFFER_FULL,
                                          DropReason::FRAG_TABLE_FULL, DropReason::FRAG_OF_DROPPED,
                                          DropReason::FRAG_CROSS_WORKER};
  for (unsigned i = 0; i < kDropReasonCount; i++) {
    auto r = static_cast<DropReason>(i);
    EXPECT_TRUE(covered.count(r) || elsewhere.count(r)) << "no test for " << drop_reason_label(r);
  }
}

TEST_F(NfTest, TcpInvalidInSynSent) {
  Out o = run(kPortInside, test::tcp_frame(from_lan(), H, 47000, R, 80, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.wan.size(), 1u);
  const uint16_t nat = rte_be_to_cpu_16(test::tcp_of(o.wan[0])->src_port);
  Drops before = drops();
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 47000, R, 80, RTE_TCP_ACK_FLAG));
  EXPECT_TRUE(o.wan.empty());
  expect_one_drop(before, DropReason::TCP_INVALID, "ACK from the initiator before SYN/ACK");
  before = drops();
  o = run(kPortOutside, test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_ACK_FLAG));
  EXPECT_TRUE(o.lan.empty());
  expect_one_drop(before, DropReason::TCP_INVALID, "bare ACK from the responder in SYN_SENT");
  // (A bare SYN from the responder is a simultaneous open: TcpSimultaneousOpen.)
  int slot = lookup_in(H, 47000, R, 80, IPPROTO_TCP);
  ASSERT_GE(slot, 0);
  EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::SYN_SENT)) << "invalid segments change nothing";
}

TEST_F(NfTest, NoMbufForArpRequest) {
  // An NF whose pool is exhausted cannot build its ARP request.
  rte_mempool *tiny = rte_pktmbuf_pool_create(test::unique_name("tiny").c_str(), 15, 0, 0,
                                              RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  ASSERT_NE(tiny, nullptr);
  std::vector<rte_mbuf *> hoard;
  while (rte_mbuf *m = rte_pktmbuf_alloc(tiny)) hoard.push_back(m);
  ASSERT_FALSE(hoard.empty());
  build(default_config(), 1024, tiny);
  Drops before = drops();
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 6002, ip4("198.18.2.22"), 53));
  EXPECT_TRUE(o.wan.empty());
  expect_one_drop(before, DropReason::NO_MBUF, "ARP request without mbufs");
  teardown_parts();
  for (rte_mbuf *m : hoard) rte_pktmbuf_free(m);
  rte_mempool_free(tiny);
}

// ------------------------------------------------------------------ capacity limits

TEST_F(NfTest, FullTableRefusesNewFlowsAndKeepsEstablishedOnes) {
  build(default_config(), 16);
  std::vector<uint16_t> nats;
  for (uint16_t i = 0; i < 16; i++) {
    uint16_t nat = handshake(static_cast<uint16_t>(30000 + i));
    ASSERT_NE(nat, 0) << i;
    nats.push_back(nat);
  }
  ASSERT_EQ(flows_->size(), 16u);
  for (int k = 0; k < 3; k++) {
    Drops before = drops();
    Out o = run(kPortInside, test::tcp_frame(from_lan(), H, static_cast<uint16_t>(31000 + k), R, 80, RTE_TCP_SYN_FLAG));
    EXPECT_TRUE(o.wan.empty());
    expect_one_drop(before, DropReason::FLOW_TABLE_FULL, "SYN into a full table");
    before = drops();
    o = run(kPortOutside, test::tcp_frame(from_wan(), R, static_cast<uint16_t>(6000 + k), WAN_VIP, 8080, RTE_TCP_SYN_FLAG));
    EXPECT_TRUE(o.lan.empty());
    expect_one_drop(before, DropReason::FLOW_TABLE_FULL, "port-forward SYN into a full table");
  }
  EXPECT_EQ(flows_->size(), 16u);
  // Every established flow is still there and still passes traffic both ways.
  for (uint16_t i = 0; i < 16; i++) {
    int slot = lookup_in(H, static_cast<uint16_t>(30000 + i), R, 80, IPPROTO_TCP);
    ASSERT_GE(slot, 0) << "flow " << i << " was evicted";
    EXPECT_EQ(st(slot).tcp_state, uint8_t(TcpState::ESTABLISHED));
    Out o = run(kPortOutside, test::tcp_frame(from_wan(), R, 80, WAN_VIP, nats[i], RTE_TCP_ACK_FLAG, 5));
    EXPECT_EQ(o.lan.size(), 1u);
  }
  // Past the SYN timeout (but not the established one) nothing is reclaimed either.
  sweep(now_ + uint64_t(cfg_.timeouts.tcp_syn) * hz_ + 1);
  EXPECT_EQ(flows_->size(), 16u);
}

TEST_F(NfTest, NatPortsExhaustedAndMappingsReused) {
  NfConfig c = default_config();
  c.nat_port_min = 20000;
  c.nat_port_max = 20001;
  build(c);
  for (uint16_t sport : {1000, 1001}) {
    Out o = run(kPortInside, test::udp_frame(from_lan(), H, sport, R, 53));
    ASSERT_EQ(o.wan.size(), 1u);
    uint16_t nat = rte_be_to_cpu_16(test::udp_of(o.wan[0])->src_port);
    EXPECT_TRUE(nat == 20000 || nat == 20001) << nat;
  }
  EXPECT_EQ(flows_->ports_in_use(IPPROTO_UDP), 2u);
  // No port overloading (RFC 4787 REQ-3): a third inside endpoint has no port, whatever
  // the destination.
  for (uint32_t dst : {R, R2}) {
    Drops before = drops();
    Out o = run(kPortInside, test::udp_frame(from_lan(), H, 1002, dst, 53));
    EXPECT_TRUE(o.wan.empty());
    expect_one_drop(before, DropReason::NAT_PORTS_EXHAUSTED, "third inside endpoint");
  }
  // An endpoint that has a mapping reaches a new destination through it.
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 1000, R2, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_EQ(flows_->ports_in_use(IPPROTO_UDP), 2u);
  EXPECT_EQ(flows_->size(), 3u);
  EXPECT_EQ(flows_->mappings(), 2u);
}

TEST_F(NfTest, GatewayRoutesOffLinkDestinations) {
  NfConfig c = default_config();
  c.gateway_out = ip4("198.18.2.254");
  build(c);
  const rte_ether_addr gw = mac(0x02, 0, 0, 0, 0x02, 0xfe);
  arp_->learn(c.gateway_out, gw, kPortOutside, now_);
  Out o = run(kPortInside, test::tcp_frame(from_lan(), H, 48000, ip4("8.8.8.8"), 53, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.wan.size(), 1u);
  expect_frame(o.wan[0], kVmacOut, gw, WAN_VIP, ip4("8.8.8.8"), 63, "via the gateway");
}

// ------------------------------------------------------------------ output commit

TEST_F(NfTest, StrictModeHoldsUntilTheEpochIsAcknowledged) {
  agent_->set_strict(true);
  const uint64_t e = flows_->epoch();
  // A SYN that creates a flow in epoch E waits for E's acknowledgement.
  Out o = run(kPortInside, test::tcp_frame(from_lan(), H, 49000, R, 80, RTE_TCP_SYN_FLAG));
  EXPECT_TRUE(o.wan.empty()) << "held";
  EXPECT_EQ(agent_->worker_counters(0).held.load(), 1u);
  agent_->set_acked_epoch(e - 1);
  agent_->flush(0);
  EXPECT_EQ(wan_->tx_count(), 0u) << "an older acknowledgement does not release it";
  agent_->set_acked_epoch(e);
  agent_->flush(0);
  o = collect();
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_EQ(test::tcp_of(o.wan[0])->tcp_flags, RTE_TCP_SYN_FLAG);
  EXPECT_EQ(agent_->worker_counters(0).released.load(), 1u);

  // The epoch moves on. A packet of the old flow that changes nothing passes at once.
  ASSERT_EQ(flows_->flip_epoch(false), static_cast<int64_t>(e));
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 49000, R, 80, RTE_TCP_SYN_FLAG));  // retransmission
  EXPECT_EQ(o.wan.size(), 1u) << "depends only on acknowledged state";
  const uint16_t nat = o.wan.empty() ? 0 : rte_be_to_cpu_16(test::tcp_of(o.wan[0])->src_port);

  // A state change in epoch E+1 (SYN/ACK) is held again; so are later packets of that flow,
  // and a new UDP flow; all leave in order once E+1 is acknowledged.
  std::vector<Frame> burst;
  burst.push_back(test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG));
  o = run(kPortOutside, burst);
  EXPECT_TRUE(o.lan.empty());
  std::vector<Frame> udp;
  for (uint16_t i = 1; i <= 5; i++) {
    Frame f = test::udp_frame(from_lan(), H, 7000, R, 53, 8);
    test::ip_of(f)->packet_id = rte_cpu_to_be_16(i);
    test::fix_csums(f);
    udp.push_back(f);
  }
  o = run(kPortInside, udp);
  EXPECT_TRUE(o.wan.empty());
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 49000, R, 80, RTE_TCP_ACK_FLAG));  // ESTABLISHED: E+1
  EXPECT_TRUE(o.wan.empty());
  EXPECT_EQ(agent_->worker_counters(0).held.load(), 1u + 1 + 5 + 1);
  agent_->set_acked_epoch(e + 1);
  agent_->flush(0);
  o = collect();
  ASSERT_EQ(o.lan.size(), 1u);
  EXPECT_EQ(test::tcp_of(o.lan[0])->tcp_flags, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG);
  ASSERT_EQ(o.wan.size(), 6u);
  for (unsigned i = 0; i < 5; i++) {
    ASSERT_EQ(test::ip_of(o.wan[i])->next_proto_id, IPPROTO_UDP) << i;
    EXPECT_EQ(rte_be_to_cpu_16(test::ip_of(o.wan[i])->packet_id), i + 1) << "order within the flow";
  }
  EXPECT_EQ(test::ip_of(o.wan[5])->next_proto_id, IPPROTO_TCP);
  EXPECT_EQ(test::tcp_of(o.wan[5])->tcp_flags, RTE_TCP_ACK_FLAG);

  // Answers built from no flow state (ARP, echo to the VIP) never wait.
  o = run(kPortInside, test::icmp_frame(from_lan(), H, LAN_VIP, RTE_IP_ICMP_ECHO_REQUEST, 3));
  EXPECT_EQ(o.lan.size(), 1u);
}

TEST_F(NfTest, StrictModeKeepsOrderAcrossEpochsWithinAFlow) {
  agent_->set_strict(true);
  const uint64_t e = flows_->epoch();
  Frame a = test::udp_frame(from_lan(), H, 27100, R, 53, 8);
  test::ip_of(a)->packet_id = rte_cpu_to_be_16(1);
  test::fix_csums(a);
  run(kPortInside, a);  // creates the flow in E: held
  const int slot = lookup_in(H, 27100, R, 53, IPPROTO_UDP);
  ASSERT_GE(slot, 0);
  const uint16_t nat = rte_be_to_cpu_16(st(slot).nat_port);
  ASSERT_EQ(flows_->flip_epoch(false), static_cast<int64_t>(e));
  // The reply marks the flow replied in E+1: held with dependency E+1.
  Out o = run(kPortOutside, test::udp_frame(from_wan(), R, 53, WAN_VIP, nat, 8));
  EXPECT_TRUE(o.lan.empty());
  Frame b = a;
  test::ip_of(b)->packet_id = rte_cpu_to_be_16(2);
  test::fix_csums(b);
  run(kPortInside, b);  // depends on E+1 now
  agent_->set_acked_epoch(e);
  agent_->flush(0);
  o = collect();
  ASSERT_EQ(o.wan.size(), 1u) << "only the packet of epoch E";
  EXPECT_EQ(rte_be_to_cpu_16(test::ip_of(o.wan[0])->packet_id), 1);
  EXPECT_TRUE(o.lan.empty());
  agent_->set_acked_epoch(e + 1);
  agent_->flush(0);
  o = collect();
  ASSERT_EQ(o.wan.size(), 1u);
  EXPECT_EQ(rte_be_to_cpu_16(test::ip_of(o.wan[0])->packet_id), 2);
  EXPECT_EQ(o.lan.size(), 1u);
}

}  // namespace
}  // namespace ftpair::dp

namespace ftpair::dp {
namespace {

// ------------------------------------------------------------------ ICMP errors (RFC 5508)

TEST_F(NfTest, PortUnreachableFromTheWanReachesTheHostTranslated) {
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 5000, R, 53));
  ASSERT_EQ(o.wan.size(), 1u);
  Frame sent = o.wan[0];
  const uint16_t nat = test::udp_of(sent)->src_port;
  const size_t flows = flows_->size();
  // The server's kernel quotes the datagram it got: from the outside endpoint to itself.
  Frame err = icmp_error_frame(from_wan(), R, WAN_VIP, kIcmpDestUnreach, kIcmpPortUnreach, sent);
  o = run(kPortOutside, err);
  ASSERT_EQ(o.lan.size(), 1u) << "the error did not reach the host";
  expect_frame(o.lan[0], kVmacIn, kMacH, R, H, 63, "port unreachable");
  EXPECT_EQ(test::icmp_of(o.lan[0])->icmp_type, kIcmpDestUnreach);
  Frame in = embedded(o.lan[0]);
  EXPECT_EQ(test::ip_of(in)->src_addr, H) << "embedded source not translated back";
  EXPECT_EQ(test::udp_of(in)->src_port, rte_cpu_to_be_16(5000)) << "embedded port not translated back";
  EXPECT_EQ(test::ip_of(in)->dst_addr, R);
  EXPECT_TRUE(test::ip_csum_ok(in)) << "embedded IP checksum";
  EXPECT_TRUE(test::l4_csum_ok(in)) << "embedded UDP checksum";
  EXPECT_EQ(flows_->size(), flows) << "an error created a flow";
  EXPECT_EQ(nf_->counters().icmp_errors_translated.load(), 1u);
  (void)nat;
  // A quote of only the 8 bytes of UDP header still translates (RFC 792's minimum).
  o = run(kPortOutside, icmp_error_frame(from_wan(), R, WAN_VIP, kIcmpDestUnreach, kIcmpPortUnreach, sent, 28));
  ASSERT_EQ(o.lan.size(), 1u);
  EXPECT_TRUE(test::l4_csum_ok(o.lan[0])) << "ICMP checksum over a short quote";
}

TEST_F(NfTest, TimeExceededFromARouterAboutTcpAndEcho) {
  const uint16_t nat = handshake(41000);
  ASSERT_NE(nat, 0);
  Frame seg = test::tcp_frame(test::L2{kVmacOut, kMacR}, WAN_VIP, nat, R, 80, RTE_TCP_ACK_FLAG, 100);
  const uint32_t router = ip4("198.18.2.254");
  o_ = run(kPortOutside, icmp_error_frame(from_wan(kMacR2), router, WAN_VIP, kIcmpTimeExceeded, 0, seg));
  ASSERT_EQ(o_.lan.size(), 1u);
  expect_frame(o_.lan[0], kVmacIn, kMacH, router, H, 63, "time exceeded from a router");
  Frame in = embedded(o_.lan[0]);
  EXPECT_EQ(test::tcp_of(in)->src_port, rte_cpu_to_be_16(41000));
  EXPECT_TRUE(test::l4_csum_ok(in)) << "embedded TCP checksum";
  // An echo request that expired on the way: the identifier goes back to the host's.
  Out o = run(kPortInside, test::icmp_frame(from_lan(), H, R, RTE_IP_ICMP_ECHO_REQUEST, 777));
  ASSERT_EQ(o.wan.size(), 1u);
  o = run(kPortOutside, icmp_error_frame(from_wan(kMacR2), router, WAN_VIP, kIcmpTimeExceeded, 0, o.wan[0]));
  ASSERT_EQ(o.lan.size(), 1u);
  in = embedded(o.lan[0]);
  EXPECT_EQ(test::icmp_of(in)->icmp_ident, rte_cpu_to_be_16(777));
  EXPECT_TRUE(test::l4_csum_ok(in)) << "embedded ICMP checksum";
  EXPECT_TRUE(test::l4_csum_ok(o.lan[0])) << "outer ICMP checksum";
}

TEST_F(NfTest, ErrorFromTheLanGoesOutFromTheOutsideEndpoint) {
  // A port-forwarded UDP service behind the NAT refuses a datagram: the remote learns it.
  cfg_.forwards.push_back(PortForward{IPPROTO_UDP, 5353, H, 5353});
  build(cfg_);
  Out o = run(kPortOutside, test::udp_frame(from_wan(), R, 40000, WAN_VIP, 5353));
  ASSERT_EQ(o.lan.size(), 1u);
  Frame got = o.lan[0];
  o = run(kPortInside, icmp_error_frame(from_lan(), H, R, kIcmpDestUnreach, kIcmpPortUnreach, got));
  ASSERT_EQ(o.wan.size(), 1u) << "the error did not leave";
  expect_frame(o.wan[0], kVmacOut, kMacR, WAN_VIP, R, 63, "port unreachable going out");
  Frame in = embedded(o.wan[0]);
  EXPECT_EQ(test::ip_of(in)->dst_addr, WAN_VIP) << "embedded destination not translated";
  EXPECT_EQ(test::udp_of(in)->dst_port, rte_cpu_to_be_16(5353));
  EXPECT_TRUE(test::ip_csum_ok(in));
  EXPECT_TRUE(test::l4_csum_ok(in));
}

// ------------------------------------------------------------------ ICMP the gateway sends

TEST_F(NfTest, OriginatedIcmpTimeExceededQuotesThePacketAndIsRateLimited) {
  cfg_.icmp_rate = 1;
  cfg_.icmp_burst = 3;
  build(cfg_);
  Frame f = test::udp_frame(from_lan(), H, 5000, R, 33434, 8, 1);
  unsigned sent = 0;
  for (int i = 0; i < 6; i++) {
    Drops before = drops();
    Out o = run(kPortInside, f);
    expect_one_drop(before, DropReason::TTL_EXCEEDED, "TTL 1 from the LAN");
    EXPECT_TRUE(o.wan.empty());
    if (o.lan.empty()) continue;
    sent++;
    expect_frame(o.lan[0], kVmacIn, kMacH, LAN_VIP, H, 64, "time exceeded");
    EXPECT_EQ(test::icmp_of(o.lan[0])->icmp_type, kIcmpTimeExceeded);
    Frame in = embedded(o.lan[0]);
    EXPECT_EQ(in.size(), f.size()) << "the whole (short) packet is quoted";
    EXPECT_EQ(test::udp_of(in)->dst_port, rte_cpu_to_be_16(33434));
  }
  EXPECT_EQ(sent, 3u) << "a burst of 3, then the bucket is empty";
  EXPECT_EQ(nf_->counters().icmp_rate_limited.load(), 3u);
  EXPECT_EQ(flows_->size(), 0u);
}

TEST_F(NfTest, OriginatedIcmpFragNeededAndMssClamp) {
  cfg_.mtu[kPortOutside] = 1400;
  build(cfg_);
  // DF and too big for the WAN: Fragmentation Needed with the next-hop MTU.
  Frame big = test::udp_frame(from_lan(), H, 5000, R, 53, 1472);  // 1500 bytes, DF
  Drops before = drops();
  Out o = run(kPortInside, big);
  expect_one_drop(before, DropReason::TOO_BIG, "1500 bytes, DF, to a 1400 link");
  ASSERT_EQ(o.lan.size(), 1u);
  auto *icmp = test::icmp_of(o.lan[0]);
  EXPECT_EQ(icmp->icmp_type, kIcmpDestUnreach);
  EXPECT_EQ(icmp->icmp_code, kIcmpFragNeeded);
  EXPECT_EQ(rte_be_to_cpu_16(icmp->icmp_seq_nb), 1400) << "next-hop MTU";
  EXPECT_TRUE(test::l4_csum_ok(o.lan[0]));
  EXPECT_LE(o.lan[0].size() - test::kEthLen, 576u) << "an ICMP error fits in 576 bytes";
  // Without DF the NAT cannot fragment: dropped with its own reason.
  test::ip_of(big)->fragment_offset = 0;
  test::fix_csums(big);
  before = drops();
  o = run(kPortInside, big);
  expect_one_drop(before, DropReason::NEEDS_FRAGMENTATION, "1500 bytes, no DF");
  // 1400 bytes fit.
  o = run(kPortInside, test::udp_frame(from_lan(), H, 5000, R, 53, 1372));
  EXPECT_EQ(o.wan.size(), 1u);
  // A SYN's MSS of 1460 is clamped to 1360 both ways, checksum intact.
  Frame syn = test::tcp_frame(from_lan(), H, 43000, R, 80, RTE_TCP_SYN_FLAG, 4);
  test::tcp_of(syn)->data_off = 6 << 4;
  const uint8_t mss_opt[4] = {2, 4, 0x05, 0xb4};
  std::memcpy(syn.data() + test::kL4Off + 20, mss_opt, 4);
  test::fix_csums(syn);
  o = run(kPortInside, syn);
  ASSERT_EQ(o.wan.size(), 1u);
  const uint8_t *opt = o.wan[0].data() + test::kL4Off + 20;
  EXPECT_EQ(opt[2] << 8 | opt[3], 1360);
  EXPECT_TRUE(test::l4_csum_ok(o.wan[0])) << "TCP checksum after clamping";
  EXPECT_EQ(nf_->counters().mss_clamped.load(), 1u);
}

// ------------------------------------------------------------------ mapping and filtering

TEST_F(NfTest, MappingIsEndpointIndependent) {
  Out a = run(kPortInside, test::udp_frame(from_lan(), H, 6000, R, 53));
  Out b = run(kPortInside, test::udp_frame(from_lan(), H, 6000, R2, 9999));
  ASSERT_EQ(a.wan.size(), 1u);
  ASSERT_EQ(b.wan.size(), 1u);
  EXPECT_EQ(test::udp_of(a.wan[0])->src_port, test::udp_of(b.wan[0])->src_port)
      << "one outside port per inside endpoint, whatever the destination";
  EXPECT_EQ(flows_->mappings(), 1u);
  // Another host with the same source port gets its own outside port.
  Out c = run(kPortInside, test::udp_frame(from_lan(kMacH2), H2, 6000, R, 53));
  ASSERT_EQ(c.wan.size(), 1u);
  EXPECT_NE(test::udp_of(c.wan[0])->src_port, test::udp_of(a.wan[0])->src_port);
  // Parity is kept (RFC 4787 REQ-4): 6000 is even.
  EXPECT_EQ(rte_be_to_cpu_16(test::udp_of(a.wan[0])->src_port) % 2, 0);
  Out d = run(kPortInside, test::udp_frame(from_lan(), H, 6001, R, 53));
  ASSERT_EQ(d.wan.size(), 1u);
  EXPECT_EQ(rte_be_to_cpu_16(test::udp_of(d.wan[0])->src_port) % 2, 1);
}

TEST_F(NfTest, FilteringModes) {
  const uint32_t R3 = ip4("198.18.2.12");
  for (Filtering mode : {Filtering::ENDPOINT, Filtering::ADDRESS, Filtering::ADDRESS_PORT}) {
    SCOPED_TRACE(filtering_name(mode));
    cfg_.filtering = mode;
    build(cfg_);
    arp_->learn(R3, kMacR2, kPortOutside, now_);
    Out o = run(kPortInside, test::udp_frame(from_lan(), H, 7000, R, 7000));
    ASSERT_EQ(o.wan.size(), 1u);
    const uint16_t nat = rte_be_to_cpu_16(test::udp_of(o.wan[0])->src_port);
    // Same address, other port.
    Drops before = drops();
    o = run(kPortOutside, test::udp_frame(from_wan(), R, 7001, WAN_VIP, nat));
    const bool port_passes = mode != Filtering::ADDRESS_PORT;
    EXPECT_EQ(o.lan.size(), port_passes ? 1u : 0u) << "from the same address, another port";
    if (!port_passes) expect_one_drop(before, DropReason::FILTERED, "APDF");
    if (port_passes && o.lan.size() == 1) {
      EXPECT_EQ(test::ip_of(o.lan[0])->dst_addr, H);
      EXPECT_EQ(test::udp_of(o.lan[0])->dst_port, rte_cpu_to_be_16(7000));
    }
    // Another address.
    before = drops();
    o = run(kPortOutside, test::udp_frame(from_wan(kMacR2), R3, 7000, WAN_VIP, nat));
    const bool addr_passes = mode == Filtering::ENDPOINT;
    EXPECT_EQ(o.lan.size(), addr_passes ? 1u : 0u) << "from another address";
    if (!addr_passes) expect_one_drop(before, DropReason::FILTERED, "ADF/APDF");
    // An inbound session made the host's mapping no different: replies use the same port.
    if (addr_passes) {
      o = run(kPortInside, test::udp_frame(from_lan(), H, 7000, R3, 7000));
      ASSERT_EQ(o.wan.size(), 1u);
      EXPECT_EQ(rte_be_to_cpu_16(test::udp_of(o.wan[0])->src_port), nat);
    }
  }
}

TEST_F(NfTest, PairedPoolingKeepsAHostOnOneAddress) {
  cfg_.pool = {ip4("198.18.2.1"), ip4("198.18.2.2"), ip4("198.18.2.3"), ip4("198.18.2.4")};
  build(cfg_);
  std::set<uint32_t> seen_h, seen_all;
  for (uint16_t sp = 1000; sp < 1040; sp++) {
    Out o = run(kPortInside, test::udp_frame(from_lan(), H, sp, R, 53));
    ASSERT_EQ(o.wan.size(), 1u);
    seen_h.insert(test::ip_of(o.wan[0])->src_addr);
  }
  EXPECT_EQ(seen_h.size(), 1u) << "paired pooling: one outside address per host";
  // The pool's addresses are answered for.
  Out o = run(kPortOutside, test::arp_frame(RTE_ARP_OP_REQUEST, kMacR, R, rte_ether_addr{}, ip4("198.18.2.3")));
  EXPECT_EQ(o.wan.size(), 1u) << "ARP for a pool address";
}

TEST_F(NfTest, PortAllocationFindsTheLastFreePort) {
  cfg_.nat_port_min = 20000;
  cfg_.nat_port_max = 20003;  // two even, two odd ports
  build(cfg_);
  std::set<uint16_t> got;
  for (uint16_t sp = 2000; sp < 2004; sp++) {  // even, odd, even, odd
    Out o = run(kPortInside, test::udp_frame(from_lan(), H, sp, R, 53));
    ASSERT_EQ(o.wan.size(), 1u) << "source port " << sp;
    got.insert(rte_be_to_cpu_16(test::udp_of(o.wan[0])->src_port));
  }
  EXPECT_EQ(got.size(), 4u);
  Drops before = drops();
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 2004, R, 53));
  expect_one_drop(before, DropReason::NAT_PORTS_EXHAUSTED, "all four ports taken");
}

// ------------------------------------------------------------------ hairpinning

TEST_F(NfTest, HairpinThroughAPortForward) {
  // H2 reaches the service forwarded to H:8080 through the WAN VIP.
  Out o = run(kPortInside, test::tcp_frame(from_lan(kMacH2), H2, 45000, WAN_VIP, 8080, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.lan.size(), 1u) << "hairpinned SYN";
  EXPECT_TRUE(o.wan.empty());
  Frame &syn = o.lan[0];
  expect_frame(syn, kVmacIn, kMacH, WAN_VIP, H, 63, "hairpinned SYN");
  const uint16_t h2_nat = test::tcp_of(syn)->src_port;
  EXPECT_NE(h2_nat, rte_cpu_to_be_16(45000)) << "the source seen is H2's outside endpoint";
  // H answers to that outside endpoint; it comes back to H2 from the forward's address.
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 8080, WAN_VIP, rte_be_to_cpu_16(h2_nat),
                                       RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG));
  ASSERT_EQ(o.lan.size(), 1u) << "hairpinned SYN+ACK";
  expect_frame(o.lan[0], kVmacIn, kMacH2, WAN_VIP, H2, 63, "hairpinned SYN+ACK");
  EXPECT_EQ(test::tcp_of(o.lan[0])->src_port, rte_cpu_to_be_16(8080));
  EXPECT_EQ(test::tcp_of(o.lan[0])->dst_port, rte_cpu_to_be_16(45000));
  EXPECT_EQ(nf_->counters().hairpinned.load(), 2u);
}

// A pool that leaves the WAN VIP out: the forwards on the VIP still work, from the WAN and
// hairpinned from the LAN (they were refused as not_for_vip before).
TEST_F(NfTest, ForwardsOnAVipOutsideThePool) {
  cfg_.pool = {ip4("198.18.2.20"), ip4("198.18.2.21")};
  build(cfg_);
  Out o = run(kPortOutside, test::tcp_frame(from_wan(), R, 40000, WAN_VIP, 8080, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.lan.size(), 1u) << "the WAN SYN reaches the forward's target";
  EXPECT_EQ(test::ip_of(o.lan[0])->dst_addr, H);
  const Drops d0 = drops();
  o = run(kPortInside, test::tcp_frame(from_lan(kMacH2), H2, 45000, WAN_VIP, 8080, RTE_TCP_SYN_FLAG));
  for (unsigned i = 0; i < kDropReasonCount; i++)
    if (drops()[i] != d0[i]) ADD_FAILURE() << "dropped " << drop_reason_label(static_cast<DropReason>(i));
  ASSERT_EQ(o.lan.size(), 1u) << "hairpinned to the forward";
  EXPECT_EQ(test::ip_of(o.lan[0])->dst_addr, H);
  EXPECT_NE(test::ip_of(o.lan[0])->src_addr, WAN_VIP) << "H2's mapping is on a pool address";
  const Drops before = drops();
  o = run(kPortOutside, test::udp_frame(from_wan(), R, 53, WAN_VIP, 30000));
  EXPECT_TRUE(o.lan.empty());
  expect_one_drop(before, DropReason::NO_MAPPING, "WAN UDP to the VIP, no forward");
}

TEST_F(NfTest, HairpinThroughAMapping) {
  cfg_.filtering = Filtering::ENDPOINT;
  build(cfg_);
  Out o = run(kPortInside, test::udp_frame(from_lan(), H, 9000, R, 3478));  // H's mapping
  ASSERT_EQ(o.wan.size(), 1u);
  const uint16_t h_nat = test::udp_of(o.wan[0])->src_port;
  o = run(kPortInside, test::udp_frame(from_lan(kMacH2), H2, 9100, WAN_VIP, rte_be_to_cpu_16(h_nat)));
  ASSERT_EQ(o.lan.size(), 1u) << "to H through its mapping";
  expect_frame(o.lan[0], kVmacIn, kMacH, WAN_VIP, H, 63, "hairpinned UDP");
  EXPECT_EQ(test::udp_of(o.lan[0])->dst_port, rte_cpu_to_be_16(9000));
}

// ------------------------------------------------------------------ protection

TEST_F(NfTest, HostSessionLimit) {
  cfg_.max_sessions_per_host = 5;
  build(cfg_);
  unsigned passed = 0;
  for (uint16_t sp = 3000; sp < 3010; sp++) passed += run(kPortInside, test::udp_frame(from_lan(), H, sp, R, 53)).wan.size();
  EXPECT_EQ(passed, 5u);
  EXPECT_EQ(nf_->drops(DropReason::HOST_SESSION_LIMIT), 5u);
  // Other hosts are not affected.
  EXPECT_EQ(run(kPortInside, test::udp_frame(from_lan(kMacH2), H2, 3000, R, 53)).wan.size(), 1u);
}

TEST_F(NfTest, FloodOfEmbryonicFlowsEvictsOnlyEmbryonicOnes) {
  cfg_.evict_embryonic_pct = 50;
  cfg_.max_sessions_per_host = 0;
  build(cfg_, 64);
  // 8 established TCP users.
  std::vector<uint16_t> users;
  for (uint16_t i = 0; i < 8; i++) users.push_back(handshake(static_cast<uint16_t>(44000 + i)));
  // A SYN flood at the port-forward from many sources.
  for (uint32_t i = 0; i < 500; i++) {
    const uint32_t src = ip4("198.18.2.100") + rte_cpu_to_be_32(i % 100) + 0;
    (void)src;
    run(kPortOutside, test::tcp_frame(from_wan(), R2, static_cast<uint16_t>(10000 + i), WAN_VIP, 8080, RTE_TCP_SYN_FLAG));
  }
  EXPECT_GT(nf_->counters().flows_evicted.load(), 0u);
  for (uint16_t i = 0; i < 8; i++) {
    Out o = run(kPortOutside, test::tcp_frame(from_wan(), R, 80, WAN_VIP, users[i], RTE_TCP_ACK_FLAG, 10));
    EXPECT_EQ(o.lan.size(), 1u) << "established user " << i << " lost";
  }
  // New LAN connections still open.
  Out o = run(kPortInside, test::tcp_frame(from_lan(kMacH2), H2, 46000, R, 443, RTE_TCP_SYN_FLAG));
  EXPECT_EQ(o.wan.size(), 1u);
}

// A burst in which a new flow evicts an embryonic one: the packets after it in the same burst
// look their flows up again (the bulk lookup's slots may be stale), and an established
// user's segment is forwarded, not dropped as tcp_no_flow.
TEST_F(NfTest, AnEvictionInABurstKeepsTheBurstsEstablishedFlows) {
  cfg_.evict_embryonic_pct = 50;
  cfg_.max_sessions_per_host = 0;
  build(cfg_, 64);
  std::vector<uint16_t> sports;
  for (uint16_t i = 0; i < 4; i++) {
    sports.push_back(static_cast<uint16_t>(44000 + i));
    handshake(sports.back());
  }
  // Embryonic UDP flows (no reply) up to the eviction threshold.
  for (uint16_t i = 0; flows_->size() < 32; i++)
    ASSERT_EQ(run(kPortInside, test::udp_frame(from_lan(kMacH2), H2, static_cast<uint16_t>(30000 + i), R, 53)).wan.size(),
              1u);
  const uint64_t evicted = nf_->counters().flows_evicted.load();
  std::vector<Frame> burst;
  burst.push_back(test::udp_frame(from_lan(kMacH2), H2, 39999, R, 53));  // new: evicts one
  for (uint16_t sp : sports) burst.push_back(test::tcp_frame(from_lan(), H, sp, R, 80, RTE_TCP_ACK_FLAG, 10));
  const Drops before = drops();
  Out o = run(kPortInside, burst);
  EXPECT_EQ(nf_->counters().flows_evicted.load(), evicted + 1) << "the burst's first packet evicted a flow";
  EXPECT_EQ(o.wan.size(), burst.size()) << "every established user's segment was forwarded";
  EXPECT_EQ(drops(), before) << "nothing dropped";
}

// The same with UDP, whose known flows take the fast path: the burst's candidates were taken
// before its first packet evicted the oldest embryonic flow, so the evicted flow's candidate
// still names the freed slot. Its packet must be looked up again, miss, and make the flow
// anew (evicting the next oldest), not be translated through the freed record.
TEST_F(NfTest, AnEvictionInABurstIsSeenByTheBurstsUdpPackets) {
  cfg_.evict_embryonic_pct = 50;
  cfg_.max_sessions_per_host = 0;
  build(cfg_, 64);
  for (uint16_t i = 0; flows_->size() < 32; i++)
    ASSERT_EQ(run(kPortInside, test::udp_frame(from_lan(kMacH2), H2, static_cast<uint16_t>(30000 + i), R, 53)).wan.size(),
              1u);
  ASSERT_GE(lookup_in(H2, 30000, R, 53, IPPROTO_UDP), 0);  // the oldest embryonic flow: the first to go
  const uint64_t evicted = nf_->counters().flows_evicted.load();
  const uint64_t created = nf_->counters().flows_created.load();
  std::vector<Frame> burst;
  burst.push_back(test::udp_frame(from_lan(kMacH2), H2, 39999, R, 53));  // new: evicts 30000
  burst.push_back(test::udp_frame(from_lan(kMacH2), H2, 30000, R, 53));
  Out o = run(kPortInside, burst);
  EXPECT_EQ(o.wan.size(), 2u);
  EXPECT_EQ(nf_->counters().flows_created.load(), created + 2) << "the evicted flow's packet made it anew";
  EXPECT_EQ(nf_->counters().flows_evicted.load(), evicted + 2);
  EXPECT_GE(lookup_in(H2, 30000, R, 53, IPPROTO_UDP), 0);
  EXPECT_LT(lookup_in(H2, 30001, R, 53, IPPROTO_UDP), 0) << "the next oldest made room for it";
}

/* Two UDP flows whose keys hash alike share a bucket and a signature, so the second's
 * candidate names the first's record. The fast path must see that the record is not its key's
 * and make the second flow, not translate its packet as the first's. The gateway, the next
 * hop of both, is in the next-hop cache from the first run on, so the second packet meets
 * the call-free loop.
 * The two differ in their addresses only. CRC-32 is linear, so two keys whose difference lies
 * within a span of 32 bits never collide (two with the same addresses differ within their
 * ports, carries of the secret's addition aside): the search draws LAN hosts and destinations
 * at random, 39 bits of them, and finds a pair in about 2^16 keys (a birthday search on 32
 * bits). Two rounds, each with its own table secret, seeded so that a failure repeats. */
TEST_F(NfTest, AFastPacketWhoseCandidateIsAnotherFlowIsNotTranslatedAsThatFlow) {
  struct Ends {
    uint32_t s, d;
  };
  const uint16_t sp = 40000, dp = 53;
  for (int round = 0; round < 2; round++) {
    NfConfig c = default_config();
    c.gateway_out = ip4("198.18.2.254");
    rte_srand(20261206 + round);  // the table's secret (rte_rand at its creation)
    build(c);
    const rte_ether_addr gw = mac(0x02, 0, 0, 0, 0x02, 0xfe);
    arp_->learn(c.gateway_out, gw, kPortOutside, now_);
    std::mt19937 rng(round);
    std::unordered_map<uint32_t, Ends> seen;
    Ends a{}, b{};
    bool found = false;
    for (uint32_t i = 0; i < (1u << 21) && !found; i++) {
      // A host 198.18.1.2-251, to 1.0.0.0-126.255.255.255 (off-link: through the gateway).
      const uint32_t host = (198u << 24 | 18u << 16 | 1u << 8) + 2 + rng() % 250;
      const uint32_t dst = (1 + rng() % 126) << 24 | (rng() & 0xffffff);
      const Ends e{rte_cpu_to_be_32(host), rte_cpu_to_be_32(dst)};
      FlowKey k{};
      k.src_ip = e.s;
      k.dst_ip = e.d;
      k.src_port = rte_cpu_to_be_16(sp);
      k.dst_port = rte_cpu_to_be_16(dp);
      k.proto = IPPROTO_UDP;
      k.dir = kPortInside;
      auto [it, fresh] = seen.emplace(flows_->hash_prefetch(k), e);
      if (!fresh && (it->second.s != e.s || it->second.d != e.d)) a = it->second, b = e, found = true;
    }
    ASSERT_TRUE(found);
    SCOPED_TRACE("round " + std::to_string(round) + ": " + test::ip4str(a.s) + " -> " + test::ip4str(a.d) +
                 " and " + test::ip4str(b.s) + " -> " + test::ip4str(b.d));
    ASSERT_EQ(run(kPortInside, test::udp_frame(from_lan(), a.s, sp, a.d, dp)).wan.size(), 1u);
    const int slot_a = lookup_in(a.s, sp, a.d, dp, IPPROTO_UDP);
    ASSERT_GE(slot_a, 0);
    const uint64_t created = nf_->counters().flows_created.load();
    Out o = run(kPortInside, {test::udp_frame(from_lan(), a.s, sp, a.d, dp),
                              test::udp_frame(from_lan(), b.s, sp, b.d, dp)});
    ASSERT_EQ(o.wan.size(), 2u);
    EXPECT_EQ(nf_->counters().flows_created.load(), created + 1) << "the second key made its own flow";
    const int slot_b = lookup_in(b.s, sp, b.d, dp, IPPROTO_UDP);
    ASSERT_GE(slot_b, 0);
    ASSERT_NE(slot_b, slot_a);
    expect_frame(o.wan[1], kVmacOut, gw, st(slot_b).nat_ip, b.d, 63, "the second flow's packet");
    EXPECT_EQ(test::udp_of(o.wan[1])->src_port, st(slot_b).nat_port) << "translated by its own flow";
    EXPECT_EQ(test::udp_of(o.wan[1])->dst_port, rte_cpu_to_be_16(dp));
  }
}

// ------------------------------------------------------------------ TCP

TEST_F(NfTest, TcpSimultaneousOpen) {
  Out o = run(kPortInside, test::tcp_frame(from_lan(), H, 48000, R, 5000, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.wan.size(), 1u);
  const uint16_t nat = rte_be_to_cpu_16(test::tcp_of(o.wan[0])->src_port);
  o = run(kPortOutside, test::tcp_frame(from_wan(), R, 5000, WAN_VIP, nat, RTE_TCP_SYN_FLAG));
  ASSERT_EQ(o.lan.size(), 1u) << "the peer's SYN (simultaneous open) was dropped";
  o = run(kPortInside, test::tcp_frame(from_lan(), H, 48000, R, 5000, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG));
  ASSERT_EQ(o.wan.size(), 1u);
  o = run(kPortOutside, test::tcp_frame(from_wan(), R, 5000, WAN_VIP, nat, RTE_TCP_ACK_FLAG));
  ASSERT_EQ(o.lan.size(), 1u);
  int slot = lookup_in(H, 48000, R, 5000, IPPROTO_TCP);
  ASSERT_GE(slot, 0);
  EXPECT_EQ(st(slot).tcp_state, static_cast<uint8_t>(TcpState::ESTABLISHED));
}

TEST_F(NfTest, TcpRstOutsideTheWindowDoesNotClose) {
  for (bool liberal : {true, false}) {
    SCOPED_TRACE(liberal ? "liberal" : "strict");
    cfg_.tcp_liberal = liberal;
    build(cfg_);
    const uint16_t nat = handshake(49000);
    ASSERT_NE(nat, 0);
    int slot = lookup_in(H, 49000, R, 80, IPPROTO_TCP);
    ASSERT_GE(slot, 0);
    // The remote's stream is at 1001 (its SYN+ACK); a blind RST far away is not honoured.
    Frame rst = test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_RST_FLAG);
    test::tcp_of(rst)->sent_seq = rte_cpu_to_be_32(1000 + (1u << 30));
    test::fix_csums(rst);
    Drops before = drops();
    Out o = run(kPortOutside, rst);
    EXPECT_EQ(st(slot).tcp_state, static_cast<uint8_t>(TcpState::ESTABLISHED)) << "blind RST closed the flow";
    EXPECT_EQ(nf_->counters().tcp_rst_ignored.load(), 1u);
    if (liberal)
      EXPECT_EQ(o.lan.size(), 1u) << "liberal: forwarded, the host checks it too";
    else
      expect_one_drop(before, DropReason::TCP_OUT_OF_WINDOW, "strict: dropped");
    // An in-window RST closes, and the state is kept for the transitory time.
    Frame ok = test::tcp_frame(from_wan(), R, 80, WAN_VIP, nat, RTE_TCP_RST_FLAG);
    test::tcp_of(ok)->sent_seq = rte_cpu_to_be_32(1001);
    test::fix_csums(ok);
    o = run(kPortOutside, ok);
    EXPECT_EQ(o.lan.size(), 1u);
    EXPECT_EQ(st(slot).tcp_state, static_cast<uint8_t>(TcpState::CLOSED));
    EXPECT_EQ(nf_->timeout_s(st(slot)), 240u) << "RFC 7857 §2.2";
  }
}

// ------------------------------------------------------------------ fragments (RFC 4787 REQ-14)

/* Splits a frame's IP payload at the given byte offsets (multiples of 8) into fragments,
 * each with the original IP header, its offset and MF. */
std::vector<Frame> fragments(Frame whole, std::vector<size_t> cuts) {
  const size_t l4 = whole.size() - test::kL4Off;
  cuts.push_back(l4);
  std::vector<Frame> out;
  size_t from = 0;
  for (size_t to : cuts) {
    Frame f(test::kL4Off + (to - from), 0);
    std::memcpy(f.data(), whole.data(), test::kL4Off);
    std::memcpy(f.data() + test::kL4Off, whole.data() + test::kL4Off + from, to - from);
    auto *ip = test::ip_of(f);
    ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(sizeof(rte_ipv4_hdr) + (to - from)));
    ip->fragment_offset = rte_cpu_to_be_16(static_cast<uint16_t>((from / 8) | (to < l4 ? RTE_IPV4_HDR_MF_FLAG : 0)));
    ip->hdr_checksum = test::ipv4_csum(ip);
    out.push_back(f);
    from = to;
  }
  return out;
}

TEST_F(NfTest, FragmentsFollowTheFirstInAnyOrder) {
  Frame whole = test::udp_frame(from_lan(), H, 5000, R, 53, 4000 - 28);
  auto fr = fragments(whole, {1480, 2960});
  ASSERT_EQ(fr.size(), 3u);
  // The last comes first: it waits.
  Out o = run(kPortInside, fr[2]);
  EXPECT_TRUE(o.wan.empty()) << "a fragment went out before the first";
  // The first: translated, then the one that waited.
  o = run(kPortInside, fr[0]);
  ASSERT_EQ(o.wan.size(), 2u);
  std::vector<Frame> out = o.wan;
  // The middle one, after: at once.
  o = run(kPortInside, fr[1]);
  ASSERT_EQ(o.wan.size(), 1u);
  out.push_back(o.wan[0]);
  const uint16_t nat = test::udp_of(out[0])->src_port;
  std::map<unsigned, Frame *> by_offset;
  for (auto &f : out) {
    EXPECT_EQ(test::ip_of(f)->src_addr, WAN_VIP);
    EXPECT_EQ(test::ip_of(f)->dst_addr, R);
    EXPECT_EQ(test::ip_of(f)->time_to_live, 63);
    EXPECT_EQ(test::ip_of(f)->packet_id, test::ip_of(whole)->packet_id) << "identification kept";
    EXPECT_TRUE(test::ip_csum_ok(f));
    by_offset[(rte_be_to_cpu_16(test::ip_of(f)->fragment_offset) & RTE_IPV4_HDR_OFFSET_MASK) * 8u] = &f;
  }
  ASSERT_EQ(by_offset.size(), 3u);
  EXPECT_EQ(by_offset.begin()->second, &out[0]) << "the first fragment left first";
  // Reassembled, the datagram's UDP checksum verifies: the first fragment's checksum was
  // updated for the new address and port, and it covers the whole datagram.
  Frame joined(out[0].begin(), out[0].begin() + test::kL4Off);
  for (auto &[off, f] : by_offset) joined.insert(joined.end(), f->begin() + test::kL4Off, f->end());
  test::ip_of(joined)->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(joined.size() - test::kEthLen));
  test::ip_of(joined)->fragment_offset = 0;
  EXPECT_EQ(joined.size(), whole.size());
  EXPECT_TRUE(test::l4_csum_ok(joined)) << "UDP checksum over the reassembled datagram";
  EXPECT_EQ(nf_->counters().fragments_forwarded.load(), 2u);
  // A fragmented reply comes back to the host the same way.
  Frame reply = test::udp_frame(from_wan(), R, 53, WAN_VIP, rte_be_to_cpu_16(nat), 3000);
  auto rf = fragments(reply, {1480, 2960});
  o = run(kPortOutside, {rf[2], rf[1]});
  EXPECT_TRUE(o.lan.empty());
  o = run(kPortOutside, rf[0]);
  ASSERT_EQ(o.lan.size(), 3u);
  for (auto &f : o.lan) {
    EXPECT_EQ(test::ip_of(f)->dst_addr, H);
    EXPECT_TRUE(test::ip_csum_ok(f));
  }
  EXPECT_EQ(test::udp_of(o.lan[0])->dst_port, rte_cpu_to_be_16(5000));
}

TEST_F(NfTest, FragmentsOfADroppedFirstAndTimeouts) {
  // An unsolicited fragmented datagram from the WAN: the first is refused, so are the rest.
  Frame whole = test::udp_frame(from_wan(), R, 53, WAN_VIP, 30000, 3000);
  auto fr = fragments(whole, {1480});
  run(kPortOutside, fr[0]);
  Drops before = drops();
  Out o = run(kPortOutside, fr[1]);
  EXPECT_TRUE(o.lan.empty());
  expect_one_drop(before, DropReason::FRAG_OF_DROPPED, "follower of a refused first fragment");
  // A follower whose first never comes: dropped at the timeout.
  Frame lone = test::udp_frame(from_lan(), H, 6000, R, 53, 3000);
  test::ip_of(lone)->packet_id = rte_cpu_to_be_16(0x4444);
  test::fix_csums(lone);
  auto lf = fragments(lone, {1480});
  run(kPortInside, lf[1]);
  before = drops();
  nf_->housekeeping(now_ + uint64_t(cfg_.fragment_timeout_ms) * hz_ / 1000 / 2);
  EXPECT_EQ(drops(), before) << "not yet";
  nf_->housekeeping(now_ + uint64_t(cfg_.fragment_timeout_ms) * hz_ / 1000 * 2);
  expect_one_drop(before, DropReason::FRAG_TIMEOUT, "first fragment never came");
  // Then the first alone goes through (a new context).
  o = run(kPortInside, lf[0]);
  EXPECT_EQ(o.wan.size(), 1u);
}

TEST_F(NfTest, FragmentBuffersAreBounded) {
  // One datagram: 16 early fragments wait, the 17th is refused.
  Frame whole = test::udp_frame(from_lan(), H, 7000, R, 53, 8 * 200);
  std::vector<size_t> cuts;
  for (size_t c = 80; c < 8 * 200; c += 80) cuts.push_back(c);
  auto fr = fragments(whole, cuts);
  ASSERT_GE(fr.size(), 18u);
  Drops before = drops();
  for (size_t i = 1; i <= 17; i++) run(kPortInside, fr[i]);
  expect_one_drop(before, DropReason::FRAG_BUFFER_FULL, "17th early fragment");
  Out o = run(kPortInside, fr[0]);
  EXPECT_EQ(o.wan.size(), 17u) << "the first and the 16 that waited";
  // Many datagrams whose firsts never come: the contexts and the global buffer run out.
  before = drops();
  for (uint16_t id = 1; id <= 1100; id++) {
    Frame f = test::udp_frame(from_lan(), H, 8000, R, 53, 64);
    test::ip_of(f)->packet_id = rte_cpu_to_be_16(id);
    test::fix_csums(f);
    run(kPortInside, fragments(f, {40})[1]);
  }
  const Drops after = drops();
  const auto d = [&](DropReason r) { return after[unsigned(r)] - before[unsigned(r)]; };
  EXPECT_GE(d(DropReason::FRAG_TABLE_FULL), 1100u - kFragContexts) << "more datagrams than contexts";
  EXPECT_GT(d(DropReason::FRAG_BUFFER_FULL), 0u) << "the global buffer bound";
  nf_->housekeeping(now_ + 10 * hz_);
  const Drops expired = drops();
  EXPECT_EQ(expired[unsigned(DropReason::FRAG_TIMEOUT)] - after[unsigned(DropReason::FRAG_TIMEOUT)],
            1100u - d(DropReason::FRAG_TABLE_FULL) - d(DropReason::FRAG_BUFFER_FULL))
      << "every waiting fragment is freed at the timeout";
}

TEST_F(NfTest, DefaultTimersAreTheRfcs) {
  Timeouts t;
  EXPECT_EQ(t.udp, 300u);
  EXPECT_GE(t.udp, kUdpTimeoutMin);
  EXPECT_EQ(t.tcp_established, 7440u);
  EXPECT_EQ(t.tcp_syn, 240u);
  EXPECT_EQ(t.tcp_fin, 240u);
  EXPECT_EQ(t.tcp_time_wait, 240u);
  EXPECT_EQ(t.icmp, 60u);
}

/* The fast path (fast_parse, fast_udp) takes only packets the full classification would
 * pass, and does to them exactly what the general path does. The same random bursts, of
 * good and damaged TCP and UDP frames both ways (replies to the mappings the NF made,
 * hairpins, TTL 0 and 1, bad checksums and lengths, options, fragments, martians,
 * broadcasts, Ethernet padding, packets over the MTU), go through an NF with the fast path
 * and one without, from the same random seed: every frame sent, every drop counter and
 * every flow agree. */
TEST_F(NfTest, FastPathAgreesWithTheGeneralPath) {
  struct Result {
    std::vector<Frame> sent;
    Drops drops{};
    std::vector<std::pair<uint32_t, FlowState>> flows;
    uint64_t fast_forwarded = 0;
  };
  /* Two configurations. Both: a gateway, so off-link destinations (8.8.8.8, 127.0.0.1) are
   * translated; a UDP forward on the VIP beside the TCP one. The first has two pool
   * addresses, so the WAN VIP is not a mapping's address; the second a pool that holds the
   * WAN's broadcast address. WAN sources include the LAN VIP and 127.0.0.1, and LAN hosts
   * reply from the forward's port: flows whose reply direction classify() would refuse. */
  auto run_all = [&](bool fast, bool broadcast_pool) {
    NfConfig c = default_config();
    c.fast_path = fast;
    c.mtu[kPortOutside] = 576;
    c.gateway_out = R;
    const uint32_t P1 = ip4("198.18.2.5"), P2 = broadcast_pool ? ip4("198.18.2.255") : ip4("198.18.2.6");
    c.pool = {P1, P2};
    c.forwards.push_back(PortForward{IPPROTO_UDP, 5353, H, 5353});
    build(c, 4096);
    rte_srand(20261203);
    std::mt19937 rng(7);
    Result res;
    std::vector<std::pair<uint32_t, uint16_t>> nat_udp, nat_tcp;  // outside endpoints seen
    const uint32_t dsts[] = {R, R2, R, R, ip4("8.8.8.8"), WAN_VIP, P1, LAN_VIP, ip4("127.0.0.1")};
    const uint32_t wan_dsts[] = {WAN_VIP, P1, P2, ip4("198.18.2.77")};  // the last is not ours
    const uint32_t wan_srcs[] = {R, R, R2, LAN_VIP, ip4("127.0.0.1"), ip4("8.8.8.8")};
    const uint8_t tcp_flags[] = {RTE_TCP_SYN_FLAG, RTE_TCP_ACK_FLAG, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG,
                                 RTE_TCP_ACK_FLAG | RTE_TCP_PSH_FLAG, RTE_TCP_FIN_FLAG | RTE_TCP_ACK_FLAG,
                                 RTE_TCP_RST_FLAG, 0, RTE_TCP_SYN_FLAG | RTE_TCP_FIN_FLAG};
    for (int burst = 0; burst < 400; burst++) {
      const uint16_t port = rng() % 2 ? kPortInside : kPortOutside;
      std::vector<Frame> frames;
      const unsigned k = 1 + rng() % 32;
      for (unsigned i = 0; i < k; i++) {
        const bool udp = rng() % 5 < 3;
        const size_t payload = rng() % 8 == 0 ? 600 : rng() % 64;
        Frame f;
        if (port == kPortInside) {
          const uint32_t host = rng() % 2 ? H : H2;
          const uint16_t sport = host == H && rng() % 8 == 0 ? 5353 : static_cast<uint16_t>(40000 + rng() % 8);
          const uint32_t dst = dsts[rng() % 9];
          const uint16_t dport = rng() % 3 == 0 ? 8080 : 53;
          f = udp ? test::udp_frame(from_lan(host == H ? kMacH : kMacH2), host, sport, dst, dport, payload, 64,
                                    rng() % 8 != 0)
                  : test::tcp_frame(from_lan(host == H ? kMacH : kMacH2), host, sport, dst, dport,
                                    tcp_flags[rng() % 8], payload);
        } else {
          const uint32_t src = wan_srcs[rng() % 6];
          const auto &known = udp ? nat_udp : nat_tcp;
          uint32_t dst;
          uint16_t dport;
          if (!known.empty() && rng() % 4) {
            std::tie(dst, dport) = known[rng() % known.size()];
          } else {
            dst = wan_dsts[rng() % 4];
            dport = rng() % 2 ? (udp ? 5353 : 8080) : static_cast<uint16_t>(20000 + rng() % 64);
          }
          f = udp ? test::udp_frame(from_wan(src == R ? kMacR : kMacR2), src, 53, dst, dport, payload)
                  : test::tcp_frame(from_wan(src == R ? kMacR : kMacR2), src, 8080, dst, dport,
                                    tcp_flags[rng() % 8], payload);
        }
        rte_ipv4_hdr *ip = test::ip_of(f);
        bool fix = true;
        switch (rng() % 24) {
          case 0: ip->time_to_live = 1; break;
          case 1: ip->time_to_live = 0; break;
          case 2: fix = false; ip->hdr_checksum ^= 0x0101; break;
          case 3: ip->version_ihl = 0x46; break;
          case 4: ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG); break;
          case 5: ip->fragment_offset = rte_cpu_to_be_16(3); break;
          case 6: ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(f.size())); break;  // too long
          case 7: f.resize(f.size() + 1 + rng() % 20, 0xee); break;                              // padding
          case 8: ip->total_length = rte_cpu_to_be_16(12); break;
          case 9: if (udp) test::udp_of(f)->dgram_len = rte_cpu_to_be_16(4); break;
          case 10: if (udp) test::udp_of(f)->dgram_len = rte_cpu_to_be_16(2000); break;
          case 11: if (!udp) test::tcp_of(f)->data_off = 0x40; break;
          case 12: ip->src_addr = ip4("127.0.0.1"); break;
          case 13: ip->dst_addr = ip4("198.18.1.255"); break;
          case 14: ip->dst_addr = ip4("224.0.0.1"); break;
          case 15: ip->src_addr = ip4("198.18.2.77"); break;  // spoofed on the LAN
          case 16: ip->version_ihl = 0x65; break;
          case 17: ip->dst_addr = ip4("198.18.1.20"); break;  // LAN to LAN
          case 18: ip->fragment_offset = 0; break;             // DF clear
          case 19: ip->src_addr = ip4("240.1.2.3"); break;     // class E: not martian
          case 20:  // a UDP length short of the payload: legal, the general path's (fast_parse)
            if (udp && payload >= 2)
              test::udp_of(f)->dgram_len = rte_cpu_to_be_16(static_cast<uint16_t>(8 + payload - 2));
            break;
          default: break;
        }
        if (fix) test::fix_csums(f);
        frames.push_back(f);
      }
      Out o = run(port, frames);
      for (auto &f : o.wan) {
        if (test::ip_of(f)->next_proto_id == IPPROTO_UDP)
          nat_udp.push_back({uint32_t(test::ip_of(f)->src_addr), rte_be_to_cpu_16(test::udp_of(f)->src_port)});
        else if (test::ip_of(f)->next_proto_id == IPPROTO_TCP)
          nat_tcp.push_back({uint32_t(test::ip_of(f)->src_addr), rte_be_to_cpu_16(test::tcp_of(f)->src_port)});
        res.sent.push_back(f);
      }
      for (auto &f : o.lan) res.sent.push_back(f);
    }
    res.drops = drops();
    res.fast_forwarded = nf_->counters().fast_forwarded.load();
    flows_->for_each([&](uint32_t slot, const FlowRecord &r) { res.flows.push_back({slot, r.st}); });
    return res;
  };
  for (const bool broadcast_pool : {false, true}) {
    SCOPED_TRACE(broadcast_pool ? "a pool with the WAN's broadcast address" : "a pool of two addresses");
    const Result general = run_all(false, broadcast_pool);
    const Result fast = run_all(true, broadcast_pool);
    ASSERT_EQ(fast.sent.size(), general.sent.size());
    for (size_t i = 0; i < fast.sent.size(); i++) EXPECT_EQ(fast.sent[i], general.sent[i]) << "frame " << i;
    for (unsigned i = 0; i < kDropReasonCount; i++)
      EXPECT_EQ(fast.drops[i], general.drops[i]) << drop_reason_label(static_cast<DropReason>(i));
    ASSERT_EQ(fast.flows.size(), general.flows.size());
    for (size_t i = 0; i < fast.flows.size(); i++) {
      EXPECT_EQ(fast.flows[i].first, general.flows[i].first);
      EXPECT_TRUE(fast.flows[i].second == general.flows[i].second) << "flow " << i;
    }
    // The comparison means something: traffic went through, and many kinds of drop happened.
    EXPECT_GT(fast.sent.size(), 500u);
    EXPECT_EQ(general.fast_forwarded, 0u);
    // With a broadcast address in the pool the WAN side never takes the fast path (fast_port_ok_).
    EXPECT_GT(fast.fast_forwarded, broadcast_pool ? 20u : 300u) << "the fast path hardly ran";
    EXPECT_GT(fast.flows.size(), 20u);
    unsigned kinds = 0;
    for (unsigned i = 0; i < kDropReasonCount; i++) kinds += fast.drops[i] != 0;
    EXPECT_GE(kinds, 12u);
  }
}

/* The fast test reads only the remote end's first octet: a LAN source is known good from the
 * LAN's own (fast_port_ok_). So a LAN on a network whose first octet is bad (here 127/8, a
 * configuration only a test makes) keeps the fast test off that port, and its sources are
 * refused by classify() as martians. Without that, the fast test would take them (an
 * outside network's case cannot be told apart: classify() tests a destination's first octet
 * only for multicast, which the pool's own test keeps out). */
TEST_F(NfTest, TheFastTestIsOffForALanWhoseFirstOctetIsBad) {
  NfConfig c = default_config();
  c.fast_path = true;
  c.vip[kPortInside] = ip4("127.0.0.1");
  c.prefix_len[kPortInside] = 8;
  c.gateway_out = R;
  build(c, 1024);
  const Drops before = drops();
  std::vector<Frame> frames;
  for (uint16_t sport = 40000; sport < 40004; sport++)
    frames.push_back(test::udp_frame(from_lan(), ip4("127.0.0.5"), sport, ip4("8.8.8.8"), 53, 32));
  Out o = run(kPortInside, frames);
  EXPECT_TRUE(o.wan.empty());
  EXPECT_EQ(drops()[static_cast<unsigned>(DropReason::BAD_SOURCE)],
            before[static_cast<unsigned>(DropReason::BAD_SOURCE)] + 4);
  EXPECT_EQ(nf_->counters().fast_forwarded.load(), 0u);
}

}  // namespace
}  // namespace ftpair::dp
