#include "control/node.h"

#include "common/clock.h"

#include <algorithm>

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>

#include "common/log.h"
#include "dataplane/port.h"

namespace ftpair {

namespace {
auto &L = log::component("node");
// Entries in each worker's hand-off ring (a power of two): a few bursts of every port.
constexpr uint32_t kHandoffRing = 4096;
}  // namespace

std::unique_ptr<Node> Node::create(const Config &cfg, Status *st) {
  std::unique_ptr<Node> n(new Node(cfg));
  std::string err;
  const unsigned nw = std::max(1u, cfg.worker_count);
  // Each worker polls without end: more workers than CPUs would only take turns.
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  if (nw > cpus) {
    *st = InvalidArgument("worker.count " + std::to_string(nw) + ": this machine has " + std::to_string(cpus) +
                          " CPUs, and each worker needs one");
    return nullptr;
  }
  n->pool_ = dp::pool_create("ftpair_pkts", cfg.mbufs, &err);
  if (n->pool_ == nullptr) {
    *st = Unavailable(err);
    return nullptr;
  }
  const SideConfig *sides[2] = {&cfg.inside, &cfg.outside};
  dp::PortRss rss[2];
  for (int s = 0; s < 2; s++) {
    dp::PortSpec ps;
    ps.device = sides[s]->device;
    ps.queues = static_cast<uint16_t>(nw);
    ps.rx_desc = cfg.rx_desc;
    ps.tx_desc = cfg.tx_desc;
    ps.rss = nw > 1;
    if (dp::port_open(ps, n->pool_, &n->port_ids_[s], &n->macs_[s], &err, &rss[s]) != 0) {
      if (nw > 1 && ps.device.rfind("net_af_packet", 0) == 0 && ps.device.find("qpairs=") == std::string::npos)
        err += " (worker.count " + std::to_string(nw) + " needs qpairs=" + std::to_string(nw) + " on the device)";
      *st = Unavailable(std::string(s == 0 ? "ports.inside" : "ports.outside") + ": " + err);
      return nullptr;
    }
  }
  n->ports_open_ = true;
  if (nw > 1) {
    /* The outside port's RSS programmed (key and redirection table read back): a new TCP/UDP
     * mapping takes a port whose replies the NIC delivers to its flow's worker (return_rss.h).
     * Otherwise, and for what the port choice cannot steer (LAN packets, which RSS spreads by
     * their own tuple; ICMP; fragments), the worker that receives a packet hands it to the
     * one that owns its flow (ftpair_worker_handoffs_total). */
    for (int s = 0; s < 2; s++) {
      const char *side = s == 0 ? "ports.inside" : "ports.outside";
      if (!rss[s].programmed)
        L.info("{}: no RSS the NAT could program ({}); {} workers hand each packet to the worker that owns its "
               "flow (ftpair_worker_handoffs_total)", side, rss[s].why_not, nw);
      else if (s == 0)
        L.info("{}: RSS over {} queues ({} redirection entries); a LAN packet on another worker's queue is handed "
               "to the worker of its host (ftpair_worker_handoffs_total)", side, nw, rss[s].reta.size());
    }
  }
  dp::AgentConfig ac;
  ac.port_ids[0] = n->port_ids_[0];
  ac.port_ids[1] = n->port_ids_[1];
  ac.nb_workers = static_cast<uint16_t>(nw);
  ac.strict = cfg.mode == ReplicationMode::STRICT;
  ac.hold_capacity = cfg.hold_capacity;
  ac.fallback = cfg.hold_fallback;
  n->agent_ = std::make_unique<dp::InterfaceAgent>(ac);
  if (nw > 1 && rss[1].programmed) {
    const uint64_t tuple_hf = RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_NONFRAG_IPV4_UDP;
    const uint64_t part_hf =
        RTE_ETH_RSS_L3_SRC_ONLY | RTE_ETH_RSS_L3_DST_ONLY | RTE_ETH_RSS_L4_SRC_ONLY | RTE_ETH_RSS_L4_DST_ONLY;
    std::vector<uint16_t> queue_worker(nw, dp::ReturnRss::kNoWorker);
    for (unsigned w = 0; w < nw; w++) {
      const uint16_t q = ac.queue_of_worker[w];
      if (q >= queue_worker.size()) queue_worker.resize(q + 1u, dp::ReturnRss::kNoWorker);
      queue_worker[q] = static_cast<uint16_t>(w);
    }
    if ((rss[1].hash_types & tuple_hf) != tuple_hf || (rss[1].hash_types & part_hf) != 0)
      err = "the PMD does not hash TCP and UDP on the whole 4-tuple (RSS types " + std::to_string(rss[1].hash_types) +
            ")";
    else
      n->return_rss_ = dp::ReturnRss::create(rss[1].key.data(), static_cast<unsigned>(rss[1].key.size()),
                                             rss[1].reta, queue_worker, &err);
    if (n->return_rss_ && !rss[1].key_as_asked)
      L.warn("ports.outside: the device kept an RSS key of its own, not ftpaird's: the ports are chosen for the key "
             "it holds, and a peer with another key will not find its replies on their workers' queues after a "
             "failover (handed off, counted)");
    if (n->return_rss_)
      L.info("ports.outside: RSS programmed ({}-byte key, {} redirection entries over {} queues): a new TCP/UDP "
             "mapping takes a port whose replies come to its flow's worker (ftpair_nat_rss_ports_total)",
             rss[1].key.size(), rss[1].reta.size(), nw);
    else
      L.warn("ports.outside: RSS programmed but not usable for the port choice ({}); replies are handed off", err);
  }
  dp::NfConfig nfc = cfg.nf_config();
  nfc.own_mac[0] = n->macs_[0];
  nfc.own_mac[1] = n->macs_[1];
  // Several workers share the outside ports, and hand packets to a flow's owner.
  std::shared_ptr<dp::PortPool> ports;
  if (nw > 1) {
    ports = std::make_shared<dp::PortPool>(nfc.nat_addresses());
    n->shards_ = dp::Shards::create(nw, ports, nfc.vip[dp::kPortOutside], nfc.forwards, kHandoffRing, &err);
    if (!n->shards_) {
      *st = Unavailable("workers: " + err);
      return nullptr;
    }
  }
  if (!cfg.session_log.collector.empty()) n->exporter_ = std::make_unique<IpfixExporter>(cfg.session_log);
  const dp::TscUnixClock clock{rte_rdtsc(), static_cast<uint64_t>(unix_ns()) / 1000000, rte_get_tsc_hz()};
  // Several workers: flows.capacity is the node's limit (one budget), and every worker's table
  // can hold all of it. A LAN host's flows live on one worker, so the load may sit on any one;
  // and a standby files the active's flows by its own workers, whatever the active's count.
  // The price is memory: N tables of the whole capacity (BENCHMARKS, bytes per flow).
  std::shared_ptr<dp::FlowBudget> budget;
  if (nw > 1) budget = std::make_shared<dp::FlowBudget>(cfg.flow_capacity);
  n->w_.resize(nw);
  for (unsigned w = 0; w < nw; w++) {
    Worker &wk = n->w_[w];
    dp::FlowTableConfig fc;
    fc.capacity = cfg.flow_capacity;
    fc.name = w ? "ftpair_flows_" + std::to_string(w) : "ftpair_flows";
    wk.flows = dp::FlowTable::create(fc, &err);
    if (!wk.flows) {
      *st = Unavailable("flows: " + err);
      return nullptr;
    }
    if (ports) wk.flows->share_port_pool(ports);
    if (budget) wk.flows->share_budget(budget);
    wk.arp = std::make_unique<dp::ArpTable>(cfg.arp_capacity, uint64_t(cfg.arp_timeout_s) * rte_get_tsc_hz());
    wk.nf = std::make_unique<dp::Nat44>(nfc, *wk.flows, *wk.arp, *n->agent_, n->pool_, w);
    if (n->shards_) wk.nf->set_shards(n->shards_.get());
    if (n->return_rss_) wk.nf->set_return_rss(n->return_rss_.get());
    if (n->exporter_) {
      // Mapping events leave each worker through its own ring; the exporter's thread batches
      // them into IPFIX. The NF only logs while it owns the addresses.
      wk.events = std::make_unique<dp::SessionEventRing>(1u << 16);
      wk.nf->set_session_log(wk.events.get(), clock);
      n->exporter_->add_source(wk.events.get());
    }
    wk.ctx = std::make_unique<dp::WorkerContext>();
    wk.ctx->id = w;
    wk.ctx->agent = n->agent_.get();
    wk.ctx->nf = wk.nf.get();
    wk.ctx->flows = wk.flows.get();
    wk.ctx->shards = n->shards_.get();
    wk.ctx->quit = &n->quit_;
    wk.ctx->idle_sleep_max_us = cfg.idle_sleep_max_us;
  }
  if (n->exporter_) n->exporter_->set_exporting(true);
  return n;
}

void Node::attach_dp_beats(dp::DpBeatBoard *board) {
  const uint32_t cap = std::max<uint32_t>(1, board->config().interval_us / 4);
  for (auto &wk : w_) {
    wk.nf->set_dp_beats(board);
    wk.ctx->beats = board;
    wk.ctx->pool = pool_;
    wk.ctx->beat_port = dp::kPortInside;
    wk.ctx->beat_next_tsc = 0;  // the first at once
    if (wk.ctx->idle_sleep_max_us > cap) wk.ctx->idle_sleep_max_us = cap;  // 0 (never sleep) stays
  }
}

std::vector<dp::FlowTable *> Node::tables() {
  std::vector<dp::FlowTable *> v;
  for (auto &wk : w_) v.push_back(wk.flows.get());
  return v;
}

unsigned Node::home(const dp::FlowState &st) const { return shards_ ? shards_->worker_of_host(st.in_ip) : 0; }

uint64_t Node::flow_count() const {
  uint64_t n = 0;
  for (const auto &wk : w_) n += wk.flows->size();
  return n;
}

void Node::nf_counters(dp::NfCounters *out) const {
  for (const auto &wk : w_) wk.nf->counters().add_to(out);
}

Status Node::start() {
  if (running_) return Status::Ok();
  if (exporter_) {
    Status st = exporter_->start();
    if (!st.ok()) return st;
  }
  quit_.store(false);
  unsigned lcore = rte_get_next_lcore(-1, 1, 0);
  for (auto &wk : w_) {
    if (lcore < RTE_MAX_LCORE) {
      int rc = rte_eal_remote_launch(dp::worker_main, wk.ctx.get(), lcore);
      if (rc != 0) {
        stop();
        return Unavailable("cannot launch worker " + std::to_string(wk.ctx->id) + " on lcore " + std::to_string(lcore));
      }
      wk.lcore = lcore;
      lcore = rte_get_next_lcore(lcore, 1, 0);
    } else {
      wk.lcore = RTE_MAX_LCORE;
      dp::WorkerContext *ctx = wk.ctx.get();
      wk.thread = std::thread([ctx] { dp::worker_main(ctx); });
    }
    running_ = true;
  }
  return Status::Ok();
}

void Node::stop() {
  if (running_) {
    quit_.store(true);
    if (agent_->quiesced()) agent_->resume();
    agent_->set_stall(false);
    for (auto &wk : w_) {
      if (wk.lcore < RTE_MAX_LCORE)
        rte_eal_wait_lcore(wk.lcore);
      else if (wk.thread.joinable())
        wk.thread.join();
      wk.lcore = RTE_MAX_LCORE;
    }
    running_ = false;
  }
  if (exporter_) exporter_->stop();
}

Node::~Node() {
  stop();
  for (auto &wk : w_) wk.nf.reset();
  agent_.reset();  // frees held and queued mbufs
  if (ports_open_) {
    dp::port_close(port_ids_[0]);
    dp::port_close(port_ids_[1]);
  }
  w_.clear();
  shards_.reset();
  if (pool_) rte_mempool_free(pool_);
}

/* The CPUs the workers' lcores may run on, known before start(): start() launches worker i on
 * the i-th worker lcore (a worker beyond them runs on a plain thread, anywhere). Every CPU of
 * each lcore's set, as `--lcores 1@(2-3)` allows more than one. */
std::vector<int> Node::worker_cpus() const {
  std::vector<int> cpus;
  unsigned lcore = rte_get_next_lcore(-1, 1, 0);
  for (size_t i = 0; i < w_.size() && lcore < RTE_MAX_LCORE; i++, lcore = rte_get_next_lcore(lcore, 1, 0)) {
    const rte_cpuset_t set = rte_lcore_cpuset(lcore);
    for (int c = 0; c < CPU_SETSIZE; c++)
      if (CPU_ISSET(c, &set) && std::find(cpus.begin(), cpus.end(), c) == cpus.end()) cpus.push_back(c);
  }
  std::sort(cpus.begin(), cpus.end());
  return cpus;
}

}  // namespace ftpair
