/* One node's dataplane, assembled from the config: pool, ports (a queue pair per worker),
 * interface agent, and per worker a flow table, ARP table and NAT44 function. Created after
 * the EAL is up. */
#pragma once

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "control/config.h"
#include "control/ipfix.h"
#include "common/status.h"
#include "dataplane/agent.h"
#include "dataplane/arp_table.h"
#include "dataplane/flow_table.h"
#include "dataplane/nf.h"
#include "dataplane/return_rss.h"
#include "dataplane/session_log.h"
#include "dataplane/shards.h"
#include "dataplane/worker.h"

namespace ftpair {

class Node {
 public:
  // Opens the ports and builds the dataplane. The workers are not running yet.
  static std::unique_ptr<Node> create(const Config &cfg, Status *st);
  ~Node();

  // Starts worker w on the w-th worker lcore (or a plain thread where there is none).
  Status start();
  // Stops the workers and closes the ports. Idempotent.
  void stop();

  const Config &config() const { return cfg_; }
  /* Worker w's shard: its flow table, ARP table and NF (w < workers()). Each worker owns the
   * flows of the LAN hosts in its buckets (dataplane/shards.h); the tables share one pool of
   * outside ports. */
  unsigned workers() const { return unsigned(w_.size()); }
  dp::FlowTable &flows(unsigned w = 0) { return *w_[w].flows; }
  const dp::FlowTable &flows(unsigned w = 0) const { return *w_[w].flows; }
  dp::ArpTable &arp(unsigned w = 0) { return *w_[w].arp; }
  dp::Nat44 &nf(unsigned w = 0) { return *w_[w].nf; }
  const dp::Nat44 &nf(unsigned w = 0) const { return *w_[w].nf; }
  const dp::WorkerContext &worker(unsigned w = 0) const { return *w_[w].ctx; }
  /* Before start(): every worker sends dataplane beats on the LAN port and takes the peer's
   * off onto the board. An idle worker's back-off sleeps at most a quarter interval, so
   * neither its beats nor its reception of the peer's stretch the detection. */
  void attach_dp_beats(dp::DpBeatBoard *board);
  // Every worker's table, worker 0 first (the checkpoint's shards).
  std::vector<dp::FlowTable *> tables();
  // The worker that owns a flow here (the standby homes replicated flows by it).
  unsigned home(const dp::FlowState &st) const;
  // Over every worker: the flows, and the NF's counters summed into *out.
  uint64_t flow_count() const;
  void nf_counters(dp::NfCounters *out) const;
  // Several workers: the hand-off between them (nullptr with one).
  const dp::Shards *shards() const { return shards_.get(); }
  // The outside port's RSS, when it was programmed and new mappings steer their replies by it.
  const dp::ReturnRss *return_rss() const { return return_rss_.get(); }
  dp::InterfaceAgent &agent() { return *agent_; }
  // The CPUs the workers' lcores run on (none for workers on plain threads).
  std::vector<int> worker_cpus() const;
  rte_mempool *pool() { return pool_; }
  // The session-log exporter, or nullptr when nat.session_log is not configured.
  const IpfixExporter *session_log() const { return exporter_.get(); }
  IpfixExporter *session_log() { return exporter_.get(); }
  uint16_t port_id(int side) const { return port_ids_[side]; }
  const rte_ether_addr &own_mac(int side) const { return macs_[side]; }

 private:
  explicit Node(const Config &cfg) : cfg_(cfg) {}

  struct Worker {
    std::unique_ptr<dp::FlowTable> flows;
    std::unique_ptr<dp::ArpTable> arp;
    std::unique_ptr<dp::Nat44> nf;
    std::unique_ptr<dp::SessionEventRing> events;
    std::unique_ptr<dp::WorkerContext> ctx;
    unsigned lcore = RTE_MAX_LCORE;  // RTE_MAX_LCORE: runs on thread
    std::thread thread;
  };

  Config cfg_;
  rte_mempool *pool_ = nullptr;
  uint16_t port_ids_[2] = {0, 0};
  rte_ether_addr macs_[2]{};
  bool ports_open_ = false;
  std::unique_ptr<dp::Shards> shards_;
  std::unique_ptr<dp::ReturnRss> return_rss_;  // the outside port's RSS, when programmed
  std::vector<Worker> w_;
  std::unique_ptr<dp::InterfaceAgent> agent_;
  std::unique_ptr<IpfixExporter> exporter_;
  std::atomic<bool> quit_{false};
  bool running_ = false;
};

}  // namespace ftpair
