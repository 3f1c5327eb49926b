// ftpaird: the ftpair daemon.
#include <csignal>
#include <cstdio>

#include <atomic>
#include <chrono>
#include <thread>

#include <CLI/CLI.hpp>

#include "control/config.h"
#include "control/daemon.h"
#include "dataplane/port.h"

namespace {
std::atomic<bool> g_quit{false};
std::atomic<int> g_stall{-1};  // test hook: 1 = stall the worker, 0 = release it
void on_signal(int) { g_quit.store(true); }
void on_usr(int sig) { g_stall.store(sig == SIGUSR1 ? 1 : 0); }
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
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  struct sigaction su {};
  su.sa_handler = on_usr;
  sigaction(SIGUSR1, &su, nullptr);  // test hooks (worker.test_hooks): stall / release the worker
  sigaction(SIGUSR2, &su, nullptr);
  int rc = 0;
  {
    ftpair::Daemon daemon(cfg);
    st = daemon.start();
    if (!st.ok()) {
      std::fprintf(stderr, "ftpaird: %s\n", st.message().c_str());
      rc = 1;
    } else {
      std::fprintf(stderr, "ftpaird: node %s up (gRPC port %u, metrics port %u)\n", cfg.node_id.c_str(),
                   daemon.grpc_port(), daemon.metrics_port());
      while (!g_quit.load()) {
        int stall = g_stall.exchange(-1);
        if (stall >= 0) daemon.set_worker_stall(stall == 1);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      std::fprintf(stderr, "ftpaird: shutting down\n");
    }
    daemon.stop();
  }
  ftpair::dp::eal_cleanup();
  return rc;
}
