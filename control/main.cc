// ftpaird: the ftpair daemon.
#include <csignal>
#include <cstdio>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include <CLI/CLI.hpp>

#include "control/config.h"
#include "control/exposition.h"
#include "control/http_server.h"
#include "control/node.h"
#include "control/node_metrics.h"
#include "dataplane/port.h"

namespace {
std::atomic<bool> g_quit{false};
void on_signal(int) { g_quit.store(true); }
}  // namespace

int main(int argc, char **argv) {
  CLI::App app{"ftpaird: fault-tolerant NAT44 gateway daemon"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool check_only = false;
  app.add_option("-c,--config", config_path, "configuration file (YAML)")->required();
  app.add_option("--set", overrides, "override a config key: dotted.key=value (repeatable)");
  app.add_flag("--check", check_only, "validate the configuration and exit");
  app.set_version_flag("--version", FTPAIR_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  ftpair::Config cfg;
  ftpair::Status st = ftpair::load_config(config_path, overrides, &cfg);
  if (!st.ok()) {
    std::fprintf(stderr, "ftpaird: %s\n", st.message().c_str());
    return 2;
  }
  if (check_only) {
    std::printf("ftpaird: configuration OK (node %s)\n", cfg.node_id.c_str());
    return 0;
  }

  std::string err;
  if (ftpair::dp::eal_init(cfg.eal_argv(), &err) != 0) {
    std::fprintf(stderr, "ftpaird: %s\n", err.c_str());
    return 1;
  }
  int rc = 0;
  {
    auto node = ftpair::Node::create(cfg, &st);
    if (!node) {
      std::fprintf(stderr, "ftpaird: %s\n", st.message().c_str());
      ftpair::dp::eal_cleanup();
      return 1;
    }
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    std::signal(SIGPIPE, SIG_IGN);

    ftpair::HttpServer http;
    http.route("/metrics", [&node] {
      ftpair::Exposition x;
      x.family("ftpair_build_info", "gauge", "Build information.")
          .sample(1, {{"version", FTPAIR_VERSION}, {"node", node->config().node_id}});
      ftpair::expose_dataplane(*node, x);
      return ftpair::HttpReply{200, "text/plain; version=0.0.4; charset=utf-8", x.text()};
    });
    if (cfg.metrics.set()) {
      st = http.start(cfg.metrics);
      if (!st.ok()) {
        std::fprintf(stderr, "ftpaird: management.metrics: %s\n", st.message().c_str());
        rc = 1;
      }
    }
    if (rc == 0) {
      st = node->start();
      if (!st.ok()) {
        std::fprintf(stderr, "ftpaird: %s\n", st.message().c_str());
        rc = 1;
      }
    }
    if (rc == 0) {
      std::fprintf(stderr, "ftpaird: node %s forwarding (inside %s, outside %s)\n", cfg.node_id.c_str(),
                   ftpair::dp::mac_to_string(node->own_mac(0)).c_str(),
                   ftpair::dp::mac_to_string(node->own_mac(1)).c_str());
      node->nf().request_announce();
      while (!g_quit.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::fprintf(stderr, "ftpaird: shutting down\n");
    }
    http.stop();
    node->stop();
  }
  ftpair::dp::eal_cleanup();
  return rc;
}
