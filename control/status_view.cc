#include "control/status_view.h"

#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

#include <rte_ethdev.h>
#include <rte_telemetry.h>

#include "checkpoint/version.h"
#include "common/clock.h"
#include "common/log.h"
#include "control/daemon.h"
#include "control/role_wire.h"
#include "dataplane/port.h"

namespace ftpair::status_view {

namespace {

void fill_sync(Daemon &d, fo::Role r, v1::SyncStatus *s) {
  s->set_mode(d.config().mode == ReplicationMode::STRICT ? "strict" : "relaxed");
  if (is_active(r)) {
    ckpt::Engine &e = d.engine();
    const auto &es = e.stats();
    s->set_peer(e.peer());
    s->set_connected(e.connected());
    s->set_in_sync(e.in_sync());
    s->set_epoch(e.current_epoch());
    s->set_acked_epoch(e.acked_epoch());
    const uint64_t closed = e.current_epoch() - 1;
    s->set_lag_epochs(e.in_sync() && closed > e.acked_epoch() ? closed - e.acked_epoch() : 0);
    s->set_exposure_epochs(s->lag_epochs());
    s->set_lag_bytes(e.lag_bytes());
    s->set_last_ack_age_seconds(age_seconds(es.last_ack_unix_ns.load()));
    s->set_full_syncs(es.full_syncs.load());
    s->set_full_sync_progress(e.full_sync_progress());
    if (!wire::previous_release()) {  // fields the previous release's Status does not have
      const ckpt::Engine::StandbyView v = e.standby_view();
      s->set_peer_node(v.node);
      s->set_peer_state(static_cast<v1::RoleState>(v.role_state));
      s->set_peer_flows(v.flows);
      s->set_stream_age_seconds(v.stream_age_s);
    }
  } else {
    ckpt::Applier &a = d.applier();
    s->set_peer(a.peer_node());
    s->set_in_sync(a.in_sync());
    s->set_epoch(a.applied_epoch());
    s->set_acked_epoch(a.applied_epoch());
    s->set_full_syncs(a.stats().full_syncs.load());
    s->set_full_sync_progress(a.full_sync_progress());
    s->set_last_ack_age_seconds(age_seconds(a.stats().last_apply_unix_ns.load()));
    s->set_divergences(a.stats().divergences.load());
    s->set_diverged_epoch(a.diverged_epoch());
    s->set_fingerprints_checked(a.fingerprints_checked());
    if (!wire::previous_release()) s->set_stream_age_seconds(-1);  // the active's field
  }
}

std::string proto_name(uint8_t p) {
  return p == IPPROTO_TCP ? "tcp" : p == IPPROTO_UDP ? "udp" : p == IPPROTO_ICMP ? "icmp" : std::to_string(p);
}

void fill_flow(uint32_t slot, const dp::FlowState &s, v1::Flow *f) {
  f->set_slot(slot);
  f->set_proto(proto_name(s.proto));
  f->set_inside(ipv4_to_string(s.in_ip) + ":" + std::to_string(ntohs(s.in_port)));
  f->set_outside(ipv4_to_string(s.ext_ip) + ":" + std::to_string(ntohs(s.ext_port)));
  f->set_nat(ipv4_to_string(s.nat_ip) + ":" + std::to_string(ntohs(s.nat_port)));
  f->set_state(s.proto == IPPROTO_TCP ? dp::tcp_state_name(static_cast<dp::TcpState>(s.tcp_state)) : "active");
  f->set_flags(s.flags);
}

// The DPDK telemetry callback has no user pointer: one daemon per process.
std::mutex g_tel_mu;
Daemon *g_tel_daemon = nullptr;

int telemetry_state(const char *, const char *, rte_tel_data *d) {
  std::lock_guard<std::mutex> g(g_tel_mu);
  if (!g_tel_daemon) return -1;
  v1::StatusReply st;
  fill_status(*g_tel_daemon, &st);
  rte_tel_data_start_dict(d);
  rte_tel_data_add_dict_string(d, "node_id", st.node_id().c_str());
  rte_tel_data_add_dict_string(d, "role", st.role().c_str());
  rte_tel_data_add_dict_string(d, "state", st.state().c_str());
  rte_tel_data_add_dict_u64(d, "generation", st.generation());
  rte_tel_data_add_dict_int(d, "serving", st.serving() ? 1 : 0);
  rte_tel_data_add_dict_int(d, "dataplane_healthy", st.dataplane_healthy() ? 1 : 0);
  rte_tel_data_add_dict_u64(d, "flows", st.flows());
  rte_tel_data_add_dict_u64(d, "flow_capacity", st.flow_capacity());
  rte_tel_data_add_dict_u64(d, "checkpoints", st.checkpoints());
  rte_tel_data_add_dict_u64(d, "checkpoints_aborted", st.checkpoints_aborted());
  rte_tel_data_add_dict_int(d, "in_sync", st.sync().in_sync() ? 1 : 0);
  rte_tel_data_add_dict_u64(d, "epoch", st.sync().epoch());
  rte_tel_data_add_dict_u64(d, "acked_epoch", st.sync().acked_epoch());
  rte_tel_data_add_dict_u64(d, "lag_epochs", st.sync().lag_epochs());
  rte_tel_data_add_dict_u64(d, "lag_bytes", st.sync().lag_bytes());
  rte_tel_data_add_dict_string(d, "version", st.software_version().c_str());
  return 0;
}

}  // namespace

void fill_status(Daemon &d, v1::StatusReply *out) {
  const fo::Role r = d.role();
  const Config &cfg = d.config();
  Node &node = d.node();
  out->set_node_id(cfg.node_id);
  wire::fill(r, out);
  out->set_generation(d.generation());
  out->set_software_version(ckpt::software_version());
  out->set_dataplane_healthy(d.dataplane_healthy());
  out->set_flows(node.flow_count());
  out->set_flow_capacity(cfg.flow_capacity);
  out->set_workers(node.workers());
  const auto &es = d.engine().stats();
  out->set_checkpoints(es.checkpoints.load());
  out->set_checkpoints_aborted(es.aborted.load());
  out->set_last_checkpoint_age_seconds(age_seconds(es.last_checkpoint_unix_ns.load()));
  out->set_last_pause_us(double(node.agent().last_pause_ns()) / 1000.0);
  out->set_serving(d.serving());
  for (const auto &k : d.restart_pending()) out->add_restart_pending(k);
  for (const auto &w : d.security_warnings()) out->add_security_warnings(w);
  for (const auto &a : d.alarms()) out->add_alarms(a);
  out->set_transitions_rolled_back(d.transitions_rolled_back());
  out->set_config_reloads(d.reloads_applied());
  out->set_pid(uint32_t(::getpid()));
  out->set_binary_sha256(d.binary_sha256());
  if (cfg.peer_grpc.set()) out->set_peer_address(cfg.peer_grpc.str());
  {
    bool reachable = false;
    v1::Beat peer;
    if (d.peer_view(&reachable, &peer)) {
      out->set_peer_reachable(reachable);
      wire::fill_peer(wire::role_of(peer), out);
    }
  }
  out->set_dataplane_beats(d.dp_beats_summary());
  for (int side = 0; side < 2; side++) {
    v1::PortInfo *p = out->add_ports();
    p->set_name(side == 0 ? "inside" : "outside");
    const uint16_t pid = node.port_id(side);
    char name[RTE_ETH_NAME_MAX_LEN] = {};
    if (rte_eth_dev_get_name_by_port(pid, name) == 0) p->set_device(name);
    rte_eth_dev_info info{};
    if (rte_eth_dev_info_get(pid, &info) == 0 && info.driver_name) p->set_driver(info.driver_name);
    p->set_mac(dp::mac_to_string(node.own_mac(side)));
    rte_eth_link link{};
    if (rte_eth_link_get_nowait(pid, &link) == 0) {
      p->set_link_up(link.link_status == RTE_ETH_LINK_UP);
      p->set_link_speed_mbps(link.link_speed == RTE_ETH_SPEED_NUM_UNKNOWN ? 0 : link.link_speed);
    }
  }
  d.fill_upgrade(out->mutable_upgrade());
  out->set_upgrade_stage(out->upgrade().stage());
  fill_sync(d, r, out->mutable_sync());
}

Status fill_flows(Daemon &d, uint32_t limit, v1::FlowsReply *out) {
  Node &node = d.node();
  /* Under the barrier (or the standby's table lock, which a promotion needs) only raw records
   * are copied, at most `limit` of them, and the walk stops there; the protobuf is built after
   * the workers resume (or the lock is released). Worker by worker. */
  struct Raw {
    uint32_t worker, slot;
    dp::FlowState st;
  };
  std::vector<Raw> raw;
  uint64_t total = 0, epoch = 0;
  auto copy = [&] {
    total = node.flow_count();
    epoch = node.flows(0).epoch();
    raw.reserve(limit ? std::min<uint64_t>(limit, total) : total);
    for (unsigned w = 0; w < node.workers(); w++) {
      node.flows(w).for_each_while([&](uint32_t slot, const dp::FlowRecord &r) {
        if (limit && raw.size() >= limit) return false;
        raw.push_back(Raw{w, slot, r.st});
        return true;
      });
    }
  };
  if (is_active(d.role())) {
    // The worker owns the active's table: read it at a barrier.
    Status st = d.engine().with_workers_parked(copy);
    if (!st.ok()) return st;
  } else {
    {
      std::lock_guard<std::mutex> t(d.table_mutex());
      copy();
    }
    epoch = d.applier().applied_epoch();
  }
  out->set_total(total);
  out->set_epoch(epoch);
  for (const Raw &r : raw) {
    v1::Flow *f = out->add_flows();
    fill_flow(r.slot, r.st, f);
    f->set_worker(r.worker);
  }
  return Status::Ok();
}

void register_telemetry(Daemon &d) {
  {
    std::lock_guard<std::mutex> g(g_tel_mu);
    g_tel_daemon = &d;
  }
  static bool registered = false;  // DPDK keeps a command for the life of the process
  if (registered) return;
  if (rte_telemetry_register_cmd("/ftpair/state", telemetry_state,
                                 "ftpair node state: role, generation, flows, sync. Takes no parameters.") == 0)
    registered = true;
  else
    log::component("daemon").error("cannot register the DPDK telemetry command /ftpair/state");
}

void unregister_telemetry(Daemon &d) {
  std::lock_guard<std::mutex> g(g_tel_mu);
  if (g_tel_daemon == &d) g_tel_daemon = nullptr;
}

}  // namespace ftpair::status_view
