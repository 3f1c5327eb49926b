/* Every reason the network function drops a packet, as data. (Transmit-queue and
 * output-commit drops are the interface agent's: ftpair_port_tx_dropped_total and
 * ftpair_output_hold_full_total.)
 * Counters, metric labels and `ftpairctl` output are generated from this one list. */
#pragma once

#include <cstdint>

// X(identifier, "metric label", "operator text")
#define FTPAIR_DROP_REASONS(X)                                                          \
  X(TRUNCATED_L2, "truncated_l2", "frame shorter than an Ethernet header")              \
  X(UNKNOWN_ETHERTYPE, "unknown_ethertype", "neither IPv4, IPv6, ARP nor VLAN-tagged")      \
  X(IPV6, "ipv6", "IPv6 frame (the NAT is IPv4 only)")                                  \
  X(VLAN, "vlan", "VLAN-tagged frame (802.1Q/802.1ad; ports are untagged)")             \
  X(TRUNCATED_L3, "truncated_l3", "IPv4 header cut short")                              \
  X(BAD_IP_VERSION, "bad_ip_version", "IP version field is not 4")                      \
  X(BAD_IHL, "bad_ihl", "IPv4 header length below 20 bytes")                            \
  X(IPV4_OPTIONS, "ip_options", "IPv4 options present")                                   \
  X(BAD_IP_LENGTH, "bad_ip_length", "IPv4 total length disagrees with the frame")       \
  X(BAD_IP_CHECKSUM, "bad_ip_checksum", "IPv4 header checksum is wrong")                \
  X(BAD_FRAGMENT, "bad_fragment", "IPv4 fragment too short for its ports, or ending past 64 KiB") \
  X(FRAG_TIMEOUT, "frag_timeout", "fragment whose datagram's first fragment did not come in time") \
  X(FRAG_BUFFER_FULL, "frag_buffer_full", "early fragment beyond the per-datagram or global buffer") \
  X(FRAG_TABLE_FULL, "frag_table_full", "fragment of a new datagram while every reassembly context is busy") \
  X(FRAG_OF_DROPPED, "frag_of_dropped", "fragment of a datagram whose first fragment was dropped") \
  X(TTL_EXCEEDED, "ttl_exceeded", "TTL would reach zero (Time Exceeded sent, rate permitting)") \
  X(TOO_BIG, "too_big", "larger than the egress MTU with DF (Fragmentation Needed sent)") \
  X(NEEDS_FRAGMENTATION, "needs_fragmentation", "larger than the egress MTU without DF, cannot fragment") \
  X(BAD_SOURCE, "bad_source", "martian or spoofed source address")                      \
  X(BROADCAST_DST, "broadcast_dst", "multicast or broadcast IPv4 destination")            \
  X(TO_VIP, "to_vip", "addressed to a virtual address (only echo is answered)")          \
  X(UNKNOWN_PROTOCOL, "unknown_protocol", "L4 protocol is not TCP, UDP or ICMP")        \
  X(TRUNCATED_L4, "truncated_l4", "L4 header cut short")                                \
  X(BAD_TCP_OFFSET, "bad_tcp_offset", "TCP data offset out of range")                   \
  X(BAD_TCP_FLAGS, "bad_tcp_flags", "impossible TCP flag combination")                  \
  X(ICMP_UNSUPPORTED, "icmp_unsupported", "ICMP neither echo nor an error the NAT translates") \
  X(BAD_ICMP_ERROR, "bad_icmp_error", "ICMP error whose embedded packet is malformed")   \
  X(ICMP_ERROR_NO_FLOW, "icmp_error_no_flow", "ICMP error about no known flow (never creates one)") \
  X(BAD_ARP, "bad_arp", "malformed or non-Ethernet/IPv4 ARP")                          \
  X(ARP_NOT_FOR_US, "arp_not_for_us", "ARP not about a virtual address")                \
  X(NOT_ACTIVE, "not_active", "node does not own the virtual addresses")                \
  X(NOT_FOR_VIP, "not_for_vip", "WAN packet not addressed to the WAN virtual address")  \
  X(NO_MAPPING, "no_mapping", "WAN packet matches no NAT mapping or port-forward")      \
  X(FILTERED, "filtered", "WAN packet the mapping's filtering mode does not admit")     \
  X(HOST_SESSION_LIMIT, "host_session_limit", "LAN host at its session limit: new flow refused") \
  X(TCP_NO_FLOW, "tcp_no_flow", "TCP segment without SYN and without a flow")           \
  X(TCP_INVALID, "tcp_invalid", "TCP segment invalid for the tracked state")            \
  X(TCP_OUT_OF_WINDOW, "tcp_out_of_window", "TCP segment outside the window (nat.tcp_liberal false)") \
  X(FLOW_TABLE_FULL, "flow_table_full", "flow table full: new flow refused")            \
  X(NAT_PORTS_EXHAUSTED, "nat_ports_exhausted", "no free NAT port for the destination") \
  X(NO_ROUTE, "no_route", "destination is off-link and no gateway is configured")       \
  X(ARP_MISS, "arp_miss", "next hop MAC unknown; ARP request sent")                     \
  X(LAN_TO_LAN, "lan_to_lan", "LAN packet addressed to another LAN host (not routed back)") \
  X(NO_MBUF, "no_mbuf", "mbuf pool empty while building a reply")                      \
  X(FRAG_CROSS_WORKER, "frag_cross_worker", "fragment hairpinned to a host of another worker (not handed over)")

namespace ftpair::dp {

enum class DropReason : uint16_t {
#define FTPAIR_DROP_ENUM(id, label, text) id,
  FTPAIR_DROP_REASONS(FTPAIR_DROP_ENUM)
#undef FTPAIR_DROP_ENUM
      COUNT
};

inline constexpr unsigned kDropReasonCount = static_cast<unsigned>(DropReason::COUNT);

// Metric label of a reason, e.g. "bad_ihl".
const char *drop_reason_label(DropReason r);
// One line of operator text for a reason.
const char *drop_reason_text(DropReason r);

}  // namespace ftpair::dp
