/* The daemon's failover policy: the initial role, when a standby promotes (a silent peer, an
 * active that reports its dataplane unhealthy, the peer domain's lifecycle event), who yields
 * when two are active, and the switchover's calls to the peer. Every transition itself is the
 * role manager's (control/roles.h). */
#include <algorithm>
#include <chrono>
#include <thread>

#include "common/clock.h"
#include "common/log.h"
#include "control/daemon.h"
#include "control/role_wire.h"
#include "proto/rpc/rpc.h"
#include "failover/peer_events.h"
#include "virt/events.h"
#include "control.grpc.pb.h"
#include "peer.grpc.pb.h"

namespace ftpair {

namespace {
auto &L = log::component("failover");
using Clock = std::chrono::steady_clock;
}  // namespace

// Below, a transition whose Status is dropped with (void) does not stop the caller (its own
// checks decide what follows); the role manager has logged the failure at error.

void Daemon::fill_beat(v1::Beat *b) {
  const fo::Role r = role();
  b->set_node_id(cfg_.node_id);
  wire::fill(r, b);
  b->set_generation(generation());
  if (node_) {
    b->set_dataplane_loops(node_->agent().loops_total());
    b->set_packets(node_->agent().port_counters(0).rx_packets + node_->agent().port_counters(1).rx_packets);
  }
  const bool healthy = dataplane_healthy();
  b->set_dataplane_healthy(healthy);
  if (!healthy) {
    char text[320];  // the beat threads call this: no allocation (a warm message has the room)
    b->mutable_dataplane_unhealthy()->assign(text, stalled_text_into(text, sizeof(text)));
  }
  b->set_epoch(is_active(r) ? engine_->acked_epoch() : applier_->applied_epoch());
  b->set_in_sync(is_active(r) ? engine_->in_sync() : applier_->in_sync());
}

namespace {
bool says_booting(const v1::Beat &b) { return b.role_state() == v1::ROLE_STATE_BOOT || b.state() == "BOOT"; }
}  // namespace

void Daemon::heartbeat(const v1::Beat &peer, v1::Beat *reply) {
  // A standby (re)starting asks first: an active whose stream to it is down (or old) connects now.
  if (engine_ && is_active(role())) engine_->standby_is_up(says_booting(peer));
  if (monitor_)
    monitor_->heard(peer, reply);
  else
    fill_beat(reply);
}

void Daemon::set_worker_stall(bool on) {
  if (!test_hooks_.load()) return;
  node_->agent().set_stall(on);
  L.warn("test hook: worker {}", on ? "stalled" : "released");
}

void Daemon::corrupt_standby_record() {
  if (!test_hooks_.load()) return;
  if (is_active(role())) {
    L.warn("test hook: no standby record to corrupt on an active node");
    return;
  }
  std::lock_guard<std::mutex> g(table_mu_);
  // The flow idle the longest: one the active's next epoch is least likely to rewrite (which
  // would put the copy right again before anything could be found).
  for (unsigned w = 0; w < node_->workers(); w++) {
    dp::FlowTable &t = node_->flows(w);
    int64_t slot = -1;
    uint64_t oldest = UINT64_MAX;
    t.for_each([&](uint32_t i, const dp::FlowRecord &r) {
      if (r.last_seen_tsc < oldest) oldest = r.last_seen_tsc, slot = i;
    });
    if (slot < 0) continue;
    dp::FlowState st = t.record(uint32_t(slot)).st;
    st.flags ^= dp::kFlowFinFromOutside;
    t.apply(uint32_t(slot), &st, t.record(uint32_t(slot)).last_seen_tsc);
    L.warn("test hook: corrupted the flow in slot {} of worker {}'s table (the table holds epoch {})", slot, w,
           applier_->table_epoch());
    return;
  }
  L.warn("test hook: no standby record to corrupt (the copy is empty)");
}

// Two actives never stay, and a beat moves this node only as fo::BeatPolicy allows.
void Daemon::on_peer_beat(const v1::Beat &b) {
  const fo::Role r = role();
  const fo::Role peer = wire::role_of(b);
  fo::SelfView self;
  self.role = r;
  self.generation = generation();
  self.id = cfg_.node_id;
  self.in_sync = applier_->in_sync();
  self.now_ns = mono_ns();
  const fo::BeatVerdict v = beat_policy_.on_beat(self, peer, b);
  if (v == fo::BeatVerdict::REFUSED_JUMP) {
    beats_refused_generation_jump_++;
    const int64_t now = mono_ns();
    if (now - generation_jump_log_ns_ > 1'000'000'000) {
      generation_jump_log_ns_ = now;
      L.warn("beat from {} refused: generation {} is more than {} past the newest seen (ours {})", b.node_id(),
             b.generation(), fo::kMaxGenerationJump, generation());
    }
    return;
  }
  /* A standby that has just started says so in a fast beat (Monitor::announce) before its first
   * Heartbeat arrives; its answers to this node's Heartbeats say so too. Not from unsigned fast
   * beats when the Heartbeat itself needs a client certificate: a forged datagram would then buy
   * what a forged call cannot (a cancelled stream, a full sync, once per 5 s). */
  if (engine_ && is_active(r) && says_booting(b) && (monitor_->authenticated() || !cfg_.management_tls.enabled()))
    engine_->standby_is_up(true, "in a beat");
  switch (v) {
    case fo::BeatVerdict::STEP_DOWN:
      L.warn("peer {} is active with generation {} (ours {}; {} beats in a row): stepping down", b.node_id(),
             b.generation(), generation(), beat_policy_.streak());
      (void)roles_.adopt_generation(b.generation(), "the peer " + b.node_id() + " is active with it");
      (void)become_standby("a peer with a newer generation is active");
      return;
    case fo::BeatVerdict::ELECTED:
      if (retiring_.load() || beside_.load()) return;
      {
        // The peer is alive and says it is standby: nothing to fence.
        const std::string why = "elected: both nodes standby for " + std::to_string(fo::kElectAfterNs / 1'000'000) +
                                " ms (peer " + b.node_id() + ": generation " + std::to_string(b.generation()) +
                                (b.in_sync() ? ", in sync" : ", not in sync") + ")";
        L.warn("{}", why);
        if (roles_.become_active(why, true).ok()) roles_.count_failover("election");
      }
      return;
    case fo::BeatVerdict::PROMOTE_UNHEALTHY:
    case fo::BeatVerdict::NOTHING:
    case fo::BeatVerdict::REFUSED_JUMP:  // returned above
      break;
  }
  if (is_active(r)) return;
  (void)roles_.adopt_generation(b.generation(), "the peer " + b.node_id() + " beats with it");
  if (v == fo::BeatVerdict::PROMOTE_UNHEALTHY && !retiring_.load()) {
    // The active's own account (it may be fenced before its log says it), bounded.
    std::string facts = b.dataplane_unhealthy().substr(0, 240);
    for (char &c : facts)
      if (c < 0x20 || c > 0x7e) c = '?';
    (void)promote("the active reports its dataplane cannot service packets (" + std::to_string(beat_policy_.streak()) +
                      " beats in a row" + (facts.empty() ? std::string() : ": " + facts) + ")",
                  false, "peer_unhealthy");
  }
}

void Daemon::on_peer_silent(const std::string &reason) {
  const fo::Role r = role();
  if (is_active(r) || retiring_.load() || beside_.load()) return;
  if (dp_watch_ && dp_watch_->peer_fresh()) {
    // The peer's workers beat in the dataplane: it forwards. Only the management network is
    // silent (failover/dp_verdict.h's table): no promotion.
    if (roles_.quiet_log_due())
      L.warn("peer silent on the control plane ({}) but its dataplane beats are fresh: the management network is "
             "down, not the peer; not promoting",
             reason);
    return;
  }
  if (r != fo::Role::STANDBY_READY) {
    if (roles_.quiet_log_due()) L.warn("peer silent ({}) but this node is {}: not promoting", reason, fo::role_name(r));
    return;
  }
  (void)promote(reason, false, "peer_silent");
}

Status Daemon::takeover(const v1::TakeoverRequest &req, v1::TakeoverReply *out) {
  std::string message;
  Status st = roles_.takeover(req.node_id(), req.generation(), req.final_epoch(), req.forced(), &message);
  out->set_ok(st.ok());
  out->set_message(message);
  if (st.ok()) out->set_generation(generation());
  return st;
}

Status Daemon::switchover(bool force, v1::SwitchoverReply *out) {
  std::unique_lock<std::timed_mutex> g(switchover_mu_, std::try_to_lock);
  if (!g.owns_lock()) {
    const std::string why = "a switchover (or a stop's handover) is already in progress on node " + cfg_.node_id;
    out->set_ok(false);
    out->set_message("refused: " + why);
    L.warn("switchover refused: {}", why);
    return FailedPrecondition("switchover refused: " + why);
  }
  return switchover_locked(force, out, false);
}

Status Daemon::switchover_locked(bool force, v1::SwitchoverReply *out, bool for_stop) {
  const auto t0 = Clock::now();
  auto finish = [&](Status st, const std::string &msg) {
    out->set_ok(st.ok());
    out->set_message(msg);
    out->set_duration_ms(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    if (!st.ok()) L.warn("switchover{}: {}", force ? " (forced)" : "", msg);
    return st;
  };
  if (!cfg_.peer_grpc.set()) return finish(FailedPrecondition("no peer configured"), "refused: no peer configured");
  auto channel = peer_channel();
  // A stop hands over only what it holds: an ACTIVE node (not one draining, not a standby).
  if (for_stop && role() != fo::Role::ACTIVE)
    return finish(FailedPrecondition("no longer active"), std::string("refused: this node is ") + fo::role_name(role()));
  if (!is_active(role())) {
    if (force) {
      // The operator says the active is gone or must go: fence it and take over now.
      Status st = promote("forced switchover by the operator", true, "forced");
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
  if (Status ds = roles_.drain(std::string(force ? "forced" : "graceful") + " switchover to " + cfg_.peer_grpc.str());
      !ds.ok())
    return finish(ds, "refused, still active: " + ds.message());
  uint64_t final_epoch = 0, records = 0;
  // A stop's handover has less time: a service manager, or the lab, kills a stop that lingers.
  Status cs = engine_->checkpoint_now(std::chrono::milliseconds(for_stop ? 1000 : 2000), &final_epoch, &records);
  if (!cs.ok() && !force) {
    Status rs = roles_.resume_active("the final checkpoint failed: " + cs.message());
    return finish(cs, "refused: final checkpoint failed, " +
                          std::string(rs.ok() ? "still active: " : "and the virtual addresses could not be taken back (" +
                                                                       rs.message() + "): ") +
                          cs.message());
  }
  auto stub = v1::Peer::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(for_stop ? 1500 : 3000));
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
    Status rs = roles_.resume_active("the standby did not take over: " + why);
    const std::string state =
        rs.ok() ? "still active" : "DRAINING without the virtual addresses (" + rs.message() + ")";
    return finish(Unavailable("switchover aborted, " + state + ": the standby said: " + why), "aborted, " + state + ": " + why);
  }
  (void)roles_.adopt_generation(rep.generation(), "the peer took over with it");
  (void)become_standby("switched over to the peer");
  out->set_packets_held(node_->agent().worker_total(&dp::AgentWorkerCounters::held_now));
  return finish(Status::Ok(), "switched over: " + rep.message() + " (final epoch " + std::to_string(final_epoch) + ")");
}

bool Daemon::hand_over_before_stop() {
  if (!started_ || !handover_on_stop_.load() || beside_.load() || exit_requested_.load()) return false;
  if (!cfg_.peer_grpc.set()) return false;
  // After an operator's switchover in flight, if any: its outcome decides whether to hand over.
  std::unique_lock<std::timed_mutex> g(switchover_mu_, std::defer_lock);
  if (!g.try_lock_for(std::chrono::seconds(2))) {
    L.warn("stopping without a handover: a switchover still in progress after 2 s");
    return false;
  }
  if (role() != fo::Role::ACTIVE) return false;
  if (!engine_->in_sync()) {
    // Nobody to hand to: the flows go with this node, as they would without the setting.
    L.warn("stopping the active with no standby in sync ({}): its connections end with it",
           engine_->connected() ? "the standby is still syncing" : "no standby is connected");
    return false;
  }
  L.info("stopping: handing over to the peer {} first (failover.handover_on_stop)", cfg_.peer_grpc.str());
  v1::SwitchoverReply rep;
  const Status st = switchover_locked(false, &rep, true);
  if (!st.ok()) {
    L.warn("stopping without a handover: {} ({:.1f} ms); the standby takes over when the beats stop", rep.message(),
           rep.duration_ms());
    return false;
  }
  L.info("handed over to the peer before stopping: {} in {:.1f} ms", rep.message(), rep.duration_ms());
  return true;
}

/* failover.libvirt_events: the peer domain's lifecycle events, started and stopped with the
 * beats. A crash, destroy, shutdown or error pause of the peer's domain promotes at once
 * (fencing first, which is quick for a domain that is already down). Subscribing runs on its
 * own thread and retries: an unreachable libvirt only logs and counts. */
void Daemon::watch_peer_domain() {
  fo::PeerEventsConfig pc;
  pc.domain = cfg_.libvirt_domain;
  pc.retry_min = std::chrono::milliseconds(1000);
  pc.retry_max = std::chrono::milliseconds(30000);
  auto on_down = [this](const fo::PeerDown &d) {
    const std::string what = "peer domain " + d.domain + " " + d.event + "/" + d.detail;
    const double age_ms = std::chrono::duration<double, std::milli>(Clock::now() - d.seen).count();
    const fo::Role r = role();
    if (is_active(r)) {
      L.info("{}: this node is already {}", what, fo::role_name(r));
      return;
    }
    if (r != fo::Role::STANDBY_READY) {
      L.warn("{} but this node is {}: not promoting", what, fo::role_name(r));
      return;
    }
    L.info("{}: promoting (event {:.1f} ms old)", what, age_ms);
    Status st = promote("peer_domain_event: " + what, false, "peer_domain_event");
    if (!st.ok()) L.warn("{}: not promoted: {}", what, st.message());
  };
  monitor_->attach_peer_events(std::make_unique<fo::PeerEvents>(
      pc, std::make_unique<virt::LifecycleSource>(cfg_.libvirt_uri, std::chrono::milliseconds(5000), cfg_.libvirt_domain), on_down,
      [](const std::string &m) { L.info("{}", m); }));
}

bool Daemon::ask_peer(v1::Peer::Stub &stub, const v1::Beat &mine, v1::Beat *peer) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(250));
  return stub.Heartbeat(&ctx, mine, peer).ok();
}

Status Daemon::choose_initial_role() {
  v1::Beat peer;
  bool heard = false;
  if (cfg_.peer_grpc.set()) {
    // Four tries 100 ms apart; the first went out from start() as soon as the server listened. The
    // channel shares the first one's connection (gRPC's pool: same address, same kind).
    auto stub = v1::Peer::NewStub(rpc::make_channel(cfg_.peer_grpc.str(), peer_creds_, rpc::ChannelKind::BEATS));
    for (int i = 0; i < 4 && !heard; i++) {
      if (i == 0 && first_beat_.valid()) {
        std::optional<v1::Beat> answer = first_beat_.get();
        if ((heard = answer.has_value())) peer = std::move(*answer);
      } else {
        v1::Beat mine;
        fill_beat(&mine);
        heard = ask_peer(*stub, mine, &peer);
      }
      if (!heard) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  // After the first heartbeat, which also tells an active that this node has started (it
  // connects its stream at once): the libvirt connection for the events takes a while.
  if (monitor_ && cfg_.peer_events_on()) watch_peer_domain();
  if (heard) (void)roles_.adopt_generation(peer.generation(), "the peer " + peer.node_id() + " answered with it");
  if (heard && is_active(wire::role_of(peer))) return become_standby("the peer " + peer.node_id() + " is active");
  if (cfg_.role == ConfigRole::STANDBY) return become_standby("configured role");
  if (cfg_.role == ConfigRole::AUTO && heard) {
    bool we_lead = cfg_.node_id < peer.node_id();
    if (!we_lead) return become_standby("the peer " + peer.node_id() + " leads a cold start");
  }
  if (cfg_.role == ConfigRole::AUTO && !heard && cfg_.peer_grpc.set()) {
    if (!roles_.can_fence()) return become_standby("the peer is silent and no fencer is usable: waiting as standby");
    Status fs = roles_.fence_peer();
    if (!fs.ok()) return become_standby("the peer is silent and fencing failed (" + fs.message() + "): waiting as standby");
  }
  Status restored = restore_from_snapshot();
  if (restored.ok())
    L.info("resumed {} flows from the snapshot", node_->flow_count());
  else
    L.info("{}", restored.message());
  return become_active(cfg_.role == ConfigRole::ACTIVE ? "configured role" : "no active peer", true);
}

}  // namespace ftpair
