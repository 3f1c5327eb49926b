// The daemon's /metrics page (Prometheus text format): one family per line of issue 5's list,
// declared once with its help text.
#include <mutex>

#include "common/clock.h"
#include "control/daemon.h"
#include "control/exposition.h"
#include "control/node_metrics.h"
#include "failover/peer_events.h"

namespace ftpair {

std::string Daemon::render_metrics() {
  Exposition x;
  x.family("ftpair_build_info", "gauge", "Build information.")
      .sample(1, {{"version", ckpt::software_version()}, {"node", cfg_.node_id}, {"sha256", self_sha_}});
  expose_dataplane(*node_, x);
  const fo::Role r = role();
  x.family("ftpair_role", "gauge", "1 for the node's current role state.");
  for (auto s : {fo::Role::BOOT, fo::Role::STANDBY_SYNCING, fo::Role::STANDBY_READY, fo::Role::ACTIVE,
                 fo::Role::DRAINING, fo::Role::FAULT})
    x.sample(s == r ? 1 : 0, {{"state", fo::role_name(s)}});
  x.family("ftpair_generation", "gauge", "Persisted generation (term) of this node.").sample(double(generation()));
  x.family("ftpair_dataplane_healthy", "gauge", "1 while the worker loop makes progress.").sample(dataplane_healthy() ? 1 : 0);
  x.family("ftpair_serving", "gauge", "1 when the node fills its role (grpc.health.v1 SERVING).").sample(serving() ? 1 : 0);
  x.family("ftpair_watchdog_pings_total", "counter", "sd_notify WATCHDOG=1 pings sent (worker making progress).")
      .sample(watchdog_pings_.load());
  x.family("ftpair_config_reloads_total", "counter", "SIGHUP config reloads, by result.");
  x.sample(reloads_ok_.load(), {{"result", "applied"}});
  x.sample(reloads_refused_.load(), {{"result", "refused"}});
  {
    std::lock_guard<std::mutex> g(reload_mu_);
    x.family("ftpair_config_restart_pending", "gauge",
             "Config keys changed by a reload that take effect only after a restart (1 per key).");
    for (const auto &k : restart_pending_) x.sample(1, {{"key", k}});
  }
  x.family("ftpair_beats_refused_total", "counter",
           "Genuine beats whose content was refused as implausible, by reason (the transport's own refusals are "
           "ftpair_fast_beats_rejected_total).")
      .sample(double(beats_refused_generation_jump_.load()), {{"reason", "generation_jump"}});
  x.family("ftpair_security_warning", "gauge",
           "1 for each way anyone on the management network can steer the pair (see ftpairctl status).");
  for (const char *what : {"beats_unauthenticated", "control_without_mtls"}) {
    bool on = false;
    for (const auto &w : security_warnings()) on = on || w.rfind(what, 0) == 0;
    x.sample(on ? 1 : 0, {{"what", what}});
  }
  x.family("ftpair_alarm", "gauge",
           "1 while the pair is without a usable copy: unprotected (an active whose standby is not in sync), "
           "standby_not_in_sync, diverged (a standby's table differed from the active's; see ftpairctl status).");
  {
    const std::vector<std::string> alarm = alarms();
    for (const char *what : {"unprotected", "standby_not_in_sync", "diverged"}) {
      bool on = false;
      for (const auto &a : alarm) on = on || a.rfind(what, 0) == 0;
      x.sample(on ? 1 : 0, {{"what", what}});
    }
  }
  x.family("ftpair_peer_calls_refused_total", "counter",
           "Peer RPCs and Sync streams refused because the client certificate does not name the peer "
           "(peer.identities).")
      .sample(double(peer_calls_refused()), {{"reason", "identity"}});
  x.family("ftpair_role_transitions_rolled_back_total", "counter",
           "Role transitions whose prepare failed (workers not parked, generation not stored) and changed nothing.")
      .sample(roles_.transitions_rolled_back());
  x.family("ftpair_failovers_total", "counter", "Times this node took the active role, by reason.");
  for (const char *reason : {"peer_silent", "peer_unhealthy", "peer_domain_event", "switchover", "forced", "election",
                             "dp_silent", "dp_worker_stall"})
    x.sample(double(roles_.failovers(reason)), {{"reason", reason}});
  upgrade_->expose(x);
  x.family("ftpair_fence_failures_total", "counter", "Fencing attempts that failed (promotion refused).").sample(roles_.fence_failures());
  x.family("ftpair_promotions_refused_total", "counter", "Promotions refused (not in sync, fencing failed).").sample(roles_.promotions_refused());
  if (monitor_) {
    x.family("ftpair_heartbeat_misses_total", "counter", "Heartbeats to the peer that failed or timed out.").sample(monitor_->misses());
    x.family("ftpair_heartbeats_sent_total", "counter", "Heartbeats sent to the peer.").sample(monitor_->beats_sent());
    // A stall detector's count, summed over the workers.
    auto all_workers = [this](uint64_t (fo::StallDetector::*count)() const) {
      uint64_t n = 0;
      for (unsigned w = 0; w < node_->workers(); w++) n += (stall_detector_[w].*count)();
      return double(n);
    };
    x.family("ftpair_dataplane_starved_total", "counter",
             "Windows past worker.stall_ms in which the worker was runnable but got no CPU, or asleep in a nap whose "
             "wake-up came late (not a stall).")
        .sample(all_workers(&fo::StallDetector::starved_windows));
    x.family("ftpair_dataplane_rewatched_total", "counter",
             "Windows in which a runnable worker ran without progress, watched afresh before any verdict: a host that "
             "held the vCPU back charges the pause as CPU time to the thread that was on it.")
        .sample(all_workers(&fo::StallDetector::rewatched_windows));
    x.family("ftpair_dataplane_stalled_total", "counter",
             "Times a worker was judged stalled: no progress for worker.stall_ms though it ran, slept or blocked, or "
             "starved past 10 x worker.stall_ms (the node reports its dataplane unhealthy).")
        .sample(all_workers(&fo::StallDetector::stalled_windows));
    x.family("ftpair_peer_silence_seconds", "gauge", "Seconds since the peer was last heard (-1: never).").sample(monitor_->silence_seconds());
    if (monitor_->config().udp_port) {
      x.family("ftpair_fast_beats_sent_total", "counter", "Fast beats (UDP) sent to the peer.").sample(monitor_->udp_sent());
      x.family("ftpair_fast_beats_heard_total", "counter", "Fast beats (UDP) accepted from the peer.").sample(monitor_->udp_heard());
      x.family("ftpair_fast_beats_rejected_total", "counter", "Fast-beat datagrams ignored, by reason.");
      for (size_t r = 0; r < static_cast<size_t>(fo::BeatReject::COUNT); r++)
        x.sample(monitor_->udp_rejected(static_cast<fo::BeatReject>(r)),
                 {{"reason", fo::beat_reject_label(static_cast<fo::BeatReject>(r))}});
      x.family("ftpair_fast_beats_backup_sent_total", "counter",
               "Fast beats sent by the receiving thread because the sending one was late (its CPU held back).")
          .sample(monitor_->backup_beats());
      x.family("ftpair_fast_beats_read_by_check_total", "counter",
               "Peer fast beats the silence check found unread in the socket (the receiving thread held back).")
          .sample(monitor_->beats_read_by_check());
      x.family("ftpair_fast_beats_oversize_total", "counter",
               "Fast beats not sent because they would not fit a datagram (1024 bytes; a probe answer for very "
               "many workers).")
          .sample(monitor_->oversize_beats());
      x.family("ftpair_fast_beats_realtime", "gauge", "1 when the fast-beat threads run at real-time priority.")
          .sample(monitor_->realtime() ? 1 : 0);
    }
  }
  if (dp_board_) {
    const dp::DpBeatBoard &b = *dp_board_;
    x.family("ftpair_dp_beats_sent_total", "counter", "Dataplane beats (EtherType 0x88B5 on ports.inside) sent, by worker.");
    for (unsigned w = 0; w < node_->workers(); w++) x.sample(double(b.sent(w)), {{"worker", std::to_string(w)}});
    x.family("ftpair_dp_beats_heard_total", "counter", "Dataplane beats accepted from the peer.").sample(double(b.heard()));
    x.family("ftpair_dp_beats_rejected_total", "counter", "Dataplane beat frames ignored, by reason.");
    for (size_t r = 0; r < static_cast<size_t>(dp::DpBeatReject::COUNT); r++)
      x.sample(double(b.rejected(static_cast<dp::DpBeatReject>(r))),
               {{"reason", dp::dp_beat_reject_label(static_cast<dp::DpBeatReject>(r))}});
    x.family("ftpair_dp_beats_no_mbuf_total", "counter", "Dataplane beats not sent for want of an mbuf.").sample(double(b.no_mbuf()));
    x.family("ftpair_dp_beat_peer_silence_seconds", "gauge",
             "Seconds since the peer's most silent worker's last dataplane beat (-1: never heard).")
        .sample(dp_watch_->worst_silence_s());
    x.family("ftpair_dp_link_up", "gauge",
             "0 after a probe found the peer's workers sending but their dataplane beats not arriving (link down).")
        .sample(dp_watch_->link_down() ? 0 : 1);
    x.family("ftpair_dp_probes_total", "counter", "Probes after a dataplane beat silence, by verdict.");
    for (size_t v = 0; v < static_cast<size_t>(fo::DpVerdict::COUNT); v++)
      x.sample(double(dp_watch_->verdicts(static_cast<fo::DpVerdict>(v))),
               {{"verdict", fo::dp_verdict_label(static_cast<fo::DpVerdict>(v))}});
    x.family("ftpair_dp_watch_armed", "gauge",
             "1 when a dataplane beat silence can fail over: failover.dataplane_arm_ms after this node, a standby in "
             "sync, first heard the peer's workers.")
        .sample(dp_watch_->armed() ? 1 : 0);
    x.family("ftpair_dp_silences_unarmed_total", "counter",
             "Dataplane beat silences seen before the watch was armed (left to the control-plane beats).")
        .sample(double(dp_watch_->silences_unarmed()));
    x.family("ftpair_dp_watch_realtime", "gauge", "1 when the dataplane beats' watch runs at real-time priority.")
        .sample(dp_watch_->realtime() ? 1 : 0);
  }
  if (const fo::PeerEvents *pe = monitor_ ? monitor_->peer_events() : nullptr) {
    x.family("ftpair_peer_events_total", "counter",
             "Lifecycle events of the peer's libvirt domain, by what they say (other: not a failover signal).");
    for (const char *label : fo::kPeerEventLabels) x.sample(double(pe->peer_events(label)), {{"event", label}});
    x.family("ftpair_peer_events_other_domains_total", "counter", "Lifecycle events of other domains (ignored).")
        .sample(double(pe->other_domain_events()));
    x.family("ftpair_peer_events_subscribed", "gauge", "1 while subscribed to libvirt lifecycle events at failover.libvirt_uri.")
        .sample(pe->subscribed() ? 1 : 0);
    x.family("ftpair_peer_events_subscribe_failures_total", "counter", "Subscriptions to libvirt lifecycle events that failed (retried).")
        .sample(double(pe->subscribe_failures()));
    x.family("ftpair_peer_events_connections_lost_total", "counter", "libvirt event connections lost (resubscribed).")
        .sample(double(pe->connections_lost()));
  }

  const auto &es = engine_->stats();
  x.family("ftpair_checkpoints_total", "counter", "Checkpoints taken (epoch flips).").sample(es.checkpoints.load());
  x.family("ftpair_checkpoints_aborted_total", "counter", "Checkpoints aborted: the workers did not park in time.")
      .sample(es.aborted.load());
  x.family("ftpair_worker_park_timeouts_total", "counter",
           "Parks for a flows dump, snapshot or role change that timed out (a worker did not park within " +
               std::to_string(ckpt::Engine::kParkWait.count()) + " ms); a request gives up after " +
               std::to_string(ckpt::Engine::kParkAttempts) + " in a row.")
      .sample(es.park_timeouts.load());
  std::vector<double> bounds;
  std::vector<uint64_t> cum;
  for (size_t i = 0; i < ckpt::kPauseBuckets; i++) {
    bounds.push_back(ckpt::kPauseBucketsUs[i] / 1e6);
    cum.push_back(es.pause_buckets[i].load());
  }
  x.family("ftpair_checkpoint_pause_seconds", "histogram", "Worker pause per checkpoint (quiesce to resume).")
      .histogram(bounds, cum, double(es.pause_ns_sum.load()) / 1e9, es.pause_count.load());
  {
    // The commit path, stage by stage (checkpoint/commit_timing.h): a summary without
    // quantiles; rate(_sum) / rate(_count) is a stage's mean over any window.
    const ckpt::CommitTiming &ct = engine_->commit_timing();
    x.family("ftpair_commit_stage_seconds", "summary",
             "Per-epoch commit time by stage (close, pause, capture, encode, send, ack, apply), incremental epochs.");
    for (size_t i = 0; i < ckpt::kCommitStages; i++) {
      const auto st = ckpt::CommitStage(i);
      const Exposition::Labels l{{"stage", ckpt::commit_stage_name(st)}};
      x.sample_suffix("_sum", double(ct.sum_ns(st)) / 1e9, l);
      x.sample_suffix("_count", double(ct.count(st)), l);
    }
    uint64_t lag_sum = 0, releases = 0;
    for (unsigned w = 0; w < node_->agent().nb_workers(); w++) {
      lag_sum += node_->agent().worker_counters(w).release_lag_ns_sum.load();
      releases += node_->agent().worker_counters(w).releases.load();
    }
    x.family("ftpair_commit_release_seconds", "summary",
             "Strict mode: an acknowledgement published to the workers, until a worker sent what it released.");
    x.sample_suffix("_sum", double(lag_sum) / 1e9);
    x.sample_suffix("_count", double(releases));
    x.family("ftpair_commit_realtime", "gauge", "1 when the commit path's threads run at real-time priority.")
        .sample(engine_->realtime() ? 1 : 0);
  }
  x.family("ftpair_replication_records_sent_total", "counter", "Flow records sent to the standby.").sample(es.records_sent.load());
  x.family("ftpair_replication_sent_bytes_total", "counter", "Bytes of checkpoints sent to the standby.").sample(es.bytes_sent.load());
  x.family("ftpair_replication_full_syncs_total", "counter", "Full syncs started for a joining standby.").sample(es.full_syncs.load());
  x.family("ftpair_replication_standby_lost_total", "counter", "Times the standby was lost.").sample(es.standby_lost.load());
  x.family("ftpair_replication_connected", "gauge", "1 while a standby stream is up.").sample(engine_->connected() ? 1 : 0);
  x.family("ftpair_replication_in_sync", "gauge", "1 while the standby holds a consistent copy.")
      .sample(r == fo::Role::ACTIVE ? (engine_->in_sync() ? 1 : 0) : (applier_->in_sync() ? 1 : 0));
  x.family("ftpair_epoch", "gauge", "Current epoch (active) or last applied epoch (standby).")
      .sample(double(r == fo::Role::ACTIVE ? engine_->current_epoch() : applier_->applied_epoch()));
  x.family("ftpair_replication_acked_epoch", "gauge", "Newest epoch the standby acknowledged.").sample(double(engine_->acked_epoch()));
  uint64_t closed = engine_->current_epoch() - 1;
  uint64_t lag = engine_->in_sync() && closed > engine_->acked_epoch() ? closed - engine_->acked_epoch() : 0;
  x.family("ftpair_sync_lag_epochs", "gauge", "Closed epochs not yet acknowledged (relaxed: lost on failover).").sample(double(lag));
  {
    int64_t ack_ns = es.last_ack_unix_ns.load();
    x.family("ftpair_sync_lag_seconds", "gauge",
             "Seconds since the standby last acknowledged, while closed epochs wait for it (0: caught up).")
        .sample(lag > 0 && ack_ns ? double(unix_ns() - ack_ns) / 1e9 : 0);
  }
  x.family("ftpair_sync_lag_bytes", "gauge", "Checkpoint bytes sent and not yet acknowledged.").sample(double(engine_->lag_bytes()));
  x.family("ftpair_sync_last_ack_age_seconds", "gauge", "Seconds since the last acknowledgement (-1: never).")
      .sample(age_seconds(es.last_ack_unix_ns.load()));
  x.family("ftpair_full_sync_last_duration_seconds", "gauge", "Duration of the last completed full sync.").sample(es.last_full_sync_seconds.load());
  x.family("ftpair_full_sync_progress_ratio", "gauge", "Progress of the running full sync (0..1).")
      .sample(r == fo::Role::ACTIVE ? engine_->full_sync_progress() : applier_->full_sync_progress());
  using C = dp::AgentWorkerCounters;
  const dp::InterfaceAgent &ag = node_->agent();
  x.family("ftpair_output_held_packets_total", "counter", "Packets held for output commit (strict mode).").sample(ag.worker_total(&C::held));
  x.family("ftpair_output_released_packets_total", "counter", "Held packets released after acknowledgement.").sample(ag.worker_total(&C::released));
  x.family("ftpair_output_hold_full_total", "counter", "Packets the hold buffer could not take (fallback applied).").sample(ag.worker_total(&C::hold_full));
  x.family("ftpair_output_hold_queue_packets", "gauge", "Packets in the hold buffer right now (strict mode).").sample(ag.worker_total(&C::held_now));
  const auto &as = applier_->stats();
  x.family("ftpair_applied_checkpoints_total", "counter", "Checkpoints applied (standby).").sample(as.checkpoints.load());
  x.family("ftpair_applied_records_total", "counter", "Records applied (standby).").sample(as.records.load());
  x.family("ftpair_sync_divergence_total", "counter",
           "Epochs after which this standby's table fingerprint differed from the active's at the cut "
           "(silent divergence; the stream is refused and a full sync follows).")
      .sample(as.divergences.load());
  x.family("ftpair_sync_fingerprints_checked_total", "counter", "Epochs whose table fingerprint this standby compared.")
      .sample(applier_->fingerprints_checked());
  x.family("ftpair_sync_rejected_total", "counter", "Checkpoints refused by this standby, by reason.");
  x.sample(as.rejected_gap.load(), {{"reason", "gap"}});
  x.sample(as.rejected_duplicate.load(), {{"reason", "duplicate"}});
  x.sample(as.rejected_corrupt.load(), {{"reason", "corrupt"}});
  x.sample(as.rejected_version.load(), {{"reason", "version"}});
  x.sample(as.rejected_protocol.load(), {{"reason", "protocol"}});
  return x.text();
}

}  // namespace ftpair
