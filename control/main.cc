// ftpaird: the ftpair daemon.
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include <atomic>
#include <chrono>
#include <thread>

#include <CLI/CLI.hpp>

#include "checkpoint/record_codec.h"
#include "checkpoint/version.h"
#include "control/config.h"
#include "control/daemon.h"
#include "control/sd_notify.h"
#include "dataplane/port.h"

namespace {
std::atomic<bool> g_quit{false};
std::atomic<bool> g_reload{false};
std::atomic<int> g_stall{-1};  // test hook: 1 = stall the worker, 0 = release it
void on_signal(int) { g_quit.store(true); }
void on_hup(int) { g_reload.store(true); }
void on_usr(int sig) { g_stall.store(sig == SIGUSR1 ? 1 : 0); }

std::string join(const std::vector<std::string> &v) {
  std::string s;
  for (const auto &x : v) s += (s.empty() ? "" : ", ") + x;
  return s.empty() ? "none" : s;
}

// SIGHUP: re-read the file (same --set overrides). A bad file changes nothing.
void reload(ftpair::Daemon &daemon, ftpair::SdNotifier &sd, const std::string &path,
            const std::vector<std::string> &overrides) {
  sd.send("RELOADING=1");
  ftpair::Config next;
  ftpair::Status st = ftpair::load_config(path, overrides, &next);
  if (st.ok() && next.node_id != daemon.config().node_id)
    st = ftpair::InvalidArgument("config: node.id: '" + next.node_id + "' differs from the running node '" +
                                 daemon.config().node_id + "'");
  if (!st.ok()) {
    daemon.count_reload_refused();
    std::fprintf(stderr, "ftpaird: reload refused, the running config stays: %s\n", st.message().c_str());
    sd.send("READY=1\nSTATUS=reload refused: " + st.message());
    return;
  }
  std::vector<std::string> applied, restart;
  daemon.reload(next, &applied, &restart);
  std::fprintf(stderr, "ftpaird: reloaded %s: applied: %s; changed but need a restart: %s\n", path.c_str(),
               join(applied).c_str(), join(restart).c_str());
  sd.send("READY=1\nSTATUS=reloaded" + std::string(restart.empty() ? "" : "; restart needed for " + join(restart)));
}
}  // namespace

int main(int argc, char **argv) {
#ifdef FTPAIR_PREV_RELEASE
  // ftpaird-prev: this source built to play the previous release in upgrade tests: it
  // speaks record format 1 only and names itself accordingly.
  ftpair::ckpt::set_record_format_max(ftpair::ckpt::kRecordFormatV1);
  ftpair::ckpt::set_software_version(FTPAIR_VERSION "-prev");
#endif
  CLI::App app{"ftpaird: fault-tolerant NAT44 gateway daemon"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool check_only = false;
  int beside_fd = -1, parent_pid = 0;
  app.add_option("-c,--config", config_path, "configuration file (YAML)")->required();
  app.add_option("--set", overrides, "override a config key: dotted.key=value (repeatable)");
  app.add_flag("--check", check_only, "validate the configuration and exit");
  app.add_option("--upgrade-beside", beside_fd,
                 "(internal) started by a running instance for an in-service upgrade: report on this fd")
      ->check(CLI::Range(3, 1023));
  app.add_option("--upgrade-parent", parent_pid, "(internal) pid of the instance this one replaces")
      ->check(CLI::Range(1, 1 << 22));
  app.set_version_flag("--version", std::string(ftpair::ckpt::software_version()));
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

  if ((beside_fd >= 0) != (parent_pid > 0)) {
    std::fprintf(stderr, "ftpaird: --upgrade-beside and --upgrade-parent go together\n");
    return 2;
  }
  // A second instance on the node: its own DPDK runtime files, no telemetry socket clash.
  if (beside_fd >= 0) cfg.file_prefix = cfg.eal_file_prefix() + "-u" + std::to_string(::getpid());

  std::string err;
  if (ftpair::dp::eal_init(cfg.eal_argv(), &err) != 0) {
    std::fprintf(stderr, "ftpaird: %s\n", err.c_str());
    return 1;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  struct sigaction sh {};
  sh.sa_handler = on_hup;
  sigaction(SIGHUP, &sh, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  struct sigaction su {};
  su.sa_handler = on_usr;
  sigaction(SIGUSR1, &su, nullptr);  // test hooks (worker.test_hooks): stall / release the worker
  sigaction(SIGUSR2, &su, nullptr);
  // Service manager (systemd Type=notify, or anything speaking sd_notify).
  ftpair::SdNotifier sd;
  if (!sd.setup_error().empty()) std::fprintf(stderr, "ftpaird: sd_notify: %s\n", sd.setup_error().c_str());
  using Clock = std::chrono::steady_clock;
  // Ping at half the watchdog interval, and only while the worker loop makes progress.
  const auto ping_every = std::chrono::microseconds(sd.watchdog_usec() / 2);
  int rc = 0;
  {
    ftpair::Daemon daemon(cfg);
    ftpair::Daemon::Launch launch;
    launch.config_path = config_path;
    launch.overrides = overrides;
    launch.beside_fd = beside_fd;
    launch.parent_pid = parent_pid;
    launch.notify = [&sd](const std::string &m) { sd.send(m); };
    daemon.set_launch(launch);
    st = daemon.start();
    if (!st.ok()) {
      std::fprintf(stderr, "ftpaird: %s\n", st.message().c_str());
      rc = 1;
    } else {
      std::fprintf(stderr, "ftpaird: node %s up (gRPC port %u, metrics port %u)\n", cfg.node_id.c_str(),
                   daemon.grpc_port(), daemon.metrics_port());
      // A new version beside the old one is not the service's main process until the old
      // one hands over (MAINPID=) and exits.
      if (beside_fd < 0) sd.send("READY=1\nSTATUS=node " + cfg.node_id + " up\nMAINPID=" + std::to_string(::getpid()));
      if (sd.enabled() && sd.watchdog_usec())
        std::fprintf(stderr, "ftpaird: watchdog: pinging every %.0f ms while the worker makes progress\n",
                     sd.watchdog_usec() / 2000.0);
      auto next_ping = Clock::now();
      bool was_healthy = true;
      while (!g_quit.load() && !daemon.exit_requested()) {
        int stall = g_stall.exchange(-1);
        if (stall >= 0) daemon.set_worker_stall(stall == 1);
        if (g_reload.exchange(false)) reload(daemon, sd, config_path, overrides);
        daemon.tick();
        if (sd.watchdog_usec() && Clock::now() >= next_ping && !daemon.beside()) {
          const bool healthy = daemon.dataplane_healthy();
          if (healthy) {
            if (sd.send("WATCHDOG=1")) daemon.count_watchdog_ping();
            next_ping = Clock::now() + ping_every;
          }
          if (healthy != was_healthy)
            std::fprintf(stderr, "ftpaird: watchdog: %s\n",
                         healthy ? "worker progressing again, pinging" : "worker stalled, not pinging");
          was_healthy = healthy;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      std::fprintf(stderr, "ftpaird: shutting down\n");
      sd.send("STOPPING=1");
    }
    daemon.stop();
  }
  ftpair::dp::eal_cleanup();
  return rc;
}
