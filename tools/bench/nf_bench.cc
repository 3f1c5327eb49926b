/* nf_bench: NAT44 throughput on one worker core, 64-byte frames, N flows.
 *
 *   nf_bench [EAL args] -- [--flows N] [--proto udp|tcp] [--seconds S] [--warm-s W]
 *                          [--gen-seconds G] [--inline-seconds I] [--sync-packets S]
 *                          [--no-generator --packets P] [--dp-beats-us US] [--feed copy|dma|both]
 *
 * Ports, as the daemon's interface agent sees them:
 *   inside  (port 0): net_ring over an SP/SC rte_ring, filled by the generator on the main lcore
 *   outside (port 1): net_null,no-rx=1, a sink that frees what is transmitted
 * The worker (dataplane worker_main, unchanged) runs on the second lcore.
 *
 * Before the worker starts, every flow is created synchronously on the main thread: UDP by
 * one packet per flow; TCP by a SYN from the inside, a SYN+ACK from the outside and an ACK
 * from the inside, so the measured ACK segments belong to ESTABLISHED flows.
 *
 * The generator copies the pre-built 60-byte frame (64 bytes on the wire with the FCS) of
 * flow i into freshly allocated mbufs, visiting the flows in a scattered order (a prime
 * stride modulo N), and enqueues bursts of 32. Rates are the median of 1-second windows of
 * the outside port's transmit counter, sampled by the generator thread.
 *
 * --feed: how the generator hands the frames over. copy (nf_mpps, the headline): it writes the
 * mbufs' fields and copies each frame with the CPU. dma (nf_dma_fed_mpps), NIC-like: the
 * frame written to memory with non-temporal stores and the mbuf's fields written on the
 * worker's core by an RX callback, as a PMD's receive writes them (what it does not model:
 * Options::feed). both (the default): copy, then dma.
 *
 * --inline-seconds: afterwards, generator and worker loop take turns on one core (extra figure).
 * --sync-packets: then the synchronous mode below, natively (extra figure).
 *
 * --no-generator: one thread; batches of packets are enqueued, then worker_iteration() is
 * called until the ring is empty. Run it under `valgrind --tool=callgrind
 * --toggle-collect='*worker_iteration*'` to count instructions per packet.
 *
 * --dp-beats-us US: the worker also sends signed dataplane beats (issue 19) every US, as the
 * daemon's do (the one-compare-per-loop cost, and the beat itself when it is due).
 *
 * --replication off,relaxed,strict: the checkpoint benchmark instead (issue 3). A real Sync
 * server with its own flow table and applier listens on loopback; for each round and each
 * listed mode, a fresh ckpt::Engine (the daemon's) replicates this table to it while the
 * generator runs. 1 in --churn-every generated packets opens a new UDP flow (UDP flows
 * expire after --udp-timeout s), so every checkpoint interval has dirty records and the
 * engine checkpoints at its configured rate (--ckpt-interval-us). Per phase: NF Mpps, the
 * workers' pause per checkpoint (exact samples), checkpoints/s, records replicated, and in
 * strict mode the time each held packet waited for its epoch's acknowledgement. The first
 * replicated phase also measures the full sync of the table to the empty standby.
 *
 * Output: JSON lines on stdout ({"name","value","unit","params"}); progress on stderr. */
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>

#include <emmintrin.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ip.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf.h>
#include <rte_pause.h>
#include <rte_prefetch.h>
#include <rte_ring.h>
#include <rte_tcp.h>
#include <rte_udp.h>

#include "checkpoint/engine.h"
#include "checkpoint/sync_server.h"
#include "dataplane/agent.h"
#include "dataplane/arp_table.h"
#include "dataplane/dp_beat.h"
#include "dataplane/flow_table.h"
#include "dataplane/nf.h"
#include "dataplane/port.h"
#include "dataplane/worker.h"

namespace dp = ftpair::dp;

namespace {

constexpr uint32_t kFrameLen = 60;   // 64 bytes on the wire with the FCS
constexpr uint32_t kTmplStride = 64;
constexpr uint16_t kGenBurst = 32;
constexpr uint32_t kStride = 1000003;  // prime, so coprime with any N made of 2s and 5s
constexpr uint32_t kHosts = 250;       // inside hosts 198.18.1.2 .. 198.18.1.251
constexpr uint32_t kDests = 256;       // 4 servers 198.18.2.10..13 x 64 ports 8000..8063

struct Options {
  uint32_t flows = 100000;
  std::string proto = "udp";
  unsigned seconds = 5;
  double warm_s = 1.0;
  unsigned gen_seconds = 2;
  unsigned inline_seconds = 2;  // 0: skip the one-core run
  uint64_t sync_packets = 1000000;  // 0: skip the synchronous run after the others
  bool no_generator = false;
  uint64_t packets = 200000;
  uint32_t ring_size = 1024;
  uint32_t mbufs = 16383;
  // checkpoint benchmark
  std::vector<std::string> replication;  // modes, in order, per round; empty = NF benchmark
  unsigned rounds = 3;
  uint32_t churn_every = 0;        // 1 in N generated packets opens a new flow (0 = none)
  uint32_t ckpt_interval_us = 1000;
  uint32_t udp_timeout_s = 120;
  /* The generator at this many packets/s, sleeping between bursts (0: as fast as it can).
   * Paced, the NF leaves the second CPU to the commit path: the replication-only figures
   * (params "load": "nf_idle"). */
  uint64_t gen_pps = 0;
  bool realtime = true;  // the commit path's threads at real-time priority (engine and standby)
  uint32_t dp_beats_us = 0;  // the worker sends dataplane beats (issue 19) this often; 0 = off
  /* How the generator hands frames to the worker in the generator-fed run and the generator
   * alone (inline, sync, --no-generator and --replication always copy); "both" (the default)
   * runs copy (nf_mpps, the headline) and then dma (nf_dma_fed_mpps):
   *  copy: it writes each mbuf's fields and copies the frame with the CPU, so the worker
   *        reads two lines another core holds modified;
   *  dma:  NIC-like: the frame is written with non-temporal stores (to memory, as DMA
   *        writes without DDIO, no copy left in the generator's cache) into mbufs it does not
   *        touch, and the mbuf's fields are written on the worker's core by an RX callback,
   *        as a PMD's receive writes them from the descriptor. Not modelled: the worker's
   *        descriptor reads, ring refills and tail writes (a PMD's), and DDIO's placement of
   *        frames in the LLC; the worker's freed mbufs go back through the pool's shared
   *        ring rather than its refills. An extra figure, not the headline. */
  std::string feed = "both";
};

[[noreturn]] void die(const std::string &msg) {
  std::fprintf(stderr, "nf_bench: %s\n", msg.c_str());
  std::exit(1);
}

uint32_t ip4(unsigned a, unsigned b, unsigned c, unsigned d) {
  return rte_cpu_to_be_32((a << 24) | (b << 16) | (c << 8) | d);
}

rte_ether_addr mac(uint8_t a, uint8_t b) {
  return rte_ether_addr{{0x02, 0x00, 0x00, 0x00, a, b}};
}

// Addresses of flow i, host byte order for the ports. Inside keys are unique through
// (source address, source port): every flow is a mapping of its own.
struct FlowAddr {
  uint32_t sip, dip;  // network order
  uint16_t sport, dport;
  uint8_t host, server;
};
FlowAddr flow_addr(uint32_t i) {
  FlowAddr a{};
  a.host = static_cast<uint8_t>(i % kHosts);
  uint32_t d = i % kDests;
  a.server = static_cast<uint8_t>(d / 64);
  a.sip = ip4(198, 18, 1, 2 + a.host);
  a.dip = ip4(198, 18, 2, 10 + a.server);
  a.sport = static_cast<uint16_t>(1024 + i / kHosts);
  a.dport = static_cast<uint16_t>(8000 + d % 64);
  return a;
}

const rte_ether_addr kVmacIn{{0x00, 0x00, 0x5e, 0x00, 0x01, 0x01}};
const rte_ether_addr kVmacOut{{0x00, 0x00, 0x5e, 0x00, 0x01, 0x02}};

// Writes a 60-byte Ethernet/IPv4/TCP-or-UDP frame with valid checksums.
void build_frame(uint8_t *buf, const rte_ether_addr &smac, const rte_ether_addr &dmac,
                 uint32_t sip, uint32_t dip, uint16_t sport, uint16_t dport, uint8_t proto,
                 uint8_t tcp_flags) {
  std::memset(buf, 0, kTmplStride);
  auto *eth = reinterpret_cast<rte_ether_hdr *>(buf);
  eth->dst_addr = dmac;
  eth->src_addr = smac;
  eth->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  auto *ip = reinterpret_cast<rte_ipv4_hdr *>(eth + 1);
  ip->version_ihl = 0x45;
  ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(kFrameLen - sizeof(rte_ether_hdr)));
  ip->packet_id = rte_cpu_to_be_16(1);
  ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
  ip->time_to_live = 64;
  ip->next_proto_id = proto;
  ip->src_addr = sip;
  ip->dst_addr = dip;
  uint8_t *l4 = reinterpret_cast<uint8_t *>(ip + 1);
  uint8_t *payload;
  if (proto == IPPROTO_TCP) {
    auto *tcp = reinterpret_cast<rte_tcp_hdr *>(l4);
    tcp->src_port = rte_cpu_to_be_16(sport);
    tcp->dst_port = rte_cpu_to_be_16(dport);
    tcp->sent_seq = rte_cpu_to_be_32(0x10000000u + sport);
    tcp->recv_ack = (tcp_flags & RTE_TCP_ACK_FLAG) ? rte_cpu_to_be_32(0x20000000u + dport) : 0;
    tcp->data_off = 0x50;
    tcp->tcp_flags = tcp_flags;
    tcp->rx_win = rte_cpu_to_be_16(65535);
    payload = l4 + sizeof(rte_tcp_hdr);
  } else {
    auto *udp = reinterpret_cast<rte_udp_hdr *>(l4);
    udp->src_port = rte_cpu_to_be_16(sport);
    udp->dst_port = rte_cpu_to_be_16(dport);
    udp->dgram_len = rte_cpu_to_be_16(
        static_cast<uint16_t>(kFrameLen - sizeof(rte_ether_hdr) - sizeof(rte_ipv4_hdr)));
    payload = l4 + sizeof(rte_udp_hdr);
  }
  for (uint8_t *p = payload; p < buf + kFrameLen; p++) *p = static_cast<uint8_t>(p - payload + 'a');
  ip->hdr_checksum = rte_ipv4_cksum(ip);
  if (proto == IPPROTO_TCP)
    reinterpret_cast<rte_tcp_hdr *>(l4)->cksum = rte_ipv4_udptcp_cksum(ip, l4);
  else
    reinterpret_cast<rte_udp_hdr *>(l4)->dgram_cksum = rte_ipv4_udptcp_cksum(ip, l4);
}

// Inside -> outside frame of flow i.
void build_inside(uint8_t *buf, uint32_t i, uint8_t proto, uint8_t tcp_flags) {
  FlowAddr a = flow_addr(i);
  build_frame(buf, mac(0x01, a.host), kVmacIn, a.sip, a.dip, a.sport, a.dport, proto, tcp_flags);
}

/* Churn flow c: a new UDP flow from one of three extra inside hosts (.252-.254), 60000
 * source ports each, to one of 4 servers x 64 ports. Each is a new mapping on the host's
 * pool address. The key space wraps after 180000 flows, by which time the oldest have
 * expired (the benchmark sets a short UDP timeout). */
constexpr uint32_t kChurnKeys = 3 * 60000;
void build_churn(uint8_t *buf, uint32_t c) {
  c %= kChurnKeys;
  const uint32_t d = c % kDests;
  build_frame(buf, mac(0x01, 0xfc), kVmacIn, ip4(198, 18, 1, 252 + c / 60000),
              ip4(198, 18, 2, 10 + d / 64), static_cast<uint16_t>(1024 + c % 60000),
              static_cast<uint16_t>(9000 + d % 64), IPPROTO_UDP, 0);
}

struct Bench {
  Options opt;
  uint8_t proto = IPPROTO_UDP;
  rte_mempool *pool = nullptr;
  rte_ring *in_rx = nullptr, *in_tx = nullptr;
  uint16_t pid_in = 0, pid_out = 0;
  std::unique_ptr<dp::FlowTable> flows;
  std::unique_ptr<dp::ArpTable> arp;
  std::unique_ptr<dp::InterfaceAgent> agent;
  std::unique_ptr<dp::Nat44> nf;
  std::vector<uint8_t> tmpl;  // kTmplStride bytes per flow: the measured frame
  uint64_t hz = 0;
  unsigned worker_lcore = 0;
  std::string params;  // JSON params object
  std::unique_ptr<ftpair::ckpt::SyncServer> standby;
  std::unique_ptr<dp::DpBeatBoard> beats;  // --dp-beats-us
  uint32_t churn_next = 0;  // next churn flow, across phases (a flow is new once per timeout)
};

void emit(const std::string &name, double value, const char *unit, const std::string &params) {
  std::printf("{\"name\": \"%s\", \"value\": %.6g, \"unit\": \"%s\", \"params\": %s}\n",
              name.c_str(), value, unit, params.c_str());
  std::fflush(stdout);
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

uint64_t drops_total(const dp::Nat44 &nf) {
  uint64_t s = 0;
  for (unsigned r = 0; r < dp::kDropReasonCount; r++)
    s += nf.counters().drops[r].load(std::memory_order_relaxed);
  return s;
}

void print_drops(const dp::Nat44 &nf) {
  for (unsigned r = 0; r < dp::kDropReasonCount; r++) {
    uint64_t v = nf.counters().drops[r].load(std::memory_order_relaxed);
    if (v)
      std::fprintf(stderr, "  drop %s: %" PRIu64 "\n",
                   dp::drop_reason_label(static_cast<dp::DropReason>(r)), v);
  }
}

// Frees whatever the NF sent back to the inside port (TCP warm-up SYN+ACKs).
void drain_inside_tx(Bench &b) {
  void *objs[64];
  unsigned n;
  while ((n = rte_ring_dequeue_burst(b.in_tx, objs, 64, nullptr)) > 0)
    rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf **>(objs), n);
}

// Feeds frames produced by make(i, buf) for i in [0, n) to the NF on port, synchronously.
template <typename F> void feed_sync(Bench &b, uint16_t port, uint32_t n, F &&make) {
  rte_mbuf *pkts[dp::kBurst];
  for (uint32_t base = 0; base < n; base += dp::kBurst) {
    uint16_t cnt = static_cast<uint16_t>(std::min<uint32_t>(dp::kBurst, n - base));
    if (rte_pktmbuf_alloc_bulk(b.pool, pkts, cnt) != 0) die("mbuf pool empty during warm-up");
    for (uint16_t k = 0; k < cnt; k++) {
      uint8_t *d = rte_pktmbuf_mtod(pkts[k], uint8_t *);
      make(base + k, d);
      pkts[k]->data_len = static_cast<uint16_t>(kFrameLen);
      pkts[k]->pkt_len = kFrameLen;
    }
    b.nf->process(port, pkts, cnt, rte_rdtsc());
    b.agent->flush(0);
    drain_inside_tx(b);
  }
}

void warm_up(Bench &b) {
  const uint32_t n = b.opt.flows;
  uint64_t t0 = rte_rdtsc();
  if (b.proto == IPPROTO_UDP) {
    feed_sync(b, dp::kPortInside, n, [&](uint32_t i, uint8_t *d) {
      std::memcpy(d, &b.tmpl[size_t(i) * kTmplStride], kTmplStride);
    });
  } else {
    feed_sync(b, dp::kPortInside, n, [&](uint32_t i, uint8_t *d) {
      build_inside(d, i, IPPROTO_TCP, RTE_TCP_SYN_FLAG);
    });
    // The server answers each SYN: from server:dport to the WAN VIP at the flow's NAT port.
    const uint32_t vip_out = ip4(198, 18, 2, 1);
    feed_sync(b, dp::kPortOutside, n, [&](uint32_t i, uint8_t *d) {
      FlowAddr a = flow_addr(i);
      dp::FlowState probe{};
      probe.in_ip = a.sip;
      probe.ext_ip = a.dip;
      probe.in_port = rte_cpu_to_be_16(a.sport);
      probe.ext_port = rte_cpu_to_be_16(a.dport);
      probe.proto = IPPROTO_TCP;
      int slot = b.flows->lookup(dp::inside_key(probe));
      uint16_t nat_port = slot >= 0 ? rte_be_to_cpu_16(b.flows->record(uint32_t(slot)).st.nat_port)
                                    : a.sport;
      const uint32_t nat_ip = slot >= 0 ? b.flows->record(uint32_t(slot)).st.nat_ip : vip_out;
      build_frame(d, mac(0x02, a.server), kVmacOut, a.dip, nat_ip, a.dport, nat_port,
                  IPPROTO_TCP, RTE_TCP_SYN_FLAG | RTE_TCP_ACK_FLAG);
    });
    feed_sync(b, dp::kPortInside, n, [&](uint32_t i, uint8_t *d) {
      std::memcpy(d, &b.tmpl[size_t(i) * kTmplStride], kTmplStride);
    });
  }
  double secs = double(rte_rdtsc() - t0) / double(b.hz);
  uint32_t established = 0;
  if (b.proto == IPPROTO_TCP)
    b.flows->for_each([&](uint32_t, const dp::FlowRecord &r) {
      if (r.st.tcp_state == static_cast<uint8_t>(dp::TcpState::ESTABLISHED)) established++;
    });
  std::fprintf(stderr, "warm-up: %u flows in the table (%u established) after %.2f s, %" PRIu64
                       " drops\n",
               b.flows->size(), established, secs, drops_total(*b.nf));
  print_drops(*b.nf);
  if (b.flows->size() != n) die("warm-up did not create every flow");
  if (b.proto == IPPROTO_TCP && established != n) die("warm-up did not establish every flow");
}

// The daemon's worker context over the benchmark's dataplane.
void init_ctx(Bench &b, dp::WorkerContext &ctx, std::atomic<bool> &quit) {
  ctx.id = 0;
  ctx.agent = b.agent.get();
  ctx.nf = b.nf.get();
  ctx.flows = b.flows.get();
  ctx.quit = &quit;
  if (b.opt.dp_beats_us) {  // as Node::attach_dp_beats: signed beats out of the inside port
    if (!b.beats) {
      dp::DpBeatConfig bc;
      bc.node_id = "bench";
      bc.interval_us = b.opt.dp_beats_us;
      bc.keys.push_back(dp::DpBeatKey{1, std::string(32, 'k')});
      bc.tsc_hz = rte_get_tsc_hz();
      b.beats = std::make_unique<dp::DpBeatBoard>(std::move(bc));
      b.nf->set_dp_beats(b.beats.get());
    }
    ctx.beats = b.beats.get();
    ctx.pool = b.pool;
    ctx.beat_port = dp::kPortInside;
    ctx.beat_next_tsc = 0;
  }
}

// ---------------------------------------------------------------- generator

struct Gen {
  Bench &b;
  uint32_t next = 0;
  rte_mbuf *burst[kGenBurst];
  uint16_t have = 0, off = 0;
  uint64_t produced = 0;
  uint32_t churn_ctr = 0;
  bool dma = false;  // --feed dma (Options::feed)
  // Where a pool mbuf's frame starts, from the mbuf's address (rte_pktmbuf_init's layout), so
  // the dma feed need not read the mbuf.
  const size_t data_at;

  explicit Gen(Bench &bench, bool dma_feed = false)
      : b(bench), dma(dma_feed),
        data_at(sizeof(rte_mbuf) + rte_pktmbuf_priv_size(bench.pool) + RTE_PKTMBUF_HEADROOM) {
    if (!dma) return;
    rte_mbuf *m = rte_pktmbuf_alloc(b.pool);
    if (m == nullptr) die("mbuf pool empty");
    const bool same = rte_pktmbuf_mtod(m, uint8_t *) == reinterpret_cast<uint8_t *>(m) + data_at;
    const bool aligned = reinterpret_cast<uintptr_t>(rte_pktmbuf_mtod(m, uint8_t *)) % 64 == 0;
    rte_pktmbuf_free(m);
    if (!same) die("--feed dma: the pool's mbufs do not have rte_pktmbuf_init's layout");
    // Non-temporal stores of whole lines: the frame must start a cache line (a private area
    // that is not a multiple of 64 bytes would break it).
    if (!aligned) die("--feed dma: the pool's frames do not start on a cache line");
  }

  // Prepares the next burst of mbufs. False when the pool is (momentarily) empty.
  bool refill() {
    const uint32_t n = b.opt.flows;
    const uint32_t step = kStride % n;
    uint32_t idx[kGenBurst];
    for (uint16_t k = 0; k < kGenBurst; k++) {
      idx[k] = next;
      next += step;
      if (next >= n) next -= n;
      rte_prefetch0(&b.tmpl[size_t(idx[k]) * kTmplStride]);
    }
    /* As a PMD's receive path takes its mbufs: straight from the pool, whose mbufs have one
     * segment and no next (the free path leaves them so), with only the first cache line's
     * fields written below. rte_pktmbuf_alloc_bulk's reset would also write the second
     * line (next, tx_offload): a line more per packet moved between the generator's core
     * and the worker's, which no NIC's receive path writes (measured: the generator alone
     * 15-20 -> 26-31 Mpps, and it no longer bounds the NF at 1k flows). */
    if (rte_mempool_get_bulk(b.pool, reinterpret_cast<void **>(burst), kGenBurst) != 0) {
      // Roll back so the flow sequence stays the same.
      next = idx[0];
      return false;
    }
    if (dma) {
      alignas(16) uint8_t churn[kTmplStride];
      for (uint16_t k = 0; k < kGenBurst; k++) {
        const uint8_t *src = &b.tmpl[size_t(idx[k]) * kTmplStride];
        if (b.opt.churn_every && ++churn_ctr >= b.opt.churn_every) {
          churn_ctr = 0;
          std::memset(churn, 0, sizeof(churn));
          build_churn(churn, b.churn_next++);
          src = churn;
        }
        auto *d = reinterpret_cast<__m128i *>(reinterpret_cast<uint8_t *>(burst[k]) + data_at);
        for (unsigned q = 0; q < kTmplStride / 16; q++)
          _mm_stream_si128(d + q, _mm_loadu_si128(reinterpret_cast<const __m128i *>(src) + q));
      }
      _mm_sfence();  // the frames in memory before the ring's enqueue publishes them
      have = kGenBurst;
      off = 0;
      return true;
    }
    for (uint16_t k = 0; k < kGenBurst; k++) {
      rte_mbuf *m = burst[k];
      m->data_off = RTE_PKTMBUF_HEADROOM;
      m->port = 0;
      m->ol_flags = 0;
      m->packet_type = 0;
      if (b.opt.churn_every && ++churn_ctr >= b.opt.churn_every) {
        churn_ctr = 0;
        build_churn(rte_pktmbuf_mtod(m, uint8_t *), b.churn_next++);
      } else {
        std::memcpy(rte_pktmbuf_mtod(m, uint8_t *), &b.tmpl[size_t(idx[k]) * kTmplStride],
                    kTmplStride);
      }
      m->data_len = static_cast<uint16_t>(kFrameLen);
      m->pkt_len = kFrameLen;
    }
    have = kGenBurst;
    off = 0;
    return true;
  }

  // One step: fills a burst if needed and enqueues what fits. Returns packets enqueued.
  unsigned step() {
    if (have == 0 && !refill()) return 0;
    unsigned k = rte_ring_sp_enqueue_burst(b.in_rx, reinterpret_cast<void **>(&burst[off]), have,
                                           nullptr);
    off = static_cast<uint16_t>(off + k);
    have = static_cast<uint16_t>(have - k);
    produced += k;
    return k;
  }

  void release() {
    if (have) rte_pktmbuf_free_bulk(&burst[off], have);
    have = 0;
  }
};

struct Sample {
  uint64_t tsc, value, produced;
};

/* Runs the generator on this lcore and samples counter() once a second after warm_s.
 * Returns seconds+1 samples. */
template <typename C> std::vector<Sample> generate_and_sample(Bench &b, Gen &g, unsigned seconds,
                                                              C &&counter) {
  std::vector<Sample> samples;
  const uint64_t start = rte_rdtsc();
  uint64_t next_sample = start + uint64_t(b.opt.warm_s * double(b.hz));
  unsigned iter = 0;
  while (samples.size() < seconds + 1) {
    if (b.opt.gen_pps) {
      // Paced: a burst when the schedule allows, else sleep (the CPU is the commit path's).
      const double due = double(rte_rdtsc() - start) / double(b.hz) * double(b.opt.gen_pps);
      // Ahead of schedule, or no room (mbufs held for output commit): sleep.
      if (double(g.produced) >= due || g.step() == 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
      ++iter;
      const uint64_t now = rte_rdtsc();
      if (now >= next_sample) {
        samples.push_back(Sample{now, counter(), g.produced});
        next_sample += b.hz;
      }
      continue;
    }
    if (g.step() == 0) rte_pause();
    if ((++iter & 31) == 0) {
      uint64_t now = rte_rdtsc();
      if (now >= next_sample) {
        samples.push_back(Sample{now, counter(), g.produced});
        next_sample += b.hz;
      }
    }
  }
  return samples;
}

std::vector<double> window_rates(const Bench &b, const std::vector<Sample> &s, bool produced) {
  std::vector<double> r;
  for (size_t k = 1; k < s.size(); k++) {
    double dt = double(s[k].tsc - s[k - 1].tsc) / double(b.hz);
    uint64_t dv = produced ? s[k].produced - s[k - 1].produced : s[k].value - s[k - 1].value;
    r.push_back(double(dv) / dt / 1e6);
  }
  return r;
}

std::string fmt_list(const std::vector<double> &v) {
  std::string s;
  char buf[32];
  for (double x : v) {
    std::snprintf(buf, sizeof(buf), "%s%.2f", s.empty() ? "" : " ", x);
    s += buf;
  }
  return s;
}

/* --feed dma: the mbuf fields a PMD's receive writes from the descriptor, on the worker's core
 * (an RX callback, run inside rte_eth_rx_burst). */
uint16_t nic_rx_fields(uint16_t port, uint16_t, rte_mbuf **pkts, uint16_t n, uint16_t, void *) {
  for (uint16_t i = 0; i < n; i++) {
    rte_mbuf *m = pkts[i];
    m->data_off = RTE_PKTMBUF_HEADROOM;
    m->port = port;
    m->ol_flags = 0;
    m->packet_type = 0;
    m->data_len = static_cast<uint16_t>(kFrameLen);
    m->pkt_len = kFrameLen;
  }
  return n;
}

// The worker side of the generator-only run: takes packets off the ring and frees them.
std::atomic<bool> g_quit{false};
int drain_main(void *arg) {
  auto *ring = static_cast<rte_ring *>(arg);
  void *objs[kGenBurst];
  while (!g_quit.load(std::memory_order_relaxed)) {
    unsigned n = rte_ring_sc_dequeue_burst(ring, objs, kGenBurst, nullptr);
    if (n) rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf **>(objs), n);
  }
  return 0;
}

void drain_ring(rte_ring *r) {
  void *objs[64];
  unsigned n;
  while ((n = rte_ring_dequeue_burst(r, objs, 64, nullptr)) > 0)
    rte_pktmbuf_free_bulk(reinterpret_cast<rte_mbuf **>(objs), n);
}

double run_generator_only(Bench &b, bool dma) {
  g_quit.store(false);
  if (rte_eal_remote_launch(drain_main, b.in_rx, b.worker_lcore) != 0) die("cannot launch drain");
  Gen g(b, dma);
  auto s = generate_and_sample(b, g, b.opt.gen_seconds, [] { return uint64_t(0); });
  g_quit.store(true);
  rte_eal_wait_lcore(b.worker_lcore);
  g.release();
  drain_ring(b.in_rx);
  auto rates = window_rates(b, s, true);
  double med = median(rates);
  std::fprintf(stderr, "generator alone%s: windows [%s] Mpps, median %.2f\n", dma ? " (dma feed)" : "",
               fmt_list(rates).c_str(), med);
  return med;
}

void run_nf(Bench &b, double gen_only, bool dma) {
  std::atomic<bool> quit{false};
  dp::WorkerContext ctx;
  init_ctx(b, ctx, quit);
  ctx.idle_sleep_max_us = 0;  // a dedicated core spins, as testpmd's does
  const uint64_t drops0 = drops_total(*b.nf);
  const uint64_t created0 = b.nf->counters().flows_created.load();
  const rte_eth_rxtx_callback *cb = nullptr;
  if (dma && (cb = rte_eth_add_rx_callback(b.pid_in, 0, nic_rx_fields, nullptr)) == nullptr)
    die(std::string("rte_eth_add_rx_callback: ") + rte_strerror(rte_errno));
  if (rte_eal_remote_launch(dp::worker_main, &ctx, b.worker_lcore) != 0) die("cannot launch worker");
  Gen g(b, dma);
  const dp::PortCounters &out = b.agent->worker_port_counters(0, dp::kPortOutside);
  auto s = generate_and_sample(b, g, b.opt.seconds,
                               [&] { return out.tx_packets.load(std::memory_order_relaxed); });
  quit.store(true);
  rte_eal_wait_lcore(b.worker_lcore);
  g.release();
  drain_ring(b.in_rx);
  if (cb) {
    // The worker has stopped, so nothing runs it any more: removed, then freed (ethdev does not).
    rte_eth_remove_rx_callback(b.pid_in, 0, cb);
    rte_free(const_cast<rte_eth_rxtx_callback *>(cb));
  }

  auto rates = window_rates(b, s, false);
  auto gen_rates = window_rates(b, s, true);
  double med = median(rates);
  const uint64_t drops = drops_total(*b.nf) - drops0;
  const uint64_t created = b.nf->counters().flows_created.load() - created0;
  std::fprintf(stderr,
               "nf%s: windows [%s] Mpps, median %.2f (%.0f TSC cycles/packet); generator during the"
               " run [%s]; %" PRIu64 " drops, %" PRIu64 " flows created while measuring\n",
               dma ? " (dma feed)" : "", fmt_list(rates).c_str(), med, med > 0 ? double(b.hz) / (med * 1e6) : 0.0,
               fmt_list(gen_rates).c_str(), drops, created);
  print_drops(*b.nf);
  if (dma) {
    // The NIC-like feed's figures (run.sh: nf_dma_fed_vs_testpmd_ratio).
    const std::string pp = b.params.substr(0, b.params.size() - 1) + ", \"feed\": \"dma\"}";
    emit("nf_dma_fed_mpps", med, "Mpps", pp);
    emit("nf_dma_fed_cycles_per_packet", med > 0 ? double(b.hz) / (med * 1e6) : 0, "cycles", pp);
    emit("nf_dma_fed_drops", double(drops), "packets", pp);
    if (gen_only > 0) emit("nf_dma_fed_generator_mpps", gen_only, "Mpps", pp);
    return;
  }
  emit("nf_mpps", med, "Mpps", b.params);
  emit("nf_mpps_min", *std::min_element(rates.begin(), rates.end()), "Mpps", b.params);
  emit("nf_mpps_max", *std::max_element(rates.begin(), rates.end()), "Mpps", b.params);
  emit("nf_cycles_per_packet", med > 0 ? double(b.hz) / (med * 1e6) : 0, "cycles", b.params);
  emit("nf_bench_drops", double(drops), "packets", b.params);
  if (gen_only > 0) {
    emit("nf_bench_generator_mpps", gen_only, "Mpps", b.params);
    emit("nf_vs_generator_ratio", med / gen_only, "ratio", b.params);
    if (med > 0.9 * gen_only)
      std::fprintf(stderr, "WARNING: the NF rate is within 10%% of the generator's: the generator"
                           " may be the bottleneck\n");
  }
}

/* Generator and NF take turns on this one core (no second thread): a burst is enqueued,
 * then one worker iteration runs. Like testpmd over net_null, whose RX builds the packets on
 * the forwarding core, the rate includes making the packets; being one thread, it does not
 * collapse when the two vCPUs are shared with other work. */
void run_inline(Bench &b) {
  std::atomic<bool> quit{false};
  dp::WorkerContext ctx;
  init_ctx(b, ctx, quit);
  Gen g(b);
  const dp::PortCounters &out = b.agent->worker_port_counters(0, dp::kPortOutside);
  std::vector<Sample> s;
  uint64_t next_sample = rte_rdtsc() + uint64_t(b.opt.warm_s * double(b.hz));
  unsigned iter = 0;
  while (s.size() < b.opt.inline_seconds + 1) {
    g.step();
    dp::worker_iteration(ctx);
    if ((++iter & 31) == 0) {
      uint64_t now = rte_rdtsc();
      if (now >= next_sample) {
        s.push_back(Sample{now, out.tx_packets.load(std::memory_order_relaxed), g.produced});
        next_sample += b.hz;
      }
    }
  }
  g.release();
  drain_ring(b.in_rx);
  b.agent->flush(0);
  auto rates = window_rates(b, s, false);
  double med = median(rates);
  std::fprintf(stderr, "nf+generator inline on one core: windows [%s] Mpps, median %.2f\n",
               fmt_list(rates).c_str(), med);
  emit("nf_inline_mpps", med, "Mpps", b.params);
}

/* Synchronous mode: enqueue a batch (untimed), then run worker iterations until the ring is
 * empty (timed). One thread, so callgrind can count instructions per packet; natively, the
 * median batch (512 packets, ~0.1 ms) is rarely preempted, so its cycles per packet stay
 * meaningful when the machine is busy. The packets were just written by this core, so they
 * are hotter in cache than packets from a second core: an optimistic bound for the NF. */
void run_sync(Bench &b, uint64_t packets) {
  std::atomic<bool> quit{false};
  dp::WorkerContext ctx;
  init_ctx(b, ctx, quit);
  Gen g(b);
  const dp::PortCounters &out = b.agent->worker_port_counters(0, dp::kPortOutside);
  const uint64_t tx0 = out.tx_packets.load();
  const uint64_t drops0 = drops_total(*b.nf);
  uint64_t nf_tsc = 0, done = 0;
  std::vector<double> per_batch;
  const uint32_t batch = b.opt.ring_size / 2;
  while (done < packets) {
    uint64_t want = std::min<uint64_t>(batch, packets - done);
    uint64_t queued = 0;
    while (queued < want) {
      if (g.have == 0 && !g.refill()) die("mbuf pool empty");
      unsigned take = static_cast<unsigned>(std::min<uint64_t>(g.have, want - queued));
      unsigned k = rte_ring_sp_enqueue_burst(b.in_rx, reinterpret_cast<void **>(&g.burst[g.off]),
                                             take, nullptr);
      if (k == 0) die("ring full in synchronous mode");
      g.off = static_cast<uint16_t>(g.off + k);
      g.have = static_cast<uint16_t>(g.have - k);
      queued += k;
    }
    uint64_t t0 = rte_rdtsc();
    while (rte_ring_count(b.in_rx) > 0) dp::worker_iteration(ctx);
    uint64_t dt = rte_rdtsc() - t0;
    nf_tsc += dt;
    per_batch.push_back(double(dt) / double(queued));
    done += queued;
  }
  g.release();
  b.agent->flush(0);
  const uint64_t sent = out.tx_packets.load() - tx0;
  const uint64_t drops = drops_total(*b.nf) - drops0;
  const double med = median(per_batch);
  std::fprintf(stderr, "sync: %" PRIu64 " packets, %" PRIu64 " sent, %" PRIu64
                       " drops, %.1f TSC cycles/packet on average, %.1f in the median batch"
                       " (%.2f Mpps)\n",
               done, sent, drops, double(nf_tsc) / double(done), med, double(b.hz) / med / 1e6);
  print_drops(*b.nf);
  if (sent != done) die("not every packet was forwarded in synchronous mode");
  emit("nf_sync_cycles_per_packet", med, "cycles", b.params);
  emit("nf_sync_mpps", double(b.hz) / med / 1e6, "Mpps", b.params);
}


// ---------------------------------------------------------------- checkpoint benchmark

namespace ck = ftpair::ckpt;

double percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * double(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// A percentile of the agent's hold-wait histogram delta, in µs (bucket upper bound).
double hist_percentile_us(const std::vector<uint64_t> &h, double q) {
  uint64_t total = 0;
  for (uint64_t c : h) total += c;
  if (total == 0) return 0;
  const uint64_t want = static_cast<uint64_t>(q * double(total - 1)) + 1;
  uint64_t seen = 0;
  for (unsigned i = 0; i < h.size(); i++) {
    seen += h[i];
    if (seen >= want) return double(dp::hold_wait_bucket_upper_ns(i)) / 1000.0;
  }
  return 0;
}

std::vector<uint64_t> hold_hist(const Bench &b) {
  std::vector<uint64_t> h(dp::kHoldWaitBuckets);
  const dp::AgentWorkerCounters &wc = b.agent->worker_counters(0);
  for (unsigned i = 0; i < dp::kHoldWaitBuckets; i++) h[i] = wc.hold_wait_hist[i].load();
  return h;
}

/* issue 18's divergence_detect_epochs: with the engine replicating under traffic, damage the
 * standby's copy of its idlest flow and count the epochs until the standby reports it
 * (then wait for the full sync that heals it). `corrupted_record` goes through apply() (the
 * kept fingerprint sees it at the next epoch); `bit_flip` changes the record in memory behind
 * the applier (only the scrub can see it: 2,048 slots a millisecond). */
void measure_divergence(Bench &b, ck::Engine &engine, const std::string &damage) {
  ck::Applier &ap = b.standby->applier();
  dp::FlowTable &t = b.standby->table();
  const uint64_t div0 = ap.stats().divergences.load();
  uint64_t at = 0;
  {
    std::lock_guard<std::mutex> g(b.standby->table_mutex());
    /* Flows picked at random: the next epoch is unlikely to rewrite one (which heals its copy
     * before anything can find it; the idlest flow is the worst pick, an expiring churn flow
     * whose deletion is next). corrupted_record: one flow's state through apply(), which the
     * kept fingerprint sees at the next epoch. bit_flip: a bit in 8 flows in memory, which
     * only the scrub sees; the first found counts. */
    std::vector<uint32_t> used;
    t.for_each([&](uint32_t i, const dp::FlowRecord &) { used.push_back(i); });
    if (used.empty()) die("divergence: the standby's table is empty");
    at = ap.table_epoch();
    std::mt19937 rng{static_cast<uint32_t>(at)};
    if (damage == "corrupted_record") {
      const uint32_t slot = used[rng() % used.size()];
      dp::FlowState st = t.record(slot).st;
      st.flags ^= dp::kFlowFinFromOutside;
      if (t.apply(slot, &st, t.record(slot).last_seen_tsc) != 0) die("divergence: apply failed");
    } else {
      for (int k = 0; k < 8; k++) t.record(used[rng() % used.size()]).st.tcp_win_log[1] ^= 0x10;
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  uint64_t found = 0;
  auto report = t0 + std::chrono::seconds(1);
  while (std::chrono::steady_clock::now() - t0 < std::chrono::seconds(30)) {
    if (ap.stats().divergences.load() > div0) {
      found = ap.diverged_epoch();
      break;
    }
    if (std::chrono::steady_clock::now() >= report) {
      std::fprintf(stderr, "divergence (%s): waiting; the standby applied epoch %" PRIu64 ", scrubbed %" PRIu64
                           " slots, in sync %d\n",
                   damage.c_str(), ap.applied_epoch(), ap.scrubbed(), int(ap.in_sync()));
      report += std::chrono::seconds(1);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  if (!found) {
    // Said, and no figure emitted: the bench's other figures still count.
    std::fprintf(stderr, "divergence (%s): NOT FOUND within 30 s; no figure emitted\n", damage.c_str());
    return;
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const std::string p = "{\"flows\": " + std::to_string(b.opt.flows) + ", \"damage\": \"" + damage +
                        "\", \"capacity\": " + std::to_string(t.capacity()) + "}";
  emit("divergence_detect_epochs", double(found - at), "epochs", p);
  emit("divergence_detect_ms", ms, "ms", p);
  std::fprintf(stderr, "divergence (%s): the standby's table held epoch %" PRIu64 ", found at epoch %" PRIu64
                       " (%" PRIu64 " epochs, %.1f ms)\n",
               damage.c_str(), at, found, found - at, ms);
  // The active's full sync heals it.
  while (!engine.in_sync() || !ap.in_sync()) {
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(60)) die("divergence: no resync within 60 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

struct PhaseResult {
  double mpps = 0;
};

/* One phase: the worker runs; with replication, a fresh engine connects (full sync first),
 * then the generator runs for opt.seconds measured windows. */
PhaseResult run_phase(Bench &b, const std::string &mode, unsigned round, bool *full_sync_done) {
  const bool rep = mode != "off", strict = mode == "strict";
  std::atomic<bool> quit{false};
  dp::WorkerContext ctx;
  init_ctx(b, ctx, quit);
  ctx.idle_sleep_max_us = 0;
  b.agent->set_strict(strict);
  b.agent->set_acked_epoch(rep ? 0 : UINT64_MAX);
  if (rte_eal_remote_launch(dp::worker_main, &ctx, b.worker_lcore) != 0) die("cannot launch worker");

  std::unique_ptr<ck::Engine> engine;
  // Paced runs say so: the replication-only figures, with the NF idle.
  const std::string load = b.opt.gen_pps ? ", \"load\": \"nf_idle\"" : "";
  const std::string params = "{\"flows\": " + std::to_string(b.opt.flows) + ", \"mode\": \"" + mode +
                             "\", \"round\": " + std::to_string(round) + load + "}";
  if (rep) {
    ck::EngineConfig ec;
    ec.node_id = "bench-active";
    ec.peer = "127.0.0.1:" + std::to_string(b.standby->port());
    ec.strict = strict;
    ec.fallback_relaxed = false;  // strict to the end: output waits for the standby
    ec.interval = std::chrono::microseconds(b.opt.ckpt_interval_us);
    ec.connect_backoff = std::chrono::milliseconds(50);
    ec.realtime = b.opt.realtime;
    ec.worker_cpus = {int(rte_lcore_to_cpu_id(int(b.worker_lcore)))};
    engine = std::make_unique<ck::Engine>(ec, *b.flows, *b.agent);
    engine->start();
    engine->set_replicating(true);
    const auto t0 = std::chrono::steady_clock::now();
    while (!engine->in_sync()) {
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(120))
        die("the standby did not get in sync within 120 s: " + engine->last_error());
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    const double fs = engine->stats().last_full_sync_seconds.load();
    const uint64_t recs = engine->stats().last_full_sync_records.load();
    const uint64_t attempts = engine->stats().full_syncs.load();
    std::fprintf(stderr, "%s round %u: full sync of %" PRIu64 " records in %.3f s (%.2f M records/s), %" PRIu64
                         " attempt(s)\n",
                 mode.c_str(), round, recs, fs, fs > 0 ? double(recs) / fs / 1e6 : 0.0, attempts);
    if (!*full_sync_done) {
      // The first full sync goes to an empty standby: the joining-standby case.
      const std::string fp = "{\"flows\": " + std::to_string(b.opt.flows) + load + "}";
      emit("full_sync_s", fs, "s", fp);
      emit("full_sync_records", double(recs), "records", fp);
      emit("full_sync_attempts", double(attempts), "attempts", fp);
      emit("replication_records_per_s", fs > 0 ? double(recs) / fs : 0, "records/s",
           "{\"flows\": " + std::to_string(b.opt.flows) + ", \"via\": \"full_sync\"" + load + "}");
      *full_sync_done = true;
    }
    engine->clear_pause_samples();
  }
  const ck::EngineStats *es = engine ? &engine->stats() : nullptr;
  const uint64_t ck0 = es ? es->checkpoints.load() : 0, ab0 = es ? es->aborted.load() : 0;
  const uint64_t rec0 = es ? es->records_sent.load() : 0, bytes0 = es ? es->bytes_sent.load() : 0;
  const dp::AgentWorkerCounters &wc = b.agent->worker_counters(0);
  const uint64_t held0 = wc.held.load(), full0 = wc.hold_full.load();
  const uint64_t lag0 = wc.release_lag_ns_sum.load(), rel0 = wc.releases.load();
  const std::vector<uint64_t> h0 = hold_hist(b);
  const uint64_t created0 = b.nf->counters().flows_created.load();
  const uint64_t drops0 = drops_total(*b.nf);
  const dp::PortCounters &out = b.agent->worker_port_counters(0, dp::kPortOutside);
  const uint64_t tx0 = out.tx_packets.load();
  const auto t_start = std::chrono::steady_clock::now();

  Gen g(b);
  auto samples = generate_and_sample(b, g, b.opt.seconds,
                                     [&] { return out.tx_packets.load(std::memory_order_relaxed); });
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  std::vector<uint64_t> pauses;
  if (engine) pauses = engine->pause_samples();
  std::vector<std::vector<uint64_t>> stage_samples(ck::kCommitStages);
  const bool engine_rt = engine && engine->realtime();
  if (engine)
    for (size_t i = 0; i < ck::kCommitStages; i++)
      stage_samples[i] = engine->commit_timing().samples(ck::CommitStage(i));
  const uint64_t cks = es ? es->checkpoints.load() - ck0 : 0, aborted = es ? es->aborted.load() - ab0 : 0;
  const uint64_t recs = es ? es->records_sent.load() - rec0 : 0, bytes = es ? es->bytes_sent.load() - bytes0 : 0;
  const uint64_t sent = out.tx_packets.load() - tx0;
  const uint64_t held = wc.held.load() - held0, hold_full = wc.hold_full.load() - full0;
  std::vector<uint64_t> hd = hold_hist(b);
  for (unsigned i = 0; i < hd.size(); i++) hd[i] -= h0[i];

  // The first relaxed round, after its windows (traffic still flowing): divergence found how soon.
  if (engine && mode == "relaxed" && round == 1 && !b.opt.gen_pps) {
    Gen dg(b);
    std::atomic<bool> stop_gen{false};
    // Traffic goes on meanwhile, so the epochs keep coming.
    std::thread feeder([&] {
      while (!stop_gen.load()) {
        if (dg.step() == 0) std::this_thread::sleep_for(std::chrono::microseconds(20));
      }
      dg.release();
    });
    measure_divergence(b, *engine, "corrupted_record");
    measure_divergence(b, *engine, "bit_flip");
    stop_gen.store(true);
    feeder.join();
  }
  // Stop the engine first (the worker must be running for a last checkpoint to finish), then
  // release anything still held, then stop the worker.
  if (engine) {
    engine->set_replicating(false);
    engine->stop();
  }
  b.agent->set_acked_epoch(UINT64_MAX);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  quit.store(true);
  rte_eal_wait_lcore(b.worker_lcore);
  g.release();
  drain_ring(b.in_rx);
  b.agent->set_strict(false);
  b.agent->flush(0);

  PhaseResult r;
  auto rates = window_rates(b, samples, false);
  r.mpps = median(rates);
  emit("ckpt_phase_nf_mpps", r.mpps, "Mpps", params);
  std::fprintf(stderr, "%s round %u: nf windows [%s] Mpps, median %.2f; %" PRIu64 " flows created, %" PRIu64
                       " drops\n",
               mode.c_str(), round, fmt_list(rates).c_str(), r.mpps, b.nf->counters().flows_created.load() - created0,
               drops_total(*b.nf) - drops0);
  // With churn and no flow created, nothing changed: the phase measured no replication at all
  // (the churn keys wrapped before their flows expired: a --udp-timeout too long for the rate).
  if (b.opt.churn_every && b.nf->counters().flows_created.load() == created0)
    die(mode + " round " + std::to_string(round) + ": the churn created no flows at " + std::to_string(r.mpps) +
        " Mpps (its " + std::to_string(kChurnKeys) + " keys wrapped within --udp-timeout); shorten --udp-timeout");
  if (engine) {
    std::vector<double> us;
    for (uint64_t ns : pauses) us.push_back(double(ns) / 1000.0);
    const double hz = double(cks) / secs;
    emit("ckpt_phase_rate_hz", hz, "Hz", params);
    emit("ckpt_phase_aborted", double(aborted), "checkpoints", params);
    emit("ckpt_phase_records_per_s", double(recs) / secs, "records/s", params);
    emit("ckpt_phase_bytes_per_s", double(bytes) / secs, "bytes/s", params);
    if (!us.empty()) {
      emit("ckpt_phase_pause_us_p50", percentile(us, 0.5), "us", params);
      emit("ckpt_phase_pause_us_p99", percentile(us, 0.99), "us", params);
      emit("ckpt_phase_pause_us_max", *std::max_element(us.begin(), us.end()), "us", params);
    }
    std::fprintf(stderr,
                 "%s round %u: %" PRIu64 " checkpoints (%.0f/s), %" PRIu64 " aborted, pause p50 %.1f p99 %.1f max %.1f us,"
                 " %.0f records/s, %.1f MB/s\n",
                 mode.c_str(), round, cks, hz, aborted, percentile(us, 0.5), percentile(us, 0.99),
                 us.empty() ? 0.0 : *std::max_element(us.begin(), us.end()), double(recs) / secs,
                 double(bytes) / secs / 1e6);
  }
  if (strict) {
    const double p50 = hist_percentile_us(hd, 0.5), p99 = hist_percentile_us(hd, 0.99);
    emit("ckpt_phase_held_fraction", sent ? double(held) / double(sent) : 0, "ratio", params);
    emit("ckpt_phase_hold_full", double(hold_full), "packets", params);
    emit("ckpt_phase_strict_latency_us_p50", p50, "us", params);
    emit("ckpt_phase_strict_latency_us_p99", p99, "us", params);
    std::fprintf(stderr, "strict round %u: %" PRIu64 " of %" PRIu64 " packets held (%.3f%%), %" PRIu64
                         " could not be held; held packets waited p50 %.1f us, p99 %.1f us\n",
                 round, held, sent, sent ? 100.0 * double(held) / double(sent) : 0.0, hold_full, p50, p99);
    // Where the commit time went (checkpoint/commit_timing.h), per epoch; release is the
    // workers' mean.
    std::string line;
    for (size_t i = 0; i < ck::kCommitStages; i++) {
      const auto st = ck::CommitStage(i);
      std::vector<double> v;
      for (uint64_t ns : stage_samples[i]) v.push_back(double(ns) / 1000.0);
      if (v.empty()) continue;
      const std::string sp = "{\"flows\": " + std::to_string(b.opt.flows) + ", \"mode\": \"" + mode +
                             "\", \"round\": " + std::to_string(round) + load + ", \"stage\": \"" +
                             ck::commit_stage_name(st) + "\"}";
      emit("ckpt_phase_stage_us_p50", percentile(v, 0.5), "us", sp);
      emit("ckpt_phase_stage_us_p99", percentile(v, 0.99), "us", sp);
      char buf[96];
      std::snprintf(buf, sizeof(buf), " %s %.1f/%.1f", ck::commit_stage_name(st), percentile(v, 0.5),
                    percentile(v, 0.99));
      line += buf;
    }
    const uint64_t lag = wc.release_lag_ns_sum.load() - lag0, rels = wc.releases.load() - rel0;
    if (rels) {
      const double mean = double(lag) / double(rels) / 1000.0;
      emit("ckpt_phase_stage_us_mean", mean, "us",
           "{\"flows\": " + std::to_string(b.opt.flows) + ", \"mode\": \"" + mode +
               "\", \"round\": " + std::to_string(round) + load + ", \"stage\": \"release\"}");
      char buf[64];
      std::snprintf(buf, sizeof(buf), " release mean %.1f", mean);
      line += buf;
    }
    std::fprintf(stderr, "strict round %u: commit stages p50/p99 us:%s; commit path real-time: %s\n", round,
                 line.c_str(), engine_rt ? "yes" : "no");
  }
  return r;
}

void run_replication(Bench &b) {
  std::string err;
  ck::SyncHooks hooks;
  hooks.realtime = b.opt.realtime;
  hooks.worker_cpus = {int(rte_lcore_to_cpu_id(int(b.worker_lcore)))};
  b.standby = ck::SyncServer::start("nfb_standby", b.flows->capacity(), 0, &err, 1, std::move(hooks));
  if (!b.standby) die("standby: " + err);
  std::fprintf(stderr, "standby Sync server on 127.0.0.1:%d\n", b.standby->port());
  bool full_sync_done = false;
  std::map<std::string, std::vector<double>> mpps;
  std::map<std::string, std::vector<double>> ratio;
  for (unsigned round = 1; round <= b.opt.rounds; round++) {
    std::map<std::string, double> this_round;
    for (const std::string &mode : b.opt.replication) {
      this_round[mode] = run_phase(b, mode, round, &full_sync_done).mpps;
      mpps[mode].push_back(this_round[mode]);
    }
    // Ratios within one round, so load changes on the machine between rounds cancel out.
    if (this_round.count("off") && this_round["off"] > 0)
      for (const auto &[mode, v] : this_round)
        if (mode != "off") ratio[mode].push_back(v / this_round["off"]);
  }
  for (const auto &[mode, v] : mpps)
    emit("ckpt_nf_mpps", median(v), "Mpps",
         "{\"flows\": " + std::to_string(b.opt.flows) + ", \"mode\": \"" + mode + "\"}");
  for (const auto &[mode, v] : ratio) {
    emit("replication_overhead_ratio", median(v), "ratio",
         "{\"flows\": " + std::to_string(b.opt.flows) + ", \"mode\": \"" + mode + "\"}");
    std::fprintf(stderr, "replication_overhead_ratio %s: rounds [%s], median %.3f\n", mode.c_str(),
                 fmt_list(v).c_str(), median(v));
  }
  b.standby->shutdown();
  b.standby.reset();
}

Options parse_args(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--flows") o.flows = static_cast<uint32_t>(std::stoul(val()));
    else if (a == "--proto") o.proto = val();
    else if (a == "--seconds") o.seconds = static_cast<unsigned>(std::stoul(val()));
    else if (a == "--warm-s") o.warm_s = std::stod(val());
    else if (a == "--gen-seconds") o.gen_seconds = static_cast<unsigned>(std::stoul(val()));
    else if (a == "--feed") {
      o.feed = val();
      if (o.feed != "copy" && o.feed != "dma" && o.feed != "both")
        die("--feed: copy, dma or both, not '" + o.feed + "'");
    }
    else if (a == "--inline-seconds") o.inline_seconds = static_cast<unsigned>(std::stoul(val()));
    else if (a == "--no-generator") o.no_generator = true;
    else if (a == "--dp-beats-us") o.dp_beats_us = static_cast<uint32_t>(std::stoul(val()));
    else if (a == "--packets") o.packets = std::stoull(val());
    else if (a == "--sync-packets") o.sync_packets = std::stoull(val());
    else if (a == "--ring-size") o.ring_size = static_cast<uint32_t>(std::stoul(val()));
    else if (a == "--mbufs") o.mbufs = static_cast<uint32_t>(std::stoul(val()));
    else if (a == "--replication") {
      std::string v = val();
      for (size_t p = 0; p <= v.size();) {
        size_t q = v.find(',', p);
        if (q == std::string::npos) q = v.size();
        std::string m = v.substr(p, q - p);
        if (m != "off" && m != "relaxed" && m != "strict")
          die("--replication: '" + m + "' is not off, relaxed or strict");
        o.replication.push_back(m);
        p = q + 1;
      }
    }
    else if (a == "--rounds") o.rounds = static_cast<unsigned>(std::stoul(val()));
    else if (a == "--churn-every") o.churn_every = static_cast<uint32_t>(std::stoul(val()));
    else if (a == "--ckpt-interval-us") o.ckpt_interval_us = static_cast<uint32_t>(std::stoul(val()));
    else if (a == "--udp-timeout") o.udp_timeout_s = static_cast<uint32_t>(std::stoul(val()));
    else if (a == "--gen-pps") o.gen_pps = std::stoull(val());
    else if (a == "--realtime") {
      const std::string v = val();
      if (v != "on" && v != "off") die("--realtime: '" + v + "' is not on or off");
      o.realtime = v == "on";
    }
    else die("unknown option " + a);
  }
  if (o.proto != "udp" && o.proto != "tcp") die("--proto must be udp or tcp");
  if (o.flows < 1 || o.flows > kHosts * 64000u) die("--flows out of range");
  if (o.seconds < 1) o.seconds = 1;
  if (!o.replication.empty() && o.proto != "udp") die("--replication runs with --proto udp");
  if (o.rounds < 1) o.rounds = 1;
  return o;
}

}  // namespace

int main(int argc, char **argv) {
  // EAL arguments come before "--", the benchmark's after it (argv[dash] plays argv[0]).
  int dash = 1;
  while (dash < argc && std::strcmp(argv[dash], "--") != 0) dash++;
  std::string err;
  if (dp::eal_init(std::vector<std::string>(argv + 1, argv + dash), &err) != 0) die(err);
  Bench b;
  b.opt = parse_args(argc - dash, argv + dash);
  b.proto = b.opt.proto == "tcp" ? IPPROTO_TCP : IPPROTO_UDP;
  b.hz = rte_get_tsc_hz();
  b.params = "{\"flows\": " + std::to_string(b.opt.flows) + ", \"proto\": \"" + b.opt.proto + "\"}";
  b.worker_lcore = rte_get_next_lcore(-1, 1, 0);
  if (!b.opt.no_generator && b.worker_lcore >= RTE_MAX_LCORE)
    die("needs two lcores (-l 0,1): one generator, one worker");

  b.pool = dp::pool_create("nfb_pkts", b.opt.mbufs, &err);
  if (!b.pool) die(err);
  b.in_rx = rte_ring_create("nfb_in_rx", b.opt.ring_size, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  b.in_tx = rte_ring_create("nfb_in_tx", 1024, 0, RING_F_SP_ENQ | RING_F_SC_DEQ);
  if (!b.in_rx || !b.in_tx) die(std::string("rte_ring_create: ") + rte_strerror(rte_errno));
  int ring_pid = rte_eth_from_rings("nfb_in", &b.in_rx, 1, &b.in_tx, 1, 0);
  char ring_name[RTE_ETH_NAME_MAX_LEN];
  if (ring_pid < 0 || rte_eth_dev_get_name_by_port(uint16_t(ring_pid), ring_name) != 0)
    die(std::string("rte_eth_from_rings: ") + rte_strerror(rte_errno));
  rte_ether_addr mac_in{}, mac_out{};
  dp::PortSpec in_spec, out_spec;
  in_spec.device = ring_name;  // port_open finds it by name and configures it
  out_spec.device = "net_null_out,no-rx=1";
  if (dp::port_open(in_spec, b.pool, &b.pid_in, &mac_in, &err) != 0) die("inside port: " + err);
  if (dp::port_open(out_spec, b.pool, &b.pid_out, &mac_out, &err) != 0) die("outside port: " + err);

  const uint32_t n = b.opt.flows;
  dp::FlowTableConfig fc;
  fc.capacity = std::max<uint32_t>(1024, n + n / 4) + (b.opt.churn_every ? kChurnKeys : 0);
  fc.name = "nfb_flows";
  b.flows = dp::FlowTable::create(fc, &err);
  if (!b.flows) die("flow table: " + err);
  b.arp = std::make_unique<dp::ArpTable>(65536, uint64_t(86400) * b.hz);
  dp::AgentConfig ac;
  ac.nb_ports = 2;
  ac.port_ids[0] = b.pid_in;
  ac.port_ids[1] = b.pid_out;
  b.agent = std::make_unique<dp::InterfaceAgent>(ac);
  dp::NfConfig nc;
  nc.vip[0] = ip4(198, 18, 1, 1);
  nc.vip[1] = ip4(198, 18, 2, 1);
  nc.vmac[0] = kVmacIn;
  nc.vmac[1] = kVmacOut;
  nc.own_mac[0] = mac_in;
  nc.own_mac[1] = mac_out;
  nc.nat_port_min = 1024;
  nc.nat_port_max = 65535;
  // Mappings are endpoint-independent and never share a port, so 100k+ inside endpoints
  // need more than one outside address: a pool of at least 8, one address per 40,000
  // flows (64,512 ports each, and paired pooling spreads the hosts unevenly over them).
  const unsigned naddr = std::max<unsigned>(8, (n + 39999) / 40000);
  if (naddr > 230) die("--flows: at most 9,200,000 (one /24 of outside addresses)");
  // .1-.9, then from .20 on: the servers are .10-.13.
  for (unsigned a = 1; nc.pool.size() < naddr; a = a == 9 ? 20 : a + 1)
    nc.pool.push_back(ip4(198, 18, 2, static_cast<uint8_t>(a)));
  nc.max_sessions_per_host = 0;  // the bench's hosts hold thousands of flows each
  nc.timeouts.udp = b.opt.udp_timeout_s;
  b.nf = std::make_unique<dp::Nat44>(nc, *b.flows, *b.arp, *b.agent, b.pool, 0);
  for (unsigned s = 0; s < kDests / 64; s++)
    b.arp->learn(ip4(198, 18, 2, 10 + s), mac(0x02, static_cast<uint8_t>(s)), dp::kPortOutside,
                 rte_rdtsc());

  b.tmpl.assign(size_t(n) * kTmplStride, 0);
  for (uint32_t i = 0; i < n; i++)
    build_inside(&b.tmpl[size_t(i) * kTmplStride], i, b.proto,
                 b.proto == IPPROTO_TCP ? RTE_TCP_ACK_FLAG : 0);

  std::fprintf(stderr, "nf_bench: %u %s flows, table capacity %u, TSC %.2f GHz, worker lcore %u\n", n,
               b.opt.proto.c_str(), b.flows->capacity(), double(b.hz) / 1e9, b.worker_lcore);
  warm_up(b);

  if (!b.opt.replication.empty()) {
    run_replication(b);
  } else if (b.opt.no_generator) {
    run_sync(b, b.opt.packets);
  } else {
    for (bool dma : {false, true}) {
      if (b.opt.feed != "both" && dma != (b.opt.feed == "dma")) continue;
      const double gen_only = b.opt.gen_seconds ? run_generator_only(b, dma) : 0;
      run_nf(b, gen_only, dma);
    }
    if (b.opt.inline_seconds) run_inline(b);
    if (b.opt.sync_packets) run_sync(b, b.opt.sync_packets);
  }

  b.nf.reset();
  b.agent.reset();
  b.flows.reset();
  b.arp.reset();
  dp::port_close(b.pid_in);
  dp::port_close(b.pid_out);
  rte_ring_free(b.in_rx);
  rte_ring_free(b.in_tx);
  rte_mempool_free(b.pool);
  dp::eal_cleanup();
  return 0;
}
