/* What the network function parsed from one packet (private to the NF's sources). */
#pragma once

#include <rte_ether.h>
#include <rte_ip.h>

#include "dataplane/nf.h"

namespace ftpair::dp {

struct Nat44::Parsed {
  rte_ether_hdr *eth;
  rte_ipv4_hdr *ip;
  uint8_t *l4;
  uint16_t l4_len;
  uint8_t proto;
  uint8_t tcp_flags;
  uint8_t icmp_type;
  bool icmp_err;   // an ICMP error (destination unreachable, time exceeded, parameter problem)
  bool hairpin;    // second pass of a hairpinned packet: its TTL is already decremented
  bool to_nat;     // from the LAN to an outside address (hairpin)
  uint8_t frag;    // 0 not a fragment, 1 the first fragment (offset 0, MF), 2 a later one
  int32_t frag_ctx;  // the first fragment's reassembly context, or -1
  uint16_t sport;  // TCP/UDP source port; ICMP: identifier on the inside, 0 outside
  uint16_t dport;
  FlowKey key;
};

// One packet's fields for every stage of a burst, together: each stage's loop walks one pointer.
struct Nat44::Lane {
  Parsed p;
  rte_mbuf *m;
  uint32_t hash;
  uint32_t cand;  // its candidate (FlowTable::candidates)
  uint8_t fast;   // Burst::kFastUdp, Burst::kFastOther, Burst::kHandOff, or 0
  uint8_t to;     // kHandOff: the worker that owns the packet
};

// One burst between process_chunk's stages: the packets that reached the flow lookup, in order.
struct Nat44::Burst {
  // Lane::fast: the packet took the fast test, kFastUdp (a UDP packet: fast_udp's if its flow
  // is known) or kFastOther; 0: classify() took it; kHandOff: another worker's (Nat44::receive),
  // handed to it in its place.
  static constexpr uint8_t kFastUdp = 2, kFastOther = 1, kHandOff = 3;
  Lane lane[kBurst];
  unsigned n = 0;
};

}  // namespace ftpair::dp
