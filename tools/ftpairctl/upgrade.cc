/* ftpairctl upgrade: standby first, never without a standby in sync.
 *
 *   1. check    one active, one standby in sync, no upgrade under way; read the binary.
 *   2. stage    upload it to both nodes; each checks its digest against its allow-list.
 *   3. standby  start the new version beside the standby's instance; it joins the active
 *               and gets a full sync; it takes over the standby role (handover); it must
 *               stay healthy for the health window.
 *   4. switch   a graceful switchover makes it active; healthy for the window again.
 *   5. other    the old active (now the standby) goes the way of step 3.
 *
 * A failed health check rolls back what was upgraded (the same path with each node's
 * previous binary), switching back over first when the new version is active. A step that
 * fails before a handover leaves the pair as it was: the old instance keeps its role until
 * the new one is in sync and takes over. */
#include "tools/ftpairctl/upgrade.h"

#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/sha256.h"
#include "control.grpc.pb.h"
#include "tools/ftpairctl/role.h"

namespace ftpairctl {
namespace {

namespace v1 = ftpair::v1;
using Stub = v1::Control::Stub;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

struct Node {
  std::string addr;
  v1::StatusReply st;
  std::string name() const { return st.node_id().empty() ? addr : st.node_id(); }
};

class Upgrader {
 public:
  Upgrader(ConnectOptions conn, UpgradeOptions opts) : conn_(std::move(conn)), opts_(std::move(opts)) {}
  int run();

 private:
  double t() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }
  void say(const char *f, ...) __attribute__((format(printf, 2, 3)));
  void mark(const std::string &stage, const Node &n);
  Outcome client(const Node &n, std::unique_ptr<Client> *c, double timeout_s = 0);
  Outcome status(Node &n);
  Outcome upgrade_call(Node &n, v1::UpgradeRequest::Action a, bool rollback, v1::UpgradeReply *rep);
  Outcome stage(Node &n, const std::string &bytes, const std::string &sha, v1::UpgradeReply *rep);
  Outcome replace_instance(Node &n, bool rollback);
  Outcome watch_health(Node &n, bool active);
  Outcome switchover(Node &from, Node &to);
  int finish(const std::string &result, const Outcome &o);

  ConnectOptions conn_;
  UpgradeOptions opts_;
  Clock::time_point t0_ = Clock::now();
  Node a_, b_;
  double window_s_ = 10, sync_timeout_s_ = 60;
  std::string from_version_, to_version_;
  nlohmann::ordered_json stages_ = nlohmann::ordered_json::array();
};

void Upgrader::say(const char *f, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  std::fprintf(stderr, "[%7.2f s] %s\n", t(), buf);
}

void Upgrader::mark(const std::string &stage, const Node &n) {
  stages_.push_back({{"stage", stage}, {"node", n.name()}, {"t_s", t()}});
}

Outcome Upgrader::client(const Node &n, std::unique_ptr<Client> *c, double timeout_s) {
  ConnectOptions o = conn_;
  o.addr = n.addr;
  if (timeout_s > 0) o.timeout_s = timeout_s;
  return Client::create(o, c);  // a fresh channel: no reconnect backoff after a port moved
}

Outcome Upgrader::status(Node &n) {
  std::unique_ptr<Client> c;
  Outcome o = client(n, &c, 1.0);
  if (!o.ok()) return o;
  v1::StatusReply st;
  o = c->call("status", [&](Stub &s, grpc::ClientContext *ctx) { return s.Status(ctx, {}, &st); });
  if (o.ok()) n.st = st;
  return o;
}

Outcome Upgrader::upgrade_call(Node &n, v1::UpgradeRequest::Action a, bool rollback, v1::UpgradeReply *rep) {
  std::unique_ptr<Client> c;
  Outcome o = client(n, &c, 30.0);
  if (!o.ok()) return o;
  v1::UpgradeRequest req;
  req.set_action(a);
  req.set_rollback(rollback);
  return c->call("upgrade", [&](Stub &s, grpc::ClientContext *ctx) { return s.Upgrade(ctx, req, rep); });
}

Outcome Upgrader::stage(Node &n, const std::string &bytes, const std::string &sha, v1::UpgradeReply *rep) {
  std::unique_ptr<Client> c;
  Outcome o = client(n, &c, 60.0);
  if (!o.ok()) return o;
  return c->call("upgrade", [&](Stub &s, grpc::ClientContext *ctx) {
    auto w = s.StageUpgrade(ctx, rep);
    constexpr size_t kChunk = 256 << 10;
    for (size_t off = 0; off < bytes.size(); off += kChunk) {
      v1::UpgradeChunk ch;
      if (off == 0) {
        ch.set_sha256(sha);
        ch.set_size(bytes.size());
      }
      ch.set_data(bytes.substr(off, kChunk));
      if (!w->Write(ch)) break;
    }
    w->WritesDone();
    return w->Finish();
  });
}

// Replaces the standby instance of n by the staged (or, rollback, the previous) binary.
Outcome Upgrader::replace_instance(Node &n, bool rollback) {
  const char *what = rollback ? "rollback" : "upgrade";
  say("%s: node %s: starting the %s binary beside pid %u", what, n.name().c_str(), rollback ? "previous" : "new",
      n.st.pid());
  v1::UpgradeReply rep;
  Outcome o = upgrade_call(n, v1::UpgradeRequest::START_BESIDE, rollback, &rep);
  if (!o.ok()) return o;
  const uint32_t pid = rep.upgrade().beside_pid();
  mark(std::string(what) + "_started", n);
  say("%s: node %s: version %s runs beside as pid %u; full sync from the active", what, n.name().c_str(),
      rep.version().c_str(), pid);
  const auto deadline = Clock::now() + std::chrono::duration<double>(sync_timeout_s_);
  int shown = -1;
  for (;;) {
    Outcome so = status(n);
    if (so.ok()) {
      const auto &u = n.st.upgrade();
      if (u.stage() == "failed") return Outcome::Fail(kExitFailed, "node " + n.name() + ": " + u.message());
      int pct = int(u.beside_sync_progress() * 100);
      if (pct / 10 != shown / 10) {
        say("%s: node %s: full sync %d%%", what, n.name().c_str(), pct);
        shown = pct;
      }
      if (u.beside_in_sync()) break;
    }
    if (Clock::now() > deadline) {
      v1::UpgradeReply ab;
      upgrade_call(n, v1::UpgradeRequest::ABORT, false, &ab);
      return Outcome::Fail(kExitFailed, "node " + n.name() + ": the new instance did not reach sync within " +
                                            format_seconds(sync_timeout_s_) + " s; it was stopped, the node is untouched");
    }
    std::this_thread::sleep_for(100ms);
  }
  mark(std::string(what) + "_in_sync", n);
  say("%s: node %s: the new instance is in sync; handing the standby role over", what, n.name().c_str());
  o = upgrade_call(n, v1::UpgradeRequest::HANDOVER, false, &rep);
  if (!o.ok()) {
    v1::UpgradeReply ab;
    upgrade_call(n, v1::UpgradeRequest::ABORT, false, &ab);
    return o;
  }
  const auto hdeadline = Clock::now() + 15s;
  for (;;) {
    Outcome so = status(n);
    if (so.ok() && n.st.pid() == pid && n.st.upgrade().stage() == "took_over") break;
    if (so.ok() && n.st.pid() != pid && n.st.upgrade().stage() == "failed")
      return Outcome::Fail(kExitFailed, "node " + n.name() + ": " + n.st.upgrade().message());
    if (Clock::now() > hdeadline)
      return Outcome::Fail(kExitFailed, "node " + n.name() + ": the new instance (pid " + std::to_string(pid) +
                                            ") did not take over within 15 s");
    std::this_thread::sleep_for(20ms);
  }
  mark(std::string(what) + "_took_over", n);
  say("%s: node %s: pid %u (version %s) is the standby", what, n.name().c_str(), pid, n.st.software_version().c_str());
  return Outcome::Ok();
}

// The node must keep filling its role for the health window.
Outcome Upgrader::watch_health(Node &n, bool active) {
  if (window_s_ <= 0) return Outcome::Ok();
  say("health: node %s (version %s) must stay healthy as %s for %s s", n.name().c_str(),
      n.st.software_version().c_str(), active ? "active" : "standby", format_seconds(window_s_).c_str());
  const auto end = Clock::now() + std::chrono::duration<double>(window_s_);
  Clock::time_point bad_since{};
  while (Clock::now() < end) {
    std::string why;
    Outcome so = status(n);
    if (!so.ok()) why = so.message;
    else if (!n.st.dataplane_healthy()) why = "its dataplane is unhealthy";
    else if (active && !is_active(n.st)) why = "it is " + n.st.state() + ", not active";
    else if (!active && !is_standby_ready(n.st)) why = "it is " + n.st.state() + ", not a standby in sync";
    else if (!n.st.serving()) why = "it reports NOT_SERVING";
    if (why.empty()) {
      bad_since = {};
    } else {
      if (bad_since == Clock::time_point{}) bad_since = Clock::now();
      // One slow answer is not a failure: unhealthy for a second is.
      if (Clock::now() - bad_since >= 1s)
        return Outcome::Fail(kExitFailed, "node " + n.name() + " (version " + n.st.software_version() +
                                              ") failed its health check: " + why);
    }
    std::this_thread::sleep_for(100ms);
  }
  mark(active ? "healthy_active" : "healthy_standby", n);
  return Outcome::Ok();
}

Outcome Upgrader::switchover(Node &from, Node &to) {
  say("switchover: %s -> %s (graceful)", from.name().c_str(), to.name().c_str());
  std::unique_ptr<Client> c;
  Outcome o = client(from, &c, 10.0);
  if (!o.ok()) return o;
  v1::SwitchoverReply rep;
  v1::SwitchoverRequest req;
  o = c->call("switchover", [&](Stub &s, grpc::ClientContext *ctx) { return s.Switchover(ctx, req, &rep); });
  if (!o.ok()) return o;
  const auto deadline = Clock::now() + 10s;
  for (;;) {
    if (status(to).ok() && is_active(to.st) && status(from).ok() && is_standby_ready(from.st)) break;
    if (Clock::now() > deadline)
      return Outcome::Fail(kExitFailed, "switchover: " + to.name() + " active and " + from.name() +
                                            " a standby in sync not seen within 10 s");
    std::this_thread::sleep_for(20ms);
  }
  mark("switchover", to);
  say("switchover: %s is active (%s)", to.name().c_str(), rep.message().c_str());
  return Outcome::Ok();
}

int Upgrader::finish(const std::string &result, const Outcome &o) {
  const double secs = t();
  if (opts_.json) {
    nlohmann::ordered_json j;
    j["result"] = result;
    j["ok"] = result == "upgraded" || result == "rolled_back_by_request" || result == "nothing_to_do";
    j["message"] = o.ok() ? "" : o.message;
    j["upgrade_s"] = secs;
    j["from_version"] = from_version_;
    j["to_version"] = to_version_;
    j["stages"] = stages_;
    nlohmann::ordered_json nodes = nlohmann::ordered_json::array();
    for (Node *n : {&a_, &b_}) {
      status(*n);
      nodes.push_back({{"node", n->name()}, {"addr", n->addr}, {"role", n->st.role()}, {"state", n->st.state()},
                       {"version", n->st.software_version()}, {"pid", n->st.pid()}, {"sha256", n->st.binary_sha256()}});
    }
    j["nodes"] = nodes;
    std::cout << j.dump(2) << std::endl;
  } else if (o.ok()) {
    std::cout << result << " in " << format_seconds(secs) << " s" << (to_version_.empty() ? "" : ": now " + to_version_)
              << std::endl;
  }
  if (!o.ok()) std::fprintf(stderr, "ftpairctl: %s: %s\n", result.c_str(), o.message.c_str());
  return o.ok() ? kExitOk : o.code;
}

int Upgrader::run() {
  const bool rollback = opts_.rollback;
  std::string bytes, sha;
  if (!rollback) {
    std::ifstream in(opts_.binary, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "ftpairctl: upgrade: cannot read %s: %s\n", opts_.binary.c_str(), std::strerror(errno));
      return kExitUsage;
    }
    std::ostringstream ss;
    ss << in.rdbuf();
    bytes = ss.str();
    if (bytes.empty()) {
      std::fprintf(stderr, "ftpairctl: upgrade: %s is empty\n", opts_.binary.c_str());
      return kExitUsage;
    }
    sha = ftpair::sha256_hex(bytes);
  }
  // 1. The pair as it is.
  a_.addr = conn_.addr;
  Outcome o = status(a_);
  if (!o.ok()) return finish("refused", o);
  if (a_.st.peer_address().empty())
    return finish("refused", Outcome::Fail(kExitFailed, "node " + a_.name() + " has no peer (peer.grpc): not a pair"));
  b_.addr = a_.st.peer_address();
  o = status(b_);
  if (!o.ok()) return finish("refused", Outcome::Fail(o.code, "the peer: " + o.message));
  Node *act = is_active(a_.st) ? &a_ : &b_;
  Node *sby = act == &a_ ? &b_ : &a_;
  if (!is_active(act->st) || !is_standby(sby->st))
    return finish("refused", Outcome::Fail(kExitFailed, "expected one active and one standby, found " + a_.name() + " " +
                                                            a_.st.state() + " and " + b_.name() + " " + b_.st.state() +
                                                            "; nothing was changed"));
  if (!is_standby_ready(sby->st) || !sby->st.sync().in_sync() || !act->st.sync().in_sync())
    return finish("refused", Outcome::Fail(kExitFailed, "the standby " + sby->name() + " is out of sync (" +
                                                            sby->st.state() +
                                                            "): an upgrade needs a protected pair; nothing was changed"));
  for (Node *n : {act, sby}) {
    const std::string s = n->st.upgrade().stage();
    if (s == "starting" || s == "syncing" || s == "in_sync" || s == "handing_over" || !n->st.upgrade().joiner_address().empty())
      return finish("refused", Outcome::Fail(kExitFailed, "an upgrade is already under way on node " + n->name() +
                                                              " (" + s + "); nothing was changed"));
  }
  window_s_ = opts_.health_window_s >= 0 ? opts_.health_window_s : sby->st.upgrade().health_window_ms() / 1000.0;
  sync_timeout_s_ = opts_.sync_timeout_s > 0 ? opts_.sync_timeout_s : sby->st.upgrade().sync_timeout_ms() / 1000.0;
  from_version_ = sby->st.software_version();
  mark("checked", *sby);
  say("pair: %s active, %s standby in sync, version %s", act->name().c_str(), sby->name().c_str(), from_version_.c_str());

  // 2. Stage.
  if (!rollback) {
    if (act->st.binary_sha256() == sha && sby->st.binary_sha256() == sha) {
      to_version_ = from_version_;
      return finish("nothing_to_do", Outcome::Ok());
    }
    for (Node *n : {act, sby}) {
      v1::UpgradeReply rep;
      o = stage(*n, bytes, sha, &rep);
      if (!o.ok()) return finish("refused", Outcome::Fail(o.code, o.message + "; nothing was changed"));
      to_version_ = rep.version();
      say("staged version %s (sha256 %.16s...) on node %s", rep.version().c_str(), sha.c_str(), n->name().c_str());
    }
    mark("staged", *act);
  } else {
    for (Node *n : {sby, act})
      if (n->st.upgrade().previous_sha256().empty())
        return finish("refused", Outcome::Fail(kExitFailed, "node " + n->name() +
                                                                " has no previous version on record; nothing was changed"));
  }

  // Back to the previous binaries after a failed health check. `upgraded` nodes run the new
  // version; `active_new` says whether the new version holds the active role.
  auto roll_back = [&](const Outcome &cause, Node *first, Node *second, bool second_done, bool active_new) {
    say("rolling back: %s", cause.message.c_str());
    Outcome r = Outcome::Ok();
    if (second_done) r = replace_instance(*second, true);  // second is the standby here
    if (r.ok() && active_new) r = switchover(*first, *second);
    if (r.ok()) r = status(*first);
    if (r.ok()) r = replace_instance(*first, true);
    if (!r.ok()) return finish("rollback_failed", Outcome::Fail(kExitFailed, cause.message + "; the rollback failed too: " + r.message));
    to_version_ = first->st.software_version();
    mark("rolled_back", *first);
    return finish("rolled_back", Outcome::Fail(kExitFailed, cause.message + "; rolled back to version " + to_version_ +
                                                                ", no connection was lost"));
  };

  // 3. The standby.
  Node *first = sby, *second = act;
  o = replace_instance(*first, rollback);
  if (!o.ok()) return finish("failed", Outcome::Fail(o.code, o.message + " (the pair runs as before)"));
  to_version_ = first->st.software_version();
  o = watch_health(*first, false);
  if (!o.ok() && !rollback) return roll_back(o, first, second, false, false);
  if (!o.ok()) return finish("failed", o);
  // 4. Switch over to it.
  o = status(*second);
  if (o.ok()) o = switchover(*second, *first);
  if (!o.ok() && !rollback) return roll_back(o, first, second, false, false);
  if (!o.ok()) return finish("failed", o);
  o = watch_health(*first, true);
  if (!o.ok() && !rollback) return roll_back(o, first, second, false, true);
  if (!o.ok()) return finish("failed", o);
  // 5. The other node.
  o = status(*second);
  if (o.ok()) o = replace_instance(*second, rollback);
  if (!o.ok() && !rollback) return roll_back(o, first, second, false, true);
  if (!o.ok()) return finish("failed", o);
  o = watch_health(*second, false);
  if (!o.ok() && !rollback) return roll_back(o, first, second, true, true);
  if (!o.ok()) return finish("failed", o);
  mark("done", *first);
  say("%s: both nodes run version %s; %s is active", rollback ? "rolled back" : "upgraded", to_version_.c_str(),
      first->name().c_str());
  return finish(rollback ? "rolled_back_by_request" : "upgraded", Outcome::Ok());
}

}  // namespace

int cmd_upgrade(const ConnectOptions &conn, const UpgradeOptions &opts) {
  Upgrader u(conn, opts);
  return u.run();
}

}  // namespace ftpairctl
