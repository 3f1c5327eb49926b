// Many workers (dataplane/shards.h, dataplane/port_pool.h): each worker has its own flow
// table, NAT and ARP table, and they share the port pool. Packets enter on ring ports with
// one queue per worker, on whichever queue the test picks (the lab's PMDs cannot steer by
// RSS), and go through the real worker loop: the steering, the hand-off rings and the NF.
#include "dataplane/shards.h"

#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <chrono>
#include <thread>
#include <tuple>
#include <unistd.h>
#include <vector>

#include <gtest/gtest.h>
#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_thash.h>

#include "dataplane/port.h"
#include "dataplane/return_rss.h"
#include "dataplane/worker.h"
#include "tests/unit/dataplane/pktgen.h"

namespace ftpair::dp {
namespace {

using test::Frame;
using test::ip4;
using test::mac;

const rte_ether_addr kVmacIn = mac(0x00, 0x00, 0x5e, 0x00, 0x01, 0x01);
const rte_ether_addr kVmacOut = mac(0x00, 0x00, 0x5e, 0x00, 0x01, 0x02);
const rte_ether_addr kMacGw = mac(0x02, 0, 0, 0, 0x02, 0x0a);  // WAN gateway 198.18.2.10

TEST(PortPool, EachPortIsClaimedOnceAcrossThreads) {
  PortPool pool({ip4("198.18.2.1")});
  std::vector<uint16_t> got[2];
  std::vector<std::thread> t;
  for (int k = 0; k < 2; k++)
    t.emplace_back([&, k] {
      for (uint32_t p = 1024; p < 65536; p++)
        if (pool.claim(0, 1, static_cast<uint16_t>(p))) got[k].push_back(static_cast<uint16_t>(p));
    });
  for (auto &th : t) th.join();
  EXPECT_EQ(got[0].size() + got[1].size(), 65536u - 1024u);
  std::set<uint16_t> all(got[0].begin(), got[0].end());
  for (uint16_t p : got[1]) EXPECT_TRUE(all.insert(p).second) << "port " << p << " claimed twice";
  EXPECT_FALSE(pool.claim(0, 1, 5000));
  pool.release(0, 1, 5000);
  EXPECT_TRUE(pool.claim(0, 1, 5000));
  EXPECT_TRUE(pool.claim(0, 0, 5000)) << "protocols have their own ports";
}

TEST(Shards, RefusesAWorkerCountOutOfRange) {
  std::string err;
  auto pool = std::make_shared<PortPool>(std::vector<uint32_t>{ip4("198.18.2.1")});
  EXPECT_EQ(Shards::create(0, pool, 0, {}, 1024, &err), nullptr);
  EXPECT_NE(err.find("worker count 0"), std::string::npos) << err;
  EXPECT_EQ(Shards::create(kMaxWorkers + 1, pool, 0, {}, 1024, &err), nullptr);
  EXPECT_EQ(Shards::create(2, pool, 0, {}, 1000, &err), nullptr);
  EXPECT_NE(err.find("power of two"), std::string::npos) << err;
}

uint32_t lan_host(unsigned i) { return rte_cpu_to_be_32((198u << 24) | (18u << 16) | (1u << 8) | (2 + i % 250)); }
uint32_t remote(unsigned i) { return rte_cpu_to_be_32((198u << 24) | (19u << 16) | ((i / 250) << 8) | (1 + i % 250)); }

// N workers over two ring ports with N queues each, driven by hand (one thread) or by threads.
class ShardedNat {
 public:
  explicit ShardedNat(unsigned n, Filtering filtering = Filtering::ADDRESS, std::vector<uint32_t> nat_pool = {},
                      double arp_timeout_s = 300, uint16_t port_min = 20000, uint16_t port_max = 60999)
      : n_(n) {
    cfg_.filtering = filtering;
    cfg_.pool = nat_pool;
    cfg_.vip[kPortInside] = ip4("198.18.1.1");
    cfg_.vip[kPortOutside] = ip4("198.18.2.1");
    cfg_.prefix_len[kPortInside] = 24;
    cfg_.prefix_len[kPortOutside] = 24;
    cfg_.vmac[kPortInside] = kVmacIn;
    cfg_.vmac[kPortOutside] = kVmacOut;
    cfg_.own_mac[kPortInside] = mac(0x02, 0xaa, 0, 0, 0, 0x01);
    cfg_.own_mac[kPortOutside] = mac(0x02, 0xaa, 0, 0, 0, 0x02);
    cfg_.gateway_out = ip4("198.18.2.10");
    cfg_.nat_port_min = port_min;
    cfg_.nat_port_max = port_max;
    cfg_.forwards.push_back(PortForward{IPPROTO_TCP, 8080, ip4("198.18.1.10"), 8080});
    lan_ = std::make_unique<test::RingPort>(4096, n);
    wan_ = std::make_unique<test::RingPort>(4096, n);
    AgentConfig ac;
    ac.nb_ports = 2;
    ac.port_ids[kPortInside] = lan_->id();
    ac.port_ids[kPortOutside] = wan_->id();
    ac.nb_workers = static_cast<uint16_t>(n);
    agent_ = std::make_unique<InterfaceAgent>(ac);
    auto pool = std::make_shared<PortPool>(cfg_.nat_addresses());
    std::string err;
    shards_ = Shards::create(n, pool, cfg_.vip[kPortOutside], cfg_.forwards, 1024, &err);
    EXPECT_TRUE(shards_) << err;
    hz_ = rte_get_tsc_hz();
    now_ = rte_rdtsc();
    for (unsigned w = 0; w < n; w++) {
      FlowTableConfig fc;
      fc.capacity = 4096;
      fc.name = test::unique_name("sh_flows");
      flows_.push_back(FlowTable::create(fc, &err));
      EXPECT_TRUE(flows_.back()) << err;
      flows_.back()->share_port_pool(pool);
      arp_.push_back(std::make_unique<ArpTable>(4096, static_cast<uint64_t>(arp_timeout_s * double(hz_))));
      arp_.back()->learn(cfg_.gateway_out, kMacGw, kPortOutside, now_);
      nf_.push_back(std::make_unique<Nat44>(cfg_, *flows_.back(), *arp_.back(), *agent_, test::test_pool(), w));
      nf_.back()->set_shards(shards_.get());
    }
    for (unsigned w = 0; w < n; w++) {
      auto c = std::make_unique<WorkerContext>();
      c->id = w;
      c->agent = agent_.get();
      c->nf = nf_[w].get();
      c->flows = flows_[w].get();
      c->shards = shards_.get();
      c->quit = &quit_;
      c->idle_sleep_max_us = 50;
      ctx_.push_back(std::move(c));
    }
  }
  ~ShardedNat() {
    stop();
    for (auto &nf : nf_) nf->housekeeping(now_ + 1000 * hz_);
    for (unsigned w = 0; w < n_; w++) agent_->flush(w);
    nf_.clear();
    shards_.reset();  // frees what waits in the rings
    agent_.reset();
    lan_.reset();
    wan_.reset();
  }

  // Every worker's loop, by hand, until no worker has anything left to do.
  void settle() {
    for (int round = 0; round < 64; round++) {
      uint32_t work = 0;
      for (auto &c : ctx_) work += worker_iteration(*c);
      if (work == 0) return;
    }
    ADD_FAILURE() << "the workers did not settle";
  }
  void start() {
    quit_.store(false);
    for (auto &c : ctx_) threads_.emplace_back([p = c.get()] { worker_main(p); });
  }
  void stop() {
    quit_.store(true);
    for (auto &t : threads_) t.join();
    threads_.clear();
  }

  /* The outside port's RSS programmed as ftpaird does on a PMD that has it (port.cc): kRssKey,
   * entries entries of queue i % workers. Before the workers start. */
  void enable_rss(unsigned entries) {
    std::vector<uint16_t> reta(entries), queue_worker(n_);
    for (unsigned i = 0; i < entries; i++) reta[i] = static_cast<uint16_t>(i % n_);
    for (unsigned w = 0; w < n_; w++) queue_worker[w] = static_cast<uint16_t>(w);
    std::string err;
    rss_ = ReturnRss::create(kRssKey, sizeof(kRssKey), reta, queue_worker, &err);
    ASSERT_TRUE(rss_) << err;
    rss_entries_ = entries;
    for (auto &nf : nf_) nf->set_return_rss(rss_.get());
  }
  /* The queue a NIC with that RSS puts a TCP/UDP frame on: the Toeplitz hash of its 4-tuple
   * (rte_softrss over DPDK's rte_ipv4_tuple, not ReturnRss's code), then the table. The ring
   * PMD the tests use does not hash, so the test delivers each frame there itself. */
  unsigned nic_queue(const Frame &f) const {
    const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(f.data() + test::kIpOff);
    const auto *l4 = reinterpret_cast<const uint16_t *>(f.data() + test::kL4Off);
    rte_ipv4_tuple t{};
    t.src_addr = rte_be_to_cpu_32(ip->src_addr);
    t.dst_addr = rte_be_to_cpu_32(ip->dst_addr);
    t.sport = rte_be_to_cpu_16(l4[0]);
    t.dport = rte_be_to_cpu_16(l4[1]);
    const uint32_t h = rte_softrss(reinterpret_cast<uint32_t *>(&t), RTE_THASH_V4_L4_LEN, kRssKey);
    return (h & (rss_entries_ - 1)) % n_;
  }
  uint64_t rss_picked() const {
    uint64_t x = 0;
    for (auto &nf : nf_) x += nf->counters().rss_ports_steered.load() + nf->counters().rss_ports_unsteered.load();
    return x;
  }
  uint64_t rss_unsteered() const {
    uint64_t x = 0;
    for (auto &nf : nf_) x += nf->counters().rss_ports_unsteered.load();
    return x;
  }

  uint64_t handoffs() const {
    uint64_t s = 0;
    for (unsigned w = 0; w < n_; w++) s += shards_->counters(w).handoffs.load();
    return s;
  }
  uint64_t flows_on(unsigned w) const { return flows_[w]->size(); }
  // The first LAN host (in lan_host order) that worker w owns, or 0.
  uint32_t host_of(unsigned w) const {
    for (unsigned i = 0; i < 250; i++)
      if (shards_->worker_of_host(lan_host(i)) == w) return lan_host(i);
    return 0;
  }
  // host opens a UDP mapping with a datagram to a remote, received on queue q: its outside
  // port (host order), or 0 when the datagram did not leave on the WAN.
  uint16_t udp_mapping(uint32_t host, uint16_t sport, unsigned q) {
    if (!lan_->inject(test::to_mbuf(test::udp_frame(from_lan(host), host, sport, remote(1), 53)), q)) return 0;
    settle();
    auto wan = wan_->take_frames();
    if (wan.size() != 1 || test::eth_of(wan[0])->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) return 0;
    return rte_be_to_cpu_16(test::udp_of(wan[0])->src_port);
  }

  test::L2 from_lan(uint32_t host) const {
    return test::L2{mac(0x02, 0, 0, 0, 0x01, static_cast<uint8_t>(rte_be_to_cpu_32(host) & 0xff)), kVmacIn};
  }
  test::L2 from_wan() const { return test::L2{kMacGw, kVmacOut}; }

  unsigned n_;
  NfConfig cfg_;
  std::unique_ptr<test::RingPort> lan_, wan_;
  std::unique_ptr<InterfaceAgent> agent_;
  std::unique_ptr<Shards> shards_;
  std::vector<std::unique_ptr<FlowTable>> flows_;
  std::vector<std::unique_ptr<ArpTable>> arp_;
  std::unique_ptr<ReturnRss> rss_;
  unsigned rss_entries_ = 0;
  std::vector<std::unique_ptr<Nat44>> nf_;
  std::vector<std::unique_ptr<WorkerContext>> ctx_;
  std::atomic<bool> quit_{false};
  std::vector<std::thread> threads_;
  uint64_t hz_ = 0, now_ = 0;
};


/* The property: whichever queue a packet arrives on, a flow's packets both ways (and the ICMP
 * errors about it) are handled by the worker that owns the LAN host, and a packet that arrived
 * elsewhere is counted as a hand-off, exactly once. */
class ShardsProperty : public ::testing::TestWithParam<unsigned> {};

TEST_P(ShardsProperty, EveryFlowIsHandledByItsOwnerBothWays) {
  const unsigned n = GetParam();
  ShardedNat s(n);
  std::mt19937 rng(0x5eed + n);
  uint64_t expect_handoffs = 0;
  std::vector<uint64_t> expect_flows(n, 0);
  for (unsigned i = 0; i < 300; i++) {
    const uint32_t host = lan_host(rng() % 1000), rem = remote(rng() % 2000);
    const uint16_t sport = static_cast<uint16_t>(1024 + rng() % 60000);
    const unsigned kind = rng() % 3;  // TCP SYN, UDP, ICMP echo
    Frame out = kind == 0   ? test::tcp_frame(s.from_lan(host), host, sport, rem, 443, RTE_TCP_SYN_FLAG)
                : kind == 1 ? test::udp_frame(s.from_lan(host), host, sport, rem, 53)
                            : test::icmp_frame(s.from_lan(host), host, rem, RTE_IP_ICMP_ECHO_REQUEST, sport);
    const unsigned owner = s.shards_->worker_of_host(host);
    // A flow already made by an earlier iteration (same host, port and remote) adds none.
    const size_t before = s.flows_on(owner);
    const unsigned q1 = rng() % n;
    expect_handoffs += q1 != owner;
    ASSERT_TRUE(s.lan_->inject(test::to_mbuf(out), q1));
    s.settle();
    auto wan = s.wan_->take_frames();
    ASSERT_EQ(wan.size(), 1u) << "flow " << i;
    EXPECT_EQ(test::ip_of(wan[0])->src_addr, s.cfg_.vip[kPortOutside]);
    const size_t made = s.flows_on(owner) - before;
    EXPECT_LE(made, 1u) << "flow " << i;
    expect_flows[owner] += made;
    for (unsigned w = 0; w < n; w++) EXPECT_EQ(s.flows_on(w), expect_flows[w]) << "flow " << i << " worker " << w;

    // The reply, on a random queue.
    Frame back;
    uint16_t nat_port;
    if (kind == 0) {
      nat_port = rte_be_to_cpu_16(test::tcp_of(wan[0])->src_port);
      back = test::tcp_frame(s.from_wan(), rem, 443, s.cfg_.vip[kPortOutside], nat_port,
                             RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG);
    } else if (kind == 1) {
      nat_port = rte_be_to_cpu_16(test::udp_of(wan[0])->src_port);
      back = test::udp_frame(s.from_wan(), rem, 53, s.cfg_.vip[kPortOutside], nat_port);
    } else {
      nat_port = rte_be_to_cpu_16(test::icmp_of(wan[0])->icmp_ident);
      back = test::icmp_frame(s.from_wan(), rem, s.cfg_.vip[kPortOutside], RTE_IP_ICMP_ECHO_REPLY, nat_port);
    }
    rte_mbuf *bm = test::to_mbuf(back);
    // self = n: a worker that does not exist, so falling back to "stay here" cannot pass.
    EXPECT_EQ(s.shards_->owner(kPortOutside, bm, n), owner) << "reply of flow " << i;
    const unsigned q2 = rng() % n;
    expect_handoffs += q2 != owner;
    ASSERT_TRUE(s.wan_->inject(bm, q2));
    // An ICMP error about the outbound packet, from a router on the way (traceroute's).
    Frame err = test::ipv4_frame(s.from_wan(), ip4("198.18.2.10"), s.cfg_.vip[kPortOutside], IPPROTO_ICMP,
                                 8 + 28);
    test::icmp_of(err)->icmp_type = kIcmpTimeExceeded;
    std::memcpy(err.data() + test::kL4Off + 8, wan[0].data() + test::kIpOff, 28);
    test::fix_csums(err);
    rte_mbuf *em = test::to_mbuf(err);
    EXPECT_EQ(s.shards_->owner(kPortOutside, em, n), owner) << "ICMP error about flow " << i;
    const unsigned q3 = rng() % n;
    expect_handoffs += q3 != owner;
    ASSERT_TRUE(s.wan_->inject(em, q3));
    s.settle();
    auto lan = s.lan_->take_frames();
    ASSERT_EQ(lan.size(), 2u) << "flow " << i << ": the reply and the ICMP error reach the host";
    for (auto &f : lan) EXPECT_EQ(test::ip_of(f)->dst_addr, host) << "flow " << i;
    EXPECT_EQ(s.handoffs(), expect_handoffs) << "flow " << i;
  }
  uint64_t busy = 0;
  for (unsigned w = 0; w < n; w++) busy += s.flows_on(w) > 0;
  EXPECT_EQ(busy, n) << "every worker holds flows";
  /* What Nat44::receive rests on: a flow in worker w's table is w's, by its LAN host and by
   * its outside endpoint, so a packet that finds its flow is not asked its owner. */
  for (unsigned w = 0; w < n; w++)
    s.flows_[w]->for_each([&](uint32_t slot, const FlowRecord &r) {
      EXPECT_EQ(s.shards_->worker_of_host(r.st.in_ip), w) << "worker " << w << " slot " << slot;
      EXPECT_EQ(s.shards_->endpoint_worker(r.st.nat_ip, r.st.proto, r.st.nat_port), int(w))
          << "worker " << w << " slot " << slot;
    });
}

INSTANTIATE_TEST_SUITE_P(Workers, ShardsProperty, ::testing::Values(2u, 3u, 4u));

/* The NF asks a packet's owner only when its flow is not in the worker's table (receive):
 * a packet of the fast test after the flow lookup, any other before classify(). A burst on
 * the wrong worker's queue mixes both kinds for one flow, each way: a UDP length short of
 * the payload is legal and goes the general way. Every packet is handed over, none makes a
 * flow on the wrong worker, and the flow's packets leave the owner in the order they came
 * (the general one is handed in its place, not ahead of the fast ones before it). */
TEST(Shards, AnotherWorkersFlowIsHandedOverInTheOrderItCame) {
  ShardedNat s(2);
  const uint32_t h = s.host_of(1);
  ASSERT_NE(h, 0u);
  const uint16_t nat_port = s.udp_mapping(h, 5000, 1);  // made on its owner's queue
  ASSERT_NE(nat_port, 0);
  ASSERT_EQ(s.handoffs(), 0u);
  auto burst = [&](bool from_wan) {
    std::vector<Frame> fs;
    for (uint16_t id = 1; id <= 5; id++) {
      Frame f = from_wan ? test::udp_frame(s.from_wan(), remote(1), 53, s.cfg_.vip[kPortOutside], nat_port, 16)
                         : test::udp_frame(s.from_lan(h), h, 5000, remote(1), 53, 16);
      test::ip_of(f)->packet_id = rte_cpu_to_be_16(id);
      if (id == 2 || id == 4) test::udp_of(f)->dgram_len = rte_cpu_to_be_16(8 + 12);  // the general way
      test::fix_csums(f);
      fs.push_back(f);
    }
    return fs;
  };
  for (bool from_wan : {false, true}) {
    for (const Frame &f : burst(from_wan))
      ASSERT_TRUE((from_wan ? s.wan_ : s.lan_)->inject(test::to_mbuf(f), 0)) << "worker 0's queue";
    s.settle();
    auto got = (from_wan ? s.lan_ : s.wan_)->take_frames();
    ASSERT_EQ(got.size(), 5u) << (from_wan ? "replies" : "datagrams");
    for (uint16_t i = 0; i < 5; i++) {
      EXPECT_EQ(rte_be_to_cpu_16(test::ip_of(got[i])->packet_id), i + 1) << (from_wan ? "reply " : "datagram ") << i;
      EXPECT_TRUE(test::l4_csum_ok(got[i]));
    }
    EXPECT_TRUE((from_wan ? s.wan_ : s.lan_)->take_frames().empty());
  }
  EXPECT_EQ(s.shards_->counters(0).handoffs.load(), 10u);
  EXPECT_EQ(s.shards_->counters(1).handed_in.load(), 10u);
  EXPECT_EQ(s.flows_on(0), 0u) << "no flow on the worker that does not own it";
  EXPECT_EQ(s.flows_on(1), 1u);
  EXPECT_GE(s.nf_[1]->counters().fast_forwarded.load(), 6u) << "the owner's fast path took the handed ones";
}

/* A worker's own flow and another's, mixed in one burst on the first worker's queue, after a
 * burst of its own flow alone (whose lanes the next burst's stack may still hold): its own
 * packets leave from it, in order, the fast way; the other's are handed over, in order, and
 * a packet handed over is never taken for one of the first worker's flows. */
TEST(Shards, AWorkersOwnPacketsStayAndTheOthersGoInOneBurst) {
  ShardedNat s(2);
  const uint32_t mine = s.host_of(0), theirs = s.host_of(1);
  ASSERT_TRUE(mine && theirs);
  const uint16_t my_port = s.udp_mapping(mine, 4000, 0), their_port = s.udp_mapping(theirs, 5000, 1);
  ASSERT_TRUE(my_port && their_port);
  ASSERT_EQ(s.handoffs(), 0u);
  auto datagram = [&](uint32_t host, uint16_t sport, uint16_t id, bool general) {
    Frame f = test::udp_frame(s.from_lan(host), host, sport, remote(1), 53, 16);
    test::ip_of(f)->packet_id = rte_cpu_to_be_16(id);
    if (general) test::udp_of(f)->dgram_len = rte_cpu_to_be_16(8 + 12);
    test::fix_csums(f);
    return test::to_mbuf(f);
  };
  for (uint16_t id = 1; id <= 8; id++) ASSERT_TRUE(s.lan_->inject(datagram(mine, 4000, id, false), 0));
  s.settle();
  ASSERT_EQ(s.wan_->take_frames().size(), 8u);
  const uint64_t fast0 = s.nf_[0]->counters().fast_forwarded.load();
  // Then, in one burst: theirs (general, fast), mine, theirs, mine ... by packet id.
  for (uint16_t id = 1; id <= 8; id++) {
    const bool their = id % 2 == 1;
    ASSERT_TRUE(s.lan_->inject(datagram(their ? theirs : mine, their ? 5000 : 4000, id, their && id % 4 == 1), 0));
  }
  s.settle();
  std::vector<uint16_t> got_mine, got_theirs;
  for (Frame &f : s.wan_->take_frames()) {
    EXPECT_TRUE(test::l4_csum_ok(f));
    const uint16_t sport = rte_be_to_cpu_16(test::udp_of(f)->src_port);
    const uint16_t id = rte_be_to_cpu_16(test::ip_of(f)->packet_id);
    if (sport == my_port) got_mine.push_back(id);
    else if (sport == their_port) got_theirs.push_back(id);
    else ADD_FAILURE() << "a datagram from outside port " << sport;
  }
  EXPECT_EQ(got_mine, (std::vector<uint16_t>{2, 4, 6, 8}));
  EXPECT_EQ(got_theirs, (std::vector<uint16_t>{1, 3, 5, 7}));
  EXPECT_EQ(s.shards_->counters(0).handoffs.load(), 4u) << "theirs only";
  EXPECT_EQ(s.nf_[0]->counters().fast_forwarded.load() - fast0, 4u) << "mine the fast way, on worker 0";
  EXPECT_EQ(s.flows_on(0), 1u);
  EXPECT_EQ(s.flows_on(1), 1u);
}

// Two LAN hosts of different workers reach each other through their outside endpoints.
TEST(Shards, HairpinBetweenTwoWorkersHosts) {
  ShardedNat s(2, Filtering::ENDPOINT);
  const uint32_t a = s.host_of(0), b = s.host_of(1);
  ASSERT_TRUE(a && b);
  // b's mapping: a datagram to a remote, received on worker 0's queue.
  const uint16_t b_port = s.udp_mapping(b, 5000, 0);
  ASSERT_NE(b_port, 0);
  // a sends to b's outside endpoint, arriving on worker 0's queue (a's own).
  ASSERT_TRUE(s.lan_->inject(
      test::to_mbuf(test::udp_frame(s.from_lan(a), a, 6000, s.cfg_.vip[kPortOutside], b_port)), 0));
  s.settle();
  auto lan = s.lan_->take_frames();
  ASSERT_EQ(lan.size(), 1u) << "the hairpinned datagram reaches b";
  EXPECT_EQ(test::ip_of(lan[0])->dst_addr, b);
  EXPECT_EQ(rte_be_to_cpu_16(test::udp_of(lan[0])->dst_port), 5000);
  EXPECT_EQ(test::ip_of(lan[0])->src_addr, s.cfg_.vip[kPortOutside]) << "b sees a's outside address";
  EXPECT_NE(rte_be_to_cpu_16(test::udp_of(lan[0])->src_port), 6000) << "b sees a's outside port";
  EXPECT_TRUE(test::ip_csum_ok(lan[0]));
  EXPECT_TRUE(test::l4_csum_ok(lan[0]));
  EXPECT_EQ(s.nf_[1]->counters().hairpinned.load(), 1u) << "the target's worker made the second half";
  // b's datagram came in on worker 0's queue, then the hairpin's second half went over.
  EXPECT_EQ(s.shards_->counters(0).handoffs.load(), 2u);
  EXPECT_EQ(s.flows_on(0), 1u) << "a's half";
  EXPECT_EQ(s.flows_on(1), 2u) << "b's flow to the remote and the hairpin's inbound half";
  EXPECT_TRUE(s.wan_->take_frames().empty());
}

/* A hairpin's second half is sent by the target's worker from the hand-off ring, outside
 * any burst of its own (hairpin_in): the next-hop cache's clock is tested there too. With a
 * 1 s ARP timeout, b's MAC, cached by the first hairpinned datagram, is not used once ARP
 * has let it go stale: the second datagram waits and b is asked for. */
TEST(Shards, AHairpinsSecondHalfIsNotSentToAMacArpLetGoStale) {
  ShardedNat s(2, Filtering::ENDPOINT, {}, 1.0);
  const uint32_t a = s.host_of(0), b = s.host_of(1);
  ASSERT_TRUE(a && b);
  // Each step below is confirmed just before it, so a slow machine's set-up cannot let an
  // entry go stale before the sleep (the workers are driven by this thread: no race).
  for (auto &arp : s.arp_) arp->learn(s.cfg_.gateway_out, kMacGw, kPortOutside, rte_rdtsc());
  const uint16_t b_port = s.udp_mapping(b, 5000, 0);
  ASSERT_NE(b_port, 0);
  for (auto &arp : s.arp_) arp->learn(b, s.from_lan(b).src, kPortInside, rte_rdtsc());
  auto hairpin = [&] {
    ASSERT_TRUE(s.lan_->inject(
        test::to_mbuf(test::udp_frame(s.from_lan(a), a, 6000, s.cfg_.vip[kPortOutside], b_port)), 0));
    s.settle();
  };
  hairpin();
  auto lan = s.lan_->take_frames();
  ASSERT_EQ(lan.size(), 1u) << "the first reaches b (its MAC fresh, now cached)";
  EXPECT_EQ(test::ip_of(lan[0])->dst_addr, b);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  hairpin();
  lan = s.lan_->take_frames();
  ASSERT_EQ(lan.size(), 1u);
  EXPECT_EQ(rte_be_to_cpu_16(test::eth_of(lan[0])->ether_type), RTE_ETHER_TYPE_ARP) << "b asked for, not sent to";
  EXPECT_EQ(test::hdr<rte_arp_hdr>(lan[0], test::kEthLen)->arp_data.arp_tip, b);
  EXPECT_EQ(s.nf_[1]->counters().hairpinned.load(), 2u);
}

// The known gap, counted: a fragment hairpinned to another worker's host is dropped with
// its reason (the datagram's later fragments would not find the context).
TEST(Shards, AFragmentHairpinnedToAnotherWorkerIsDroppedWithItsReason) {
  ShardedNat s(2, Filtering::ENDPOINT);
  const uint32_t a = s.host_of(0), b = s.host_of(1);
  ASSERT_TRUE(a && b);
  const uint16_t b_port = s.udp_mapping(b, 5000, 1);
  ASSERT_NE(b_port, 0);
  Frame f = test::udp_frame(s.from_lan(a), a, 6000, s.cfg_.vip[kPortOutside], b_port, 64);
  test::ip_of(f)->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_MF_FLAG);
  test::fix_csums(f);
  ASSERT_TRUE(s.lan_->inject(test::to_mbuf(f), 0));
  s.settle();
  EXPECT_TRUE(s.lan_->take_frames().empty());
  EXPECT_TRUE(s.wan_->take_frames().empty());
  EXPECT_EQ(s.nf_[0]->drops(DropReason::FRAG_CROSS_WORKER), 1u);
  EXPECT_EQ(s.flows_on(0), 0u) << "refused before the sender's half was made";
}

// A static port-forward's target and its client on different workers: the first SYN, for
// which no flow holds the port yet, finds the target's worker through the rule.
TEST(Shards, HairpinAndWanThroughAPortForwardOfAnotherWorker) {
  ShardedNat s(2);
  const uint32_t target = ip4("198.18.1.10");
  const unsigned tw = s.shards_->worker_of_host(target);
  const uint32_t client = s.host_of(1 - tw);
  ASSERT_TRUE(client);
  for (auto &arp : s.arp_) arp->learn(target, mac(0x02, 0, 0, 0, 0x01, 10), kPortInside, s.now_);
  ASSERT_TRUE(s.lan_->inject(test::to_mbuf(test::tcp_frame(s.from_lan(client), client, 45000,
                                                           s.cfg_.vip[kPortOutside], 8080, RTE_TCP_SYN_FLAG)),
                             0));
  s.settle();
  auto lan = s.lan_->take_frames();
  ASSERT_EQ(lan.size(), 1u) << "the hairpinned SYN reaches the forward's target";
  EXPECT_EQ(test::ip_of(lan[0])->dst_addr, target);
  // From the WAN, on the queue of the worker that does not own the target.
  rte_mbuf *m = test::to_mbuf(test::tcp_frame(s.from_wan(), remote(5), 40000, s.cfg_.vip[kPortOutside], 8080,
                                              RTE_TCP_SYN_FLAG));
  EXPECT_EQ(s.shards_->owner(kPortOutside, m, 2), tw);
  ASSERT_TRUE(s.wan_->inject(m, 1 - tw));
  s.settle();
  lan = s.lan_->take_frames();
  ASSERT_EQ(lan.size(), 1u) << "the WAN SYN reaches the forward's target";
  EXPECT_EQ(test::ip_of(lan[0])->dst_addr, target);
  EXPECT_EQ(s.flows_on(1 - tw), 1u) << "the client's half only";
  EXPECT_EQ(s.flows_on(tw), 2u) << "both inbound flows of the target";
}

// The WAN VIP outside the NAT pool (mappings use other addresses): a forward on the VIP still
// finds its target's worker through the rule, and the target's answer finds the flow.
TEST(Shards, AForwardOnAVipOutsideThePoolFindsItsWorker) {
  ShardedNat s(2, Filtering::ADDRESS, {ip4("198.18.2.20"), ip4("198.18.2.21")});
  const uint32_t target = ip4("198.18.1.10");
  const unsigned tw = s.shards_->worker_of_host(target);
  for (auto &arp : s.arp_) arp->learn(target, mac(0x02, 0, 0, 0, 0x01, 10), kPortInside, s.now_);
  rte_mbuf *m = test::to_mbuf(test::tcp_frame(s.from_wan(), remote(5), 40000, s.cfg_.vip[kPortOutside], 8080,
                                              RTE_TCP_SYN_FLAG));
  EXPECT_EQ(s.shards_->owner(kPortOutside, m, 2), tw);
  ASSERT_TRUE(s.wan_->inject(m, 1 - tw));
  s.settle();
  auto lan = s.lan_->take_frames();
  for (unsigned w = 0; w < 2; w++)
    for (unsigned d = 0; d < kDropReasonCount; d++)
      if (s.nf_[w]->drops(static_cast<DropReason>(d)))
        ADD_FAILURE() << "worker " << w << " dropped " << drop_reason_label(static_cast<DropReason>(d));
  ASSERT_EQ(lan.size(), 1u) << "the WAN SYN reaches the forward's target";
  EXPECT_EQ(s.flows_on(tw), 1u);
  EXPECT_EQ(s.flows_on(1 - tw), 0u);
  ASSERT_TRUE(s.lan_->inject(test::to_mbuf(test::tcp_frame(s.from_lan(target), target, 8080, remote(5), 40000,
                                                           RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)),
                             1 - tw));
  s.settle();
  auto wan = s.wan_->take_frames();
  ASSERT_EQ(wan.size(), 1u) << "the target's SYN+ACK leaves through the forward's flow";
  EXPECT_EQ(test::ip_of(wan[0])->src_addr, s.cfg_.vip[kPortOutside]);
  EXPECT_EQ(rte_be_to_cpu_16(test::tcp_of(wan[0])->src_port), 8080);
}

// A hairpin's second half handed over just before the node stepped down is not made in the
// standby's table (the applier's): it is dropped as not_active.
TEST(Shards, AHandedHairpinAfterSteppingDownMakesNothing) {
  ShardedNat s(2, Filtering::ENDPOINT);
  const uint32_t a = s.host_of(0), b = s.host_of(1);
  ASSERT_TRUE(a && b);
  const uint16_t b_port = s.udp_mapping(b, 5000, 1);
  ASSERT_NE(b_port, 0);
  ASSERT_TRUE(
      s.lan_->inject(test::to_mbuf(test::udp_frame(s.from_lan(a), a, 6000, s.cfg_.vip[kPortOutside], b_port)), 0));
  // Worker 0 alone: the first half is made and the second half waits in worker 1's ring.
  worker_iteration(*s.ctx_[0]);
  ASSERT_EQ(s.shards_->backlog(1), 1u);
  for (auto &nf : s.nf_) nf->set_vip_owner(false);
  const uint32_t flows_b = static_cast<uint32_t>(s.flows_on(1));
  s.settle();
  EXPECT_TRUE(s.lan_->take_frames().empty());
  EXPECT_EQ(s.flows_on(1), flows_b) << "nothing made in the standby's table";
  EXPECT_EQ(s.nf_[1]->drops(DropReason::NOT_ACTIVE), 1u);
}

// An ARP packet is answered once and learnt by every worker; the VIPs are announced once.
TEST(Shards, ArpIsLearntByEveryWorkerAndAnnouncedOnce) {
  ShardedNat s(3);
  const uint32_t host = lan_host(77);
  const rte_ether_addr hmac = mac(0x02, 0, 0, 0, 0x01, 77);
  Frame req = test::arp_frame(RTE_ARP_OP_REQUEST, hmac, host, mac(0, 0, 0, 0, 0, 0), s.cfg_.vip[kPortInside]);
  ASSERT_TRUE(s.lan_->inject(test::to_mbuf(req), 2));
  s.settle();
  auto lan = s.lan_->take_frames();
  ASSERT_EQ(lan.size(), 1u) << "one reply, from the worker that received the request";
  for (unsigned w = 0; w < 3; w++) {
    ArpEntry e;
    EXPECT_TRUE(s.arp_[w]->find(host, &e) && e.valid) << "worker " << w << " learnt the host";
  }
  EXPECT_EQ(s.shards_->counters(2).arp_copies.load(), 2u);
  EXPECT_EQ(s.handoffs(), 0u) << "copies are not hand-offs";
  for (auto &nf : s.nf_) nf->request_announce(1);
  s.settle();
  uint64_t garps = 0;
  for (auto &nf : s.nf_) garps += nf->counters().garps.load();
  EXPECT_EQ(garps, s.nf_[0]->counters().garps.load()) << "only worker 0 announces";
  EXPECT_GT(garps, 0u);
  EXPECT_EQ(s.wan_->take_frames().size() + s.lan_->take_frames().size(), garps);
}

/* Two worker threads at once (TSan's case): UDP flows from many hosts, every datagram and its
 * reply injected on a random queue while both workers run. */
/* The hash ReturnRss computes is the one NICs compute: the IPv4 TCP vectors of Microsoft's RSS
 * verification suite, with its key (kRssKey). */
TEST(ReturnRss, HashIsTheVerificationSuitesHash) {
  std::string err;
  auto r = ReturnRss::create(kRssKey, sizeof(kRssKey), std::vector<uint16_t>(128, 0), {0}, &err);
  ASSERT_TRUE(r) << err;
  struct V {
    const char *dst;
    uint16_t dport;
    const char *src;
    uint16_t sport;
    uint32_t hash;
  } vs[] = {{"161.142.100.80", 1766, "66.9.149.187", 2794, 0x51ccc178},
            {"65.69.140.83", 4739, "199.92.111.2", 14230, 0xc626b0ea},
            {"12.22.207.184", 38024, "24.19.198.95", 12898, 0x5c2b394a},
            {"209.142.163.6", 2217, "38.27.205.30", 48228, 0xafc7327f},
            {"202.188.127.2", 1303, "153.39.163.191", 44251, 0x10e828a2}};
  for (const V &v : vs) {
    EXPECT_EQ(r->hash(ip4(v.src), ip4(v.dst), v.sport, v.dport), v.hash) << v.src << " -> " << v.dst;
    // The port's part by table: the same hash.
    const uint32_t base = r->base(ip4(v.src), ip4(v.dst), v.sport);
    EXPECT_EQ(base ^ r->hash(0, 0, 0, v.dport), v.hash);
  }
}

TEST(ReturnRss, TheWorkerOfAPortIsTheTablesEntryOfTheWholeHash) {
  std::string err;
  std::vector<uint16_t> reta(64);
  for (unsigned i = 0; i < 64; i++) reta[i] = static_cast<uint16_t>((i * 7) % 3);
  auto r = ReturnRss::create(kRssKey, sizeof(kRssKey), reta, {2, 0, 1}, &err);
  ASSERT_TRUE(r) << err;
  std::mt19937 rng(11);
  for (int i = 0; i < 20000; i++) {
    const uint32_t a = rng(), b = rng();
    const uint16_t sp = static_cast<uint16_t>(rng()), dp = static_cast<uint16_t>(rng());
    rte_ipv4_tuple t{};
    t.src_addr = rte_be_to_cpu_32(a);
    t.dst_addr = rte_be_to_cpu_32(b);
    t.sport = sp;
    t.dport = dp;
    const uint32_t h = rte_softrss(reinterpret_cast<uint32_t *>(&t), RTE_THASH_V4_L4_LEN, kRssKey);
    const unsigned want = std::vector<unsigned>{2, 0, 1}[reta[h & 63]];
    ASSERT_EQ(r->worker(r->base(a, b, sp), dp), want) << i;
  }
}

TEST(ReturnRss, RefusesWhatItCannotUse) {
  std::string err;
  EXPECT_EQ(ReturnRss::create(kRssKey, 12, {0, 1}, {0, 1}, &err), nullptr);
  EXPECT_NE(err.find("16"), std::string::npos) << err;
  EXPECT_EQ(ReturnRss::create(kRssKey, sizeof(kRssKey), {0, 1, 0}, {0, 1}, &err), nullptr);
  EXPECT_NE(err.find("power of two"), std::string::npos) << err;
  EXPECT_EQ(ReturnRss::create(kRssKey, sizeof(kRssKey), {0, 1, 2, 0}, {0, 1}, &err), nullptr);
  EXPECT_NE(err.find("queue 2"), std::string::npos) << err;
  EXPECT_EQ(ReturnRss::create(kRssKey, sizeof(kRssKey), {0, 1, 0, 1}, {0, ReturnRss::kNoWorker}, &err), nullptr);
  EXPECT_NE(err.find("queue 1, which no worker polls"), std::string::npos) << err;
}

/* The property, with the outside port's RSS programmed: for random flows (TCP and UDP, any
 * host, remote and ports), the NAT port chosen makes the reply's RSS queue its flow's worker,
 * so no reply is handed off; the port keeps the host port's parity (RFC 4787 REQ-3 style);
 * every port picked is counted, none as unsteered. A reply to a mapping made for another
 * remote (endpoint-independent) is not steered: it is handed off, counted. */
class ShardsRss : public ::testing::TestWithParam<unsigned> {};

TEST_P(ShardsRss, EveryReplyComesOnItsFlowsWorkersQueue) {
  const unsigned n = GetParam();
  ShardedNat s(n);
  s.enable_rss(128);
  std::mt19937 rng(0x7535 + n);
  std::set<std::tuple<uint32_t, uint16_t, int>> mappings;
  uint64_t expect_handoffs = 0, picks = 0, reused = 0;
  for (unsigned i = 0; i < 400; i++) {
    const uint32_t host = lan_host(rng() % 1000), rem = remote(rng() % 2000);
    const uint16_t sport = static_cast<uint16_t>(1024 + rng() % 60000);
    const uint16_t dport = static_cast<uint16_t>(1 + rng() % 65535);
    const bool tcp = rng() % 2;
    Frame out = tcp ? test::tcp_frame(s.from_lan(host), host, sport, rem, dport, RTE_TCP_SYN_FLAG)
                    : test::udp_frame(s.from_lan(host), host, sport, rem, dport);
    const unsigned owner = s.shards_->worker_of_host(host);
    const bool fresh = mappings.insert({host, sport, tcp}).second;
    picks += fresh;
    reused += !fresh;
    const unsigned q1 = s.nic_queue(out);  // LAN packets: RSS by their own tuple
    expect_handoffs += q1 != owner;
    ASSERT_TRUE(s.lan_->inject(test::to_mbuf(out), q1));
    s.settle();
    auto wan = s.wan_->take_frames();
    ASSERT_EQ(wan.size(), 1u) << "flow " << i;
    const uint16_t nat_port = rte_be_to_cpu_16(tcp ? test::tcp_of(wan[0])->src_port : test::udp_of(wan[0])->src_port);
    EXPECT_EQ(nat_port % 2, sport % 2) << "flow " << i << ": the port's parity";
    EXPECT_GE(nat_port, 20000);
    EXPECT_LE(nat_port, 60999);
    Frame back = tcp ? test::tcp_frame(s.from_wan(), rem, dport, s.cfg_.vip[kPortOutside], nat_port,
                                       RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)
                     : test::udp_frame(s.from_wan(), rem, dport, s.cfg_.vip[kPortOutside], nat_port);
    const unsigned q2 = s.nic_queue(back);
    if (fresh) {
      EXPECT_EQ(q2, owner) << "flow " << i << ": the reply's queue is its worker's";
    }
    expect_handoffs += q2 != owner;
    ASSERT_TRUE(s.wan_->inject(test::to_mbuf(back), q2));
    s.settle();
    auto lan = s.lan_->take_frames();
    ASSERT_EQ(lan.size(), 1u) << "reply of flow " << i;
    EXPECT_EQ(test::ip_of(lan[0])->dst_addr, host);
  }
  EXPECT_EQ(s.rss_picked(), picks);
  EXPECT_EQ(s.rss_unsteered(), 0u);
  EXPECT_EQ(s.handoffs(), expect_handoffs);
  // Half the LAN packets (n = 2) come on another worker's queue; the replies on none.
  EXPECT_GT(expect_handoffs, 0u);
  std::printf("workers %u: %lu flows, %lu mappings reused, %lu hand-offs of %u packets\n", n,
              static_cast<unsigned long>(picks), static_cast<unsigned long>(reused),
              static_cast<unsigned long>(expect_handoffs), 800u);
}

INSTANTIATE_TEST_SUITE_P(Workers, ShardsRss, ::testing::Values(2u, 3u, 4u));

/* When no free port of the range makes the reply come to the flow's worker, the mapping still
 * gets a port (a flow is not refused for the NIC's sake), counted as unsteered, and its reply
 * is handed off. One port in the range: whether it steers depends on the remote. */
TEST(ShardsRss, APortThatCannotSteerIsStillGivenAndCounted) {
  ShardedNat s(2, Filtering::ADDRESS, {}, 300, 20000, 20000);
  s.enable_rss(128);
  const uint32_t host = s.host_of(0);
  ASSERT_NE(host, 0u);
  // A remote whose reply to port 20000 the NIC puts on worker 1's queue, and one on worker 0's.
  int away = -1, home = -1;
  for (unsigned i = 0; i < 2000 && (away < 0 || home < 0); i++) {
    Frame back = test::udp_frame(s.from_wan(), remote(i), 53, s.cfg_.vip[kPortOutside], 20000);
    (s.nic_queue(back) == 0 ? home : away) = static_cast<int>(i);
  }
  ASSERT_GE(away, 0);
  ASSERT_GE(home, 0);
  uint64_t handoffs = 0;
  // UDP to the remote whose replies go away; TCP (its own ports) to the one whose come home.
  for (int k = 0; k < 2; k++) {
    const bool tcp = k == 1;
    const uint32_t rem = remote(static_cast<unsigned>(tcp ? home : away));
    Frame out = tcp ? test::tcp_frame(s.from_lan(host), host, 4000, rem, 53, RTE_TCP_SYN_FLAG)
                    : test::udp_frame(s.from_lan(host), host, 4000, rem, 53);
    ASSERT_TRUE(s.lan_->inject(test::to_mbuf(out), 0));
    s.settle();
    auto wan = s.wan_->take_frames();
    ASSERT_EQ(wan.size(), 1u);
    EXPECT_EQ(rte_be_to_cpu_16(tcp ? test::tcp_of(wan[0])->src_port : test::udp_of(wan[0])->src_port), 20000);
    EXPECT_EQ(s.rss_picked(), uint64_t(k + 1));
    EXPECT_EQ(s.rss_unsteered(), 1u) << (tcp ? "the TCP port steers" : "the UDP port cannot");
    Frame back = tcp ? test::tcp_frame(s.from_wan(), rem, 53, s.cfg_.vip[kPortOutside], 20000,
                                       RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)
                     : test::udp_frame(s.from_wan(), rem, 53, s.cfg_.vip[kPortOutside], 20000);
    const unsigned q = s.nic_queue(back);
    EXPECT_EQ(q, tcp ? 0u : 1u);
    handoffs += q != 0;
    ASSERT_TRUE(s.wan_->inject(test::to_mbuf(back), q));
    s.settle();
    EXPECT_EQ(s.lan_->take_frames().size(), 1u) << "the reply reached its host";
    EXPECT_EQ(s.handoffs(), handoffs);
  }
  // ICMP's identifier is in no IPv4 RSS input: its ports are not steered, nor counted.
  Frame ping = test::icmp_frame(s.from_lan(host), host, remote(1), RTE_IP_ICMP_ECHO_REQUEST, 77);
  ASSERT_TRUE(s.lan_->inject(test::to_mbuf(ping), 0));
  s.settle();
  EXPECT_EQ(s.wan_->take_frames().size(), 1u);
  EXPECT_EQ(s.rss_picked(), 2u);
}

/* The RFC's preferences come before the NIC's: with two free ports, one of the host port's
 * parity whose reply would land on the other worker, and one of the other parity whose reply
 * would land on this one, the mapping keeps the parity (RFC 4787 REQ-4) and is counted as
 * unsteered. */
TEST(ShardsRss, ParityComesBeforeSteering) {
  // 3 workers: with kRssKey, a port's lowest bit moves the hash by 0x58 in its low 7 bits, so
  // with 2 or 4 workers (queue = entry % n) the two parities always land on the same queue;
  // with 3 they can differ.
  ShardedNat s(3, Filtering::ADDRESS, {}, 300, 20000, 20001);
  s.enable_rss(128);
  const uint32_t host = s.host_of(0);
  ASSERT_NE(host, 0u);
  int rem = -1;
  for (unsigned i = 0; i < 4000 && rem < 0; i++) {
    const Frame even = test::udp_frame(s.from_wan(), remote(i), 53, s.cfg_.vip[kPortOutside], 20000);
    const Frame odd = test::udp_frame(s.from_wan(), remote(i), 53, s.cfg_.vip[kPortOutside], 20001);
    if (s.nic_queue(even) != 0 && s.nic_queue(odd) == 0) rem = static_cast<int>(i);
  }
  ASSERT_GE(rem, 0);
  ASSERT_TRUE(s.lan_->inject(
      test::to_mbuf(test::udp_frame(s.from_lan(host), host, 4000, remote(static_cast<unsigned>(rem)), 53)), 0));
  s.settle();
  auto wan = s.wan_->take_frames();
  ASSERT_EQ(wan.size(), 1u);
  EXPECT_EQ(rte_be_to_cpu_16(test::udp_of(wan[0])->src_port), 20000) << "the host port's parity, not the steering";
  EXPECT_EQ(s.rss_unsteered(), 1u);
  EXPECT_EQ(s.rss_picked(), 1u);
}

/* port_open on a PMD whose RSS can be programmed (net_null keeps the key and the table, though
 * it never hashes): the key and the table ftpaird asks for are what the device reports. With
 * one queue, or on a PMD without RSS, it says why not. */
TEST(PortRss, ProgrammedWhereThePmdHasItAndReadBack) {
  static rte_mempool *mp = nullptr;
  std::string err;
  if (mp == nullptr) mp = pool_create(test::unique_name("rssp"), 2047, &err);
  ASSERT_NE(mp, nullptr) << err;
  PortSpec ps;
  ps.device = "net_null_rss" + std::to_string(getpid() % 1000) + ",no-rx=1";
  ps.queues = 2;
  ps.rss = true;
  // Not net_null's own default key (which is kRssKey): the one read back must be this one.
  for (unsigned i = 0; i < 40; i++) ps.rss_key.push_back(static_cast<uint8_t>(0x11 * i + 3));
  ps.rx_desc = ps.tx_desc = 128;
  uint16_t pid = 0;
  rte_ether_addr m{};
  PortRss rss;
  ASSERT_EQ(port_open(ps, mp, &pid, &m, &err, &rss), 0) << err;
  EXPECT_TRUE(rss.programmed) << rss.why_not;
  ASSERT_GE(rss.key.size(), 40u);
  EXPECT_EQ(std::vector<uint8_t>(rss.key.begin(), rss.key.begin() + 40), ps.rss_key);
  EXPECT_TRUE(rss.key_as_asked);
  ASSERT_GT(rss.reta.size(), 0u);
  for (size_t i = 0; i < rss.reta.size(); i++) EXPECT_EQ(rss.reta[i], i % 2) << "entry " << i;
  EXPECT_NE(rss.hash_types & RTE_ETH_RSS_NONFRAG_IPV4_UDP, 0u);
  EXPECT_NE(rss.hash_types & RTE_ETH_RSS_NONFRAG_IPV4_TCP, 0u);
  auto r = ReturnRss::create(rss.key.data(), static_cast<unsigned>(rss.key.size()), rss.reta, {0, 1}, &err);
  EXPECT_TRUE(r) << err;
  port_close(pid);
  rte_eal_hotplug_remove("vdev", ps.device.substr(0, ps.device.find(',')).c_str());

  // A key too short for the 4-tuple's hash is not programmed (the queues are, without RSS).
  ps.device = "net_null_short" + std::to_string(getpid() % 1000) + ",no-rx=1";
  ps.rss_key.assign(12, 0x5a);
  ASSERT_EQ(port_open(ps, mp, &pid, &m, &err, &rss), 0) << err;
  EXPECT_FALSE(rss.programmed);
  EXPECT_EQ(rss.why_not, "the RSS key asked has 12 bytes (16 needed)");
  port_close(pid);
  rte_eal_hotplug_remove("vdev", ps.device.substr(0, ps.device.find(',')).c_str());

  ps.device = "net_null_one" + std::to_string(getpid() % 1000) + ",no-rx=1";
  ps.rss_key.clear();
  ps.queues = 1;
  ASSERT_EQ(port_open(ps, mp, &pid, &m, &err, &rss), 0) << err;
  EXPECT_FALSE(rss.programmed);
  EXPECT_EQ(rss.why_not, "one queue");
  port_close(pid);
  rte_eal_hotplug_remove("vdev", ps.device.substr(0, ps.device.find(',')).c_str());
}

TEST(Shards, TwoWorkerThreadsCarryTrafficBothWays) {
  ShardedNat s(2);
  s.start();
  std::mt19937 rng(7);
  constexpr unsigned kFlows = 400;
  for (unsigned i = 0; i < kFlows; i++) {
    const uint32_t host = lan_host(i);
    while (!s.lan_->inject(test::to_mbuf(test::udp_frame(s.from_lan(host), host, static_cast<uint16_t>(2000 + i),
                                                         remote(i), 53)),
                           rng() % 2))
      std::this_thread::yield();
  }
  std::vector<Frame> wan;
  const uint64_t deadline = rte_rdtsc() + 10 * s.hz_;
  while (wan.size() < kFlows && rte_rdtsc() < deadline) {
    for (auto &f : s.wan_->take_frames()) wan.push_back(f);
    std::this_thread::yield();
  }
  ASSERT_EQ(wan.size(), kFlows);
  for (auto &f : wan) {
    Frame back = test::udp_frame(s.from_wan(), test::ip_of(f)->dst_addr, 53, s.cfg_.vip[kPortOutside],
                                 rte_be_to_cpu_16(test::udp_of(f)->src_port));
    while (!s.wan_->inject(test::to_mbuf(back), rng() % 2)) std::this_thread::yield();
  }
  std::vector<Frame> lan;
  while (lan.size() < kFlows && rte_rdtsc() < deadline) {
    for (auto &f : s.lan_->take_frames()) lan.push_back(f);
    std::this_thread::yield();
  }
  s.stop();
  ASSERT_EQ(lan.size(), kFlows);
  std::set<std::pair<uint32_t, uint16_t>> seen;
  for (auto &f : lan) seen.insert({uint32_t(test::ip_of(f)->dst_addr), rte_be_to_cpu_16(test::udp_of(f)->dst_port)});
  EXPECT_EQ(seen.size(), kFlows) << "every flow's reply reached its host";
  EXPECT_EQ(s.flows_on(0) + s.flows_on(1), kFlows);
  EXPECT_GT(s.handoffs(), 0u);
  uint64_t full = 0;
  for (unsigned w = 0; w < 2; w++) full += s.shards_->counters(w).handoff_full.load();
  EXPECT_EQ(full, 0u);
}

}  // namespace
}  // namespace ftpair::dp

// The idle loop's back-off (dataplane/worker.h): spins, then naps doubling up to the configured
// ceiling, which is honoured above 1 ms too (the TCG guests nap 2 ms; 1,024 us was a hidden cap).
TEST(IdleNap, SpinsThenDoublesUpToTheConfiguredCeiling) {
  EXPECT_EQ(ftpair::dp::idle_nap_us(0, 100), 0u);
  EXPECT_EQ(ftpair::dp::idle_nap_us(63, 100), 0u) << "64 spins first";
  EXPECT_EQ(ftpair::dp::idle_nap_us(64, 100), 1u);
  EXPECT_EQ(ftpair::dp::idle_nap_us(79, 100), 1u) << "16 naps a step";
  EXPECT_EQ(ftpair::dp::idle_nap_us(80, 100), 2u);
  EXPECT_EQ(ftpair::dp::idle_nap_us(64 + 16 * 6, 100), 64u);
  EXPECT_EQ(ftpair::dp::idle_nap_us(64 + 16 * 7, 100), 100u) << "the default ceiling";
  EXPECT_EQ(ftpair::dp::idle_nap_us(64 + 16 * 11, 2000), 2000u) << "a ceiling above 1,024 us is reached";
  EXPECT_EQ(ftpair::dp::idle_nap_us(64 + 16 * 10, 2000), 1024u);
  EXPECT_EQ(ftpair::dp::idle_nap_us(UINT32_MAX, 100000), 100000u) << "the largest ceiling, after any idle count";
  EXPECT_EQ(ftpair::dp::idle_nap_us(UINT32_MAX, 0), 0u) << "0: never nap";
}
