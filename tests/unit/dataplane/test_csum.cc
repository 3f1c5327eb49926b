// Incremental checksum updates (dataplane/csum.h) against full recomputation.
#include "dataplane/csum.h"

#include <cstring>
#include <random>

#include <gtest/gtest.h>

#include "tests/unit/dataplane/pktgen.h"

namespace ftpair::dp {
namespace {

using test::Frame;

uint16_t rd16(const void *p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

TEST(Csum, Fold) {
  EXPECT_EQ(csum_fold(0), 0);
  EXPECT_EQ(csum_fold(0xffff), 0xffff);
  EXPECT_EQ(csum_fold(0x10000), 1);
  EXPECT_EQ(csum_fold(0x1fffe), 0xffff);
  EXPECT_EQ(csum_fold(0xffffffffu), 0xffff);
  EXPECT_EQ(csum_fold(0x12345678u), 0x68ac);  // 0x5678 + 0x1234
  EXPECT_EQ(csum_fold(0xfffe0003u), 0x0002);  // 0x0003 + 0xfffe = 0x10001 -> 0x0002
  // The same as folding twice: every sum of two halves near a carry, and random words.
  auto twice = [](uint32_t s) {
    s = (s & 0xffff) + (s >> 16);
    return static_cast<uint16_t>((s & 0xffff) + (s >> 16));
  };
  for (uint32_t h = 0; h < 0x10000; h += 0xff)
    for (uint32_t d = 0; d < 4; d++) {
      const uint32_t l = (0x10000 - h - 2 + d) & 0xffff;  // h + l around 0xffff and 0x10000
      EXPECT_EQ(csum_fold(h << 16 | l), twice(h << 16 | l)) << std::hex << (h << 16 | l);
    }
  std::mt19937 rng(11);
  unsigned bad = 0;
  for (int i = 0; i < 1000000; i++) {
    const uint32_t s = rng();
    bad += csum_fold(s) != twice(s);
  }
  EXPECT_EQ(bad, 0u);
}

TEST(Csum, Add32CarriesAround) {
  EXPECT_EQ(csum_add32(0xffffffffu, 1), 1u);
  EXPECT_EQ(csum_add32(0x80000000u, 0x80000000u), 1u);
  EXPECT_EQ(csum_add32(0x12340000u, 0x00005678u), 0x12345678u);
  // Folded, it is the one's-complement sum of the four 16-bit halves.
  std::mt19937 rng(5);
  for (int i = 0; i < 100000; i++) {
    const uint32_t a = rng(), b = rng();
    const uint32_t halves = (a & 0xffff) + (a >> 16) + (b & 0xffff) + (b >> 16);
    EXPECT_EQ(csum_fold(csum_add32(a, b)) % 0xffff, csum_fold(halves) % 0xffff) << a << " " << b;
  }
}

TEST(Csum, NoChangeKeepsChecksum) {
  std::mt19937 rng(7);
  for (int i = 0; i < 1000; i++) {
    uint16_t c = static_cast<uint16_t>(rng() % 0xffff);  // any valid (non -0) checksum
    uint16_t w = static_cast<uint16_t>(rng());
    uint32_t d = rng();
    EXPECT_EQ(csum_update16(c, w, w), c);
    EXPECT_EQ(csum_update32(c, d, d), c);
  }
}

// Random IPv4 headers; rewrite addresses and TTL incrementally; compare with rte_ipv4_cksum.
TEST(Csum, Ipv4HeaderRewritesMatchFullRecomputation) {
  std::mt19937 rng(12345);
  unsigned checked = 0;
  for (int iter = 0; iter < 50000; iter++) {
    rte_ipv4_hdr ip{};
    ip.version_ihl = 0x45;
    ip.type_of_service = static_cast<uint8_t>(rng());
    ip.total_length = static_cast<uint16_t>(rng());
    ip.packet_id = static_cast<uint16_t>(rng());
    ip.fragment_offset = static_cast<uint16_t>(rng());
    ip.time_to_live = static_cast<uint8_t>(rng() % 255 + 1);
    ip.next_proto_id = static_cast<uint8_t>(rng());
    // Edge values now and then: all-zero and all-one addresses.
    ip.src_addr = iter % 97 == 0 ? 0 : iter % 89 == 0 ? 0xffffffffu : rng();
    ip.dst_addr = rng();
    ip.hdr_checksum = 0;
    ip.hdr_checksum = rte_ipv4_cksum(&ip);

    switch (iter % 4) {
      case 0: {  // source address
        uint32_t to = iter % 13 == 0 ? 0xffffffffu : iter % 11 == 0 ? 0 : rng();
        ip.hdr_checksum = csum_update32(ip.hdr_checksum, ip.src_addr, to);
        ip.src_addr = to;
        break;
      }
      case 1: {  // destination address
        uint32_t to = rng();
        ip.hdr_checksum = csum_update32(ip.hdr_checksum, ip.dst_addr, to);
        ip.dst_addr = to;
        break;
      }
      case 2: {  // TTL decrement, as a 16-bit word with the protocol
        uint16_t before = rd16(&ip.time_to_live);
        ip.time_to_live--;
        ip.hdr_checksum = csum_update16(ip.hdr_checksum, before, rd16(&ip.time_to_live));
        break;
      }
      case 3: {  // both addresses and TTL
        uint32_t s = rng(), d = rng();
        ip.hdr_checksum = csum_update32(ip.hdr_checksum, ip.src_addr, s);
        ip.src_addr = s;
        ip.hdr_checksum = csum_update32(ip.hdr_checksum, ip.dst_addr, d);
        ip.dst_addr = d;
        uint16_t before = rd16(&ip.time_to_live);
        ip.time_to_live--;
        ip.hdr_checksum = csum_update16(ip.hdr_checksum, before, rd16(&ip.time_to_live));
        break;
      }
    }
    const uint16_t incremental = ip.hdr_checksum;
    ASSERT_EQ(incremental, test::ipv4_csum(&ip)) << "iteration " << iter;
    checked++;
  }
  EXPECT_EQ(checked, 50000u);
}

/* Random TCP/UDP packets; NAT-style rewrite of one address and its port, fixing the IP and L4
 * checksums incrementally; compare with rte_ipv4_cksum / rte_ipv4_udptcp_cksum. UDP follows
 * the NF's rule: a result of 0 is sent as 0xffff (0 means "no checksum"). */
TEST(Csum, L4RewritesMatchFullRecomputation) {
  std::mt19937 rng(777);
  for (int iter = 0; iter < 20000; iter++) {
    const bool tcp = iter % 2 == 0;
    const size_t payload = rng() % 64;
    test::L2 l2;
    Frame f = tcp ? test::tcp_frame(l2, rng(), static_cast<uint16_t>(rng()), rng(),
                                    static_cast<uint16_t>(rng()), RTE_TCP_ACK_FLAG, payload)
                  : test::udp_frame(l2, rng(), static_cast<uint16_t>(rng()), rng(),
                                    static_cast<uint16_t>(rng()), payload);
    for (size_t i = test::kL4Off + 20; i < f.size(); i++) f[i] = static_cast<uint8_t>(rng());
    test::fix_csums(f);
    ASSERT_TRUE(test::l4_csum_ok(f));
    rte_ipv4_hdr *ip = test::ip_of(f);
    const bool source = rng() & 1;
    const uint32_t new_ip = iter % 101 == 0 ? 0 : rng();
    const uint16_t new_port = static_cast<uint16_t>(iter % 103 == 0 ? 0 : rng());
    const uint32_t old_ip = source ? ip->src_addr : ip->dst_addr;
    if (source)
      ip->src_addr = new_ip;
    else
      ip->dst_addr = new_ip;
    ip->hdr_checksum = csum_update32(ip->hdr_checksum, old_ip, new_ip);
    if (tcp) {
      rte_tcp_hdr *t = test::tcp_of(f);
      const uint16_t port = source ? t->src_port : t->dst_port;
      t->cksum = csum_update16(csum_update32(t->cksum, old_ip, new_ip), port, new_port);
      if (source)
        t->src_port = new_port;
      else
        t->dst_port = new_port;
    } else {
      rte_udp_hdr *u = test::udp_of(f);
      const uint16_t port = source ? u->src_port : u->dst_port;
      uint16_t c = csum_update16(csum_update32(u->dgram_cksum, old_ip, new_ip), port, new_port);
      u->dgram_cksum = c == 0 ? 0xffff : c;
      if (source)
        u->src_port = new_port;
      else
        u->dst_port = new_port;
    }
    ASSERT_EQ(ip->hdr_checksum, test::ipv4_csum(ip)) << "iteration " << iter;
    const uint16_t full = test::l4_csum(ip, f.data() + test::kL4Off);
    const uint16_t inc = tcp ? test::tcp_of(f)->cksum : test::udp_of(f)->dgram_cksum;
    ASSERT_EQ(inc, full) << (tcp ? "TCP" : "UDP") << " iteration " << iter;
    ASSERT_EQ(rte_ipv4_udptcp_cksum_verify(ip, f.data() + test::kL4Off), 0) << "iteration " << iter;
  }
}

// A UDP rewrite whose checksum comes out as exactly 0 must be sent as 0xffff.
TEST(Csum, UdpResultZeroIsSentAsAllOnes) {
  test::L2 l2;
  Frame f = test::udp_frame(l2, test::ip4("198.18.1.10"), 5000, test::ip4("198.18.2.10"), 53, 8);
  rte_ipv4_hdr *ip = test::ip_of(f);
  const uint32_t new_ip = test::ip4("198.18.2.1");
  const uint16_t new_port = rte_cpu_to_be_16(20000);
  // Choose the last payload word so that the post-rewrite checksum is 0 (sum == 0xffff).
  uint8_t *last = f.data() + f.size() - 2;
  std::memset(last, 0, 2);
  Frame after = f;
  test::ip_of(after)->src_addr = new_ip;
  test::udp_of(after)->src_port = new_port;
  uint16_t c = test::l4_csum(test::ip_of(after), after.data() + test::kL4Off);
  // c = ~S (S the sum with a zero last word); adding word w = c makes the sum 0xffff.
  std::memcpy(last, &c, 2);
  test::fix_csums(f);
  ASSERT_TRUE(test::l4_csum_ok(f));
  rte_udp_hdr *u = test::udp_of(f);
  uint16_t r = csum_update16(csum_update32(u->dgram_cksum, ip->src_addr, new_ip), u->src_port, new_port);
  EXPECT_EQ(r, 0) << "the crafted rewrite should hit the zero case";
  ip->src_addr = new_ip;
  u->src_port = new_port;
  u->dgram_cksum = r == 0 ? 0xffff : r;
  EXPECT_EQ(u->dgram_cksum, test::l4_csum(ip, f.data() + test::kL4Off));
  EXPECT_EQ(rte_ipv4_udptcp_cksum_verify(ip, f.data() + test::kL4Off), 0);
}

// ICMP identifier rewrite (no pseudo-header).
TEST(Csum, IcmpIdentRewriteMatchesFullRecomputation) {
  std::mt19937 rng(99);
  test::L2 l2;
  for (int iter = 0; iter < 5000; iter++) {
    Frame f = test::icmp_frame(l2, rng(), rng(), iter % 2 ? RTE_IP_ICMP_ECHO_REQUEST : RTE_IP_ICMP_ECHO_REPLY,
                               static_cast<uint16_t>(rng()), static_cast<uint16_t>(rng()));
    rte_icmp_hdr *c = test::icmp_of(f);
    uint16_t id = static_cast<uint16_t>(rng());
    c->icmp_cksum = csum_update16(c->icmp_cksum, c->icmp_ident, id);
    c->icmp_ident = id;
    ASSERT_EQ(c->icmp_cksum, test::l4_csum(test::ip_of(f), f.data() + test::kL4Off)) << iter;
  }
}

}  // namespace
}  // namespace ftpair::dp
