/* nf_scale: the NAT on 1 and N workers (dataplane/shards.h), 64-byte UDP frames.
 *
 *   nf_scale [EAL args, -l with N lcores] -- [--workers N] [--flows F] [--packets P] [--rounds R]
 *
 * Each round builds the dataplane twice, with 1 worker and with N, and in each mode runs every
 * worker on its own lcore the way nf_bench's synchronous mode runs one: the worker writes a
 * batch of frames into its own receive queue (untimed), runs the daemon's worker loop until
 * nothing is left to do (timed), and frees what its transmit queues hold (untimed); packets
 * other workers hand it are processed in the same loop, and after its own run out, in timed
 * iterations (an iteration that found nothing is not timed). The rate of a run is all
 * packets over the longest worker's timed cycles: the workers run at once, so the slowest
 * one decides. Ports: net_ring with one queue pair per worker on both sides.
 *
 * Two workloads per worker count:
 *  - owned: each worker's queue gets only the packets of flows it owns, as a NIC whose RSS
 *    the NAT can steer would deliver them (the scaling case): nf_scale_mpps{mode="owned"},
 *    nf_scaling_ratio{workers=N} = rate(N) / rate(1) of the same round, median over rounds;
 *  - spread: NAT traffic both ways (a LAN datagram, then its reply from the WAN, per flow),
 *    each packet on the queue its flow's hash picks, as the lab's af_packet fanout does: the
 *    packets that arrive on the wrong worker are handed over. nf_handoff_ratio{workers=N} =
 *    hand-offs / packets, and nf_scale_mpps{mode="spread"};
 *  - rss: the same traffic, each packet on the queue a NIC with the RSS ftpaird programs
 *    (port.cc: kRssKey, the IPv4 UDP 4-tuple, entry i -> queue i % N) would put it on, and
 *    the NAT's ports chosen for that RSS (return_rss.h): the replies come to their flow's
 *    worker; the LAN packets come where their own tuple's hash puts them. No PMD here hashes
 *    (net_ring does not), so the bench computes each packet's queue with rte_softrss, as the
 *    NIC would. nf_handoff_ratio{workers=N, steering="rss_port_choice"} and
 *    nf_scale_mpps{mode="rss"}.
 *
 * And the cut across workers: in each round, with 1 and with N workers forwarding (owned),
 * a checkpoint engine (no standby: the cut alone) takes a checkpoint every millisecond, and
 * the pause of each (quiesce until every worker parked, one epoch flip of every table, resume)
 * is sampled: checkpoint_pause_us_p50 and _p99{workers}, medians over rounds, and
 * checkpoint_pause_workers_ratio = p50(N) / p50(1) of the same round (goal: about 1, the pause
 * does not grow with the workers).
 *
 * With --memory F instead: the memory a flow costs. The dataplane of one worker is built with
 * 1,000 flows and with F, each made by a datagram through the NF; what the process holds then
 * (the DPDK heap in use plus malloc's, the benchmark's own frame templates freed first) is
 * measured over a baseline taken before each build, and nf_bytes_per_flow{flows=F} = (held(F) -
 * held(1000)) / (F - 1000). The table's capacity is F x 1.25 in both, as everywhere here.
 *
 * Output: JSON lines on stdout; progress on stderr. */
#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_hash_crc.h>
#include <rte_ip.h>
#include <malloc.h>

#include <rte_launch.h>
#include <rte_malloc.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_thash.h>
#include <rte_udp.h>

#include "checkpoint/engine.h"
#include "dataplane/agent.h"
#include "dataplane/arp_table.h"
#include "dataplane/flow_table.h"
#include "dataplane/nf.h"
#include "dataplane/port.h"
#include "dataplane/return_rss.h"
#include "dataplane/shards.h"
#include "dataplane/worker.h"

namespace dp = ftpair::dp;

namespace {

constexpr uint32_t kFrameLen = 60;
constexpr uint32_t kHosts = 250;
constexpr uint32_t kBatch = 512;
constexpr uint32_t kHandoffRing = 4096;

struct Options {
  unsigned workers = 2;
  uint32_t flows = 100000;
  uint64_t packets = 2000000;  // per worker and run
  unsigned rounds = 5;
  uint32_t memory_flows = 0;  // --memory F: only the bytes-per-flow measurement
};

[[noreturn]] void die(const std::string &msg) {
  std::fprintf(stderr, "nf_scale: %s\n", msg.c_str());
  std::exit(1);
}

uint32_t ip4(unsigned a, unsigned b, unsigned c, unsigned d) {
  return rte_cpu_to_be_32((a << 24) | (b << 16) | (c << 8) | d);
}

const rte_ether_addr kVmacIn{{0x00, 0x00, 0x5e, 0x00, 0x01, 0x01}};
const rte_ether_addr kVmacOut{{0x00, 0x00, 0x5e, 0x00, 0x01, 0x02}};
const rte_ether_addr kHostMac{{0x02, 0, 0, 0, 0x01, 0x01}};
const rte_ether_addr kServerMac{{0x02, 0, 0, 0, 0x02, 0x01}};

void build_udp(uint8_t *buf, const rte_ether_addr &smac, const rte_ether_addr &dmac, uint32_t sip,
               uint32_t dip, uint16_t sport, uint16_t dport) {
  std::memset(buf, 0, 64);
  auto *eth = reinterpret_cast<rte_ether_hdr *>(buf);
  eth->dst_addr = dmac;
  eth->src_addr = smac;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  auto *ip = reinterpret_cast<rte_ipv4_hdr *>(eth + 1);
  ip->version_ihl = 0x45;
  ip->total_length = rte_cpu_to_be_16(kFrameLen - sizeof(rte_ether_hdr));
  ip->packet_id = rte_cpu_to_be_16(1);
  ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
  ip->time_to_live = 64;
  ip->next_proto_id = IPPROTO_UDP;
  ip->src_addr = sip;
  ip->dst_addr = dip;
  auto *udp = reinterpret_cast<rte_udp_hdr *>(ip + 1);
  udp->src_port = rte_cpu_to_be_16(sport);
  udp->dst_port = rte_cpu_to_be_16(dport);
  udp->dgram_len = rte_cpu_to_be_16(kFrameLen - sizeof(rte_ether_hdr) - sizeof(rte_ipv4_hdr));
  for (uint8_t *p = reinterpret_cast<uint8_t *>(udp + 1); p < buf + kFrameLen; p++) *p = 'x';
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  udp->dgram_cksum = rte_ipv4_udptcp_cksum(ip, udp);
}

struct Flow {
  uint32_t sip, dip;
  uint16_t sport, dport;
};
Flow flow(uint32_t i) {
  return Flow{ip4(198, 18, 1, 2 + i % kHosts), ip4(198, 18, 2, 10 + i % 4), static_cast<uint16_t>(1024 + i / kHosts),
              static_cast<uint16_t>(8000 + i % 64)};
}

// One worker count's dataplane: ports, shards, one table/ARP/NF per worker.
struct Plane {
  unsigned n = 1;
  rte_mempool *pool = nullptr;
  std::vector<rte_ring *> in_rx, in_tx, out_rx, out_tx, spare;
  uint16_t pid_in = 0, pid_out = 0;
  std::unique_ptr<dp::InterfaceAgent> agent;
  std::unique_ptr<dp::Shards> shards;
  std::vector<std::unique_ptr<dp::FlowTable>> flows;
  std::vector<std::unique_ptr<dp::ArpTable>> arp;
  std::vector<std::unique_ptr<dp::Nat44>> nf;
  std::unique_ptr<dp::WorkerContext[]> ctx;
  std::atomic<bool> quit{false};
  std::vector<uint8_t> out_tmpl, back_tmpl;  // 64 bytes per flow
  std::vector<unsigned> owner;               // per flow
  std::unique_ptr<dp::ReturnRss> rss;        // the outside port's RSS (N > 1)
  std::vector<uint8_t> in_q, back_q;         // per flow: the worker whose queue the NIC's RSS picks, each way
};

enum class Mode { OWNED, SPREAD, RSS };

constexpr unsigned kRetaEntries = 128;

// The worker whose queue a NIC with ftpaird's RSS (kRssKey, entry i -> queue i % n) puts a
// UDP frame on.
unsigned nic_worker(const uint8_t *frame, unsigned n) {
  const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(frame + sizeof(rte_ether_hdr));
  const auto *udp = reinterpret_cast<const rte_udp_hdr *>(ip + 1);
  rte_ipv4_tuple t{};
  t.src_addr = rte_be_to_cpu_32(ip->src_addr);
  t.dst_addr = rte_be_to_cpu_32(ip->dst_addr);
  t.sport = rte_be_to_cpu_16(udp->src_port);
  t.dport = rte_be_to_cpu_16(udp->dst_port);
  return (rte_softrss(reinterpret_cast<uint32_t *>(&t), RTE_THASH_V4_L4_LEN, dp::kRssKey) % kRetaEntries) % n;
}

/* net_ring keeps each queue's packet counter in a 24-byte struct, packed in an array and
 * written on every poll, even an empty one: two workers on adjacent queues would share that
 * cache line (measured: a worker polling an idle queue cost the other 15 % of its rate). The
 * workers' queues are kQueueGap apart, so each one's counters have lines of their own, as a
 * NIC's queues do. rx[w] and tx[w] are worker w's rings; the queues between are idle. */
constexpr unsigned kQueueGap = 6;

uint16_t ring_port(const std::string &name, std::vector<rte_ring *> &rx, std::vector<rte_ring *> &tx, unsigned n,
                   rte_mempool *pool, std::vector<rte_ring *> &spare) {
  static unsigned seq = 0;
  std::vector<rte_ring *> all_rx, all_tx;
  for (unsigned q = 0; q < n * kQueueGap; q++) {
    const std::string base = "nfs" + std::to_string(seq) + name + std::to_string(q);
    const bool used = q % kQueueGap == 0;
    all_rx.push_back(rte_ring_create((base + "r").c_str(), used ? 2048 : 64, 0, RING_F_SP_ENQ | RING_F_SC_DEQ));
    all_tx.push_back(rte_ring_create((base + "t").c_str(), used ? 4096 : 64, 0, RING_F_SP_ENQ | RING_F_SC_DEQ));
    if (!all_rx.back() || !all_tx.back()) die(std::string("rte_ring_create: ") + rte_strerror(rte_errno));
    (used ? rx : spare).push_back(all_rx.back());
    (used ? tx : spare).push_back(all_tx.back());
  }
  const unsigned nq = n * kQueueGap;
  const int id = rte_eth_from_rings(("nfs" + std::to_string(seq++) + name).c_str(), all_rx.data(), nq, all_tx.data(), nq, 0);
  if (id < 0) die(std::string("rte_eth_from_rings: ") + rte_strerror(rte_errno));
  char dev[RTE_ETH_NAME_MAX_LEN];
  rte_eth_dev_get_name_by_port(uint16_t(id), dev);
  dp::PortSpec spec;
  spec.device = dev;
  spec.queues = static_cast<uint16_t>(n * kQueueGap);
  spec.rx_desc = spec.tx_desc = 64;
  uint16_t pid;
  rte_ether_addr mac;
  std::string err;
  if (dp::port_open(spec, pool, &pid, &mac, &err) != 0) die(name + " port: " + err);
  return pid;
}

std::unique_ptr<Plane> build(unsigned n, uint32_t nflows, rte_mempool *pool) {
  auto p = std::make_unique<Plane>();
  p->n = n;
  p->pool = pool;
  p->pid_in = ring_port("in", p->in_rx, p->in_tx, n, pool, p->spare);
  p->pid_out = ring_port("out", p->out_rx, p->out_tx, n, pool, p->spare);
  dp::AgentConfig ac;
  ac.nb_ports = 2;
  ac.port_ids[0] = p->pid_in;
  ac.port_ids[1] = p->pid_out;
  ac.nb_workers = static_cast<uint16_t>(n);
  for (unsigned w = 0; w < n; w++) ac.queue_of_worker[w] = static_cast<uint16_t>(w * kQueueGap);
  p->agent = std::make_unique<dp::InterfaceAgent>(ac);
  dp::NfConfig nc;
  nc.vip[0] = ip4(198, 18, 1, 1);
  nc.vip[1] = ip4(198, 18, 2, 1);
  nc.vmac[0] = kVmacIn;
  nc.vmac[1] = kVmacOut;
  nc.nat_port_min = 1024;
  nc.nat_port_max = 65535;
  nc.filtering = dp::Filtering::ENDPOINT;
  for (unsigned a = 1; nc.pool.size() < std::max<unsigned>(8, (nflows + 39999) / 40000); a = a == 9 ? 20 : a + 1)
    nc.pool.push_back(ip4(198, 18, 2, a));
  nc.max_sessions_per_host = 0;
  auto ports = std::make_shared<dp::PortPool>(nc.nat_addresses());
  std::string err;
  p->shards = dp::Shards::create(n, ports, nc.vip[1], nc.forwards, kHandoffRing, &err);
  if (!p->shards) die(err);
  if (n > 1) {
    // As ftpaird programs a port whose PMD has RSS: entry i -> queue i % n (here worker w's
    // queue is w * kQueueGap).
    std::vector<uint16_t> reta(kRetaEntries), queue_worker(n * kQueueGap);
    for (unsigned i = 0; i < kRetaEntries; i++) reta[i] = static_cast<uint16_t>((i % n) * kQueueGap);
    for (unsigned q = 0; q < n * kQueueGap; q++) queue_worker[q] = static_cast<uint16_t>(q / kQueueGap);
    p->rss = dp::ReturnRss::create(dp::kRssKey, sizeof(dp::kRssKey), reta, queue_worker, &err);
    if (!p->rss) die(err);
  }
  const uint64_t hz = rte_get_tsc_hz();
  for (unsigned w = 0; w < n; w++) {
    dp::FlowTableConfig fc;
    fc.capacity = nflows + nflows / 4;
    fc.name = "nfs_flows_" + std::to_string(n) + "_" + std::to_string(w);
    p->flows.push_back(dp::FlowTable::create(fc, &err));
    if (!p->flows.back()) die(err);
    p->flows.back()->share_port_pool(ports);
    p->arp.push_back(std::make_unique<dp::ArpTable>(4096, 86400 * hz));
    for (unsigned s = 0; s < 4; s++) p->arp.back()->learn(ip4(198, 18, 2, 10 + s), kServerMac, dp::kPortOutside, rte_rdtsc());
    p->nf.push_back(std::make_unique<dp::Nat44>(nc, *p->flows.back(), *p->arp.back(), *p->agent, pool, w));
    p->nf.back()->set_shards(p->shards.get());
    if (p->rss) p->nf.back()->set_return_rss(p->rss.get());
  }
  p->ctx.reset(new dp::WorkerContext[n]);
  for (unsigned w = 0; w < n; w++) {
    p->ctx[w].id = w;
    p->ctx[w].agent = p->agent.get();
    p->ctx[w].nf = p->nf[w].get();
    p->ctx[w].flows = p->flows[w].get();
    p->ctx[w].shards = p->shards.get();
    p->ctx[w].quit = &p->quit;
  }
  // Every flow made by one datagram, on its owner, before the measurement.
  p->out_tmpl.assign(size_t(nflows) * 64, 0);
  p->back_tmpl.assign(size_t(nflows) * 64, 0);
  p->owner.resize(nflows);
  rte_mbuf *m[1];
  for (uint32_t i = 0; i < nflows; i++) {
    const Flow f = flow(i);
    build_udp(&p->out_tmpl[size_t(i) * 64], kHostMac, kVmacIn, f.sip, f.dip, f.sport, f.dport);
    const unsigned w = p->shards->worker_of_host(f.sip);
    p->owner[i] = w;
    if (rte_pktmbuf_alloc_bulk(pool, m, 1) != 0) die("mbuf pool empty");
    std::memcpy(rte_pktmbuf_mtod(m[0], uint8_t *), &p->out_tmpl[size_t(i) * 64], 64);
    m[0]->data_len = m[0]->pkt_len = kFrameLen;
    p->nf[w]->process(dp::kPortInside, m, 1, rte_rdtsc());
    p->agent->flush(w);
    void *objs[64];
    unsigned k;
    while ((k = rte_ring_dequeue_burst(p->out_tx[w], objs, 64, nullptr)) > 0)
      rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf **>(objs), k);
    dp::FlowState probe{};
    probe.in_ip = f.sip;
    probe.ext_ip = f.dip;
    probe.in_port = rte_cpu_to_be_16(f.sport);
    probe.ext_port = rte_cpu_to_be_16(f.dport);
    probe.proto = IPPROTO_UDP;
    const int slot = p->flows[w]->lookup(dp::inside_key(probe));
    if (slot < 0) die("warm-up did not make flow " + std::to_string(i));
    const dp::FlowState &st = p->flows[w]->record(uint32_t(slot)).st;
    build_udp(&p->back_tmpl[size_t(i) * 64], kServerMac, kVmacOut, f.dip, st.nat_ip, f.dport,
              rte_be_to_cpu_16(st.nat_port));
    if (n > 1) {
      p->in_q.push_back(static_cast<uint8_t>(nic_worker(&p->out_tmpl[size_t(i) * 64], n)));
      p->back_q.push_back(static_cast<uint8_t>(nic_worker(&p->back_tmpl[size_t(i) * 64], n)));
    }
  }
  return p;
}

void destroy(std::unique_ptr<Plane> p) {
  p->nf.clear();
  p->shards.reset();
  p->agent.reset();
  dp::port_close(p->pid_in);
  dp::port_close(p->pid_out);
  for (auto *v : {&p->in_rx, &p->in_tx, &p->out_rx, &p->out_tx, &p->spare})
    for (rte_ring *r : *v) {
      void *m;
      while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf *>(m));
      rte_ring_free(r);
    }
}

struct Run {
  Plane *p;
  unsigned w;
  Mode mode;
  uint64_t packets;
  std::atomic<unsigned> *generating;  // workers still writing their batches
  uint64_t timed_tsc = 0;
  std::atomic<unsigned> *serving = nullptr;  // workers not yet done with the others' hand-offs
};

/* The bench's own work between a worker's loops (writing a batch, freeing what was sent)
 * parks at a checkpoint's request every 32 or 64 packets, as the worker's loop does between
 * bursts: the daemon's workers have no such work, and a quiesce that waited for a whole
 * batch (512 frames, about 10 us) would measure the bench, not the cut. */
void free_tx(Plane &p, unsigned w) {
  void *objs[64];
  unsigned k;
  for (rte_ring *r : {p.in_tx[w], p.out_tx[w]})
    while ((k = rte_ring_dequeue_burst(r, objs, 64, nullptr)) > 0) {
      rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf **>(objs), k);
      p.agent->barrier_point(w);
    }
}

int run_worker(void *arg) {
  Run &r = *static_cast<Run *>(arg);
  Plane &p = *r.p;
  const uint32_t nflows = static_cast<uint32_t>(p.owner.size());
  // The flows whose packets come to this worker's queue (owned: its own flows; spread: by a
  // flow hash, both ways; rss: the LAN packets and the replies each by the NIC's RSS), visited
  // with a prime stride.
  std::vector<uint32_t> mine, mine_back;
  for (uint32_t i = 0; i < nflows; i++) {
    const bool in = r.mode == Mode::OWNED    ? p.owner[i] == r.w
                    : r.mode == Mode::SPREAD ? (rte_hash_crc_4byte(i, 0x1234) % p.n) == r.w
                                             : p.in_q[i] == r.w;
    if (in) mine.push_back(i);
    if (r.mode == Mode::RSS && p.back_q[i] == r.w) mine_back.push_back(i);
  }
  if (r.mode != Mode::RSS) mine_back = mine;
  if (mine.empty() || mine_back.empty()) die("a worker owns no flow");
  uint64_t made = 0, cursor = r.w * 7919;
  rte_mbuf *b[kBatch];
  while (made < r.packets) {
    // Flow control, which a NIC does not give but a benchmark needs: a new batch only when
    // every other worker's ring has room for it, so the run measures work, not ring drops.
    for (bool room = false; !room;) {
      room = true;
      for (unsigned o = 0; o < p.n; o++)
        if (o != r.w && p.shards->backlog(o) > kHandoffRing - 2 * kBatch) room = false;
      if (!room) {
        const uint64_t t0 = rte_rdtsc();
        if (dp::worker_iteration(p.ctx[r.w])) r.timed_tsc += rte_rdtsc() - t0;
        free_tx(p, r.w);
      }
    }
    const unsigned k = static_cast<unsigned>(std::min<uint64_t>(kBatch, r.packets - made));
    // In bursts of 32, as a PMD refills its ring: within the lcore's mempool cache.
    for (unsigned j = 0; j < k; j += 32)
      if (rte_pktmbuf_alloc_bulk(p.pool, b + j, std::min(32u, k - j)) != 0) die("mbuf pool empty");
    unsigned nin = 0, nout = 0;
    rte_mbuf *in[kBatch], *out[kBatch];
    for (unsigned j = 0; j < k; j++) {
      if ((j & 31) == 0) p.agent->barrier_point(r.w);  // see free_tx
      // Spread and rss: every other packet is a reply, from the WAN.
      const bool back = r.mode != Mode::OWNED && (j & 1);
      const std::vector<uint32_t> &from = back ? mine_back : mine;
      const uint32_t i = from[(cursor += 1000003) % from.size()];
      std::memcpy(rte_pktmbuf_mtod(b[j], uint8_t *), back ? &p.back_tmpl[size_t(i) * 64] : &p.out_tmpl[size_t(i) * 64],
                  64);
      b[j]->data_len = b[j]->pkt_len = kFrameLen;
      (back ? out[nout++] : in[nin++]) = b[j];
    }
    if (rte_ring_sp_enqueue_burst(p.in_rx[r.w], reinterpret_cast<void **>(in), nin, nullptr) != nin ||
        rte_ring_sp_enqueue_burst(p.out_rx[r.w], reinterpret_cast<void **>(out), nout, nullptr) != nout)
      die("receive ring full");
    made += k;
    const uint64_t t0 = rte_rdtsc();
    while (rte_ring_count(p.in_rx[r.w]) || rte_ring_count(p.out_rx[r.w])) dp::worker_iteration(p.ctx[r.w]);
    r.timed_tsc += rte_rdtsc() - t0;
    free_tx(p, r.w);
  }
  // Packets handed to this worker by the others after its own ran out: it stays until every
  // worker has written all its batches (another may be waiting for room in this one's ring).
  r.generating->fetch_sub(1);
  // Only the iterations that did work are timed: waiting for the others is not.
  uint64_t idle = 0;
  while (r.generating->load() > 0 || idle < 1000) {
    const uint64_t t0 = rte_rdtsc();
    if (dp::worker_iteration(p.ctx[r.w])) {
      r.timed_tsc += rte_rdtsc() - t0;
      idle = 0;
    } else {
      idle++;
    }
    free_tx(p, r.w);
  }
  /* No worker leaves while another still runs: a checkpoint's quiesce (measure_pause) parks
   * every worker, and one that had returned would leave the rest parked until the quiesce
   * timed out, again and again (seen: minutes for one round). Not timed. */
  r.serving->fetch_sub(1);
  while (r.serving->load() > 0) {
    dp::worker_iteration(p.ctx[r.w]);
    free_tx(p, r.w);
  }
  return 0;
}

struct Result {
  double mpps;
  uint64_t sent, handoffs, drops;
};

/* before_last_pass runs once every worker has returned, before the main thread's last pass
 * over each worker in turn: measure_pause stops its checkpoints there. A quiesce needs every
 * worker parked, and in that pass only one runs at a time: an iteration parked in
 * barrier_point until the request's 20 ms timeout, the next request came at once, and the
 * pass crawled (seen once: a round stuck for minutes). */
Result measure(Plane &p, Mode mode, uint64_t packets, const std::function<void()> &before_last_pass = {}) {
  std::vector<Run> runs(p.n);
  std::atomic<unsigned> generating{p.n}, serving{p.n};
  uint64_t sent0 = 0, ho0 = 0, drops0 = 0;
  for (unsigned w = 0; w < p.n; w++) {
    sent0 += p.agent->worker_port_counters(w, 0).tx_packets.load() + p.agent->worker_port_counters(w, 1).tx_packets.load();
    ho0 += p.shards->counters(w).handoffs.load();
    for (unsigned d = 0; d < dp::kDropReasonCount; d++) drops0 += p.nf[w]->counters().drops[d].load();
  }
  unsigned lcore = rte_get_next_lcore(-1, 1, 0);
  for (unsigned w = 0; w < p.n; w++) runs[w] = Run{&p, w, mode, packets, &generating, 0, &serving};
  std::vector<unsigned> lcores;
  for (unsigned w = 1; w < p.n; w++) {
    if (lcore >= RTE_MAX_LCORE) die("needs one lcore per worker (-l)");
    lcores.push_back(lcore);
    rte_eal_remote_launch(run_worker, &runs[w], lcore);
    lcore = rte_get_next_lcore(lcore, 1, 0);
  }
  run_worker(&runs[0]);
  for (unsigned l : lcores) rte_eal_wait_lcore(l);
  if (before_last_pass) before_last_pass();
  // A last pass for what one worker handed to another after that one had stopped.
  for (unsigned w = 0; w < p.n; w++) {
    while (dp::worker_iteration(p.ctx[w])) {
    }
    free_tx(p, w);
  }
  uint64_t sent = 0, ho = 0, drops = 0, slowest = 0;
  for (unsigned w = 0; w < p.n; w++) {
    sent += p.agent->worker_port_counters(w, 0).tx_packets.load() + p.agent->worker_port_counters(w, 1).tx_packets.load();
    ho += p.shards->counters(w).handoffs.load();
    for (unsigned d = 0; d < dp::kDropReasonCount; d++) drops += p.nf[w]->counters().drops[d].load();
    slowest = std::max(slowest, runs[w].timed_tsc);
  }
  const uint64_t total = packets * p.n;
  return Result{double(total) * double(rte_get_tsc_hz()) / double(slowest) / 1e6, sent - sent0, ho - ho0,
                drops - drops0};
}

/* Forwards P packets per worker (owned) while an engine over every worker's table takes a
 * checkpoint each millisecond; the pauses' p50 and p99 in microseconds. */
std::pair<double, double> measure_pause(Plane &p, uint64_t packets) {
  ftpair::ckpt::EngineConfig ec;
  ec.node_id = "nf_scale";
  ec.interval = std::chrono::milliseconds(1000);  // the requests below set the pace
  ec.quiesce_timeout = std::chrono::milliseconds(20);
  std::vector<dp::FlowTable *> tables;
  for (auto &t : p.flows) tables.push_back(t.get());
  ftpair::ckpt::Engine engine(ec, tables, *p.agent);
  engine.start();
  engine.set_replicating(true);
  engine.clear_pause_samples();
  std::atomic<bool> done{false};
  std::thread ticker([&] {
    while (!done.load()) {
      uint64_t epoch = 0, records = 0;
      (void)engine.checkpoint_now(std::chrono::milliseconds(50), &epoch, &records);  // UNAVAILABLE: no standby
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  measure(p, Mode::OWNED, packets, [&] {
    done.store(true);
    ticker.join();
    engine.stop();  // its own periodic checkpoint too
  });
  std::vector<uint64_t> ns = engine.pause_samples();
  if (ns.size() < 20) die("only " + std::to_string(ns.size()) + " checkpoints during the pause run");
  std::sort(ns.begin(), ns.end());
  return {double(ns[ns.size() / 2]) / 1e3, double(ns[ns.size() * 99 / 100]) / 1e3};
}

// What the process holds: the DPDK heap in use (tables, indexes, rings) and malloc's.
uint64_t held_bytes() {
  rte_malloc_socket_stats st{};
  uint64_t dpdk = 0;
  for (unsigned sock = 0; sock < rte_socket_count(); sock++)
    if (rte_malloc_get_socket_stats(int(rte_socket_id_by_idx(sock)), &st) == 0) dpdk += st.heap_allocsz_bytes;
  const struct mallinfo2 mi = mallinfo2();
  return dpdk + mi.uordblks + mi.hblkhd;
}

// The memory one worker's dataplane holds with nflows flows made, over the baseline before it.
uint64_t dataplane_bytes(uint32_t nflows, rte_mempool *pool) {
  const uint64_t base = held_bytes();
  auto p = build(1, nflows, pool);
  for (auto *v : {&p->out_tmpl, &p->back_tmpl}) {
    v->clear();
    v->shrink_to_fit();
  }
  p->owner.clear();
  p->owner.shrink_to_fit();
  malloc_trim(0);
  const uint64_t held = held_bytes() - base;
  destroy(std::move(p));
  return held;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

void emit(const std::string &name, double value, const char *unit, const std::string &params) {
  std::printf("{\"name\": \"%s\", \"value\": %.6g, \"unit\": \"%s\", \"params\": %s}\n", name.c_str(), value, unit,
              params.c_str());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char **argv) {
  int dash = 1;
  while (dash < argc && std::strcmp(argv[dash], "--") != 0) dash++;
  std::string err;
  if (dp::eal_init(std::vector<std::string>(argv + 1, argv + dash), &err) != 0) die(err);
  Options o;
  for (int i = dash + 1; i < argc; i++) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die(a + " needs a value");
      return argv[++i];
    };
    if (a == "--workers") o.workers = static_cast<unsigned>(std::stoul(val()));
    else if (a == "--flows") o.flows = static_cast<uint32_t>(std::stoul(val()));
    else if (a == "--packets") o.packets = std::stoull(val());
    else if (a == "--rounds") o.rounds = static_cast<unsigned>(std::stoul(val()));
    else if (a == "--memory") o.memory_flows = static_cast<uint32_t>(std::stoul(val()));
    else die("unknown option " + a);
  }
  if (o.memory_flows) {
    constexpr uint32_t kBase = 1000;
    if (o.memory_flows <= kBase) die("--memory: more than 1000 flows");
    rte_mempool *mp = dp::pool_create("nfs_mem_pkts", 8191, &err);
    if (!mp) die(err);
    const uint64_t small = dataplane_bytes(kBase, mp);
    const uint64_t big = dataplane_bytes(o.memory_flows, mp);
    const double per = double(big - small) / double(o.memory_flows - kBase);
    std::fprintf(stderr, "memory: %" PRIu64 " bytes held with %u flows, %" PRIu64 " with %u: %.1f bytes per flow\n",
                 small, kBase, big, o.memory_flows, per);
    emit("nf_bytes_per_flow", per, "bytes",
         "{\"flows\": " + std::to_string(o.memory_flows) + ", \"capacity\": " +
             std::to_string(o.memory_flows + o.memory_flows / 4) + ", \"proto\": \"udp\"}");
    rte_mempool_free(mp);
    dp::eal_cleanup();
    return 0;
  }
  if (o.workers < 2 || o.workers > dp::kMaxWorkers) die("--workers: 2.." + std::to_string(dp::kMaxWorkers));
  if (rte_lcore_count() < o.workers) die("needs " + std::to_string(o.workers) + " lcores (-l)");
  rte_mempool *pool = dp::pool_create("nfs_pkts", 65535, &err);
  if (!pool) die(err);
  std::vector<double> rate1, rateN, ratio, spreadN, handoff, rssN, handoff_rss;
  std::vector<double> pause50[2], pause99[2], pause_ratio;
  for (unsigned round = 0; round < o.rounds; round++) {
    double r1 = 0;
    for (unsigned n : {1u, o.workers}) {
      auto p = build(n, o.flows, pool);
      const Result owned = measure(*p, Mode::OWNED, o.packets);
      if (owned.sent != o.packets * n || owned.drops)
        die("owned: " + std::to_string(owned.sent) + " of " + std::to_string(o.packets * n) + " packets forwarded");
      std::fprintf(stderr, "round %u, %u worker(s), owned: %.2f Mpps, %" PRIu64 " hand-offs\n", round, n, owned.mpps,
                   owned.handoffs);
      const auto [p50, p99] = measure_pause(*p, o.packets * 4);
      pause50[n > 1].push_back(p50);
      pause99[n > 1].push_back(p99);
      if (n > 1) pause_ratio.push_back(p50 / pause50[0].back());
      std::fprintf(stderr, "round %u, %u worker(s), checkpoint pause: p50 %.1f us, p99 %.1f us\n", round, n, p50, p99);
      if (n == 1) {
        r1 = owned.mpps;
        rate1.push_back(owned.mpps);
      } else {
        rateN.push_back(owned.mpps);
        ratio.push_back(owned.mpps / r1);
        for (Mode mode : {Mode::SPREAD, Mode::RSS}) {
          const char *name = mode == Mode::SPREAD ? "spread" : "rss";
          const Result run = measure(*p, mode, o.packets);
          if (run.sent != o.packets * n || run.drops) {
            uint64_t full = 0;
            for (unsigned w = 0; w < n; w++) full += p->shards->counters(w).handoff_full.load();
            for (unsigned w = 0; w < n; w++)
              for (unsigned d = 0; d < dp::kDropReasonCount; d++)
                if (p->nf[w]->counters().drops[d].load())
                  std::fprintf(stderr, "worker %u drop %s: %" PRIu64 "\n", w,
                               dp::drop_reason_label(static_cast<dp::DropReason>(d)),
                               p->nf[w]->counters().drops[d].load());
            die(std::string(name) + ": " + std::to_string(run.sent) + " of " + std::to_string(o.packets * n) +
                " packets forwarded, " + std::to_string(full) + " lost on a full hand-off ring");
          }
          (mode == Mode::SPREAD ? spreadN : rssN).push_back(run.mpps);
          (mode == Mode::SPREAD ? handoff : handoff_rss).push_back(double(run.handoffs) / double(o.packets * n));
          std::fprintf(stderr, "round %u, %u workers, %s: %.2f Mpps, %.3f of the packets handed off\n", round, n,
                       name, run.mpps, double(run.handoffs) / double(o.packets * n));
        }
        uint64_t picked = 0, unsteered = 0;
        for (unsigned w = 0; w < n; w++) {
          picked += p->nf[w]->counters().rss_ports_steered.load() + p->nf[w]->counters().rss_ports_unsteered.load();
          unsteered += p->nf[w]->counters().rss_ports_unsteered.load();
        }
        std::fprintf(stderr, "round %u, %u workers: %" PRIu64 " ports picked for the RSS, %" PRIu64 " unsteered\n",
                     round, n, picked, unsteered);
      }
      destroy(std::move(p));
    }
  }
  const std::string fl = "\"flows\": " + std::to_string(o.flows) + ", \"proto\": \"udp\"";
  emit("nf_scale_mpps", median(rate1), "Mpps", "{" + fl + ", \"workers\": 1, \"mode\": \"owned\"}");
  emit("nf_scale_mpps", median(rateN), "Mpps",
       "{" + fl + ", \"workers\": " + std::to_string(o.workers) + ", \"mode\": \"owned\"}");
  emit("nf_scale_mpps", median(spreadN), "Mpps",
       "{" + fl + ", \"workers\": " + std::to_string(o.workers) + ", \"mode\": \"spread\"}");
  emit("nf_scaling_ratio", median(ratio), "ratio", "{" + fl + ", \"workers\": " + std::to_string(o.workers) + "}");
  emit("nf_handoff_ratio", median(handoff), "ratio", "{" + fl + ", \"workers\": " + std::to_string(o.workers) + "}");
  emit("nf_scale_mpps", median(rssN), "Mpps",
       "{" + fl + ", \"workers\": " + std::to_string(o.workers) + ", \"mode\": \"rss\"}");
  emit("nf_handoff_ratio", median(handoff_rss), "ratio",
       "{" + fl + ", \"workers\": " + std::to_string(o.workers) + ", \"steering\": \"rss_port_choice\"}");
  for (unsigned k = 0; k < 2; k++) {
    const std::string pp = "{" + fl + ", \"workers\": " + std::to_string(k ? o.workers : 1) + ", \"standby\": \"none\"}";
    emit("checkpoint_pause_us_p50", median(pause50[k]), "us", pp);
    emit("checkpoint_pause_us_p99", median(pause99[k]), "us", pp);
  }
  emit("checkpoint_pause_workers_ratio", median(pause_ratio), "ratio",
       "{" + fl + ", \"workers\": " + std::to_string(o.workers) + "}");
  rte_mempool_free(pool);
  dp::eal_cleanup();
  return 0;
}
