/* A lab in one process, built for ThreadSanitizer (`make test-tsan`; shorter in the plain unit
 * run): the whole daemon (node, worker loop, checkpoint engine, /metrics over HTTP) forwards a
 * continuous mix of TCP, UDP and ICMP flows between two ring-backed ports, while other threads
 * do what the control plane does at the same time:
 *   - scrape /metrics (render_metrics, and GET over the real HTTP server),
 *   - build Control.Status,
 *   - dump flows (Control.Flows, bounded by --limit and whole),
 *   - take checkpoints, with a snapshot now and then (the engine parks the workers),
 *   - read the ARP table (lookups, the entry walk, the valid count).
 * The traffic side is a generator of new flows (TCP handshakes that end in a reset or go idle,
 * ICMP echoes, a steady set of UDP flows) and a responder that plays the LAN hosts and the
 * remotes: it answers ARP, SYNs, echoes and datagrams, so flows are created, replied to,
 * closed, expired and evicted all the time. Every check below could fail: packets and flows
 * must move, scraped counters never go back, gauges stay within their bounds, every ARP
 * entry a reader copies is one the worker wrote whole, and at a barrier the exposition agrees
 * with the table and the table with the NF's counters. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <rte_arp.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_ring.h>

#include "control/config.h"
#include "control/daemon.h"
#include "dataplane/mbuf.h"
#include "tests/unit/dataplane/pktgen.h"
#include "tests/unit/wide_affinity.h"

namespace ftpair {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::Frame;

#if defined(__SANITIZE_THREAD__)
constexpr bool kTsan = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool kTsan = true;
#else
constexpr bool kTsan = false;
#endif
#else
constexpr bool kTsan = false;
#endif

// Seconds of traffic: FTPAIR_LAB_SECONDS, else 8 under TSan and 3 otherwise.
int run_seconds() {
  if (const char *s = std::getenv("FTPAIR_LAB_SECONDS")) return std::max(1, std::atoi(s));
  return kTsan ? 8 : 3;
}

constexpr unsigned kHosts = 200;     // LAN hosts 198.18.1.10 ...
constexpr unsigned kArpCapacity = 128;  // fewer than hosts and remotes: entries are evicted and asked again
constexpr unsigned kFlowCapacity = 8192;
constexpr unsigned kUdpSteady = 256;  // long-lived UDP flows (their timeout is at least 120 s)
constexpr unsigned kRing = 2048;
constexpr uint32_t kSynSeq = 1000, kSynAckSeq = 70000;

uint32_t be(uint8_t a, uint8_t b, uint8_t c, uint8_t d) { return htonl(uint32_t(a) << 24 | uint32_t(b) << 16 | uint32_t(c) << 8 | d); }
const uint32_t kLanVip = be(198, 18, 1, 1), kWanVip = be(198, 18, 2, 1), kGateway = be(198, 18, 2, 254);

// Every host, remote and the gateway answers from a MAC made of its address.
rte_ether_addr mac_for(uint32_t ip_be) {
  rte_ether_addr m{};
  m.addr_bytes[0] = 0x02;
  m.addr_bytes[1] = 0x5a;
  std::memcpy(&m.addr_bytes[2], &ip_be, 4);
  return m;
}

// ------------------------------------------------------------------ frames

Frame tcp_seg(const rte_ether_addr &src_mac, const rte_ether_addr &dst_mac, uint32_t src, uint16_t sport, uint32_t dst,
              uint16_t dport, uint8_t flags, uint32_t seq, uint32_t ack) {
  test::L2 l2{src_mac, dst_mac};
  Frame f = test::ipv4_frame(l2, src, dst, IPPROTO_TCP, sizeof(rte_tcp_hdr));
  rte_tcp_hdr *t = test::tcp_of(f);
  t->src_port = htons(sport);
  t->dst_port = htons(dport);
  t->sent_seq = htonl(seq);
  t->recv_ack = htonl(ack);
  t->data_off = 5 << 4;
  t->tcp_flags = flags;
  t->rx_win = htons(65535);
  test::fix_csums(f);
  return f;
}

/* mbufs cross threads through DPDK's rings (not instrumented): the test marks its hand-offs
 * for TSan as the dataplane does (dataplane/mbuf.h), so a packet the generator wrote is known
 * to come before the worker's reads of it. */
struct Pool {
  rte_mempool *mp = nullptr;
  std::atomic<uint64_t> alloc_failures{0};
  // nullptr when the pool is empty (the caller backs off): never a test failure.
  rte_mbuf *mbuf(const Frame &f) {
    rte_mbuf *m = dp::mbuf_alloc(mp);
    if (m == nullptr) {
      alloc_failures.fetch_add(1, std::memory_order_relaxed);
      return nullptr;
    }
    char *d = rte_pktmbuf_append(m, static_cast<uint16_t>(f.size()));
    std::memcpy(d, f.data(), f.size());
    return m;
  }
};

// ------------------------------------------------------------------ ports

/* An ethdev over two rings, left unconfigured: the daemon opens it by its ethdev name
 * (ports.*.device) and configures it like any port. The test feeds rx and reads tx, always
 * under mu: the ring's own synchronisation is inline assembly (its compare-and-set), which
 * TSan cannot see, and two test threads feed the same ring. */
struct LabPort {
  std::string name;  // the ethdev's: net_ring names it "net_ring_<name given>"
  // One receive and one transmit ring per queue (per worker of the daemon).
  std::vector<rte_ring *> rx, tx;
  bool ok = false;
  std::mutex mu;
  uint64_t next_ = 0;
  // Hands m to the port's receive side, on the queues in turn as a hash spreading the flows
  // would (a flow's packets land on either worker: hand-off); frees it when the ring is full.
  bool inject(rte_mbuf *m) {
    if (m == nullptr) return false;
    tsan_release(m);
    std::lock_guard<std::mutex> g(mu);
    if (rte_ring_enqueue(rx[next_++ % rx.size()], m) == 0) return true;
    rte_pktmbuf_free(m);
    return false;
  }
  // What the port sent on any queue, up to n.
  unsigned take(rte_mbuf **out, unsigned n) {
    unsigned got = 0;
    {
      std::lock_guard<std::mutex> g(mu);
      for (rte_ring *r : tx) got += rte_ring_dequeue_burst(r, reinterpret_cast<void **>(out + got), n - got, nullptr);
    }
    for (unsigned i = 0; i < got; i++) tsan_acquire(out[i]);
    return got;
  }
  unsigned rx_pending() {
    std::lock_guard<std::mutex> g(mu);
    unsigned k = 0;
    for (rte_ring *r : rx) k += rte_ring_count(r);
    return k;
  }
  unsigned tx_pending() {
    std::lock_guard<std::mutex> g(mu);
    unsigned k = 0;
    for (rte_ring *r : tx) k += rte_ring_count(r);
    return k;
  }
  LabPort(const char *base, unsigned queues) {
    const std::string n = test::unique_name(base);
    name = "net_ring_" + n;
    bool made = true;
    for (unsigned q = 0; q < queues; q++) {
      rx.push_back(rte_ring_create((n + "_rx" + std::to_string(q)).c_str(), kRing, SOCKET_ID_ANY, 0));
      tx.push_back(rte_ring_create((n + "_tx" + std::to_string(q)).c_str(), kRing, SOCKET_ID_ANY, 0));
      made &= rx.back() && tx.back();
    }
    auto fn = test::eth_from_rings_fn();
    int id = made && fn ? fn(n.c_str(), rx.data(), queues, tx.data(), queues, static_cast<unsigned>(rte_socket_id())) : -1;
    char got[RTE_ETH_NAME_MAX_LEN] = "";
    ok = id >= 0 && rte_eth_dev_get_name_by_port(uint16_t(id), got) == 0 && name == got;
  }
  void drain() {
    void *m;
    for (auto *v : {&rx, &tx})
      for (rte_ring *r : *v)
        if (r)
          while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf *>(m));
  }
  // After the daemon closed the port.
  ~LabPort() {
    drain();
    uint16_t id;
    if (rte_eth_dev_get_port_by_name(name.c_str(), &id) == 0) rte_eth_dev_close(id);
    for (auto *v : {&rx, &tx})
      for (rte_ring *r : *v)
        if (r) rte_ring_free(r);
  }
};

// ------------------------------------------------------------------ the hosts and remotes

/* Plays every LAN host (the inside port's far end) and every remote and the gateway (the
 * outside's): answers ARP requests, SYNs (SYN+ACK), echo requests and datagrams; a LAN host
 * answers a SYN+ACK with a reset (a closed flow) or an ACK (an established flow left idle). */
class Responder {
 public:
  Responder(LabPort &in, LabPort &out, Pool &pool) : in_(in), out_(out), pool_(pool) {}
  void run(const std::atomic<bool> &stop) {
    rte_mbuf *burst[64];
    while (!stop.load(std::memory_order_acquire)) {
      unsigned n_in = in_.take(burst, 64);
      for (unsigned i = 0; i < n_in; i++) from_nat(burst[i], true);
      unsigned n_out = out_.take(burst, 64);
      for (unsigned i = 0; i < n_out; i++) from_nat(burst[i], false);
      if (n_in + n_out == 0) std::this_thread::sleep_for(50us);
    }
  }
  uint64_t lan_received() const { return lan_rx_.load(); }
  uint64_t wan_received() const { return wan_rx_.load(); }
  uint64_t arp_answered() const { return arp_.load(); }
  uint64_t bad_frames() const { return bad_.load(); }

 private:
  void from_nat(rte_mbuf *m, bool lan) {
    (lan ? lan_rx_ : wan_rx_).fetch_add(1, std::memory_order_relaxed);
    Frame f = test::from_mbuf(m);
    dp::mbuf_free(m);
    if (f.size() < test::kEthLen) return bad();
    LabPort &back = lan ? in_ : out_;
    const rte_ether_hdr *eth = test::eth_of(f);
    if (eth->ether_type == htons(RTE_ETHER_TYPE_ARP)) {
      const auto *a = test::hdr<rte_arp_hdr>(f, test::kEthLen);
      if (a->arp_opcode != htons(RTE_ARP_OP_REQUEST)) return;
      const uint32_t who = a->arp_data.arp_tip;
      if (a->arp_data.arp_sip == who) return;  // a gratuitous ARP of the gateway's own
      if (back.inject(pool_.mbuf(test::arp_frame(RTE_ARP_OP_REPLY, mac_for(who), who, a->arp_data.arp_sha,
                                                  a->arp_data.arp_sip, &a->arp_data.arp_sha))))
        arp_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    if (eth->ether_type != htons(RTE_ETHER_TYPE_IPV4) || f.size() < test::kL4Off + 8) return bad();
    rte_ipv4_hdr *ip = test::ip_of(f);
    if (!test::ip_csum_ok(f) || !test::l4_csum_ok(f)) return bad();
    // Sent from the virtual MAC to the MAC of the next hop, which resolved through ARP.
    const uint32_t next_hop = lan ? ip->dst_addr : (ip->dst_addr & htonl(0xffffff00)) == (kWanVip & htonl(0xffffff00))
                                                                  ? ip->dst_addr
                                                                  : kGateway;
    if (!test::mac_eq(eth->dst_addr, mac_for(next_hop))) return bad();
    const rte_ether_addr me = eth->dst_addr, nat = eth->src_addr;
    const uint32_t src = ip->src_addr, dst = ip->dst_addr;
    switch (ip->next_proto_id) {
      case IPPROTO_TCP: {
        const rte_tcp_hdr *t = test::tcp_of(f);
        const uint16_t sport = ntohs(t->src_port), dport = ntohs(t->dst_port);
        if (!lan && t->tcp_flags == RTE_TCP_SYN_FLAG) {
          back.inject(pool_.mbuf(tcp_seg(me, nat, dst, dport, src, sport, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG,
                                          kSynAckSeq, ntohl(t->sent_seq) + 1)));
        } else if (lan && t->tcp_flags == (RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG)) {
          // Half the handshakes end at once in a reset, the other half complete and go idle.
          const bool reset = (sport + dport) & 1;
          back.inject(pool_.mbuf(tcp_seg(me, nat, dst, dport, src, sport,
                                          reset ? RTE_TCP_RST_FLAG : RTE_TCP_ACK_FLAG, ntohl(t->recv_ack),
                                          reset ? 0 : ntohl(t->sent_seq) + 1)));
        }
        return;
      }
      case IPPROTO_UDP: {
        if (lan) return;
        const rte_udp_hdr *u = test::udp_of(f);
        back.inject(pool_.mbuf(test::udp_frame(test::L2{me, nat}, dst, ntohs(u->dst_port), src, ntohs(u->src_port))));
        return;
      }
      case IPPROTO_ICMP: {
        if (lan) return;
        const rte_icmp_hdr *c = test::icmp_of(f);
        if (c->icmp_type != RTE_IP_ICMP_ECHO_REQUEST) return;
        back.inject(pool_.mbuf(test::icmp_frame(test::L2{me, nat}, dst, src, RTE_IP_ICMP_ECHO_REPLY,
                                                 ntohs(c->icmp_ident), ntohs(c->icmp_seq_nb))));
        return;
      }
      default: return bad();
    }
  }
  void bad() { bad_.fetch_add(1, std::memory_order_relaxed); }

  LabPort &in_, &out_;
  Pool &pool_;
  std::atomic<uint64_t> lan_rx_{0}, wan_rx_{0}, arp_{0}, bad_{0};
};

/* New flows from the LAN, as fast as the worker takes them (the inside ring kept at most
 * half full): TCP SYNs and ICMP echoes, each a new flow, to remotes behind the gateway, and
 * datagrams of a steady set of UDP flows to on-link remotes. */
void generate(LabPort &in, Pool &pool, const std::atomic<bool> &stop, std::atomic<uint64_t> *sent) {
  const rte_ether_addr vmac_in = test::mac(0x00, 0x00, 0x5e, 0x00, 0x01, 0x01);
  uint64_t k = 0;
  while (!stop.load(std::memory_order_acquire)) {
    if (in.rx_pending() > kRing / 2) {
      std::this_thread::sleep_for(100us);
      continue;
    }
    for (int i = 0; i < 32; i++, k++) {
      const uint32_t host = be(198, 18, 1, uint8_t(10 + k % kHosts));
      const uint64_t round = k / kHosts;
      const test::L2 l2{mac_for(host), vmac_in};
      Frame f;
      switch (k % 10) {
        case 0: case 1: case 2: case 3: case 4:
          f = tcp_seg(l2.src, l2.dst, host, uint16_t(1024 + round % 64000), be(203, 0, 113, uint8_t(1 + k % 100)),
                      80, RTE_TCP_SYN_FLAG, kSynSeq, 0);
          break;
        case 5: case 6:
          f = test::icmp_frame(l2, host, be(203, 0, 113, uint8_t(1 + k % 100)), RTE_IP_ICMP_ECHO_REQUEST,
                               uint16_t(round), 1);
          break;
        default: {
          const unsigned j = unsigned(k % kUdpSteady);
          f = test::udp_frame(test::L2{mac_for(be(198, 18, 1, uint8_t(10 + j % kHosts))), vmac_in},
                              be(198, 18, 1, uint8_t(10 + j % kHosts)), uint16_t(40000 + j),
                              be(198, 18, 2, uint8_t(10 + j % 50)), 53);
        }
      }
      rte_mbuf *m = pool.mbuf(f);
      if (m == nullptr) {
        std::this_thread::sleep_for(200us);
        break;
      }
      if (in.inject(m)) sent->fetch_add(1, std::memory_order_relaxed);
    }
  }
}

// ------------------------------------------------------------------ the control plane's side

// "name{labels}" -> value, from the Prometheus text.
std::map<std::string, double> parse_metrics(const std::string &text) {
  std::map<std::string, double> v;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    const size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    v[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return v;
}

double need(const std::map<std::string, double> &m, const std::string &key) {
  auto it = m.find(key);
  if (it == m.end()) {
    ADD_FAILURE() << "metric " << key << " missing";
    return 0;
  }
  return it->second;
}

// GET /metrics over TCP from the daemon's HTTP server; the body, or "" on failure.
std::string http_get_metrics(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string resp;
  if (::connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0) {
    const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, req, sizeof(req) - 1, 0) == ssize_t(sizeof(req) - 1)) {
      char buf[8192];
      ssize_t n;
      while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) resp.append(buf, size_t(n));
    }
  }
  ::close(fd);
  if (resp.rfind("HTTP/1.", 0) != 0 || resp.find(" 200 ") == std::string::npos) return "";
  const size_t body = resp.find("\r\n\r\n");
  return body == std::string::npos ? "" : resp.substr(body + 4);
}

// Counters a scrape must never see go back.
const char *const kCounters[] = {
    "ftpair_port_rx_packets_total{port=\"inside\"}",
    "ftpair_port_rx_packets_total{port=\"outside\"}",
    "ftpair_port_tx_packets_total{port=\"inside\"}",
    "ftpair_port_tx_packets_total{port=\"outside\"}",
    "ftpair_port_rx_missed_total{port=\"inside\"}",
    "ftpair_port_rx_missed_total{port=\"outside\"}",
    "ftpair_forwarded_packets_total{port=\"inside\"}",
    "ftpair_forwarded_packets_total{port=\"outside\"}",
    "ftpair_flows_created_total",
    "ftpair_flows_expired_total",
    "ftpair_flows_closed_total",
    "ftpair_flows_evicted_total",
    "ftpair_arp_requests_total",
    "ftpair_worker_loops_total{worker=\"0\"}",
    "ftpair_checkpoints_total",
};

struct ScrapeCheck {
  std::map<std::string, double> last;
  uint64_t scrapes = 0;
  void check(const std::string &text, const char *how) {
    const auto m = parse_metrics(text);
    scrapes++;
    const double cap = need(m, "ftpair_flows_capacity");
    EXPECT_EQ(cap, kFlowCapacity) << how;
    const double flows = need(m, "ftpair_flows");
    EXPECT_GE(flows, 0) << how;
    EXPECT_LE(flows, cap) << how;
    EXPECT_LE(need(m, "ftpair_nat_mappings"), cap) << how;
    EXPECT_LE(need(m, "ftpair_flows_embryonic"), cap) << how;
    for (const char *p : {"tcp", "udp", "icmp"})
      EXPECT_LE(need(m, std::string("ftpair_nat_ports_in_use{proto=\"") + p + "\"}"), cap) << how;
    EXPECT_LE(need(m, "ftpair_arp_entries"), kArpCapacity) << how;
    EXPECT_EQ(need(m, "ftpair_role{state=\"ACTIVE\"}"), 1) << how;
    EXPECT_EQ(need(m, "ftpair_vip_owner"), 1) << how;
    for (const char *k : kCounters) {
      const double v = need(m, k);
      auto it = last.find(k);
      if (it != last.end()) {
        EXPECT_GE(v, it->second) << how << ": " << k << " went back";
      }
      last[k] = v;
    }
  }
};

std::string lab_config(const std::string &dir, const std::string &inside, const std::string &outside,
                       unsigned workers) {
  return R"YAML(
node: {id: lab, role: active, state_dir: ")YAML" + dir + R"YAML("}
ports:
  inside: {device: ")YAML" + inside + R"YAML(", vip: 198.18.1.1/24}
  outside: {device: ")YAML" + outside + R"YAML(", vip: 198.18.2.1/24, gateway: 198.18.2.254}
dpdk: {mbufs: 8191}
flows:
  capacity: 8192
  timeouts: {tcp_syn: 1, tcp_established: 2, tcp_fin: 1, tcp_time_wait: 1, tcp_closed: 1, icmp: 1}
arp: {capacity: 128, timeout_s: 300}
worker: {count: )YAML" + std::to_string(workers) + R"YAML(, idle_sleep_max_us: 50, stall_ms: 1000}
management: {metrics: "127.0.0.1:0"}
failover: {beat_udp_port: 0}
)YAML";
}

/* With one worker, and with two: then each LAN host's flows live on one worker, packets that
 * reach the other are handed over, and the control plane reads every worker's table. */
class LabDataplane : public ::testing::TestWithParam<unsigned> {};

TEST_P(LabDataplane, ControlPlaneRunsBesideTheForwardingWorkers) {
  const unsigned workers = GetParam();
  if (kTsan && workers > 1)
    GTEST_SKIP() << "under TSan, on 2 CPUs shared by 2 workers and 7 other threads, a barrier exceeded the control "
                    "plane's 100 ms once in CI; the 2-worker dataplane runs under TSan in test_shards, and the "
                    "2-worker checkpoint in test_checkpoint's ShardedReplication";
  const int seconds = run_seconds();
  char tmpl[] = "/tmp/ftpair-lab-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;

  Pool pool;
  // The traffic threads are not EAL lcores (no mempool cache) and share the pool with the
  // daemon's workers: relaxed tail sync (RTS), as the daemon's own pool (dp::pool_create), so
  // that a thread preempted inside a ring operation does not hold up the others.
  pool.mp = rte_pktmbuf_pool_create_by_ops(test::unique_name("lab_gen").c_str(), 16383, 256, 0,
                                           RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY, "ring_mt_rts");
  ASSERT_NE(pool.mp, nullptr) << rte_strerror(rte_errno);
  auto in = std::make_unique<LabPort>("lab_in", workers);
  auto out = std::make_unique<LabPort>("lab_out", workers);
  ASSERT_TRUE(in->ok && out->ok) << "ring ports (net_ring driver loaded?)";

  Config cfg;
  Status st = parse_config(lab_config(dir, in->name, out->name, workers), {}, &cfg);
  ASSERT_TRUE(st.ok()) << st.message();
  // The daemon's workers run as threads here (the test has no worker lcores) and inherit
  // this thread's CPU. In ftpaird each worker has its own lcore: with two, they and the
  // test's threads get every CPU here (until the end of the test).
  std::optional<test::WideAffinity> wide;
  if (workers > 1) wide.emplace();
  auto d = std::make_unique<Daemon>(cfg);
  st = d->start();
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(d->role(), fo::Role::ACTIVE);
  // Every worker's table has room for the node's whole capacity, under one node-wide limit.
  ASSERT_EQ(d->node().workers(), workers);
  for (unsigned w = 0; w < workers; w++) {
    EXPECT_EQ(d->node().flows(w).capacity(), kFlowCapacity);
    EXPECT_EQ(d->node().flows(w).limit(), kFlowCapacity);
  }
  ASSERT_NE(d->metrics_port(), 0);

  std::atomic<bool> stop_traffic{false}, stop_control{false}, stop_responder{false};
  std::atomic<uint64_t> generated{0};
  Responder responder(*in, *out, pool);
  std::thread responder_thread([&] { responder.run(stop_responder); });
  std::thread generator([&] { generate(*in, pool, stop_traffic, &generated); });

  // The control plane, each on its own thread as gRPC and /metrics would be.
  std::vector<std::thread> control;
  std::atomic<uint64_t> scrapes{0}, http_scrapes{0}, statuses{0}, dumps{0}, dumped_flows{0}, checkpoints{0},
      snapshots{0}, arp_reads{0}, arp_entries_seen{0};
  control.emplace_back([&] {  // /metrics, as the HTTP handler calls it
    ScrapeCheck c;
    while (!stop_control.load()) {
      c.check(d->render_metrics(), "render_metrics");
      std::this_thread::sleep_for(2ms);
    }
    scrapes = c.scrapes;
  });
  control.emplace_back([&] {  // /metrics over HTTP (the server's own threads)
    ScrapeCheck c;
    while (!stop_control.load()) {
      const std::string body = http_get_metrics(d->metrics_port());
      EXPECT_FALSE(body.empty()) << "GET /metrics failed";
      if (!body.empty()) c.check(body, "GET /metrics");
      std::this_thread::sleep_for(10ms);
    }
    http_scrapes = c.scrapes;
  });
  control.emplace_back([&] {  // Control.Status
    while (!stop_control.load()) {
      v1::StatusReply s;
      d->status(&s);
      EXPECT_EQ(s.role(), "active");
      EXPECT_EQ(s.flow_capacity(), kFlowCapacity);
      EXPECT_LE(s.flows(), s.flow_capacity());
      EXPECT_GE(s.last_pause_us(), 0);
      statuses++;
      std::this_thread::sleep_for(3ms);
    }
  });
  control.emplace_back([&] {  // Control.Flows, bounded (ftpairctl flows --limit) and whole
    for (uint64_t i = 0; !stop_control.load(); i++) {
      v1::FlowsReply r;
      const uint32_t limit = i % 8 == 7 ? 0 : 100;
      Status fs = d->flows(limit, &r);
      EXPECT_TRUE(fs.ok()) << fs.message();
      if (!fs.ok()) continue;
      EXPECT_LE(r.total(), kFlowCapacity);
      if (limit) {
        EXPECT_LE(r.flows_size(), int(limit));
      } else {
        EXPECT_EQ(uint64_t(r.flows_size()), r.total()) << "a whole dump holds every flow";
      }
      EXPECT_LE(uint64_t(r.flows_size()), r.total());
      for (const auto &f : r.flows()) {
        EXPECT_TRUE(f.proto() == "tcp" || f.proto() == "udp" || f.proto() == "icmp") << f.proto();
        EXPECT_EQ(f.inside().rfind("198.18.1.", 0), 0u) << f.inside();
        EXPECT_EQ(f.nat().rfind("198.18.2.1:", 0), 0u) << f.nat();
        EXPECT_NE(f.flags() & dp::kFlowInUse, 0u);
      }
      dumps++;
      dumped_flows += uint64_t(r.flows_size());
      std::this_thread::sleep_for(5ms);
    }
  });
  control.emplace_back([&] {  // checkpoints on request, some with a snapshot
    uint64_t last_epoch = 0;
    for (uint64_t i = 0; !stop_control.load(); i++) {
      v1::CheckpointReply r;
      const bool snapshot = i % 4 == 3;
      Status cs = d->checkpoint(snapshot, &r);
      // No standby here: the epoch closes, and the engine says nobody is in sync.
      EXPECT_TRUE(cs.ok() || cs.code() == Code::UNAVAILABLE) << cs.message();
      EXPECT_GT(r.epoch(), last_epoch) << "each checkpoint closes a newer epoch";
      last_epoch = r.epoch();
      EXPECT_GE(r.pause_us(), 0);
      if (snapshot) {
        EXPECT_FALSE(r.snapshot_path().empty()) << "an active writes its snapshot on request";
        if (!r.snapshot_path().empty()) snapshots++;
      }
      checkpoints++;
      std::this_thread::sleep_for(15ms);
    }
  });
  control.emplace_back([&] {  // the ARP table while the worker learns and evicts
    const dp::ArpTable &arp = d->node().arp();
    while (!stop_control.load()) {
      arp.for_each([&](const dp::ArpEntry &e) {
        EXPECT_TRUE(test::mac_eq(e.mac, mac_for(e.ip))) << "torn or foreign entry for " << test::ip4str(e.ip) << ": "
                                                          << test::macstr(e.mac);
        arp_entries_seen++;
      });
      dp::ArpEntry e;
      for (uint32_t ip : {kGateway, be(198, 18, 1, 10), be(198, 18, 2, 10)})
        if (arp.find(ip, &e) && e.valid) {
          EXPECT_EQ(e.ip, ip);
          EXPECT_TRUE(test::mac_eq(e.mac, mac_for(ip))) << test::ip4str(ip);
          EXPECT_EQ(e.port, ip == be(198, 18, 1, 10) ? dp::kPortInside : dp::kPortOutside) << test::ip4str(ip);
        }
      EXPECT_LE(arp.valid_count(rte_rdtsc()), arp.capacity());
      arp_reads++;
      std::this_thread::sleep_for(1ms);
    }
  });

  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  stop_traffic = true;
  generator.join();
  // Let the worker finish what is queued and the responder's last answers come back.
  for (auto until = Clock::now() + 3s; Clock::now() < until;) {
    if (in->rx_pending() == 0 && out->rx_pending() == 0 && in->tx_pending() == 0 && out->tx_pending() == 0)
      break;
    std::this_thread::sleep_for(5ms);
  }
  std::this_thread::sleep_for(50ms);
  stop_control = true;
  for (auto &t : control) t.join();
  stop_responder = true;
  responder_thread.join();

  // At a barrier the table stands still: the exposition, the table and the counters agree.
  std::map<std::string, double> m;
  uint64_t size = 0, mappings = 0, ports = 0, created = 0, gone = 0;
  Status parked = d->engine().with_workers_parked([&] {
    m = parse_metrics(d->render_metrics());
    for (unsigned w = 0; w < d->node().workers(); w++) {
      const auto &fl = d->node().flows(w);
      size += fl.size();
      mappings += fl.mappings();
      ports += fl.ports_in_use(IPPROTO_TCP) + fl.ports_in_use(IPPROTO_UDP) + fl.ports_in_use(IPPROTO_ICMP);
    }
    dp::NfCounters c;
    d->node().nf_counters(&c);
    created = c.flows_created.load();
    gone = c.flows_expired.load() + c.flows_closed.load() + c.flows_evicted.load();
  });
  ASSERT_TRUE(parked.ok()) << parked.message();
  EXPECT_EQ(need(m, "ftpair_flows"), double(size));
  EXPECT_EQ(need(m, "ftpair_nat_mappings"), double(mappings));
  EXPECT_EQ(need(m, "ftpair_flows_created_total"), double(created));
  EXPECT_EQ(size, created - gone) << "every flow created is in the table or was expired, closed or evicted";
  EXPECT_EQ(ports, mappings) << "without port forwards, one NAT endpoint per mapping";
  EXPECT_LE(mappings, size);

  const double fwd_in = need(m, "ftpair_forwarded_packets_total{port=\"inside\"}");
  const double fwd_out = need(m, "ftpair_forwarded_packets_total{port=\"outside\"}");
  const double expired = need(m, "ftpair_flows_expired_total"), closed = need(m, "ftpair_flows_closed_total");
  std::printf("lab: %d s, %llu packets generated, forwarded %.0f out / %.0f in, %llu flows created, %.0f expired, "
              "%.0f closed, %.0f evicted, %llu in the table; ARP %llu answered, %.0f requests, %.0f evictions seen via "
              "%llu reads; %llu+%llu scrapes, %llu statuses, %llu dumps (%llu flows), %llu checkpoints (%llu "
              "snapshots), %.0f worker parks (%.0f timed out and retried); %llu mbuf allocation back-offs\n",
              seconds, (unsigned long long)generated.load(), fwd_in, fwd_out, (unsigned long long)created, expired,
              closed, need(m, "ftpair_flows_evicted_total"), (unsigned long long)size,
              (unsigned long long)responder.arp_answered(), need(m, "ftpair_arp_requests_total"),
              double(d->node().arp().evictions()), (unsigned long long)arp_reads.load(),
              (unsigned long long)scrapes.load(), (unsigned long long)http_scrapes.load(),
              (unsigned long long)statuses.load(), (unsigned long long)dumps.load(),
              (unsigned long long)dumped_flows.load(), (unsigned long long)checkpoints.load(),
              (unsigned long long)snapshots.load(), need(m, "ftpair_worker_parks_total{worker=\"0\"}"),
              need(m, "ftpair_worker_park_timeouts_total"),
              (unsigned long long)pool.alloc_failures.load());

  // Traffic moved both ways, and flows came and went.
  EXPECT_GT(generated.load(), 5000u);
  EXPECT_GT(fwd_in, 1000);
  EXPECT_GT(fwd_out, 1000) << "replies came back through the flows";
  EXPECT_GT(responder.wan_received(), 1000u);
  EXPECT_GT(responder.lan_received(), 1000u);
  EXPECT_EQ(responder.bad_frames(), 0u) << "every frame the NAT sent was well formed and well addressed";
  EXPECT_GT(created, 2000u);
  EXPECT_GT(expired, 0) << "idle flows expired";
  EXPECT_GT(closed, 0) << "reset flows were closed";
  EXPECT_GT(responder.arp_answered(), 0u);
  EXPECT_GT(d->node().arp().evictions(), 0u) << "more hosts than ARP entries";
  // The control plane ran all along.
  EXPECT_GT(scrapes.load(), 10u);
  EXPECT_GT(http_scrapes.load(), 3u);
  EXPECT_GT(statuses.load(), 10u);
  EXPECT_GT(dumps.load(), 5u);
  EXPECT_GT(dumped_flows.load(), 0u);
  EXPECT_GT(checkpoints.load(), 5u);
  EXPECT_GT(snapshots.load(), 0u);
  EXPECT_GT(arp_reads.load(), 10u);
  EXPECT_GT(arp_entries_seen.load(), 0u);
  for (unsigned w = 0; w < workers; w++)
    EXPECT_GT(need(m, "ftpair_worker_parks_total{worker=\"" + std::to_string(w) + "\"}"), 10)
        << "checkpoints and dumps parked worker " << w;
  if (workers > 1) {
    // Both workers hold flows, and the packets that reached the wrong one were handed over.
    for (unsigned w = 0; w < workers; w++)
      EXPECT_GT(need(m, "ftpair_worker_flows{worker=\"" + std::to_string(w) + "\"}") +
                    need(m, "ftpair_worker_handed_in_total{worker=\"" + std::to_string(w) + "\"}"),
                0)
          << "worker " << w << " did nothing";
    EXPECT_GT(need(m, "ftpair_worker_handoffs_total{worker=\"0\"}") +
                  need(m, "ftpair_worker_handoffs_total{worker=\"1\"}"),
              100);
  }

  d->stop();
  d.reset();  // closes the ports, frees what the agent still holds
  in.reset();
  out.reset();
  rte_mempool_free(pool.mp);
  std::filesystem::remove_all(dir);
}

/* Bad input: more workers than the machine has CPUs is refused at start, naming the key, and
 * so is a worker count the ports' queues cannot serve (a ring port made with one queue). */
TEST(NodeWorkers, ACountTheCpusOrQueuesCannotServeIsRefused) {
  char tmpl[] = "/tmp/ftpair-lab-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  {
    auto in = std::make_unique<LabPort>("lab_in", 1);
    auto out = std::make_unique<LabPort>("lab_out", 1);
    ASSERT_TRUE(in->ok && out->ok);
    Config cfg;
    Status st = parse_config(lab_config(dir, in->name, out->name, 2), {}, &cfg);
    ASSERT_TRUE(st.ok()) << st.message();
    auto d = std::make_unique<Daemon>(cfg);
    st = d->start();
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find(cpus < 2 ? "worker.count" : "ports.inside"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find(cpus < 2 ? "CPUs" : "queues"), std::string::npos) << st.message();
  }
  if (cpus < dp::kMaxWorkers) {
    auto in = std::make_unique<LabPort>("lab_in", cpus + 1);
    auto out = std::make_unique<LabPort>("lab_out", cpus + 1);
    ASSERT_TRUE(in->ok && out->ok);
    Config cfg;
    Status st = parse_config(lab_config(dir, in->name, out->name, cpus + 1), {}, &cfg);
    ASSERT_TRUE(st.ok()) << st.message();
    auto d = std::make_unique<Daemon>(cfg);
    st = d->start();
    EXPECT_FALSE(st.ok());
    EXPECT_NE(st.message().find("worker.count " + std::to_string(cpus + 1)), std::string::npos) << st.message();
  }
  std::filesystem::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Workers, LabDataplane, ::testing::Values(1u, 2u),
                         [](const auto &info) { return std::to_string(info.param) + "_worker" + (info.param > 1 ? "s" : ""); });

}  // namespace
}  // namespace ftpair
