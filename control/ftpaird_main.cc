// ftpaird: the ftpair daemon's command line and main loop (control/main.cc, main_prev.cc).
#include "control/ftpaird_main.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <optional>

#include <atomic>
#include <chrono>
#include <thread>

#include <CLI/CLI.hpp>

#include "checkpoint/version.h"
#include "common/crash.h"
#include "common/log.h"
#include "control/config.h"
#include "control/daemon.h"
#include "control/sd_notify.h"
#include "control/spare.h"
#include "dataplane/port.h"

namespace {
namespace log = ftpair::log;
auto &L = log::component("daemon");

std::atomic<bool> g_quit{false};
std::atomic<bool> g_reload{false};
std::atomic<int> g_stall{-1};  // test hook: 1 = stall the worker, 0 = release it
void on_signal(int) { g_quit.store(true); }
void on_hup(int) { g_reload.store(true); }
void on_usr(int sig) { g_stall.store(sig == SIGUSR1 ? 1 : 0); }
std::atomic<bool> g_corrupt{false};  // test hook: damage one record of a standby's copy
void on_rtmin(int) { g_corrupt.store(true); }

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
  static auto &C = log::component("config");
  if (!st.ok()) {
    daemon.count_reload_refused();
    C.error("reload refused, the running config stays: {}", st.message());
    sd.send("READY=1\nSTATUS=reload refused: " + st.message());
    return;
  }
  std::vector<std::string> applied, restart;
  if (ftpair::Status rs = daemon.reload(next, &applied, &restart); !rs.ok()) {
    daemon.count_reload_refused();
    C.error("reload refused, the running config stays: {}", rs.message());
    sd.send("READY=1\nSTATUS=reload refused: " + rs.message());
    return;
  }
  C.info("reloaded {}: applied: {}; changed but need a restart: {}", path, join(applied), join(restart));
  sd.send("READY=1\nSTATUS=reloaded" + std::string(restart.empty() ? "" : "; restart needed for " + join(restart)));
}
// An optional flag's value through its parser; false (logged) when it does not parse.
template <typename T>
bool parse_flag(const char *flag, const std::string &text, ftpair::Status (*parse)(const std::string &, T *),
                std::optional<T> *out) {
  if (text.empty()) return true;
  T v;
  if (ftpair::Status st = parse(text, &v); !st.ok()) {
    L.error("{}: {}", flag, st.message());
    return false;
  }
  *out = v;
  return true;
}
}  // namespace

int ftpair::ftpaird_main(int argc, char **argv) {
  ftpair::install_crash_report("ftpaird");
  CLI::App app{"ftpaird: fault-tolerant NAT44 gateway daemon"};
  std::string config_path;
  std::vector<std::string> overrides;
  bool check_only = false;
  int beside_fd = -1, parent_pid = 0, identity_fd = -1;
  app.add_option("-c,--config", config_path, "configuration file (YAML)")->required();
  app.add_option("--set", overrides, "override a config key: dotted.key=value (repeatable)");
  app.add_flag("--check", check_only, "validate the configuration and exit");
  app.add_option("--upgrade-beside", beside_fd,
                 "(internal) started by a running instance for an in-service upgrade: report on this fd")
      ->check(CLI::Range(3, 1023));
  app.add_option("--upgrade-parent", parent_pid, "(internal) pid of the instance this one replaces")
      ->check(CLI::Range(1, 1 << 22));
  app.add_option("--await-identity", identity_fd,
                 "a warm spare: build the dataplane with this config, then wait on this fd for the claimed "
                 "node's config and run as that node (virt/spare_link.h)")
      ->check(CLI::Range(3, 1023));
  std::string log_level, log_format;
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical or off (default: log.level, info)");
  app.add_option("--log-format", log_format,
                 "auto (journal under systemd, else text), text, journal or json: one JSON object a line "
                 "(default: log.format, auto)");
  app.set_version_flag("--version", std::string(ftpair::ckpt::software_version()));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  // Flags first: a bad one is a usage error even when the config is fine.
  std::optional<log::Level> level_flag;
  std::optional<log::Format> format_flag;
  if (!parse_flag("--log-level", log_level, log::parse_level, &level_flag) ||
      !parse_flag("--log-format", log_format, log::parse_format, &format_flag))
    return 2;
  // The flags' shape already for the config's own errors; the config's log keys follow.
  log::configure(level_flag.value_or(log::Level::INFO), format_flag.value_or(log::Format::AUTO));

  ftpair::Config cfg;
  ftpair::Status st = ftpair::load_config(config_path, overrides, &cfg);
  if (!st.ok()) {
    log::component("config").error("{}", st.message());
    return 2;
  }
  log::configure(level_flag.value_or(cfg.log_level), format_flag.value_or(cfg.log_format));
  if (check_only) {
    std::printf("ftpaird: configuration OK (node %s)\n", cfg.node_id.c_str());
    return 0;
  }

  if ((beside_fd >= 0) != (parent_pid > 0)) {
    L.error("--upgrade-beside and --upgrade-parent go together");
    return 2;
  }
  if (identity_fd >= 0 && beside_fd >= 0) {
    L.error("--await-identity and --upgrade-beside exclude each other: a spare is claimed, not upgraded");
    return 2;
  }
  // A second instance on the node: its own DPDK runtime files, no telemetry socket clash.
  if (beside_fd >= 0) cfg.file_prefix = cfg.eal_file_prefix() + "-u" + std::to_string(::getpid());

  std::string err;
  if (ftpair::dp::eal_init(cfg.eal_argv(), &err) != 0) {
    L.critical("{}", err);
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
  struct sigaction sr {};
  sr.sa_handler = on_rtmin;
  sigaction(SIGRTMIN, &sr, nullptr);  // test hook (worker.test_hooks): corrupt one standby record
  /* A warm spare: the dataplane now, with the spare's config; the identity (and the control
   * plane) once the host claims the spare. */
  ftpair::PreparedSpare spare;
  if (identity_fd >= 0) {
    st = ftpair::prepare_spare(cfg, identity_fd, &spare);
    ftpair::Config claimed;
    std::string claimed_path;
    if (st.ok())
      st = ftpair::await_identity(identity_fd, cfg, overrides, [] { return !g_quit.load(); }, &claimed, &claimed_path);
    ::close(identity_fd);
    if (!st.ok()) {
      const bool stopped = st.code() == ftpair::Code::ABORTED;
      if (stopped)
        L.info("warm spare stopped before it was claimed");
      else
        L.critical("warm spare: {}", st.message());
      spare.node.reset();
      ftpair::dp::eal_cleanup();
      return stopped ? 0 : 1;
    }
    cfg = std::move(claimed);
    config_path = claimed_path;
    log::configure(level_flag.value_or(cfg.log_level), format_flag.value_or(cfg.log_format));
  }
  // Service manager (systemd Type=notify, or anything speaking sd_notify).
  ftpair::SdNotifier sd;
  if (!sd.setup_error().empty()) L.warn("sd_notify: {}", sd.setup_error());
  using Clock = std::chrono::steady_clock;
  // Ping at half the watchdog interval, and only while the worker loop makes progress.
  const auto ping_every = std::chrono::microseconds(sd.watchdog_usec() / 2);
  int rc = 0;
  {
    ftpair::Daemon daemon(cfg);
    ftpair::Daemon::Launch launch;
    launch.config_path = config_path;
    launch.overrides = overrides;
    // A new version started beside this one (upgrade) logs as this one does.
    if (level_flag) launch.overrides.push_back(std::string("log.level=") + log::level_name(*level_flag));
    if (!log_format.empty()) launch.overrides.push_back("log.format=" + log_format);
    launch.beside_fd = beside_fd;
    launch.parent_pid = parent_pid;
    launch.notify = [&sd](const std::string &m) { sd.send(m); };
    daemon.set_launch(launch);
    if (spare.node) daemon.adopt_node(std::move(spare.node), spare.self_sha);
    st = daemon.start();
    if (!st.ok()) {
      L.critical("{}", st.message());
      rc = 1;
    } else {
      L.info("node {} up (gRPC port {}, metrics port {}, version {})", cfg.node_id, daemon.grpc_port(),
             daemon.metrics_port(), ftpair::ckpt::software_version());
      // A new version beside the old one is not the service's main process until the old
      // one hands over (MAINPID=) and exits.
      if (beside_fd < 0) sd.send("READY=1\nSTATUS=node " + cfg.node_id + " up\nMAINPID=" + std::to_string(::getpid()));
      if (sd.enabled() && sd.watchdog_usec())
        L.info("watchdog: pinging every {:.0f} ms while the worker makes progress", sd.watchdog_usec() / 2000.0);
      auto next_ping = Clock::now();
      bool was_healthy = true;
      while (!g_quit.load() && !daemon.exit_requested()) {
        int stall = g_stall.exchange(-1);
        if (stall >= 0) daemon.set_worker_stall(stall == 1);
        if (g_corrupt.exchange(false)) daemon.corrupt_standby_record();
        if (g_reload.exchange(false)) reload(daemon, sd, config_path, overrides);
        daemon.tick();
        if (sd.watchdog_usec() && Clock::now() >= next_ping && !daemon.beside()) {
          const bool healthy = daemon.dataplane_healthy();
          if (healthy) {
            if (sd.send("WATCHDOG=1")) daemon.count_watchdog_ping();
            next_ping = Clock::now() + ping_every;
          }
          if (healthy != was_healthy) {
            if (healthy)
              L.info("watchdog: worker progressing again, pinging");
            else
              L.error("watchdog: worker stalled, not pinging");
          }
          was_healthy = healthy;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      L.info("shutting down{}", daemon.exit_requested() ? " (handed over)" : "");
      sd.send("STOPPING=1");
      // The active hands its flows to the standby before it goes (failover.handover_on_stop).
      if (g_quit.load()) (void)daemon.hand_over_before_stop();
    }
    daemon.stop();
  }
  ftpair::dp::eal_cleanup();
  return rc;
}
