#include "dataplane/shards.h"

#include <cstring>

#include <rte_arp.h>
#include <rte_byteorder.h>
#include <rte_errno.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>

#include "dataplane/mbuf.h"
#include "dataplane/nf.h"

namespace ftpair::dp {

std::unique_ptr<Shards> Shards::create(unsigned workers, std::shared_ptr<PortPool> pool, uint32_t nat_vip,
                                       const std::vector<PortForward> &forwards, uint32_t ring_size,
                                       std::string *err) {
  if (workers == 0 || workers > kMaxWorkers) {
    *err = "worker count " + std::to_string(workers) + " is outside 1.." + std::to_string(kMaxWorkers);
    return nullptr;
  }
  if (ring_size < 2 || (ring_size & (ring_size - 1))) {
    *err = "hand-off ring size " + std::to_string(ring_size) + " is not a power of two";
    return nullptr;
  }
  std::unique_ptr<Shards> s(new Shards());
  s->n_ = workers;
  for (unsigned b = 0; b < kBuckets; b++) s->bucket_worker_[b] = static_cast<uint8_t>(b % workers);
  s->pool_ = std::move(pool);
  s->fwd_vip_ = nat_vip;
  s->fwd_bucket_.assign(2 * 65536, 0);
  for (const PortForward &f : forwards) {
    const int pi = proto_slot(f.proto);
    if (pi == 0 || pi == 1) s->fwd_bucket_[size_t(pi) * 65536 + f.outside_port] = uint8_t(host_bucket(f.inside_ip) + 1);
  }
  if (workers == 1) return s;  // one worker hands nothing off
  static std::atomic<unsigned> seq{0};
  const unsigned id = seq.fetch_add(1);
  for (unsigned w = 0; w < workers; w++) {
    char name[RTE_RING_NAMESIZE];
    snprintf(name, sizeof(name), "ftp_ho%u_%u", id, w);
    // The ring holds one entry fewer than its size.
    s->rings_[w] = rte_ring_create_elem(name, sizeof(HandoffItem), ring_size, SOCKET_ID_ANY, RING_F_SC_DEQ);
    if (s->rings_[w] == nullptr) {
      *err = std::string("hand-off ring: ") + rte_strerror(rte_errno);
      return nullptr;
    }
  }
  return s;
}

Shards::~Shards() {
  for (rte_ring *r : rings_) {
    if (r == nullptr) continue;
    HandoffItem it;
    while (rte_ring_dequeue_elem(r, &it, sizeof(it)) == 0) mbuf_free(it.m);
    rte_ring_free(r);
  }
}

int Shards::endpoint_worker(uint32_t nat_ip, uint8_t proto, uint16_t port_be) const {
  const int pi = proto_slot(proto);
  if (pi < 0) return -1;
  const uint16_t port = rte_be_to_cpu_16(port_be);
  const int a = pool_->index(nat_ip);
  int b = a >= 0 ? pool_->owner(a, pi, port) : -1;
  // A static forward is on the WAN VIP, which need not be a pool address (then no owner byte
  // is ever written for it): its rule names the inside host.
  if (b < 0 && pi < 2 && nat_ip == fwd_vip_) b = int(fwd_bucket_[size_t(pi) * 65536 + port]) - 1;
  return b < 0 ? -1 : int(worker_of_bucket(unsigned(b)));
}

unsigned Shards::owner(uint16_t port, const rte_mbuf *m, unsigned self) const {
  const uint32_t len = rte_pktmbuf_data_len(m);
  const auto *b = rte_pktmbuf_mtod(m, const uint8_t *);
  if (len < sizeof(rte_ether_hdr) + sizeof(rte_ipv4_hdr)) {
    if (len >= sizeof(rte_ether_hdr) &&
        reinterpret_cast<const rte_ether_hdr *>(b)->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP))
      return kEveryWorker;
    return self;
  }
  const auto *eth = reinterpret_cast<const rte_ether_hdr *>(b);
  if (eth->ether_type == rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP)) return kEveryWorker;
  if (eth->ether_type != rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4)) return self;
  const auto *ip = reinterpret_cast<const rte_ipv4_hdr *>(eth + 1);
  const uint32_t ihl = (ip->version_ihl & 0xf) * 4u;
  if ((ip->version_ihl >> 4) != 4 || ihl < sizeof(rte_ipv4_hdr)) return self;
  // A LAN host's packets, and the ICMP errors it sends about its flows: its bucket.
  if (port == kPortInside) return worker_of_host(ip->src_addr);
  if (n_ == 1) return self;
  // A later fragment has no port: it stays (see the gaps above).
  if (ip->fragment_offset & rte_cpu_to_be_16(RTE_IPV4_HDR_OFFSET_MASK)) return self;
  const uint8_t *l4 = reinterpret_cast<const uint8_t *>(ip) + ihl;
  const uint8_t *end = b + len;
  int w = -1;
  switch (ip->next_proto_id) {
    case IPPROTO_TCP:
    case IPPROTO_UDP:
      if (l4 + 4 > end) return self;
      w = endpoint_worker(ip->dst_addr, ip->next_proto_id, reinterpret_cast<const uint16_t *>(l4)[1]);
      break;
    case IPPROTO_ICMP: {
      if (l4 + 8 > end) return self;
      const auto *icmp = reinterpret_cast<const rte_icmp_hdr *>(l4);
      if (icmp->icmp_type == RTE_IP_ICMP_ECHO_REPLY) {
        w = endpoint_worker(ip->dst_addr, IPPROTO_ICMP, icmp->icmp_ident);
      } else if (icmp->icmp_type == kIcmpDestUnreach || icmp->icmp_type == kIcmpTimeExceeded ||
                 icmp->icmp_type == kIcmpParamProblem) {
        // The packet inside left through us: its source is our outside endpoint.
        const auto *in = reinterpret_cast<const rte_ipv4_hdr *>(l4 + 8);
        if (reinterpret_cast<const uint8_t *>(in) + sizeof(rte_ipv4_hdr) > end) return self;
        const uint32_t in_ihl = (in->version_ihl & 0xf) * 4u;
        const uint8_t *in_l4 = reinterpret_cast<const uint8_t *>(in) + in_ihl;
        if (in_ihl < sizeof(rte_ipv4_hdr) || in_l4 + 8 > end) return self;
        if (in->next_proto_id == IPPROTO_ICMP)
          w = endpoint_worker(in->src_addr, IPPROTO_ICMP, reinterpret_cast<const rte_icmp_hdr *>(in_l4)->icmp_ident);
        else
          w = endpoint_worker(in->src_addr, in->next_proto_id, reinterpret_cast<const uint16_t *>(in_l4)[0]);
      }
      break;
    }
    default: break;
  }
  return w < 0 ? self : unsigned(w);
}

bool Shards::hand(unsigned from, unsigned to, rte_mbuf *m, uint64_t meta) {
  HandoffItem it{m, meta};
  tsan_release(m);  // the ring hands the packet to another thread (see mbuf.h)
  if (rte_ring_enqueue_elem(rings_[to], &it, sizeof(it)) != 0) return false;
  // A copy of an ARP packet is counted apart: it is not a packet that changed worker.
  if (Handed((meta >> 1) & 0x7f) != Handed::ARP_COPY) bump(ctr_[from].handoffs);
  return true;
}

void Shards::pass(unsigned self, unsigned to, uint16_t port, rte_mbuf *m) {
  if (!hand(self, to, m, handoff_meta(Handed::RX, port))) {
    mbuf_free(m);
    bump(ctr_[self].handoff_full);
  }
}

void Shards::copy_to_others(unsigned self, uint16_t port, const rte_mbuf *m) {
  for (unsigned w = 0; w < n_; w++) {
    if (w == self) continue;
    rte_mbuf *c = rte_pktmbuf_copy(m, m->pool, 0, UINT32_MAX);
    if (c) tsan_acquire(c);
    if (c == nullptr || !hand(self, w, c, handoff_meta(Handed::ARP_COPY, port))) {
      if (c) mbuf_free(c);
      bump(ctr_[self].handoff_full);
      continue;
    }
    bump(ctr_[self].arp_copies);
  }
}

}  // namespace ftpair::dp
