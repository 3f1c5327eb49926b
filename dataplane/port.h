/* EAL start-up, mbuf pools and port set-up. Control-plane code: it may allocate and block. */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <rte_ether.h>
#include <rte_mempool.h>

namespace ftpair::dp {

// Initialises the EAL with args (argv[0] is supplied). Returns 0 or -errno with *err set.
int eal_init(const std::vector<std::string> &args, std::string *err);
// Releases the EAL (rte_eal_cleanup).
void eal_cleanup();

// A packet pool of n mbufs (n = 2^k - 1 is most efficient). nullptr with *err on failure.
rte_mempool *pool_create(const std::string &name, uint32_t n, std::string *err);

struct PortSpec {
  std::string device;    // vdev args ("net_af_packet0,iface=lan0") or a PCI address
  uint16_t queues = 1;   // rx and tx queue pairs
  uint16_t rx_desc = 1024;
  uint16_t tx_desc = 1024;
  /* With several queues: spread received IPv4 over them by RSS where the PMD has it (the
   * TCP/UDP 4-tuple, or the addresses), with kRssKey and a redirection table of queue
   * i % queues. What was programmed is read back into PortRss. */
  bool rss = false;
  std::vector<uint8_t> rss_key;  // the RSS key to program (empty: kRssKey)
};

// A port's RSS as the PMD reports it after port_open (rss asked).
struct PortRss {
  bool programmed = false;      // the key and the table below are the device's
  std::string why_not;          // when not: the reason, for the log
  std::vector<uint8_t> key;     // as the NIC takes it
  std::vector<uint16_t> reta;   // queue of each redirection table entry
  uint64_t hash_types = 0;      // RTE_ETH_RSS_* in effect
  bool key_as_asked = false;    // the key read back is the one programmed (else the PMD kept its own)
};

/* The RSS key ftpaird programs: the one of Microsoft's RSS verification suite, which many
 * PMDs default to. Not secret: both nodes of a pair must hash alike, so that the flows a
 * standby takes over still come back on their workers' queues. */
extern const uint8_t kRssKey[40];

/* Hot-plugs the device if it is a vdev not yet probed, configures and starts it in
 * promiscuous mode. Returns 0 with *port_id and *mac set, or -errno with *err. */
int port_open(const PortSpec &spec, rte_mempool *pool, uint16_t *port_id, rte_ether_addr *mac,
              std::string *err, PortRss *rss = nullptr);
void port_close(uint16_t port_id);

std::string mac_to_string(const rte_ether_addr &mac);

}  // namespace ftpair::dp
