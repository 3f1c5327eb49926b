/* One node's dataplane, assembled from the config: pool, ports, flow table, ARP table,
 * interface agent, NAT44 function and the worker. Created after the EAL is up. */
#pragma once

#include <atomic>
#include <memory>
#include <thread>

#include "control/config.h"
#include "control/ipfix.h"
#include "common/status.h"
#include "dataplane/agent.h"
#include "dataplane/arp_table.h"
#include "dataplane/flow_table.h"
#include "dataplane/nf.h"
#include "dataplane/worker.h"

namespace ftpair {

class Node {
 public:
  // Opens the ports and builds the dataplane. The worker is not running yet.
  static std::unique_ptr<Node> create(const Config &cfg, Status *st);
  ~Node();

  // Starts the worker on the first worker lcore (or a plain thread if there is none).
  Status start();
  // Stops the worker and closes the ports. Idempotent.
  void stop();

  const Config &config() const { return cfg_; }
  dp::FlowTable &flows() { return *flows_; }
  dp::ArpTable &arp() { return *arp_; }
  dp::InterfaceAgent &agent() { return *agent_; }
  dp::Nat44 &nf() { return *nf_; }
  const dp::WorkerContext &worker() const { return *wctx_; }
  rte_mempool *pool() { return pool_; }
  // The session-log exporter, or nullptr when nat.session_log is not configured.
  const IpfixExporter *session_log() const { return exporter_.get(); }
  IpfixExporter *session_log() { return exporter_.get(); }
  uint16_t port_id(int side) const { return port_ids_[side]; }
  const rte_ether_addr &own_mac(int side) const { return macs_[side]; }

 private:
  explicit Node(const Config &cfg) : cfg_(cfg) {}

  Config cfg_;
  rte_mempool *pool_ = nullptr;
  uint16_t port_ids_[2] = {0, 0};
  rte_ether_addr macs_[2]{};
  bool ports_open_ = false;
  std::unique_ptr<dp::FlowTable> flows_;
  std::unique_ptr<dp::ArpTable> arp_;
  std::unique_ptr<dp::InterfaceAgent> agent_;
  std::unique_ptr<dp::Nat44> nf_;
  std::unique_ptr<dp::WorkerContext> wctx_;
  std::unique_ptr<dp::SessionEventRing> events_;
  std::unique_ptr<IpfixExporter> exporter_;
  std::atomic<bool> quit_{false};
  unsigned worker_lcore_ = 0;
  std::thread worker_thread_;
  bool running_ = false;
};

}  // namespace ftpair
