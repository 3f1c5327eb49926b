// The daemon's operations surface: gRPC health, SIGHUP reload.
#include <grpcpp/health_check_service_interface.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/log.h"
#include "control/daemon.h"

namespace ftpair {

namespace {
auto &L = log::component("daemon");
}  // namespace

bool Daemon::serving() const {
  if (!node_) return false;
  const fo::Role r = role();
  if (!dataplane_healthy()) return false;
  if (r == fo::Role::ACTIVE) return node_->nf().vip_owner();
  return r == fo::Role::STANDBY_READY && applier_->in_sync();
}

void Daemon::tick() {
  // A new version that has not taken over yet lives only as long as the instance that
  // started it (that one's end, a fencing kill included, aborts the upgrade).
  if (beside_.load() && launch_.parent_pid > 0 && ::getppid() != launch_.parent_pid && !exit_requested_.load()) {
    // A refused move is logged and counted by the machine.
    (void)upgrade_->machine().move(UpgradeStage::ABORTED, "the instance that started this one (pid " +
                                                            std::to_string(launch_.parent_pid) + ") is gone; exiting");
    exit_requested_.store(true);
  }
  // Beside: the state directory is still the old instance's.
  if (beside_.load()) return;
  // Off the promotion path: the generation a standby in sync would take stays reserved on disk.
  roles_.keep_generation(monitor_ ? monitor_->last_peer_generation() : 0);
  log_stalls();
  push_health();
  push_protected();
}

// What the stall detector saw of worker w's thread, in one phrase (a log line, a beat).
std::string Daemon::stall_text(unsigned w, const fo::StallDetector::StallFacts &f) const {
  char buf[320];
  return std::string(buf, stall_text_into(w, f, buf, sizeof(buf)));
}

/* snprintf into the caller's buffer: no allocation, so the fast beats' real-time threads can
 * describe a stall in the beat they send (see failover/monitor.h on why they never allocate). */
size_t Daemon::stall_text_into(unsigned w, const fo::StallDetector::StallFacts &f, char *buf, size_t cap) const {
  if (cap == 0) return 0;
  const unsigned stall_ms = stall_ms_.load();
  int n;
  if (f.starve_limit) {
    n = std::snprintf(buf, cap, "worker %u made no progress for %lld ms, %s: past 10 x worker.stall_ms (%u ms)", w,
                      static_cast<long long>(f.idle_ms),
                      f.state == '?' ? "its thread not started" : "starved of a CPU when last looked at", stall_ms);
  } else {
    char state[24], sys[40], window[24], ran[24], slept[24];
    if (f.state == '?')
      std::snprintf(state, sizeof(state), "state unknown");
    else
      std::snprintf(state, sizeof(state), "in state %c", f.state);
    if (f.syscall >= 0)
      std::snprintf(sys, sizeof(sys), " in system call %ld", f.syscall);
    else
      sys[0] = '\0';
    const auto number = [](char *out, size_t n, int64_t v) {
      if (v < 0)
        std::snprintf(out, n, "?");
      else
        std::snprintf(out, n, "%lld", static_cast<long long>(v));
    };
    number(window, sizeof(window), f.window_ms);
    number(ran, sizeof(ran), f.ran_ms);
    number(slept, sizeof(slept), f.slept);
    n = std::snprintf(buf, cap,
                      "worker %u stalled: no progress for %lld ms (worker.stall_ms %u); its thread %s%s; in the %s ms "
                      "watched it ran %s ms and slept or blocked %s times",
                      w, static_cast<long long>(f.idle_ms), stall_ms, state, sys, window, ran, slept);
  }
  if (n < 0) {
    buf[0] = '\0';
    return 0;
  }
  return std::min(size_t(n), cap - 1);
}

// The first worker stalled now, described (empty: none): the beat carries it to the peer.
std::string Daemon::stalled_text() const {
  char buf[320];
  return std::string(buf, stalled_text_into(buf, sizeof(buf)));
}

size_t Daemon::stalled_text_into(char *buf, size_t cap) const {
  if (cap == 0) return 0;
  if (!node_) {
    std::snprintf(buf, cap, "no dataplane");
    return std::strlen(buf);
  }
  for (unsigned w = 0; w < node_->workers(); w++) {
    if (!stall_detector_[w].stalled_now()) continue;
    fo::StallDetector::StallFacts f;
    if (stall_detector_[w].try_last_stall(&f)) return stall_text_into(w, f, buf, cap);
    // A check is writing new facts this instant: say what is known without waiting for it.
    const int n = std::snprintf(buf, cap, "worker %u stalled (worker.stall_ms %u)", w, stall_ms_.load());
    return n < 0 ? 0 : std::min(size_t(n), cap - 1);
  }
  buf[0] = '\0';
  return 0;
}

// One line per stall the health check saw (on the beats' thread, which must not log), with
// what the kernel said about the worker's thread: ran without progress, slept, or blocked.
void Daemon::log_stalls() {
  if (!node_) return;
  for (unsigned w = 0; w < node_->workers(); w++) {
    const fo::StallDetector::StallFacts f = stall_detector_[w].last_stall();
    if (f.count == stalls_logged_[w]) continue;
    stalls_logged_[w] = f.count;
    L.warn("{}; the node reports its dataplane unhealthy until it moves again", stall_text(w, f));
  }
}

void Daemon::push_health() {
  const int now = serving() ? 1 : 0;
  if (now == serving_state_) return;
  serving_state_ = now;
  for (grpc::Server *s : {grpc_.get(), grpc_final_.get()}) {
    auto *h = s ? s->GetHealthCheckService() : nullptr;
    if (!h) continue;
    // "" is the whole server; the named services follow it.
    h->SetServingStatus("", now == 1);
    for (const char *svc : {"ftpair.v1.Control", "ftpair.v1.Peer", "ftpair.v1.Replication"})
      h->SetServingStatus(svc, now == 1);
  }
  L.info("health: {} ({})", now ? "SERVING" : "NOT_SERVING", fo::role_name(role()));
}

/* The pair's protection as its own health service, and one log line when it changes: an
 * active left without a standby in sync says so instead of looking healthy. */
void Daemon::push_protected() {
  const std::vector<std::string> a = alarms();
  const int now = a.empty() ? 1 : 0;
  if (now == protected_state_) return;
  const bool first = protected_state_ < 0;
  protected_state_ = now;
  for (grpc::Server *s : {grpc_.get(), grpc_final_.get()}) {
    auto *h = s ? s->GetHealthCheckService() : nullptr;
    if (h) h->SetServingStatus("ftpair.pair.protected", now == 1);
  }
  if (now == 0)
    L.warn("ALARM {} ({})", a.front(), fo::role_name(role()));
  else if (!first)
    L.info("alarm cleared: the pair is protected ({})", fo::role_name(role()));
}

namespace {
// Keys whose new value takes effect without a restart. Everything else is reported.
const char *const kReloadable[] = {"worker.stall_ms", "worker.test_hooks", "failover.fence_timeout_ms",
                                   "failover.garp_count", "failover.snapshot_max_age_s", "failover.beat_keys",
                                   "failover.handover_on_stop"};
bool reloadable(const std::string &k) {
  for (const char *r : kReloadable)
    if (k == r) return true;
  return false;
}
}  // namespace

Status Daemon::reload(const Config &next, std::vector<std::string> *applied, std::vector<std::string> *restart) {
  // Compare against the config the process started with: a key changed, reloaded and
  // changed back is no longer pending.
  const auto before = config_fields(cfg_);
  const auto after = config_fields(next);
  std::lock_guard<std::mutex> g(reload_mu_);
  /* Beat keys (a rotation step): read first, so a key file that cannot be read refuses the
   * whole reload. Applied when the ids or the secrets differ from the running ones. */
  std::vector<fo::BeatKey> keys;
  if (Status ks = load_beat_keys(next, &keys); !ks.ok()) return ks;
  auto same = [](const std::vector<fo::BeatKey> &x, const std::vector<fo::BeatKey> &y) {
    if (x.size() != y.size()) return false;
    for (size_t i = 0; i < x.size(); i++)
      if (x[i].id != y[i].id || x[i].secret != y[i].secret) return false;
    return true;
  };
  if (!same(keys, running_keys_)) {
    if (!monitor_) return FailedPrecondition("failover.beat_keys: no peer, no beats to key");
    if (Status ks = monitor_->set_beat_keys(keys); !ks.ok()) return Status(ks.code(), "failover.beat_keys: " + ks.message());
    if (dp_board_) {
      std::vector<dp::DpBeatKey> dk;
      for (const auto &k : keys) dk.push_back(dp::DpBeatKey{k.id, k.secret});
      dp_board_->set_keys(std::move(dk));
    }
    running_keys_ = keys;
    std::string ids;
    for (const auto &k : keys) ids += (ids.empty() ? "" : ",") + std::to_string(k.id);
    applied->push_back("failover.beat_keys=" + ids + " (key " + std::to_string(keys.front().id) + " signs)");
  }
  for (const auto &[k, v] : after) {
    auto it = before.find(k);
    const bool changed = it == before.end() || it->second != v;
    if (!changed) continue;
    if (reloadable(k)) continue;
    restart->push_back(k);
  }
  // Reloadable keys: apply when they differ from the running value.
  auto apply_u = [&](const char *key, std::atomic<uint32_t> &cur, uint32_t v) {
    if (cur.load() != v) {
      cur.store(v);
      applied->push_back(std::string(key) + "=" + std::to_string(v));
    }
  };
  apply_u("worker.stall_ms", stall_ms_, next.stall_ms);
  // Not under the detector's lock (its setter is plain); a reload is rare and the value is
  // one aligned word.
  for (auto &d : stall_detector_) d.set_stall_ms(stall_ms_.load());
  apply_u("failover.fence_timeout_ms", fence_timeout_ms_, next.fence_timeout_ms);
  apply_u("failover.garp_count", garp_count_, next.garp_count);
  apply_u("failover.snapshot_max_age_s", snapshot_max_age_s_, next.snapshot_max_age_s);
  if (handover_on_stop_.load() != next.handover_on_stop) {
    handover_on_stop_.store(next.handover_on_stop);
    applied->push_back(std::string("failover.handover_on_stop=") + (next.handover_on_stop ? "true" : "false"));
  }
  if (test_hooks_.load() != next.test_hooks) {
    test_hooks_.store(next.test_hooks);
    applied->push_back(std::string("worker.test_hooks=") + (next.test_hooks ? "true" : "false"));
  }
  restart_pending_ = *restart;
  source_text_ = next.source_text;
  reloads_ok_++;
  return Status::Ok();
}

}  // namespace ftpair
