/* ipfix-send: the session-log exporter (control/ipfix.h) as a small program, for the test
 * against a real collector (tests/lab/test_ipfix_collector.py). It reads events from stdin,
 * one a line:
 *     KIND PROTO IN_IP IN_PORT NAT_IP NAT_PORT EXT_IP EXT_PORT UNIX_MS
 * (KIND is the natEvent code: 1, 2, 6 or 7; addresses dotted; EXT_* 0.0.0.0 0 for mappings),
 * pushes them into one ring as a worker would, exports them, and prints one JSON line:
 *     {"sequence": N, "records_exported": N, "messages_sent": N, "send_errors": N, ...}
 * Exit 0 when every event was exported, 1 otherwise, 2 on bad arguments or input. */
#include <arpa/inet.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "control/ipfix.h"

namespace {

bool parse_event(const std::string &line, ftpair::dp::SessionEvent *e) {
  std::istringstream in(line);
  unsigned kind = 0, proto = 0, in_port = 0, nat_port = 0, ext_port = 0;
  std::string in_ip, nat_ip, ext_ip;
  uint64_t ms = 0;
  if (!(in >> kind >> proto >> in_ip >> in_port >> nat_ip >> nat_port >> ext_ip >> ext_port >> ms)) return false;
  *e = {};
  e->kind = uint8_t(kind);
  e->proto = uint8_t(proto);
  e->unix_ms = ms;
  e->in_port = htons(uint16_t(in_port));
  e->nat_port = htons(uint16_t(nat_port));
  e->ext_port = htons(uint16_t(ext_port));
  return ftpair::dp::is_known_kind(e->kind) && kind < 256 && proto < 256 && in_port < 65536 && nat_port < 65536 &&
         ext_port < 65536 && inet_pton(AF_INET, in_ip.c_str(), &e->in_ip) == 1 &&
         inet_pton(AF_INET, nat_ip.c_str(), &e->nat_ip) == 1 && inet_pton(AF_INET, ext_ip.c_str(), &e->ext_ip) == 1;
}

}  // namespace

int main(int argc, char **argv) {
  ftpair::IpfixConfig cfg;
  uint32_t sequence = 0;
  double timeout_s = 10;
  CLI::App app{"ipfix-send: export NAT session events read from stdin as IPFIX (test tool)"};
  app.add_option("--collector", cfg.collector, "HOST:PORT of the collector")->required();
  app.add_option("--domain", cfg.observation_domain, "observation domain id");
  app.add_option("--max-bytes", cfg.max_message_bytes, "largest message");
  app.add_option("--flush-ms", cfg.flush_ms, "longest a record waits in a partial message");
  app.add_option("--template-refresh-s", cfg.template_refresh_s, "template resend period");
  app.add_option("--sequence", sequence, "sequence number to continue from (a promoted standby's)");
  app.add_option("--timeout", timeout_s, "seconds to wait for the export");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  std::vector<ftpair::dp::SessionEvent> events;
  std::string line;
  while (std::getline(std::cin, line)) {
    if (line.empty() || line[0] == '#') continue;
    ftpair::dp::SessionEvent e;
    if (!parse_event(line, &e)) {
      std::fprintf(stderr, "ipfix-send: bad event line: %s\n", line.c_str());
      return 2;
    }
    events.push_back(e);
  }

  ftpair::dp::SessionEventRing ring(events.size() + 1);
  ftpair::IpfixExporter exporter(cfg);
  exporter.add_source(&ring);
  exporter.start_sequence(sequence);
  exporter.set_exporting(true);
  if (ftpair::Status s = exporter.start(); !s.ok()) {
    std::fprintf(stderr, "ipfix-send: %s\n", s.str().c_str());
    return 2;
  }
  // As a worker would: push as events happen, in a few bursts.
  for (size_t i = 0; i < events.size(); i++) {
    (void)ring.push(events[i]);
    if (i % 64 == 63) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  for (;;) {
    // Every record sent or lost: the sequence number has moved past all of them.
    if (uint32_t(exporter.sequence() - sequence) >= events.size()) break;
    if (std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  exporter.stop();
  const ftpair::IpfixCounters c = exporter.counters();
  std::printf("{\"sequence\": %u, \"records_exported\": %llu, \"messages_sent\": %llu, \"send_errors\": %llu, "
              "\"events_discarded\": %llu, \"ring_overflows\": %llu}\n",
              exporter.sequence(), (unsigned long long)c.records_exported, (unsigned long long)c.messages_sent,
              (unsigned long long)c.send_errors, (unsigned long long)c.events_discarded,
              (unsigned long long)c.ring_overflows);
  return c.records_exported == events.size() ? 0 : 1;
}
