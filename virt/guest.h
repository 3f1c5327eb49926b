/* The guest side of a node after commissioning, for a minimal initramfs whose /init is
 * ftpair-commission: bring the management interface up with the commissioned address, and run
 * ftpaird with the commissioned config. A warm spare (node.id spare-<i>, peer.candidates) first
 * waits, on its own address, for the host to say which member it replaces (the claim protocol,
 * virt/claim.h). The spare then takes the failed member's identity: its id, its management
 * address (announced by gratuitous ARP, so the surviving active's stream and beats reach the new
 * node at once) and its peer. The active needs no reconfiguration: it keeps reconnecting to the
 * same standby address and full-syncs whoever answers there. */
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"
#include "virt/claim.h"
#include "virt/commission.h"

namespace ftpair::virt {

// Rewrites a spare's commission as the member it replaces: node.id, management.address,
// management.grpc (the new address with the spare's gRPC port), peer.grpc; drops
// peer.candidates and pool.*. The result passes validate().
Status apply_assume(const Assume &a, Commission *c);

/* What a warm spare's daemon runs with before its claim (control/spare.h): the spare's own
 * commissioning with no peer, so nothing to fence (failover.fence: none). It builds the same
 * dataplane as the claimed node's config, which apply_assume gives it later. */
Commission spare_provisional(const Commission &c);

// ---- system calls (guest only; each returns a Status naming what failed) ----
Status load_module(const std::string &path);                      // finit_module; EEXIST is ok
Status wait_interface(const std::string &ifname, int timeout_ms);  // /sys/class/net/<if> appears
Status set_ipv4(const std::string &ifname, const Ipv4Prefix *p);   // nullptr: remove the address
Status link_up(const std::string &ifname);
Status send_gratuitous_arp(const std::string &ifname, uint32_t addr, int count);

// A dataplane NIC for DPDK: the PCI function (0000:00:04.0) is given to `driver` (uio_pci_generic)
// through driver_override, taken from the kernel driver that holds it, and probed again; OK only
// once sysfs shows it bound to that driver. The module must be loaded.
Status bind_pci(const std::string &pci_address, const std::string &driver);
// True for a PCI address in DPDK's form (dddd:bb:dd.f).
bool is_pci_address(const std::string &s);
// hugetlbfs at /dev/hugepages and at least `mb` MiB of 2 MiB pages reserved (the kernel may
// grant fewer: then an error naming what it granted).
Status reserve_hugepages(unsigned mb);

}  // namespace ftpair::virt
