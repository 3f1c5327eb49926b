#include "dataplane/port.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>

#include <rte_bus.h>
#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

namespace ftpair::dp {

const uint8_t kRssKey[40] = {0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
                             0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
                             0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa};

namespace {

/* The key each port was configured with. ethdev keeps the pointer given to
 * rte_eth_dev_configure, and some PMDs read it again at every start: it lives as long as the
 * process. Control-plane code (port_open is not called from two threads at once). */
std::vector<uint8_t> g_rss_keys[RTE_MAX_ETHPORTS];

/* After the start: the key set again (some PMDs take it only here: net_null ignores the
 * configure's), the redirection table set to queue i % queues, then the key and the table
 * read back (what the device holds, not what was asked). */
void program_rss(uint16_t pid, uint16_t queues, uint64_t hf, PortRss *out) {
  rte_eth_dev_info info{};
  int rc = rte_eth_dev_info_get(pid, &info);  // again: a PMD may size its table by the queues
  if (rc != 0 || info.reta_size == 0) {
    out->why_not = "no redirection table after the start";
    return;
  }
  rte_eth_rss_conf set{};
  set.rss_key = g_rss_keys[pid].data();
  set.rss_key_len = static_cast<uint8_t>(g_rss_keys[pid].size());
  set.rss_hf = hf;
  if ((rc = rte_eth_dev_rss_hash_update(pid, &set)) != 0 && rc != -ENOTSUP) {
    out->why_not = std::string("its RSS key cannot be written: ") + rte_strerror(-rc);
    return;
  }
  const uint16_t n = info.reta_size;
  std::vector<rte_eth_rss_reta_entry64> conf((n + RTE_ETH_RETA_GROUP_SIZE - 1) / RTE_ETH_RETA_GROUP_SIZE);
  for (uint16_t i = 0; i < n; i++) {
    conf[i / RTE_ETH_RETA_GROUP_SIZE].mask |= 1ull << (i % RTE_ETH_RETA_GROUP_SIZE);
    conf[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE] = static_cast<uint16_t>(i % queues);
  }
  rc = rte_eth_dev_rss_reta_update(pid, conf.data(), n);
  if (rc != 0) {
    out->why_not = std::string("its redirection table cannot be written: ") + rte_strerror(-rc);
    return;
  }
  for (auto &c : conf) std::fill(std::begin(c.reta), std::end(c.reta), uint16_t(0xffff));
  if ((rc = rte_eth_dev_rss_reta_query(pid, conf.data(), n)) != 0) {
    out->why_not = std::string("its redirection table cannot be read: ") + rte_strerror(-rc);
    return;
  }
  // A PMD that does not say its key's size (net_null) holds as many bytes as it was given.
  std::vector<uint8_t> key(info.hash_key_size ? info.hash_key_size : g_rss_keys[pid].size());
  rte_eth_rss_conf rc_conf{};
  rc_conf.rss_key = key.data();
  rc_conf.rss_key_len = static_cast<uint8_t>(key.size());
  if ((rc = rte_eth_dev_rss_hash_conf_get(pid, &rc_conf)) != 0) {
    out->why_not = std::string("its RSS key cannot be read: ") + rte_strerror(-rc);
    return;
  }
  out->reta.resize(n);
  for (uint16_t i = 0; i < n; i++) out->reta[i] = conf[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE];
  out->key_as_asked = key == g_rss_keys[pid];
  out->key = std::move(key);
  out->hash_types = rc_conf.rss_hf;
  out->programmed = true;
}

}  // namespace

int eal_init(const std::vector<std::string> &args, std::string *err) {
  std::vector<std::string> storage;
  storage.reserve(args.size() + 1);
  storage.push_back("ftpaird");
  for (const auto &a : args) storage.push_back(a);
  std::vector<char *> argv;
  for (auto &s : storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  int rc = rte_eal_init(static_cast<int>(storage.size()), argv.data());
  if (rc < 0) {
    *err = std::string("EAL initialisation failed: ") + rte_strerror(rte_errno);
    return -rte_errno;
  }
  return 0;
}

void eal_cleanup() { rte_eal_cleanup(); }

/* The pool's ring in relaxed tail sync mode (RTS) rather than the default multi-producer /
 * multi-consumer one: there a thread preempted between reserving its slots and publishing
 * them holds every other producer (or consumer) spinning until it runs again. Workers are
 * preemptible wherever their lcores share CPUs (a small VM: the control lcore, two workers and
 * gRPC on two vCPUs), and a worker beyond the lcores runs as a plain thread with no mempool
 * cache. Seen in tests/unit/control/test_lab_dataplane.cc, whose traffic threads share a
 * pool with two workers: with the default ring a worker stood still for up to 1.7 s and the
 * control plane's barriers timed out; with RTS none did, at 2-4x the packet rate. With this
 * pool in RTS too, the rates stayed the same there (within the machine's noise). */
rte_mempool *pool_create(const std::string &name, uint32_t n, std::string *err) {
  rte_mempool *mp = rte_pktmbuf_pool_create_by_ops(name.c_str(), n, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
                                                   static_cast<int>(rte_socket_id()), "ring_mt_rts");
  if (mp == nullptr)
    *err = "cannot create mbuf pool '" + name + "' of " + std::to_string(n) +
           " mbufs: " + rte_strerror(rte_errno) + " (raise dpdk.memory_mb or lower dpdk.mbufs)";
  return mp;
}

static int find_port(const std::string &name, uint16_t *port_id) {
  uint16_t pid;
  RTE_ETH_FOREACH_DEV(pid) {
    char dev_name[RTE_ETH_NAME_MAX_LEN];
    if (rte_eth_dev_get_name_by_port(pid, dev_name) == 0 && name == dev_name) {
      *port_id = pid;
      return 0;
    }
  }
  return -ENODEV;
}

int port_open(const PortSpec &spec, rte_mempool *pool, uint16_t *port_id, rte_ether_addr *mac,
              std::string *err, PortRss *rss) {
  std::string name = spec.device.substr(0, spec.device.find(','));
  std::string devargs = spec.device.find(',') == std::string::npos ? ""
                                                                      : spec.device.substr(spec.device.find(',') + 1);
  if (find_port(name, port_id) != 0) {
    int rc = rte_eal_hotplug_add("vdev", name.c_str(), devargs.c_str());
    if (rc < 0 && rte_eal_hotplug_add("pci", name.c_str(), devargs.c_str()) < 0) {
      *err = "cannot probe device '" + spec.device + "': " + rte_strerror(-rc);
      return rc;
    }
    if (find_port(name, port_id) != 0) {
      *err = "device '" + spec.device + "' probed but no ethdev port appeared";
      return -ENODEV;
    }
  }
  uint16_t pid = *port_id;
  rte_eth_dev_info info{};
  int rc = rte_eth_dev_info_get(pid, &info);
  if (rc != 0) {
    *err = "rte_eth_dev_info_get(" + name + "): " + rte_strerror(-rc);
    return rc;
  }
  if (spec.queues > info.max_rx_queues || spec.queues > info.max_tx_queues) {
    *err = "device '" + name + "' supports " + std::to_string(info.max_rx_queues) +
           " queues, " + std::to_string(spec.queues) + " asked";
    return -EINVAL;
  }
  rte_eth_conf conf{};
  // RSS where the PMD has it: the TCP/UDP 4-tuple of unfragmented IPv4 (what the NAT's port
  // choice steers, return_rss.h), and the addresses of the rest.
  const uint64_t want_hf = RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_FRAG_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_TCP |
                           RTE_ETH_RSS_NONFRAG_IPV4_UDP | RTE_ETH_RSS_NONFRAG_IPV4_OTHER;
  const uint64_t tuple_hf = RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_NONFRAG_IPV4_UDP;
  bool use_rss = false;
  if (rss) {
    *rss = PortRss{};
    if (!spec.rss || spec.queues < 2) {
      rss->why_not = "one queue";
    } else if ((info.flow_type_rss_offloads & tuple_hf) != tuple_hf) {
      rss->why_not = "its PMD (" + std::string(info.driver_name ? info.driver_name : "?") +
                     ") has no RSS on the IPv4 TCP/UDP 4-tuple";
    } else if (info.reta_size == 0) {
      rss->why_not = "its PMD (" + std::string(info.driver_name ? info.driver_name : "?") +
                     ") has no redirection table";
    } else if (info.hash_key_size != 0 && info.hash_key_size < 16) {
      rss->why_not = "its RSS key has " + std::to_string(info.hash_key_size) + " bytes (16 needed)";
    } else if (!spec.rss_key.empty() && spec.rss_key.size() < 16) {
      rss->why_not = "the RSS key asked has " + std::to_string(spec.rss_key.size()) + " bytes (16 needed)";
    } else {
      use_rss = true;
    }
  }
  if (use_rss) {
    // The key (spec.rss_key, or kRssKey), zero-padded to the PMD's length.
    const std::vector<uint8_t> asked = spec.rss_key.empty() ? std::vector<uint8_t>(kRssKey, kRssKey + sizeof(kRssKey))
                                                            : spec.rss_key;
    std::vector<uint8_t> &key = g_rss_keys[pid];
    // A PMD that does not say its key's size gets at least 40 bytes (net_null copies 40).
    key.assign(info.hash_key_size ? info.hash_key_size : std::max<size_t>(asked.size(), sizeof(kRssKey)), 0);
    std::memcpy(key.data(), asked.data(), std::min(key.size(), asked.size()));
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_key = key.data();
    conf.rx_adv_conf.rss_conf.rss_key_len = static_cast<uint8_t>(key.size());
    conf.rx_adv_conf.rss_conf.rss_hf = want_hf & info.flow_type_rss_offloads;
  }
  if ((rc = rte_eth_dev_configure(pid, spec.queues, spec.queues, &conf)) != 0 && use_rss) {
    // A PMD that says it has RSS but refuses this configuration: the queues without it.
    rss->why_not = std::string("its PMD refused the RSS configuration: ") + rte_strerror(-rc);
    use_rss = false;
    conf = rte_eth_conf{};
    rc = rte_eth_dev_configure(pid, spec.queues, spec.queues, &conf);
  }
  if (rc != 0) {
    *err = "rte_eth_dev_configure(" + name + "): " + rte_strerror(-rc);
    return rc;
  }
  uint16_t nrx = spec.rx_desc, ntx = spec.tx_desc;
  rte_eth_dev_adjust_nb_rx_tx_desc(pid, &nrx, &ntx);
  int socket = rte_eth_dev_socket_id(pid);
  if (socket < 0) socket = 0;
  for (uint16_t q = 0; q < spec.queues; q++) {
    if ((rc = rte_eth_rx_queue_setup(pid, q, nrx, static_cast<unsigned>(socket), nullptr, pool)) != 0 ||
        (rc = rte_eth_tx_queue_setup(pid, q, ntx, static_cast<unsigned>(socket), nullptr)) != 0) {
      *err = "queue set-up on " + name + ": " + rte_strerror(-rc);
      return rc;
    }
  }
  if ((rc = rte_eth_dev_start(pid)) != 0) {
    *err = "rte_eth_dev_start(" + name + "): " + rte_strerror(-rc);
    return rc;
  }
  if (use_rss) program_rss(pid, spec.queues, conf.rx_adv_conf.rss_conf.rss_hf, rss);
  // Promiscuous: frames for the shared virtual MAC must reach us. Not every PMD has it.
  rte_eth_promiscuous_enable(pid);
  rte_eth_macaddr_get(pid, mac);
  return 0;
}

void port_close(uint16_t port_id) {
  rte_eth_dev_stop(port_id);
  rte_eth_dev_close(port_id);
}

std::string mac_to_string(const rte_ether_addr &mac) {
  char buf[RTE_ETHER_ADDR_FMT_SIZE];
  rte_ether_format_addr(buf, sizeof(buf), &mac);
  return buf;
}

}  // namespace ftpair::dp
