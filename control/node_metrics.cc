#include "control/node_metrics.h"

#include <netinet/in.h>

#include <fstream>
#include <string>
#include <utility>

#include <rte_cycles.h>
#include <rte_ethdev.h>

namespace ftpair {

void expose_dataplane(Node &node, Exposition &x) {
  auto &agent = node.agent();
  const char *side[2] = {"inside", "outside"};
  x.family("ftpair_port_rx_packets_total", "counter", "Packets received by the interface agent.");
  for (int p = 0; p < 2; p++) x.sample(agent.port_counters(p).rx_packets, {{"port", side[p]}});
  x.family("ftpair_port_rx_bytes_total", "counter", "Bytes received by the interface agent.");
  for (int p = 0; p < 2; p++) x.sample(agent.port_counters(p).rx_bytes, {{"port", side[p]}});
  x.family("ftpair_port_tx_packets_total", "counter", "Packets transmitted.");
  for (int p = 0; p < 2; p++) x.sample(agent.port_counters(p).tx_packets, {{"port", side[p]}});
  x.family("ftpair_port_tx_bytes_total", "counter", "Bytes transmitted.");
  for (int p = 0; p < 2; p++) x.sample(agent.port_counters(p).tx_bytes, {{"port", side[p]}});
  x.family("ftpair_port_tx_dropped_total", "counter", "Packets the port's transmit queue refused.");
  for (int p = 0; p < 2; p++) x.sample(agent.port_counters(p).tx_dropped, {{"port", side[p]}});

  /* The port's own losses, from the PMD (rte_eth_stats): packets that never reached a worker.
   * imissed: the receive ring was full or had no buffers (the workers did not keep up);
   * rx_nombuf: no mbuf to receive into; ierrors / oerrors: frames the PMD counts as bad or
   * could not send. A port whose PMD does not answer is left out. */
  rte_eth_stats st[2];
  bool have[2];
  for (int p = 0; p < 2; p++) have[p] = rte_eth_stats_get(node.port_id(p), &st[p]) == 0;
  const auto pmd = [&](const char *name, const char *help, uint64_t rte_eth_stats::*field) {
    x.family(name, "counter", help);
    for (int p = 0; p < 2; p++)
      if (have[p]) x.sample(double(st[p].*field), {{"port", side[p]}});
  };
  pmd("ftpair_port_rx_missed_total",
      "Packets the port dropped before a worker took them: its receive ring was full or had no buffers (PMD imissed).",
      &rte_eth_stats::imissed);
  pmd("ftpair_port_rx_nombuf_total", "Receives that failed for want of an mbuf (PMD rx_nombuf).",
      &rte_eth_stats::rx_nombuf);
  pmd("ftpair_port_rx_errors_total", "Frames the PMD received in error (PMD ierrors).", &rte_eth_stats::ierrors);
  pmd("ftpair_port_tx_errors_total", "Frames the PMD failed to transmit (PMD oerrors).", &rte_eth_stats::oerrors);

  /* A port on a kernel interface (net_af_xdp or net_af_packet, "iface=NAME"): what the kernel
   * dropped on its way to the port's socket is the interface's rx_dropped. With af_xdp on a veth
   * the frames a full socket ring could not take are counted there, and the PMD's imissed stays 0
   * (DPDK 22.11). No kernel interface, or it cannot be read: left out. */
  const std::string *devices[2] = {&node.config().inside.device, &node.config().outside.device};
  bool family = false;
  for (int p = 0; p < 2; p++) {
    const std::string &dev = *devices[p];
    if (dev.rfind("net_af_xdp", 0) != 0 && dev.rfind("net_af_packet", 0) != 0) continue;
    const size_t at = dev.find("iface=");
    if (at == std::string::npos) continue;
    const size_t end = dev.find(',', at);
    const std::string iface = dev.substr(at + 6, end == std::string::npos ? std::string::npos : end - at - 6);
    if (iface.empty() || iface.find('/') != std::string::npos) continue;
    std::ifstream f("/sys/class/net/" + iface + "/statistics/rx_dropped");
    unsigned long long dropped = 0;
    if (!(f >> dropped)) continue;
    if (!family) {
      x.family("ftpair_port_kernel_rx_dropped_total", "counter",
               "Frames the kernel interface under an af_xdp or af_packet port dropped before the port took them "
               "(its rx_dropped): with af_xdp, the socket's rings were full because the workers did not keep up.");
      family = true;
    }
    x.sample(double(dropped), {{"port", side[p]}, {"iface", iface}});
  }

  // Every worker's NF and table, summed; the per-worker figures an operator balances by
  // carry a worker label.
  dp::NfCounters c;
  node.nf_counters(&c);
  x.family("ftpair_drops_total", "counter", "Packets dropped by the network function, by reason.");
  for (unsigned r = 0; r < dp::kDropReasonCount; r++)
    x.sample(c.drops[r].load(), {{"reason", dp::drop_reason_label(static_cast<dp::DropReason>(r))}});
  x.family("ftpair_forwarded_packets_total", "counter", "Packets translated and forwarded, by ingress port.");
  for (int p = 0; p < 2; p++) x.sample(c.forwarded[p].load(), {{"port", side[p]}});

  const unsigned nw = node.workers();
  auto sum = [&](auto f) {
    uint64_t n = 0;
    for (unsigned w = 0; w < nw; w++) n += f(w);
    return n;
  };
  x.family("ftpair_flows", "gauge", "Flows in the table.").sample(node.flow_count());
  x.family("ftpair_flows_capacity", "gauge", "Flow table capacity.").sample(node.config().flow_capacity);
  x.family("ftpair_worker_flows", "gauge", "Flows in each worker's table (its LAN hosts' flows).");
  for (unsigned w = 0; w < nw; w++) x.sample(node.flows(w).size(), {{"worker", std::to_string(w)}});
  x.family("ftpair_flows_created_total", "counter", "Flows created.").sample(c.flows_created.load());
  x.family("ftpair_flows_expired_total", "counter", "Flows removed by idle timeout.").sample(c.flows_expired.load());
  x.family("ftpair_flows_closed_total", "counter", "TCP flows removed after close or reset.").sample(c.flows_closed.load());
  x.family("ftpair_flow_table_full_total", "counter", "New flows refused because the table was full.")
      .sample(sum([&](unsigned w) { return node.flows(w).stats().insert_full; }));
  const auto &cfg = node.config();
  const double range = double(cfg.nat_port_max) - cfg.nat_port_min + 1;
  x.family("ftpair_nat_ports_in_use", "gauge", "NAT endpoints (outside address, port) used by at least one flow, by protocol.");
  const std::pair<uint8_t, const char *> protos[] = {{IPPROTO_TCP, "tcp"}, {IPPROTO_UDP, "udp"}, {IPPROTO_ICMP, "icmp"}};
  for (const auto &[proto, name] : protos)
    x.sample(sum([&, proto = proto](unsigned w) { return uint64_t(node.flows(w).ports_in_use(proto)); }), {{"proto", name}});
  x.family("ftpair_nat_ports_capacity", "gauge", "NAT ports in the pool, per protocol.").sample(range);

  x.family("ftpair_arp_requests_total", "counter", "ARP requests sent.").sample(c.arp_requests.load());
  x.family("ftpair_arp_replies_total", "counter", "ARP replies sent for virtual addresses.").sample(c.arp_replies.load());
  x.family("ftpair_gratuitous_arp_total", "counter", "Gratuitous ARPs sent.").sample(c.garps.load());
  // Each worker learns every ARP answer (copies): worker 0's table stands for all.
  x.family("ftpair_arp_entries", "gauge", "Resolved ARP entries.").sample(node.arp(0).valid_count(rte_rdtsc()));

  x.family("ftpair_workers", "gauge", "Dataplane workers (worker.count).").sample(nw);
  x.family("ftpair_worker_loops_total", "counter", "Worker loop iterations (progress).");
  for (unsigned w = 0; w < nw; w++) x.sample(agent.loops(w), {{"worker", std::to_string(w)}});
  x.family("ftpair_worker_idle_sleeps_total", "counter", "Adaptive idle sleeps of the worker.");
  for (unsigned w = 0; w < nw; w++) x.sample(node.worker(w).idle_sleeps.load(), {{"worker", std::to_string(w)}});
  x.family("ftpair_worker_parks_total", "counter", "Times the worker parked for a quiesce.");
  for (unsigned w = 0; w < nw; w++) x.sample(agent.worker_counters(w).parks.load(), {{"worker", std::to_string(w)}});
  if (const dp::Shards *sh = node.shards()) {
    x.family("ftpair_worker_handoffs_total", "counter",
             "Packets a worker received for a flow another worker owns and handed to it.");
    for (unsigned w = 0; w < nw; w++) x.sample(sh->counters(w).handoffs.load(), {{"worker", std::to_string(w)}});
    x.family("ftpair_worker_handed_in_total", "counter", "Packets other workers handed to this one.");
    for (unsigned w = 0; w < nw; w++) x.sample(sh->counters(w).handed_in.load(), {{"worker", std::to_string(w)}});
    x.family("ftpair_worker_handoff_full_total", "counter", "Packets dropped: the owning worker's hand-off ring was full.");
    for (unsigned w = 0; w < nw; w++) x.sample(sh->counters(w).handoff_full.load(), {{"worker", std::to_string(w)}});
    x.family("ftpair_worker_arp_copies_total", "counter", "ARP packets copied to the other workers to learn from.");
    for (unsigned w = 0; w < nw; w++) x.sample(sh->counters(w).arp_copies.load(), {{"worker", std::to_string(w)}});
  }
  x.family("ftpair_vip_owner", "gauge", "1 when this node owns the virtual addresses.").sample(node.nf(0).vip_owner() ? 1 : 0);

  // The NAT's own behaviour.
  x.family("ftpair_nat_mappings", "gauge", "NAT mappings (one outside endpoint per inside endpoint).")
      .sample(sum([&](unsigned w) { return uint64_t(node.flows(w).mappings()); }));
  x.family("ftpair_flows_embryonic", "gauge", "Flows without a reply or a completed TCP handshake.")
      .sample(sum([&](unsigned w) { return uint64_t(node.flows(w).embryonic()); }));
  x.family("ftpair_flows_evicted_total", "counter", "Embryonic flows evicted to make room for new ones.")
      .sample(c.flows_evicted.load());
  x.family("ftpair_icmp_originated_total", "counter", "ICMP errors the gateway sent itself, by type.");
  x.sample(c.icmp_time_exceeded.load(), {{"type", "time_exceeded"}});
  x.sample(c.icmp_frag_needed.load(), {{"type", "fragmentation_needed"}});
  x.family("ftpair_icmp_rate_limited_total", "counter", "ICMP errors not sent: the token bucket was empty.")
      .sample(c.icmp_rate_limited.load());
  x.family("ftpair_icmp_errors_translated_total", "counter", "ICMP errors about a flow translated, both ways.")
      .sample(c.icmp_errors_translated.load());
  x.family("ftpair_tcp_mss_clamped_total", "counter", "SYNs whose MSS option was lowered to the MTU.")
      .sample(c.mss_clamped.load());
  x.family("ftpair_hairpinned_packets_total", "counter", "LAN packets hairpinned back into the LAN.")
      .sample(c.hairpinned.load());
  x.family("ftpair_nat_rss_ports_total", "counter",
           "TCP/UDP mappings made with the outside port's RSS programmed, by whether their port's replies land on the "
           "queue of the flow's worker (no: no free port of the preferred class and parity did).");
  x.sample(c.rss_ports_steered.load(), {{"steered", "yes"}});
  x.sample(c.rss_ports_unsteered.load(), {{"steered", "no"}});
  x.family("ftpair_fragments_forwarded_total", "counter", "Fragments after the first, translated as the first was.")
      .sample(c.fragments_forwarded.load());
  x.family("ftpair_tcp_out_of_window_total", "counter", "TCP segments outside the tracked window.")
      .sample(c.tcp_out_of_window.load());
  x.family("ftpair_tcp_rst_ignored_total", "counter", "TCP resets outside the window: the flow was kept.")
      .sample(c.tcp_rst_ignored.load());
  if (const IpfixExporter *e = node.session_log()) {
    const IpfixCounters k = e->counters();
    x.family("ftpair_session_log_records_total", "counter", "Mapping events exported as IPFIX records.")
        .sample(k.records_exported);
    x.family("ftpair_session_log_messages_total", "counter", "IPFIX messages sent to the collector.")
        .sample(k.messages_sent);
    x.family("ftpair_session_log_send_errors_total", "counter", "IPFIX messages lost (collector unresolved, send failed).")
        .sample(k.send_errors);
    x.family("ftpair_session_log_overflows_total", "counter", "Mapping events lost: the worker's ring was full.")
        .sample(k.ring_overflows);
    x.family("ftpair_session_log_sequence", "gauge",
             "IPFIX sequence number: records released so far, mod 2^32, continued from the old active's after a failover.")
        .sample(e->sequence());
    x.family("ftpair_session_log_waiting", "gauge",
             "Mapping events not yet released: their epoch awaits the standby's acknowledgement.")
        .sample(double(e->waiting()));
  }
}

}  // namespace ftpair
