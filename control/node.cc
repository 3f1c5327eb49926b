#include "control/node.h"

#include "common/clock.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>

#include "dataplane/port.h"

namespace ftpair {

std::unique_ptr<Node> Node::create(const Config &cfg, Status *st) {
  std::unique_ptr<Node> n(new Node(cfg));
  std::string err;
  n->pool_ = dp::pool_create("ftpair_pkts", cfg.mbufs, &err);
  if (n->pool_ == nullptr) {
    *st = Unavailable(err);
    return nullptr;
  }
  const SideConfig *sides[2] = {&cfg.inside, &cfg.outside};
  for (int s = 0; s < 2; s++) {
    dp::PortSpec ps;
    ps.device = sides[s]->device;
    ps.rx_desc = cfg.rx_desc;
    ps.tx_desc = cfg.tx_desc;
    if (dp::port_open(ps, n->pool_, &n->port_ids_[s], &n->macs_[s], &err) != 0) {
      *st = Unavailable(std::string(s == 0 ? "ports.inside" : "ports.outside") + ": " + err);
      return nullptr;
    }
  }
  n->ports_open_ = true;
  dp::FlowTableConfig fc;
  fc.capacity = cfg.flow_capacity;
  n->flows_ = dp::FlowTable::create(fc, &err);
  if (!n->flows_) {
    *st = Unavailable("flows: " + err);
    return nullptr;
  }
  n->arp_ = std::make_unique<dp::ArpTable>(cfg.arp_capacity, uint64_t(cfg.arp_timeout_s) * rte_get_tsc_hz());
  dp::AgentConfig ac;
  ac.port_ids[0] = n->port_ids_[0];
  ac.port_ids[1] = n->port_ids_[1];
  ac.strict = cfg.mode == ReplicationMode::STRICT;
  ac.hold_capacity = cfg.hold_capacity;
  ac.fallback = cfg.hold_fallback;
  n->agent_ = std::make_unique<dp::InterfaceAgent>(ac);
  dp::NfConfig nfc = cfg.nf_config();
  nfc.own_mac[0] = n->macs_[0];
  nfc.own_mac[1] = n->macs_[1];
  n->nf_ = std::make_unique<dp::Nat44>(nfc, *n->flows_, *n->arp_, *n->agent_, n->pool_, 0);
  if (!cfg.session_log.collector.empty()) {
    // Mapping events leave the worker through a ring; the exporter's thread batches them
    // into IPFIX. The NF only logs while it owns the addresses, so the exporter always sends.
    n->events_ = std::make_unique<dp::SessionEventRing>(1u << 16);
    n->nf_->set_session_log(n->events_.get(),
                            dp::TscUnixClock{rte_rdtsc(), static_cast<uint64_t>(unix_ns()) / 1000000, rte_get_tsc_hz()});
    n->exporter_ = std::make_unique<IpfixExporter>(cfg.session_log);
    n->exporter_->add_source(n->events_.get());
    n->exporter_->set_exporting(true);
  }
  n->wctx_ = std::make_unique<dp::WorkerContext>();
  n->wctx_->id = 0;
  n->wctx_->agent = n->agent_.get();
  n->wctx_->nf = n->nf_.get();
  n->wctx_->flows = n->flows_.get();
  n->wctx_->quit = &n->quit_;
  n->wctx_->idle_sleep_max_us = cfg.idle_sleep_max_us;
  return n;
}

Status Node::start() {
  if (running_) return Status::Ok();
  if (exporter_) {
    Status st = exporter_->start();
    if (!st.ok()) return st;
  }
  quit_.store(false);
  unsigned lcore = rte_get_next_lcore(-1, 1, 0);
  if (lcore < RTE_MAX_LCORE) {
    int rc = rte_eal_remote_launch(dp::worker_main, wctx_.get(), lcore);
    if (rc != 0) return Unavailable("cannot launch the worker on lcore " + std::to_string(lcore));
    worker_lcore_ = lcore;
  } else {
    worker_lcore_ = RTE_MAX_LCORE;
    worker_thread_ = std::thread([this] { dp::worker_main(wctx_.get()); });
  }
  running_ = true;
  return Status::Ok();
}

void Node::stop() {
  if (running_) {
    quit_.store(true);
    if (agent_->quiesced()) agent_->resume();
    agent_->set_stall(false);
    if (worker_lcore_ < RTE_MAX_LCORE)
      rte_eal_wait_lcore(worker_lcore_);
    else if (worker_thread_.joinable())
      worker_thread_.join();
    running_ = false;
  }
  if (exporter_) exporter_->stop();
}

Node::~Node() {
  stop();
  nf_.reset();
  agent_.reset();  // frees held and queued mbufs
  if (ports_open_) {
    dp::port_close(port_ids_[0]);
    dp::port_close(port_ids_[1]);
  }
  flows_.reset();
  if (pool_) rte_mempool_free(pool_);
}

}  // namespace ftpair
