// The daemon's failover policy: initial role, promotion after fencing, switchover.
#include <chrono>
#include <cstdio>
#include <thread>

#include "common/log.h"
#include "control/daemon.h"
#include "failover/peer_events.h"
#include "virt/events.h"
#include "control.grpc.pb.h"
#include "peer.grpc.pb.h"

namespace ftpair {

namespace {
using Clock = std::chrono::steady_clock;
int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch()).count();
}
bool is_active(fo::Role r) { return r == fo::Role::ACTIVE || r == fo::Role::DRAINING; }
// A step whose failure does not stop the caller (the caller's own checks decide), but is never silent.
void log_failed(const Status &st, const char *step) {
  if (!st.ok()) log::component("failover").error("{} failed: {}", step, st.str());
}
}  // namespace

void Daemon::count_failover(const std::string &reason) {
  std::lock_guard<std::mutex> g(failovers_mu_);
  failovers_[reason]++;
}

Status Daemon::adopt_generation(uint64_t g) {
  if (g <= generation()) return Status::Ok();
  Status st = generation_.store(g);
  if (st.ok()) generation_value_.store(g);
  return st;
}

void Daemon::fill_beat(v1::Beat *b) {
  const fo::Role r = role();
  b->set_node_id(cfg_.node_id);
  b->set_role(fo::role_kind(r));
  b->set_state(fo::role_name(r));
  b->set_generation(generation());
  if (node_) {
    b->set_dataplane_loops(node_->agent().loops(0));
    b->set_packets(node_->agent().port_counters(0).rx_packets.load() + node_->agent().port_counters(1).rx_packets.load());
  }
  b->set_dataplane_healthy(dataplane_healthy());
  b->set_epoch(is_active(r) ? engine_->acked_epoch() : applier_->applied_epoch());
  b->set_in_sync(is_active(r) ? engine_->in_sync() : applier_->in_sync());
}

void Daemon::set_worker_stall(bool on) {
  if (!test_hooks_.load()) return;
  node_->agent().set_stall(on);
  std::fprintf(stderr, "ftpaird: test hook: worker %s\n", on ? "stalled" : "released");
}

// Two actives never stay: the one with the lower generation (then the higher node id) yields.
void Daemon::on_peer_beat(const v1::Beat &b) {
  const fo::Role r = role();
  // A DRAINING peer is handing over: it yields, it does not compete.
  if (is_active(r) && b.state() == fo::role_name(fo::Role::ACTIVE)) {
    bool yield = b.generation() > generation() || (b.generation() == generation() && b.node_id() < cfg_.node_id);
    if (yield) {
      std::fprintf(stderr, "ftpaird: peer %s is active with generation %lu (ours %lu): stepping down\n",
                   b.node_id().c_str(), static_cast<unsigned long>(b.generation()),
                   static_cast<unsigned long>(generation()));
      log_failed(adopt_generation(b.generation()), "adopting the peer's generation");
      log_failed(become_standby("a peer with a newer generation is active"), "stepping down");
    }
    return;
  }
  if (!is_active(r)) {
    log_failed(adopt_generation(b.generation()), "adopting the peer's generation");
    if (r == fo::Role::STANDBY_READY && b.role() == "active" && !b.dataplane_healthy() && !retiring_.load()) {
      Status st = promote("the active reports its dataplane cannot service packets", false);
      if (st.ok()) count_failover("peer_unhealthy");
    }
  }
}

void Daemon::on_peer_silent(const std::string &reason) {
  const fo::Role r = role();
  if (is_active(r) || retiring_.load() || beside_.load()) return;
  if (r != fo::Role::STANDBY_READY) {
    int64_t now = steady_ns();
    if (now - silent_log_ns_.load() > 1000000000) {
      silent_log_ns_.store(now);
      std::fprintf(stderr, "ftpaird: peer silent (%s) but this node is %s: not promoting\n", reason.c_str(),
                   fo::role_name(r));
    }
    return;
  }
  Status st = promote(reason, false);
  if (st.ok()) count_failover("peer_silent");
}

Status Daemon::promote(const std::string &reason, bool forced) {
  std::unique_lock<std::mutex> lk(promote_mu_, std::try_to_lock);
  if (!lk.owns_lock()) return Status(Code::ABORTED, "a promotion is already under way");
  const fo::Role r = role();
  if (is_active(r)) return Status::Ok();
  if (retiring_.load() || beside_.load())
    return FailedPrecondition("promotion refused: this instance is handing its role to a new version (upgrade)");
  if (!forced && r != fo::Role::STANDBY_READY) {
    promotions_refused_++;
    return FailedPrecondition(std::string("promotion refused: this standby is ") + fo::role_name(r) +
                              ", not in sync with the active");
  }
  const auto t0 = Clock::now();
  if (!fencer_) {
    promotions_refused_++;
    return FailedPrecondition("promotion refused: no usable fencer (" + fencer_status_.message() + ")");
  }
  Status fs = fencer_->fence(std::chrono::milliseconds(fence_timeout_ms_.load()));
  if (!fs.ok()) {
    fence_failures_++;
    promotions_refused_++;
    int64_t now = steady_ns();
    if (now - silent_log_ns_.load() > 1000000000) {
      silent_log_ns_.store(now);
      std::fprintf(stderr, "ftpaird: promotion refused: fencing (%s) failed: %s\n", fencer_->kind(), fs.message().c_str());
    }
    return FailedPrecondition("promotion refused: the old active may be alive and fencing failed: " + fs.message());
  }
  const auto t1 = Clock::now();
  Status st = become_active(reason, true);
  if (!st.ok()) return st;
  std::fprintf(stderr, "ftpaird: promoted (%s): fenced in %.1f ms, active %.1f ms after the decision\n", reason.c_str(),
               std::chrono::duration<double, std::milli>(t1 - t0).count(),
               std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  return Status::Ok();
}

Status Daemon::takeover(const v1::TakeoverRequest &req, v1::TakeoverReply *out) {
  out->set_ok(false);
  if (is_active(role())) {
    out->set_message("node " + cfg_.node_id + " is already active");
    return FailedPrecondition(out->message());
  }
  if (retiring_.load() || beside_.load()) {
    out->set_message("takeover refused: node " + cfg_.node_id + " is in the middle of an upgrade handover");
    return FailedPrecondition(out->message());
  }
  if (!req.forced()) {
    if (!applier_->in_sync() || applier_->applied_epoch() < req.final_epoch()) {
      out->set_message("takeover refused: applied epoch " + std::to_string(applier_->applied_epoch()) +
                       (applier_->in_sync() ? "" : " (not in sync)") + ", the active's final epoch is " +
                       std::to_string(req.final_epoch()));
      return FailedPrecondition(out->message());
    }
  }
  log_failed(adopt_generation(req.generation()), "adopting the peer's generation");
  // The old active demoted itself before asking: no fencing needed.
  Status st = become_active(req.forced() ? "forced switchover from " + req.node_id()
                                         : "graceful switchover from " + req.node_id(),
                            true);
  if (!st.ok()) {
    out->set_message(st.message());
    return st;
  }
  count_failover(req.forced() ? "forced" : "switchover");
  out->set_ok(true);
  out->set_generation(generation());
  out->set_message("node " + cfg_.node_id + " is active at generation " + std::to_string(generation()));
  return Status::Ok();
}

Status Daemon::switchover(bool force, v1::SwitchoverReply *out) {
  const auto t0 = Clock::now();
  auto finish = [&](Status st, const std::string &msg) {
    out->set_ok(st.ok());
    out->set_message(msg);
    out->set_duration_ms(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    return st;
  };
  if (!cfg_.peer_grpc.set()) return finish(FailedPrecondition("no peer configured"), "refused: no peer configured");
  auto channel = peer_channel();
  if (!is_active(role())) {
    if (force) {
      // The operator says the active is gone or must go: fence it and take over now.
      Status st = promote("forced switchover by the operator", true);
      if (st.ok()) count_failover("forced");
      return finish(st, st.ok() ? "node " + cfg_.node_id + " took over (forced)" : st.message());
    }
    // Ask the active to hand over gracefully.
    auto stub = v1::Control::NewStub(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::SwitchoverRequest req;
    grpc::Status gs = stub->Switchover(&ctx, req, out);
    if (!gs.ok())
      return finish(Unavailable("the active (" + cfg_.peer_grpc.str() + ") refused or is unreachable: " + gs.error_message()),
                    "refused: " + gs.error_message());
    return Status::Ok();
  }
  if (!force && !engine_->in_sync()) {
    std::string why = engine_->connected() ? "the standby is still syncing" : "no standby is connected";
    if (!engine_->last_error().empty()) why += " (" + engine_->last_error() + ")";
    return finish(FailedPrecondition("switchover refused: " + why), "refused: " + why);
  }
  // DRAINING: stop forwarding, ship the last changes, wait for the acknowledgement.
  {
    std::lock_guard<std::mutex> g(role_mu_);
    role_.store(fo::Role::DRAINING);
  }
  log_failed(engine_->with_workers_parked([this] { node_->nf().set_vip_owner(false); }), "parking the workers to release the VIPs");
  uint64_t final_epoch = 0, records = 0;
  Status cs = engine_->checkpoint_now(std::chrono::milliseconds(2000), &final_epoch, &records);
  if (!cs.ok() && !force) {
    log_failed(engine_->with_workers_parked([this] { node_->nf().set_vip_owner(true); }), "parking the workers to take the VIPs back");
    role_.store(fo::Role::ACTIVE);
    node_->nf().request_announce(garp_count_.load());
    return finish(cs, "refused: final checkpoint failed, still active: " + cs.message());
  }
  auto stub = v1::Peer::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(3));
  v1::TakeoverRequest req;
  req.set_node_id(cfg_.node_id);
  req.set_generation(generation());
  req.set_final_epoch(final_epoch);
  req.set_forced(force || !cs.ok());
  v1::TakeoverReply rep;
  grpc::Status gs = stub->Takeover(&ctx, req, &rep);
  if (!gs.ok() || !rep.ok()) {
    std::string why = gs.ok() ? rep.message() : gs.error_message();
    // The standby did not take over: carry on as active.
    log_failed(engine_->with_workers_parked([this] { node_->nf().set_vip_owner(true); }), "parking the workers to take the VIPs back");
    role_.store(fo::Role::ACTIVE);
    node_->nf().request_announce(garp_count_.load());
    return finish(Unavailable("switchover aborted, still active: the standby said: " + why),
                  "aborted, still active: " + why);
  }
  log_failed(adopt_generation(rep.generation()), "adopting the peer's generation");
  log_failed(become_standby("switched over to the peer"), "becoming standby");
  out->set_packets_held(node_->agent().worker_counters(0).held_now.load());
  return finish(Status::Ok(), "switched over: " + rep.message() + " (final epoch " + std::to_string(final_epoch) + ")");
}

Status Daemon::choose_initial_role() {
  /* failover.libvirt_events: the peer domain's lifecycle events, started and stopped with the
   * beats. A crash, destroy, shutdown or error pause of the peer's domain promotes at once
   * (fencing first, which is quick for a domain that is already down). Subscribing runs on its
   * own thread and retries: an unreachable libvirt only logs and counts. */
  if (monitor_ && cfg_.peer_events_on()) {
    fo::PeerEventsConfig pc;
    pc.domain = cfg_.libvirt_domain;
    pc.retry_min = std::chrono::milliseconds(1000);
    pc.retry_max = std::chrono::milliseconds(30000);
    auto on_down = [this](const fo::PeerDown &d) {
      const std::string what = "peer domain " + d.domain + " " + d.event + "/" + d.detail;
      const double age_ms = std::chrono::duration<double, std::milli>(Clock::now() - d.seen).count();
      const fo::Role r = role();
      if (is_active(r)) {
        std::fprintf(stderr, "ftpaird: %s: this node is already %s\n", what.c_str(), fo::role_name(r));
        return;
      }
      if (r != fo::Role::STANDBY_READY) {
        std::fprintf(stderr, "ftpaird: %s but this node is %s: not promoting\n", what.c_str(), fo::role_name(r));
        return;
      }
      std::fprintf(stderr, "ftpaird: %s: promoting (event %.1f ms old)\n", what.c_str(), age_ms);
      Status st = promote("peer_domain_event: " + what, false);
      if (st.ok())
        count_failover("peer_domain_event");
      else
        std::fprintf(stderr, "ftpaird: %s: not promoted: %s\n", what.c_str(), st.message().c_str());
    };
    monitor_->attach_peer_events(std::make_unique<fo::PeerEvents>(
        pc, std::make_unique<virt::LifecycleSource>(cfg_.libvirt_uri, std::chrono::milliseconds(5000)), on_down,
        [](const std::string &m) { std::fprintf(stderr, "ftpaird: %s\n", m.c_str()); }));
  }
  v1::Beat peer;
  bool heard = false;
  if (cfg_.peer_grpc.set()) {
    auto channel = peer_channel();
    auto stub = v1::Peer::NewStub(channel);
    for (int i = 0; i < 4 && !heard; i++) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
      v1::Beat mine;
      fill_beat(&mine);
      heard = stub->Heartbeat(&ctx, mine, &peer).ok();
      if (!heard) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  if (heard) log_failed(adopt_generation(peer.generation()), "adopting the peer's generation");
  if (heard && peer.role() == "active") return become_standby("the peer " + peer.node_id() + " is active");
  if (cfg_.role == ConfigRole::STANDBY) return become_standby("configured role");
  if (cfg_.role == ConfigRole::AUTO && heard) {
    bool we_lead = cfg_.node_id < peer.node_id();
    if (!we_lead) return become_standby("the peer " + peer.node_id() + " leads a cold start");
  }
  if (cfg_.role == ConfigRole::AUTO && !heard && cfg_.peer_grpc.set()) {
    if (!fencer_) return become_standby("the peer is silent and no fencer is usable: waiting as standby");
    Status fs = fencer_->fence(std::chrono::milliseconds(fence_timeout_ms_.load()));
    if (!fs.ok()) return become_standby("the peer is silent and fencing failed (" + fs.message() + "): waiting as standby");
  }
  Status restored = restore_from_snapshot();
  std::fprintf(stderr, "ftpaird: %s\n", restored.ok() ? "resumed flows from the snapshot" : restored.message().c_str());
  return become_active(cfg_.role == ConfigRole::ACTIVE ? "configured role" : "no active peer", true);
}

}  // namespace ftpair
