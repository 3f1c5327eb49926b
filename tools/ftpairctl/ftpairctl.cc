// ftpairctl: operator CLI for one ftpaird, over its public gRPC service ftpair.v1.Control.
//
//   ftpairctl [--addr HOST:PORT] [--timeout S] [--json] [--cacert F --cert F --key F] COMMAND
//     status | switchover [--force] | checkpoint [--snapshot] | flows [--limit N]
//     watch [--interval S] [--count N] | config
//
// Exit codes: 0 ok, 1 the daemon refused or failed, 2 bad arguments, 3 daemon unreachable, no
// answer before the deadline, or the daemon reports its peer unreachable (DESIGN.md "Control
// surface": "3 peer/daemon unreachable").
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <string>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "control.grpc.pb.h"
#include "tools/ftpairctl/client.h"
#include "tools/ftpairctl/render.h"
#include "tools/ftpairctl/upgrade.h"

namespace ftpairctl {
namespace {

namespace v1 = ftpair::v1;
using Stub = v1::Control::Stub;

constexpr const char *kDefaultAddr = "127.0.0.1:50051";

struct Globals {
  ConnectOptions conn;
  bool json = false;
};

// ------------------------------------------------------------------ output helpers

int report(const Outcome &o) {
  if (!o.ok()) std::fprintf(stderr, "ftpairctl: %s\n", o.message.c_str());
  return o.code;
}

std::string dump(const nlohmann::ordered_json &j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

// One JSON document (pretty) or the human text, to stdout.
void emit(const Globals &g, const google::protobuf::Message &m, const std::string &human) {
  if (g.json)
    std::cout << dump(to_json(m), 2) << '\n';
  else
    std::cout << human;
  std::cout << std::flush;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// ------------------------------------------------------------------ commands

/* With --wait-in-sync, a long poll (StatusRequest.wait_in_sync_ms): the daemon answers once its
 * replication is in sync or after that long; the status is printed either way, and the exit
 * code says whether the node was in sync (an active whose standby is, or a standby ready). */
int cmd_status(Client &c, const Globals &g, double wait_in_sync_s) {
  v1::StatusRequest req;
  req.set_wait_in_sync_ms(static_cast<uint32_t>(std::ceil(wait_in_sync_s * 1000)));
  v1::StatusReply rep;
  const auto t0 = std::chrono::steady_clock::now();
  Outcome o = c.call(
      "status", [&](Stub &s, grpc::ClientContext *ctx) { return s.Status(ctx, req, &rep); }, wait_in_sync_s);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!o.ok()) return report(o);
  emit(g, rep, render_status(rep));
  const bool in_sync = rep.sync().in_sync() && (rep.role() == "active" || rep.state() == "STANDBY_READY");
  if (wait_in_sync_s > 0 && !in_sync) {
    const std::string state = rep.state().empty() ? rep.role() : rep.state();
    // A daemon older than the long poll ignores it and answers at once: say so, not "after S s".
    if (took < wait_in_sync_s * 0.9)
      return report(Outcome::Fail(kExitFailed, "not in sync (" + state + "), answered after " +
                                                   format_seconds(std::round(took * 100) / 100) + " s of the " +
                                                   format_seconds(wait_in_sync_s) +
                                                   " s asked: this ftpaird may not know --wait-in-sync"));
    return report(
        Outcome::Fail(kExitFailed, "not in sync after " + format_seconds(wait_in_sync_s) + " s (" + state + ")"));
  }
  return kExitOk;
}

int cmd_switchover(Client &c, const Globals &g, bool force) {
  v1::SwitchoverRequest req;
  req.set_force(force);
  v1::SwitchoverReply rep;
  grpc::Status raw;
  Outcome o = c.call("switchover", [&](Stub &s, grpc::ClientContext *ctx) {
    raw = s.Switchover(ctx, req, &rep);
    return raw;
  });
  if (o.daemon_answered) {
    // The daemon answered no: in --json the refusal is still one document.
    if (g.json) {
      rep.set_ok(false);
      rep.set_message(raw.error_message());
      emit(g, rep, "");
    }
    return report(o);
  }
  if (!o.ok()) return report(o);
  if (!rep.ok()) {  // refused with an OK status: the reply says why
    emit(g, rep, "");
    std::string why = rep.message().empty() ? std::string("no reason given") : rep.message();
    if (why.rfind("switchover refused: ", 0) == 0) why = why.substr(20);
    return report(Outcome::Fail(kExitFailed, "switchover refused: " + why));
  }
  emit(g, rep, render_switchover(rep));
  return kExitOk;
}

int cmd_checkpoint(Client &c, const Globals &g, bool snapshot) {
  v1::CheckpointRequest req;
  req.set_snapshot(snapshot);
  v1::CheckpointReply rep;
  Outcome o = c.call("checkpoint", [&](Stub &s, grpc::ClientContext *ctx) { return s.Checkpoint(ctx, req, &rep); });
  if (!o.ok()) return report(o);
  emit(g, rep, render_checkpoint(rep, snapshot));
  if (snapshot && rep.snapshot_path().empty())
    return report(Outcome::Fail(kExitFailed,
                                "checkpoint refused: the checkpoint was taken but no snapshot was written "
                                "(only an active node writes one)"));
  return kExitOk;
}

int cmd_flows(Client &c, const Globals &g, uint32_t limit) {
  v1::FlowsRequest req;
  req.set_limit(limit);
  v1::FlowsReply rep;
  Outcome o = c.call("flows", [&](Stub &s, grpc::ClientContext *ctx) { return s.Flows(ctx, req, &rep); });
  if (!o.ok()) return report(o);
  emit(g, rep, render_flows(rep));
  return kExitOk;
}

int cmd_config(Client &c, const Globals &g) {
  v1::ConfigReply rep;
  Outcome o = c.call("config", [&](Stub &s, grpc::ClientContext *ctx) { return s.Config(ctx, {}, &rep); });
  if (!o.ok()) return report(o);
  std::string yaml = rep.yaml();
  if (!yaml.empty() && yaml.back() != '\n') yaml += '\n';
  emit(g, rep, yaml);
  return kExitOk;
}

// ------------------------------------------------------------------ watch

std::atomic<bool> g_interrupted{false};
void on_interrupt(int) { g_interrupted.store(true); }

// Sleeps until `until`, waking early on Ctrl-C.
void sleep_until(std::chrono::steady_clock::time_point until) {
  while (!g_interrupted.load()) {
    auto now = std::chrono::steady_clock::now();
    if (now >= until) return;
    std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(until - now, std::chrono::milliseconds(50)));
  }
}

// A terminal frame: cursor home, each line cleared to its end, the rest of the screen erased.
void draw_frame(const std::string &text, bool first) {
  std::string out = first ? "\033[H\033[2J" : "\033[H";
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    out += text.substr(pos, nl - pos) + "\033[K\n";
    pos = nl + 1;
  }
  out += "\033[J";
  std::cout << out << std::flush;
}

// Status every `interval` seconds. On a terminal (and without --json) the screen is redrawn;
// otherwise one line (logfmt, or one JSON object) per refresh. A failing first refresh ends
// the command with its error; later failures are shown and watching goes on. With count > 0,
// stops after that many refreshes and exits with the code of the last one. Ctrl-C exits 0.
int cmd_watch(Client &c, const Globals &g, double interval, uint64_t count) {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  const bool screen = !g.json && ::isatty(STDOUT_FILENO);
  const auto step = std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(interval));
  auto next = std::chrono::steady_clock::now();
  int last = kExitOk;
  for (uint64_t n = 0; count == 0 || n < count; n++) {
    if (g_interrupted.load()) break;
    v1::StatusReply rep;
    Outcome o = c.call("status", [&](Stub &s, grpc::ClientContext *ctx) { return s.Status(ctx, {}, &rep); });
    if (g_interrupted.load()) break;
    if (!o.ok() && n == 0) return report(o);
    last = o.code;
    const std::string now = utc_now();
    if (screen) {
      std::string head = "every " + format_seconds(interval) + " s: ftpairctl status at " + c.options().addr + "   " + now + "\n\n";
      draw_frame(head + (o.ok() ? render_status(rep) : "ftpairctl: " + o.message + "\n"), n == 0);
    } else if (!o.ok()) {
      std::fprintf(stderr, "ftpairctl: %s %s\n", now.c_str(), o.message.c_str());
    } else if (g.json) {
      std::cout << dump(to_json(rep), -1) << '\n' << std::flush;
    } else {
      std::cout << "time=" << now << ' ' << render_status_line(rep) << '\n' << std::flush;
    }
    if (count != 0 && n + 1 >= count) break;
    next += step;
    const auto t = std::chrono::steady_clock::now();
    if (next < t) next = t;  // a slow answer: do not try to catch up
    sleep_until(next);
  }
  return g_interrupted.load() ? kExitOk : last;
}

// ------------------------------------------------------------------ command line

// A number of seconds from `min` to `max`; kSeconds: above 0, at most a day (a longer deadline
// or interval is a typo).
CLI::Validator seconds_validator(double min, double max, const std::string &range) {
  return CLI::Validator(
      [min, max, range](std::string &v) -> std::string {
        size_t used = 0;
        double d = 0;
        try {
          d = std::stod(v, &used);
        } catch (const std::exception &) {
          used = 0;
        }
        if (used == 0 || used != v.size() || !(d > 0) || d < min || d > max)
          return "must be a number of seconds, " + range + " (got '" + v + "')";
        return "";
      },
      "SECONDS");
}
const CLI::Validator kSeconds = seconds_validator(0, 86400, "> 0 and <= 86400");

// A whole number in [0, max].
CLI::Validator count_validator(uint64_t max) {
  return CLI::Validator(
      [max](std::string &v) -> std::string {
        const std::string want = "must be a whole number from 0 to " + std::to_string(max) + " (got '" + v + "')";
        if (v.empty() || v.size() > 20 || v.find_first_not_of("0123456789") != std::string::npos) return want;
        try {
          if (std::stoull(v) > max) return want;
        } catch (const std::exception &) {
          return want;
        }
        return "";
      },
      "N");
}

// CLI11 parse errors, as "ftpairctl: ..." and exit 2 (help and --version exit 0).
int usage_error(CLI::App &app, const CLI::ParseError &e) {
  if (e.get_exit_code() == 0) return app.exit(e) == 0 ? kExitOk : kExitUsage;
  std::string msg = e.what();
  const std::string commands = "(commands: status, switchover, checkpoint, flows, watch, config, upgrade)";
  if (app.get_subcommands().empty())
    msg = app.remaining().empty() ? "no command given " + commands
                                  : "unknown command '" + app.remaining().front() + "' " + commands;
  std::fprintf(stderr, "ftpairctl: %s\nRun 'ftpairctl --help' for usage.\n", msg.c_str());
  return kExitUsage;
}

int run(int argc, char **argv) {
  CLI::App app{"ftpairctl: control one ftpaird (ftpair NAT44 appliance) over gRPC.\n"
               "Exit codes: 0 ok, 1 refused/failed by the daemon, 2 bad arguments,\n"
               "3 daemon unreachable or timed out (or it reports its peer unreachable).",
               "ftpairctl"};
  app.set_version_flag("--version", FTPAIR_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global options may also follow the command: `ftpairctl status --json`

  Globals g;
  app.add_option("--addr", g.conn.addr, "management address of ftpaird: HOST:PORT, [IPv6]:PORT or unix:PATH")
      ->envname("FTPAIR_ADDR")
      ->default_val(kDefaultAddr);
  app.add_option("--timeout", g.conn.timeout_s, "deadline of every call, in seconds")
      ->check(kSeconds)
      ->default_val(3.0);
  app.add_flag("--json", g.json, "print one JSON document (proto field names); for watch, one object per line");
  app.add_option("--cacert", g.conn.cacert, "CA certificate (PEM) to verify ftpaird; enables TLS")->envname("FTPAIR_CACERT");
  app.add_option("--cert", g.conn.cert, "client certificate (PEM) for mTLS")->envname("FTPAIR_CERT");
  app.add_option("--key", g.conn.key, "client private key (PEM) for mTLS")->envname("FTPAIR_KEY");
  app.add_option("--tls-server-name", g.conn.tls_server_name, "name expected in ftpaird's certificate (default: the host of --addr)");

  CLI::App *status = app.add_subcommand("status", "role, generation, dataplane, flows, sync and checkpoint state");
  double wait_in_sync_s = 0;
  status
      ->add_option("--wait-in-sync", wait_in_sync_s,
                   "answer once the node is in sync (an active whose standby is, a standby ready), or after this "
                   "many seconds (at most 10); exit 1 if it is not")
      ->check(seconds_validator(0.001, 10, "from 0.001 to 10"));

  CLI::App *switchover = app.add_subcommand("switchover", "hand the active role to the peer");
  bool force = false;
  switchover->add_flag("--force", force, "even if the peer is not in sync (loses the flows it lacks)");

  CLI::App *checkpoint = app.add_subcommand("checkpoint", "close the current epoch now and wait for it to be acknowledged");
  bool snapshot = false;
  checkpoint->add_flag("--snapshot", snapshot, "also write a snapshot to the state directory (active only)");

  CLI::App *flows = app.add_subcommand("flows", "list the flow table");
  int64_t limit = 0;
  flows->add_option("--limit", limit, "at most N flows (0 = all)")
      ->check(count_validator(UINT32_MAX))
      ->default_val(0);

  CLI::App *watch = app.add_subcommand("watch", "show status every interval until Ctrl-C");
  double interval = 1.0;
  int64_t count = 0;
  watch->add_option("--interval", interval, "seconds between refreshes")->check(kSeconds)->default_val(1.0);
  watch->add_option("--count", count, "stop after N refreshes (0 = until Ctrl-C)")
      ->check(count_validator(UINT64_MAX >> 1))
      ->default_val(0);

  CLI::App *config = app.add_subcommand("config", "print the configuration the daemon runs with (YAML)");

  CLI::App *upgrade = app.add_subcommand(
      "upgrade", "in-service upgrade of the pair (--addr: either node): standby first, then a switchover");
  UpgradeOptions up;
  auto *bin = upgrade->add_option("--binary", up.binary, "the new ftpaird; its sha256 must be in upgrade.allowed_sha256");
  auto *rb = upgrade->add_flag("--rollback", up.rollback, "return both nodes to the binary they ran before");
  bin->excludes(rb);
  upgrade->add_option("--health-window", up.health_window_s,
                      "seconds each new instance must stay healthy (default: the nodes' upgrade.health_window_ms)")
      ->check(CLI::Range(0.0, 3600.0));
  upgrade->add_option("--sync-timeout", up.sync_timeout_s,
                      "seconds a new instance may take to reach sync (default: upgrade.sync_timeout_ms)")
      ->check(CLI::Range(0.1, 3600.0));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    return usage_error(app, e);
  }

  std::unique_ptr<Client> client;
  if (Outcome o = Client::create(g.conn, &client); !o.ok()) return report(o);
  if (upgrade->parsed()) {
    if (up.binary.empty() && !up.rollback)
      return report(Outcome::Fail(kExitUsage, "upgrade: give --binary PATH or --rollback"));
    up.json = g.json;
    return cmd_upgrade(g.conn, up);
  }

  if (status->parsed()) return cmd_status(*client, g, wait_in_sync_s);
  if (switchover->parsed()) return cmd_switchover(*client, g, force);
  if (checkpoint->parsed()) return cmd_checkpoint(*client, g, snapshot);
  if (flows->parsed()) return cmd_flows(*client, g, static_cast<uint32_t>(limit));
  if (watch->parsed()) return cmd_watch(*client, g, interval, static_cast<uint64_t>(count));
  if (config->parsed()) return cmd_config(*client, g);
  return report(Outcome::Fail(kExitUsage, "no command given (run with --help)"));
}

}  // namespace
}  // namespace ftpairctl

int main(int argc, char **argv) {
  // gRPC's own log lines (e.g. "Handshake failed") would repeat our one-line messages;
  // GRPC_VERBOSITY set by the user still wins.
  ::setenv("GRPC_VERBOSITY", "NONE", 0);
  return ftpairctl::run(argc, argv);
}
