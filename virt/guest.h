/* The guest side of a node after commissioning, for a minimal initramfs whose /init is
 * ftpair-commission: bring the management interface up with the commissioned address, and run
 * ftpaird with the commissioned config. A warm spare (node.id spare-<i>, peer.candidates) first
 * waits, on its own address, for the host to say which member it replaces:
 *
 *     assume token=<pool.token> node=<a|b> address=<ip/prefix> peer=<ip:port>\n
 *
 * answered by "ok\n" or "refused: <reason>\n". The token is the spare's ftpair:pool.token OEM
 * string, which only the host's libvirt (domain XML and metadata) knows. The spare then takes the
 * failed member's identity: its id, its management address (announced by gratuitous ARP, so the
 * surviving active's stream and beats reach the new node at once) and its peer. The active needs
 * no reconfiguration: it keeps reconnecting to the same standby address and full-syncs whoever
 * answers there. */
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "virt/commission.h"

namespace ftpair::virt {

struct Ipv4Prefix {
  uint32_t addr = 0;  // network byte order
  int prefix = 0;
  std::string text;  // as given, "198.18.3.2/24"
};
Status parse_ipv4_prefix(const std::string &text, Ipv4Prefix *out);

struct Assume {
  std::string node;     // a | b
  Ipv4Prefix address;   // the failed member's management address
  std::string peer;     // ip:port of the surviving member's gRPC
};

// Parses one assume line (without or with its trailing newline). Refuses an unknown verb, a
// missing or repeated field, a token that does not match `token`, a node other than a/b, a bad
// address or peer. Never throws.
Status parse_assume(const std::string &line, const std::string &token, Assume *out);

// Rewrites a spare's commission as the member it replaces: node.id, management.address,
// management.grpc (the new address with the spare's gRPC port), peer.grpc; drops
// peer.candidates and pool.*. The result passes validate().
Status apply_assume(const Assume &a, Commission *c);

// ---- system calls (guest only; each returns a Status naming what failed) ----
Status load_module(const std::string &path);                      // finit_module; EEXIST is ok
Status wait_interface(const std::string &ifname, int timeout_ms);  // /sys/class/net/<if> appears
Status set_ipv4(const std::string &ifname, const Ipv4Prefix *p);   // nullptr: remove the address
Status link_up(const std::string &ifname);
Status send_gratuitous_arp(const std::string &ifname, uint32_t addr, int count);

// Listens on self:port and answers assume lines until one is accepted ("ping" is answered
// "ready": the host's probe before it pauses the spare). Each refusal is answered
// to the sender and printed on stdout (the console); the listener keeps waiting.
Status wait_for_assume(const Ipv4Prefix &self, uint16_t port, const std::string &token, Assume *out);

}  // namespace ftpair::virt
