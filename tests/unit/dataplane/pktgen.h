/* Test helpers: craft Ethernet/IPv4/TCP/UDP/ICMP/ARP frames as bytes, copy them into mbufs,
 * inspect what comes out, and ring-backed ethdev ports whose rx/tx rings a test can reach.
 * Header-only; shared by the dataplane unit tests. */
#pragma once

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include "common/tsan.h"
#include <rte_arp.h>
#include <rte_ethdev.h>
#include <rte_eth_ring.h>
#include <rte_ether.h>
#include <rte_icmp.h>
#include <rte_ip.h>
#include <rte_mbuf.h>
#include <rte_ring.h>
#include <rte_tcp.h>
#include <rte_udp.h>

namespace ftpair::test {

constexpr size_t kEthLen = sizeof(rte_ether_hdr);
constexpr size_t kIpOff = kEthLen;
constexpr size_t kL4Off = kEthLen + sizeof(rte_ipv4_hdr);

inline uint32_t ip4(const char *s) {
  in_addr a{};
  if (inet_pton(AF_INET, s, &a) != 1) ADD_FAILURE() << "bad test address " << s;
  return a.s_addr;
}

inline std::string ip4str(uint32_t be) {
  char b[INET_ADDRSTRLEN];
  in_addr a{};
  a.s_addr = be;
  inet_ntop(AF_INET, &a, b, sizeof(b));
  return b;
}

inline rte_ether_addr mac(uint8_t a, uint8_t b, uint8_t c, uint8_t d, uint8_t e, uint8_t f) {
  return rte_ether_addr{{a, b, c, d, e, f}};
}

inline bool mac_eq(const rte_ether_addr &a, const rte_ether_addr &b) {
  return std::memcmp(&a, &b, sizeof(a)) == 0;
}

inline std::string macstr(const rte_ether_addr &m) {
  char b[RTE_ETHER_ADDR_FMT_SIZE];
  rte_ether_format_addr(b, sizeof(b), &m);
  return b;
}

// A shared mbuf pool for the test binary.
inline rte_mempool *test_pool() {
  static rte_mempool *p = [] {
    rte_mempool *mp = rte_pktmbuf_pool_create("ftpair_test_pool", 8191, 256, 0,
                                              RTE_MBUF_DEFAULT_BUF_SIZE, SOCKET_ID_ANY);
    if (mp == nullptr) ADD_FAILURE() << "cannot create the test mbuf pool: " << rte_strerror(rte_errno);
    return mp;
  }();
  return p;
}

inline std::string unique_name(const char *base) {
  static std::atomic<unsigned> n{0};
  return std::string(base) + "_" + std::to_string(n.fetch_add(1));
}

// ------------------------------------------------------------------ frames as bytes

using Frame = std::vector<uint8_t>;

template <typename T> T *hdr(Frame &f, size_t off) { return reinterpret_cast<T *>(f.data() + off); }
inline rte_ether_hdr *eth_of(Frame &f) { return hdr<rte_ether_hdr>(f, 0); }
inline rte_ipv4_hdr *ip_of(Frame &f) { return hdr<rte_ipv4_hdr>(f, kIpOff); }
inline rte_tcp_hdr *tcp_of(Frame &f) { return hdr<rte_tcp_hdr>(f, kL4Off); }
inline rte_udp_hdr *udp_of(Frame &f) { return hdr<rte_udp_hdr>(f, kL4Off); }
inline rte_icmp_hdr *icmp_of(Frame &f) { return hdr<rte_icmp_hdr>(f, kL4Off); }

/* IPv4 header checksum from scratch (ignores the current field), over the IHL's length: a
 * header with options (IHL 6..15) is summed whole, so the caller's buffer must hold it.
 * (rte_ipv4_cksum reads IHL*4 bytes, which overran a 20-byte copy.) */
inline uint16_t ipv4_csum(const rte_ipv4_hdr *ip) {
  uint8_t c[60] = {};
  const size_t len = rte_ipv4_hdr_len(ip);
  std::memcpy(c, ip, len);
  reinterpret_cast<rte_ipv4_hdr *>(c)->hdr_checksum = 0;
  return static_cast<uint16_t>(~rte_raw_cksum(c, len));
}

/* L4 checksum from scratch (ignores the current field). l4 must follow ip contiguously for
 * total_length - 20 bytes. UDP: 0 is mapped to 0xffff as on the wire. */
inline uint16_t l4_csum(const rte_ipv4_hdr *ip, const uint8_t *l4) {
  // rte_ipv4_udptcp_cksum reads total_length - IHL bytes: with an IHL below 5 (a frame built
  // to be dropped as BAD_IHL) that runs past the copy below, so such a frame gets no L4 sum.
  if (rte_ipv4_hdr_len(ip) < sizeof(rte_ipv4_hdr)) return 0;
  const size_t len = rte_be_to_cpu_16(ip->total_length) - sizeof(rte_ipv4_hdr);
  std::vector<uint8_t> copy(l4, l4 + len);
  // A truncated L4 header (a frame built to be dropped) has no checksum field to clear.
  switch (ip->next_proto_id) {
    case IPPROTO_TCP:
      if (len < sizeof(rte_tcp_hdr)) return 0;
      reinterpret_cast<rte_tcp_hdr *>(copy.data())->cksum = 0;
      break;
    case IPPROTO_UDP:
      if (len < sizeof(rte_udp_hdr)) return 0;
      reinterpret_cast<rte_udp_hdr *>(copy.data())->dgram_cksum = 0;
      break;
    case IPPROTO_ICMP: {
      if (len < sizeof(rte_icmp_hdr)) return 0;
      reinterpret_cast<rte_icmp_hdr *>(copy.data())->icmp_cksum = 0;
      return static_cast<uint16_t>(~rte_raw_cksum(copy.data(), copy.size()));
    }
    default: return 0;
  }
  return rte_ipv4_udptcp_cksum(ip, copy.data());
}

inline void fix_csums(Frame &f) {
  rte_ipv4_hdr *ip = ip_of(f);
  const uint8_t *l4 = f.data() + kL4Off;
  size_t tot = rte_be_to_cpu_16(ip->total_length);
  if (tot >= sizeof(rte_ipv4_hdr) && kIpOff + tot <= f.size()) {
    uint16_t c = l4_csum(ip, l4);
    switch (ip->next_proto_id) {
      case IPPROTO_TCP:
        if (tot >= 40) tcp_of(f)->cksum = c;
        break;
      case IPPROTO_UDP:
        if (tot >= 28 && udp_of(f)->dgram_cksum != 0) udp_of(f)->dgram_cksum = c;
        break;
      case IPPROTO_ICMP:
        if (tot >= 28) icmp_of(f)->icmp_cksum = c;
        break;
    }
  }
  ip->hdr_checksum = ipv4_csum(ip);
}

struct L2 {
  rte_ether_addr src = mac(0x02, 0, 0, 0, 0, 0x01);
  rte_ether_addr dst = mac(0x00, 0x00, 0x5e, 0x00, 0x01, 0x01);
};

inline Frame ipv4_frame(const L2 &l2, uint32_t src, uint32_t dst, uint8_t proto, size_t l4_len,
                        uint8_t ttl = 64) {
  Frame f(kL4Off + l4_len, 0);
  auto *e = eth_of(f);
  e->dst_addr = l2.dst;
  e->src_addr = l2.src;
  e->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  auto *ip = ip_of(f);
  ip->version_ihl = 0x45;
  ip->type_of_service = 0;
  ip->total_length = rte_cpu_to_be_16(static_cast<uint16_t>(sizeof(rte_ipv4_hdr) + l4_len));
  ip->packet_id = rte_cpu_to_be_16(0x1234);
  ip->fragment_offset = rte_cpu_to_be_16(RTE_IPV4_HDR_DF_FLAG);
  ip->time_to_live = ttl;
  ip->next_proto_id = proto;
  ip->src_addr = src;
  ip->dst_addr = dst;
  return f;
}

inline Frame tcp_frame(const L2 &l2, uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport,
                       uint8_t flags, size_t payload = 0, uint8_t ttl = 64) {
  Frame f = ipv4_frame(l2, src, dst, IPPROTO_TCP, sizeof(rte_tcp_hdr) + payload, ttl);
  auto *t = tcp_of(f);
  t->src_port = rte_cpu_to_be_16(sport);
  t->dst_port = rte_cpu_to_be_16(dport);
  t->sent_seq = rte_cpu_to_be_32(1000);
  t->recv_ack = rte_cpu_to_be_32((flags & RTE_TCP_ACK_FLAG) ? 2000 : 0);
  t->data_off = 5 << 4;
  t->tcp_flags = flags;
  t->rx_win = rte_cpu_to_be_16(65535);
  for (size_t i = 0; i < payload; i++) f[kL4Off + sizeof(rte_tcp_hdr) + i] = static_cast<uint8_t>(i * 7 + 3);
  fix_csums(f);
  return f;
}

inline Frame udp_frame(const L2 &l2, uint32_t src, uint16_t sport, uint32_t dst, uint16_t dport,
                       size_t payload = 8, uint8_t ttl = 64, bool with_csum = true) {
  Frame f = ipv4_frame(l2, src, dst, IPPROTO_UDP, sizeof(rte_udp_hdr) + payload, ttl);
  auto *u = udp_of(f);
  u->src_port = rte_cpu_to_be_16(sport);
  u->dst_port = rte_cpu_to_be_16(dport);
  u->dgram_len = rte_cpu_to_be_16(static_cast<uint16_t>(sizeof(rte_udp_hdr) + payload));
  u->dgram_cksum = with_csum ? 1 : 0;  // nonzero: fix_csums fills it in
  for (size_t i = 0; i < payload; i++) f[kL4Off + sizeof(rte_udp_hdr) + i] = static_cast<uint8_t>(i * 13 + 1);
  fix_csums(f);
  return f;
}

inline Frame icmp_frame(const L2 &l2, uint32_t src, uint32_t dst, uint8_t type, uint16_t ident,
                        uint16_t seq = 1, uint8_t code = 0, uint8_t ttl = 64) {
  Frame f = ipv4_frame(l2, src, dst, IPPROTO_ICMP, sizeof(rte_icmp_hdr) + 16, ttl);
  auto *c = icmp_of(f);
  c->icmp_type = type;
  c->icmp_code = code;
  c->icmp_ident = rte_cpu_to_be_16(ident);
  c->icmp_seq_nb = rte_cpu_to_be_16(seq);
  for (size_t i = 0; i < 16; i++) f[kL4Off + sizeof(rte_icmp_hdr) + i] = static_cast<uint8_t>(0xa0 + i);
  fix_csums(f);
  return f;
}

inline Frame arp_frame(uint16_t op, const rte_ether_addr &sha, uint32_t sip,
                       const rte_ether_addr &tha, uint32_t tip, const rte_ether_addr *eth_dst = nullptr) {
  Frame f(kEthLen + sizeof(rte_arp_hdr), 0);
  auto *e = eth_of(f);
  if (eth_dst)
    e->dst_addr = *eth_dst;
  else
    std::memset(&e->dst_addr, 0xff, sizeof(e->dst_addr));
  e->src_addr = sha;
  e->ether_type = rte_cpu_to_be_16(RTE_ETHER_TYPE_ARP);
  auto *a = hdr<rte_arp_hdr>(f, kEthLen);
  a->arp_hardware = rte_cpu_to_be_16(RTE_ARP_HRD_ETHER);
  a->arp_protocol = rte_cpu_to_be_16(RTE_ETHER_TYPE_IPV4);
  a->arp_hlen = RTE_ETHER_ADDR_LEN;
  a->arp_plen = 4;
  a->arp_opcode = rte_cpu_to_be_16(op);
  a->arp_data.arp_sha = sha;
  a->arp_data.arp_sip = sip;
  a->arp_data.arp_tha = tha;
  a->arp_data.arp_tip = tip;
  return f;
}

// ------------------------------------------------------------------ mbufs

inline rte_mbuf *to_mbuf(const Frame &f, rte_mempool *pool = nullptr) {
  rte_mbuf *m = rte_pktmbuf_alloc(pool ? pool : test_pool());
  if (m == nullptr) {
    ADD_FAILURE() << "mbuf pool empty";
    return nullptr;
  }
  char *d = rte_pktmbuf_append(m, static_cast<uint16_t>(f.size()));
  if (d == nullptr && !f.empty()) {
    ADD_FAILURE() << "frame too large";
    rte_pktmbuf_free(m);
    return nullptr;
  }
  if (!f.empty()) std::memcpy(d, f.data(), f.size());
  return m;
}

inline Frame from_mbuf(const rte_mbuf *m) {
  Frame f(rte_pktmbuf_pkt_len(m));
  const void *p = rte_pktmbuf_read(m, 0, static_cast<uint32_t>(f.size()), f.data());
  if (p != f.data() && !f.empty()) std::memcpy(f.data(), p, f.size());
  return f;
}

// True when the IPv4 header checksum and the L4 checksum verify from scratch.
inline bool ip_csum_ok(Frame &f) { return ip_of(f)->hdr_checksum == ipv4_csum(ip_of(f)); }
inline bool l4_csum_ok(Frame &f) {
  rte_ipv4_hdr *ip = ip_of(f);
  const uint8_t *l4 = f.data() + kL4Off;
  size_t off;  // offset of the checksum field within the L4 header
  switch (ip->next_proto_id) {
    case IPPROTO_TCP: off = offsetof(rte_tcp_hdr, cksum); break;
    case IPPROTO_UDP: off = offsetof(rte_udp_hdr, dgram_cksum); break;
    case IPPROTO_ICMP: off = offsetof(rte_icmp_hdr, icmp_cksum); break;
    default: return false;
  }
  if (f.size() < kL4Off + off + 2) return false;
  uint16_t have;
  std::memcpy(&have, l4 + off, 2);
  if (ip->next_proto_id == IPPROTO_UDP && have == 0) return true;
  return have == l4_csum(ip, l4);
}

// ------------------------------------------------------------------ ring-backed ports

/* rte_eth_from_rings lives in the net_ring driver, which the EAL loads as a plugin; the test
 * binaries do not link it, so resolve it from the loaded plugin. */
inline decltype(&rte_eth_from_rings) eth_from_rings_fn() {
  static decltype(&rte_eth_from_rings) fn = [] {
    void *h = dlopen("librte_net_ring.so.23", RTLD_NOW | RTLD_NOLOAD);
    if (h == nullptr) h = dlopen("librte_net_ring.so.23", RTLD_NOW);
    if (h == nullptr) h = dlopen("librte_net_ring.so", RTLD_NOW);
    void *sym = h ? dlsym(h, "rte_eth_from_rings") : nullptr;
    return reinterpret_cast<decltype(&rte_eth_from_rings)>(sym);
  }();
  return fn;
}

/* An ethdev port backed by rings, one rx and one tx ring per queue: a test enqueues into an
 * rx ring (the port "receives" on that queue) and dequeues from the tx rings (what the port
 * "sent", on any queue). */
class RingPort {
 public:
  explicit RingPort(unsigned ring_size = 1024, unsigned queues = 1) : rx_(queues), tx_(queues) {
    std::string base = unique_name("tp");
    for (unsigned q = 0; q < queues; q++) {
      rx_[q] = rte_ring_create((base + "_rx" + std::to_string(q)).c_str(), ring_size, SOCKET_ID_ANY, 0);
      tx_[q] = rte_ring_create((base + "_tx" + std::to_string(q)).c_str(), ring_size, SOCKET_ID_ANY, 0);
      if (!rx_[q] || !tx_[q]) {
        ADD_FAILURE() << "rte_ring_create: " << rte_strerror(rte_errno);
        return;
      }
    }
    auto fn = eth_from_rings_fn();
    if (fn == nullptr) {
      ADD_FAILURE() << "rte_eth_from_rings not found (net_ring driver not loaded)";
      return;
    }
    int id = fn(("net_" + base).c_str(), rx_.data(), queues, tx_.data(), queues,
                static_cast<unsigned>(rte_socket_id()));
    if (id < 0) {
      ADD_FAILURE() << "rte_eth_from_rings failed: " << rte_strerror(rte_errno);
      return;
    }
    port_ = static_cast<uint16_t>(id);
    rte_eth_conf conf{};
    int rc = rte_eth_dev_configure(port_, static_cast<uint16_t>(queues), static_cast<uint16_t>(queues), &conf);
    for (unsigned q = 0; q < queues && rc == 0; q++) {
      rc = rte_eth_rx_queue_setup(port_, static_cast<uint16_t>(q), ring_size, SOCKET_ID_ANY, nullptr, test_pool());
      if (rc == 0) rc = rte_eth_tx_queue_setup(port_, static_cast<uint16_t>(q), ring_size, SOCKET_ID_ANY, nullptr);
    }
    if (rc == 0) rc = rte_eth_dev_start(port_);
    if (rc != 0) {
      ADD_FAILURE() << "ring port setup failed: " << rc;
      return;
    }
    ok_ = true;
  }
  ~RingPort() {
    drain_free();
    if (ok_) {
      rte_eth_dev_stop(port_);
      rte_eth_dev_close(port_);
    }
    for (rte_ring *r : rx_) {
      if (!r) continue;
      void *m;
      while (rte_ring_dequeue(r, &m) == 0) rte_pktmbuf_free(static_cast<rte_mbuf *>(m));
      rte_ring_free(r);
    }
    for (rte_ring *r : tx_)
      if (r) rte_ring_free(r);
  }
  RingPort(const RingPort &) = delete;
  RingPort &operator=(const RingPort &) = delete;

  bool ok() const { return ok_; }
  uint16_t id() const { return port_; }
  rte_ring *rx_ring(unsigned q = 0) { return rx_[q]; }
  rte_ring *tx_ring(unsigned q = 0) { return tx_[q]; }

  // Puts a packet where the port's rx on queue q will find it. False when the ring is full.
  bool inject(rte_mbuf *m, unsigned q = 0) {
    tsan_release(m);  // to the worker that receives it (dataplane/mbuf.h)
    return rte_ring_enqueue(rx_[q], m) == 0;
  }
  unsigned rx_pending() const {
    unsigned n = 0;
    for (rte_ring *r : rx_) n += rte_ring_count(r);
    return n;
  }
  unsigned tx_count() const {
    unsigned n = 0;
    for (rte_ring *r : tx_) n += rte_ring_count(r);
    return n;
  }

  // Everything the port sent, oldest first per queue, queue 0 first (the caller frees).
  std::vector<rte_mbuf *> take() {
    std::vector<rte_mbuf *> out;
    void *m;
    for (rte_ring *r : tx_)
      while (r && rte_ring_dequeue(r, &m) == 0) {
        tsan_acquire(m);  // from the worker that sent it
        out.push_back(static_cast<rte_mbuf *>(m));
      }
    return out;
  }
  // Everything the port sent, as frames; mbufs freed.
  std::vector<Frame> take_frames() {
    std::vector<Frame> out;
    for (rte_mbuf *m : take()) {
      out.push_back(from_mbuf(m));
      rte_pktmbuf_free(m);
    }
    return out;
  }
  void drain_free() {
    for (rte_mbuf *m : take()) rte_pktmbuf_free(m);
  }

 private:
  std::vector<rte_ring *> rx_;
  std::vector<rte_ring *> tx_;
  uint16_t port_ = 0;
  bool ok_ = false;
};

}  // namespace ftpair::test
