/* fuzz_packet: the whole packet path. Each input is a short sequence of frames, each run
 * through Nat44::process (parse, conntrack, NAT, ARP, echo) on one mbuf from a real
 * mempool, leaving through a real InterfaceAgent onto net_ring vdev ports. The flow table,
 * ARP table and NF live across inputs, so state-dependent bugs show; a virtual clock that
 * the input advances drives expiry. Epoch flips with copy-before-write capture run between
 * packets; each finished capture is checked against the table as it was at the cut and
 * replicated through the real codec and Applier into a standby table, which must then
 * equal the cut.
 *
 * Chunk layout: ctl, len, len bytes of frame.
 *   ctl bit 0   ingress port: 0 LAN (inside), 1 WAN (outside)
 *   ctl bit 1   fix the IPv4 header checksum before processing (gets past the check)
 *   ctl bit 2   run housekeeping (a full expiry sweep) after the packet
 *   ctl bit 3-4 clock advance: none, 1 ms, 1 s, next byte x 32 s
 *   ctl bit 5   one capture step: flip (with capture), copy a few slots, or finish
 *   ctl bit 6   toggle VIP ownership (a standby drops and does not expire)
 *   ctl bit 7   toggle strict output commit */
#include <netinet/in.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <rte_cycles.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "checkpoint/applier.h"
#include "checkpoint/capture_encoder.h"
#include "checkpoint/record_codec.h"
#include "dataplane/agent.h"
#include "dataplane/arp_table.h"
#include "dataplane/flow_table.h"
#include "dataplane/nf.h"
#include "fuzz/fuzz_common.h"

namespace ftpair::fuzz {
namespace {

constexpr uint32_t kCapacity = 256;
constexpr uint32_t kHoldCapacity = 64;
constexpr unsigned kMaxPending = 64;  // Nat44::kPendingMax: packets parked for ARP
constexpr unsigned kMaxFragWaiting = 512;  // Nat44::kFragBufGlobal: fragments waiting for their first

uint32_t ip(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
  return htonl(uint32_t(a) << 24 | uint32_t(b) << 16 | uint32_t(c) << 8 | d);
}

dp::NfConfig nf_config() {
  dp::NfConfig c;
  c.vip[dp::kPortInside] = ip(198, 18, 1, 1);
  c.vip[dp::kPortOutside] = ip(198, 18, 2, 1);
  c.prefix_len[dp::kPortInside] = 24;
  c.prefix_len[dp::kPortOutside] = 24;
  c.gateway_out = ip(198, 18, 2, 254);
  c.vmac[dp::kPortInside] = rte_ether_addr{{0x00, 0x00, 0x5e, 0x00, 0x01, 0x01}};
  c.vmac[dp::kPortOutside] = rte_ether_addr{{0x00, 0x00, 0x5e, 0x00, 0x01, 0x02}};
  c.own_mac[dp::kPortInside] = rte_ether_addr{{0x02, 0xaa, 0, 0, 0, 0x01}};
  c.own_mac[dp::kPortOutside] = rte_ether_addr{{0x02, 0xaa, 0, 0, 0, 0x02}};
  // A narrow NAT range so port exhaustion and reuse are reachable.
  c.nat_port_min = 20000;
  c.nat_port_max = 20063;
  c.forwards.push_back(dp::PortForward{IPPROTO_TCP, 8080, ip(198, 18, 1, 10), 80});
  c.forwards.push_back(dp::PortForward{IPPROTO_UDP, 5353, ip(198, 18, 1, 11), 53});
  c.forwards.push_back(dp::PortForward{IPPROTO_TCP, 20001, ip(198, 18, 1, 12), 22});
  c.timeouts = dp::Timeouts{30, 600, 60, 60, 10, 60, 30};
  c.expiry_scan_per_loop = 64;
  return c;
}

struct World {
  rte_mempool *pool = nullptr;
  uint16_t ports[2] = {0, 0};
  std::unique_ptr<dp::FlowTable> flows;
  std::unique_ptr<dp::ArpTable> arp;
  std::unique_ptr<dp::InterfaceAgent> agent;
  std::unique_ptr<dp::Nat44> nf;
  std::unique_ptr<Standby> sb;
  uint64_t hz = 0;
  uint64_t now = 0;
  // Replication of captures to the standby.
  bool synced = false;                      // standby has had a full sync
  std::vector<dp::FlowRecord> cut;          // the active table at the open capture's flip
  uint32_t cut_size = 0;
  uint64_t inputs = 0;
};
World *w = nullptr;

void build_world() {
  w->hz = rte_get_tsc_hz();
  w->now = 1000 * w->hz;
  w->flows = make_table(kCapacity, "fuzz_active");
  w->sb = std::make_unique<Standby>(kCapacity, "fuzz_standby");
  w->arp = std::make_unique<dp::ArpTable>(16, 300 * w->hz);
  dp::AgentConfig ac;
  ac.nb_ports = 2;
  ac.port_ids[dp::kPortInside] = w->ports[0];
  ac.port_ids[dp::kPortOutside] = w->ports[1];
  ac.nb_workers = 1;
  ac.hold_capacity = kHoldCapacity;
  ac.fallback = dp::HoldFallback::DROP;
  w->agent = std::make_unique<dp::InterfaceAgent>(ac);
  w->nf = std::make_unique<dp::Nat44>(nf_config(), *w->flows, *w->arp, *w->agent, w->pool, 0);
  v1::Hello hello, reply;
  hello.set_node_id("fuzz-active");
  hello.set_generation(1);
  hello.set_protocol_version_min(ckpt::kProtocolVersionMin);
  hello.set_protocol_version_max(ckpt::kProtocolVersionMax);
  hello.add_record_formats(ckpt::kRecordFormatV3);
  hello.add_record_formats(ckpt::kRecordFormatV2);
  hello.add_record_formats(ckpt::kRecordFormatV1);
  hello.set_flow_capacity(kCapacity);
  w->sb->applier->begin_stream();
  Status s = w->sb->applier->on_hello(hello, 0, &reply);
  FUZZ_CHECK(s.ok(), "hello refused: %s", s.message().c_str());
  w->synced = false;
}

// Frees whatever the ports sent (net_ring vdevs loop tx back to rx).
void drain_ports() {
  rte_mbuf *b[64];
  for (uint16_t p : w->ports)
    for (uint16_t n; (n = rte_eth_rx_burst(p, 0, b, 64)) != 0;) rte_pktmbuf_free_bulk(b, n);
}

void destroy_world() {
  w->nf.reset();  // frees packets parked for ARP
  w->agent.reset();  // frees held packets
  drain_ports();
  w->sb.reset();
  w->arp.reset();
  w->flows.reset();
}

// Sends a finished capture through the codec and the Applier, then compares the standby
// with the cut.
void replicate_and_check() {
  dp::FlowTable &t = *w->flows;
  const uint64_t epoch = t.capture_done();
  const auto &cap = t.captured();
  // The capture is the exact cut: every captured slot holds its state at the flip.
  for (const auto &c : cap) {
    const dp::FlowRecord &r = w->cut[c.slot];
    const bool in_use = r.st.flags & dp::kFlowInUse;
    FUZZ_CHECK(c.in_use == in_use && (!in_use || c.st == r.st),
               "capture of epoch %lu: slot %u differs from the table at the cut", (unsigned long)epoch, c.slot);
  }
  if (t.capture_kind() == dp::CaptureKind::FULL) {
    FUZZ_CHECK(cap.size() == w->cut_size, "full capture has %zu slots, the table had %u at the cut",
               cap.size(), w->cut_size);
  }
  // As the engine sends it: the capture encoder, here in one message.
  ckpt::CaptureHeader h;
  h.epoch = epoch;
  h.generation = 1;
  h.full = t.capture_kind() == dp::CaptureKind::FULL;
  h.format = ckpt::kRecordFormatV3;  // carries the TCP window state, which the comparison includes
  h.chunk_records = cap.size();
  h.now_tsc = w->now;
  h.tsc_hz = w->hz;
  std::vector<v1::SyncMessage> msgs;
  const Status enc = ckpt::encode_capture(cap.data(), cap.size(), h, &msgs);
  FUZZ_CHECK(enc.ok() && msgs.size() == 1, "encode_capture: %s, %zu messages", enc.str().c_str(), msgs.size());
  const v1::Checkpoint &c = msgs[0].checkpoint();
  if (c.full())
    FUZZ_CHECK(c.flows_at_cut() == w->cut_size, "full capture says %lu flows at the cut, the table had %u",
               (unsigned long)c.flows_at_cut(), w->cut_size);
  bool ack = false;
  v1::Ack a;
  Status s = w->sb->applier->on_checkpoint(c, &ack, &a);
  FUZZ_CHECK(s.ok() && ack, "standby refused epoch %lu (%s): %s", (unsigned long)epoch,
             c.full() ? "full" : "incremental", s.message().c_str());
  w->synced = true;
  check_table(*w->sb->table, "standby");
  for (uint32_t i = 0; i < kCapacity; i++) {
    const dp::FlowState &want = w->cut[i].st, &got = w->sb->table->record(i).st;
    const bool want_used = want.flags & dp::kFlowInUse, got_used = got.flags & dp::kFlowInUse;
    FUZZ_CHECK(want_used == got_used && (!want_used || want == got),
               "after epoch %lu the standby's slot %u differs from the active's cut", (unsigned long)epoch, i);
  }
}

void capture_step(uint8_t arg) {
  dp::FlowTable &t = *w->flows;
  if (t.capture_pending()) {
    t.capture_step(1 + arg % 8);
    return;
  }
  if (t.capture_done() != 0 && !w->cut.empty()) {
    replicate_and_check();
    t.capture_release();
    w->agent->set_acked_epoch(t.capture_done());
    w->cut.clear();
    return;
  }
  // Open a capture. Every flip captures, so the standby sees every epoch in order.
  w->cut.assign(kCapacity, dp::FlowRecord{});
  for (uint32_t i = 0; i < kCapacity; i++) w->cut[i] = t.record(i);
  w->cut_size = t.size();
  int64_t e = t.flip_epoch(true, w->synced ? dp::CaptureKind::DIRTY : dp::CaptureKind::FULL);
  FUZZ_CHECK(e > 0, "flip_epoch refused (%ld) with no capture held", (long)e);
}

void fix_ip_checksum(rte_mbuf *m) {
  if (rte_pktmbuf_data_len(m) < sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr)) return;
  auto *ip = rte_pktmbuf_mtod_offset(m, rte_ipv4_hdr *, sizeof(rte_ether_hdr));
  if ((ip->version_ihl & 0xf) != 5) return;
  ip->hdr_checksum = 0;
  ip->hdr_checksum = rte_ipv4_cksum(ip);
}

}  // namespace
}  // namespace ftpair::fuzz

using namespace ftpair;
using namespace ftpair::fuzz;

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  init_eal({"--vdev=net_ring0", "--vdev=net_ring1"});
  w = new World();
  w->pool = rte_pktmbuf_pool_create("fuzz_pool", 1023, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
  FUZZ_CHECK(w->pool != nullptr, "mbuf pool: %s", rte_strerror(rte_errno));
  FUZZ_CHECK(rte_eth_dev_count_avail() >= 2, "the net_ring vdevs did not probe");
  for (uint16_t p = 0; p < 2; p++) {
    w->ports[p] = p;
    rte_eth_conf conf{};
    int rc = rte_eth_dev_configure(p, 1, 1, &conf);
    if (rc == 0) rc = rte_eth_rx_queue_setup(p, 0, 1024, SOCKET_ID_ANY, nullptr, w->pool);
    if (rc == 0) rc = rte_eth_tx_queue_setup(p, 0, 1024, SOCKET_ID_ANY, nullptr);
    if (rc == 0) rc = rte_eth_dev_start(p);
    FUZZ_CHECK(rc == 0, "ring port %u setup: %d", p, rc);
  }
  build_world();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // A fresh world now and then, and whenever the virtual clock has run far (no wrap).
  if (++w->inputs % 50000 == 0 || w->now > (1ull << 60)) {
    destroy_world();
    build_world();
  }
  Reader in(data, size);
  for (unsigned chunk = 0; chunk < 64 && !in.empty(); chunk++) {
    const uint8_t ctl = in.u8();
    const uint16_t port = ctl & 1;
    switch ((ctl >> 3) & 3) {
      case 1: w->now += w->hz / 1000; break;
      case 2: w->now += w->hz; break;
      case 3: w->now += uint64_t(in.u8()) * 32 * w->hz; break;
      default: break;
    }
    if (ctl & 0x40) w->nf->set_vip_owner(!w->nf->vip_owner());
    if (ctl & 0x80) w->agent->set_strict(!w->agent->strict());
    const std::string frame = in.bytes(in.u8());
    rte_mbuf *m = rte_pktmbuf_alloc(w->pool);
    FUZZ_CHECK(m != nullptr, "mbuf pool exhausted: %u in use (a leak?)", rte_mempool_in_use_count(w->pool));
    char *dst = rte_pktmbuf_append(m, static_cast<uint16_t>(frame.size()));
    FUZZ_CHECK(dst != nullptr || frame.empty(), "append %zu", frame.size());
    if (!frame.empty()) std::memcpy(dst, frame.data(), frame.size());
    if (ctl & 2) fix_ip_checksum(m);
    uint64_t before[dp::kDropReasonCount];
    for (unsigned r = 0; r < dp::kDropReasonCount; r++) before[r] = w->nf->drops(static_cast<dp::DropReason>(r));
    w->nf->process(port, &m, 1, w->now);
    if (verbose()) {
      std::fprintf(stderr, "chunk %u: port %u, %zu bytes, flows %u:", chunk, port, frame.size(), w->flows->size());
      for (unsigned r = 0; r < dp::kDropReasonCount; r++)
        if (w->nf->drops(static_cast<dp::DropReason>(r)) != before[r])
          std::fprintf(stderr, " drop %s", dp::drop_reason_label(static_cast<dp::DropReason>(r)));
      std::fprintf(stderr, "\n");
    }
    w->agent->flush(0);
    if (ctl & 4) {
      w->nf->housekeeping(w->now);
      w->nf->expire_all(w->now);
    }
    if (ctl & 0x20) capture_step(in.u8());
    drain_ports();
  }
  check_table(*w->flows, "active");
  // Every mbuf is sent, freed, parked for ARP (bounded), held for output commit (bounded) or
  // waits for its datagram's first fragment (bounded; they stay across inputs until the
  // fragment timeout, which only the input's clock advances reach).
  const unsigned in_use = rte_mempool_in_use_count(w->pool);
  FUZZ_CHECK(in_use <= kMaxPending + kHoldCapacity + kMaxFragWaiting, "%u mbufs in use after the input: a leak",
             in_use);
  return 0;
}
