#include "virt/sync_wait.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <thread>

#include "control.grpc.pb.h"

namespace ftpair::virt {

namespace {

using Channel = std::shared_ptr<grpc::Channel>;

Channel channel_to(const std::string &addr) { return grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()); }

/* One Status call. With `wait_in_sync` above 0 it is a long poll: the daemon answers once its
 * replication is in sync or after that long (StatusRequest.wait_in_sync_ms), so the guest
 * answers one call instead of one every few ms, and says "in sync" the moment it is. */
bool status_on(const Channel &ch, const std::string &addr, ftpair::v1::StatusReply *out, std::string *err, Ms deadline,
               Ms wait_in_sync = Ms(0)) {
  auto stub = ftpair::v1::Control::NewStub(ch);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline + wait_in_sync);
  ftpair::v1::StatusRequest req;
  req.set_wait_in_sync_ms(static_cast<uint32_t>(wait_in_sync.count()));
  grpc::Status st = stub->Status(&ctx, req, out);
  if (!st.ok()) *err = addr + ": " + st.error_message();
  return st.ok();
}

bool status_of(const std::string &addr, ftpair::v1::StatusReply *out, std::string *err, Ms deadline = Ms(1500)) {
  return status_on(channel_to(addr), addr, out, err, deadline);
}

/* Connects a fresh channel within `deadline`: true once it is READY (the daemon's server took the
 * connection and the HTTP/2 handshake); false at once when the connection is refused or fails,
 * and with *timed_out at the deadline (no answer: the SYN may have gone to the old MAC). */
bool connect_within(const Channel &ch, Ms deadline, bool *timed_out) {
  const auto until = std::chrono::system_clock::now() + deadline;
  grpc_connectivity_state state = ch->GetState(true);
  while (state != GRPC_CHANNEL_READY) {
    if (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN) return false;
    if (!ch->WaitForStateChange(state, until)) {
      *timed_out = true;
      return false;
    }
    state = ch->GetState(true);  // an IDLE channel is asked to connect again
  }
  return true;
}

}  // namespace

static_assert(kRoleStateStandbyReady == ftpair::v1::ROLE_STATE_STANDBY_READY);

Status wait_standby_in_sync(const std::string &standby, const std::string &active, Ms deadline,
                            Clock::time_point gone_since, Json *detail) {
  auto t0 = std::chrono::steady_clock::now();
  auto end = t0 + deadline;
  std::string last = "no answer yet";
  double first_answer_s = -1;  // when the replacement's server first took a connection (path 2)
  /* A replacement has one vCPU, busy while it starts and takes the full sync: every call it
   * answers meanwhile delays it. So it is not asked at all when the active can say it
   * (judge_active, virt/ops.h).
   * 1. The active, by long poll (up to kLongPoll each): it answers once its standby has
   *    acknowledged the full sync. That acknowledgement carries the standby's own role state
   *    (Ack.role_state): a standby marks itself STANDBY_READY before it sends it. The active
   *    reports it with the node id of the stream's hello reply and the stream's age. READY on a
   *    stream that began after the failed node was gone (gone_since) ends the wait: that stream
   *    is the replacement's. A stream older than that is the failed node's, which the active
   *    drops on the replacement's first beat (or when its acknowledgements stop): while it holds
   *    it in sync, the active answers at once, so it is asked every 20 ms.
   * 2. When the active cannot say (a standby or an active of a release before Ack.role_state,
   *    or a failed node not found on this host), the replacement is asked, once its stream is
   *    in sync. First a connection to it with no call. Until its server takes one, a fresh
   *    channel (and connection) per probe, with a short first deadline doubled after each attempt
   *    that timed out (to 1.5 s): a claimed spare takes over an address whose old owner is gone,
   *    the first SYN can leave before its gratuitous ARP and go to the old MAC, and TCP would
   *    resend it only after 1 s; a fresh connection after 250 ms finds the new MAC. The channel
   *    is then kept (until a call on it fails). Then one Status. If the replacement is not ready
   *    (the active still spoke of the stream to the failed node), back to 1 after 20 ms, doubled
   *    each time up to 160 ms. */
  constexpr Ms kLongPoll(2000);
  Ms probe(250);
  Channel standby_ch, active_ch = channel_to(active);
  auto long_poll = [&] {
    return std::clamp(std::chrono::duration_cast<Ms>(end - std::chrono::steady_clock::now()), Ms(0), kLongPoll);
  };
  auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(20)); };
  Ms not_ready_pause(20);
  while (std::chrono::steady_clock::now() < end) {
    ftpair::v1::StatusReply s, a;
    std::string err;
    if (!status_on(active_ch, active, &a, &err, Ms(1500), long_poll())) {
      last = err;
      pause();
      continue;
    }
    const double gone_for_s =
        gone_since == kNotKnownGone
            ? -1
            : std::chrono::duration<double>(std::chrono::steady_clock::now() - gone_since).count();
    const auto &as = a.sync();
    const ActiveSyncView view{a.role() == "active", as.in_sync(), as.peer(), as.peer_node(),
                              static_cast<int>(as.peer_state()), as.stream_age_seconds()};
    const std::string active_said = "; active " + a.node_id() + " " + a.role() + " in_sync=" +
                                    (as.in_sync() ? "1" : "0") + " peer=" + as.peer() + " flows=" +
                                    std::to_string(a.flows()) + " standby_stream_age_s=" +
                                    std::to_string(as.stream_age_seconds());
    const SyncVerdict verdict = judge_active(view, standby, gone_for_s);
    if (verdict == SyncVerdict::IN_SYNC) {
      *detail = {{"standby", standby},
                 {"active", active},
                 {"standby_node", as.peer_node()},
                 {"state", "STANDBY_READY"},
                 {"flows", as.peer_flows()},
                 {"active_flows", a.flows()},
                 {"full_syncs", as.full_syncs()},
                 {"stream_age_s", as.stream_age_seconds()},
                 {"said_by", "the standby's acknowledgement, read from the active"}};
      return Status::Ok();
    }
    if (verdict == SyncVerdict::NOT_YET) {
      last = (view.in_sync && view.peer == standby ? "the active's in-sync stream is the failed node's"
                                                   : "standby not in sync yet") +
             active_said;
      pause();
      continue;
    }
    if (!standby_ch) {
      Channel ch = channel_to(standby);
      bool timed_out = false;
      if (!connect_within(ch, probe, &timed_out)) {
        last = standby + ": " + (timed_out ? "no connection within " + std::to_string(probe.count()) + " ms"
                                           : std::string("connection refused or failed"));
        if (timed_out) probe = std::min(probe * 2, Ms(1500));
        pause();
        continue;
      }
      standby_ch = ch;
      if (first_answer_s < 0)
        first_answer_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    if (!status_on(standby_ch, standby, &s, &err, Ms(1500))) {
      // A kept channel that fails (the daemon restarted, say) would sit in gRPC's reconnect
      // backoff (1 s and more): back to a fresh connection per probe.
      standby_ch.reset();
      last = err + active_said;
      pause();
      continue;
    }
    last = "standby " + s.node_id() + " " + s.state() + " in_sync=" + (s.sync().in_sync() ? "1" : "0") +
           " flows=" + std::to_string(s.flows()) + active_said;
    if (s.role() == "standby" && s.state() == "STANDBY_READY" && s.sync().in_sync()) {
      // Flow counts are reported, not compared: under live traffic they differ between epochs.
      *detail = {{"standby", standby},
                 {"active", active},
                 {"standby_node", s.node_id()},
                 {"state", s.state()},
                 {"flows", s.flows()},
                 {"active_flows", a.flows()},
                 {"full_syncs", as.full_syncs()},
                 {"said_by", "the standby"},
                 {"daemon_connected_s", first_answer_s}};
      return Status::Ok();
    }
    // Not ready: the active spoke of its stream to the failed node. Asked again after 20, 40, 80,
    // then every 160 ms, so that this never polls the replacement quickly while it starts.
    std::this_thread::sleep_for(not_ready_pause);
    not_ready_pause = std::min(not_ready_pause * 2, Ms(160));
  }
  *detail = {{"standby", standby}, {"active", active}, {"last", last}};
  return Status(Code::DEADLINE_EXCEEDED, "not a standby in sync after " + std::to_string(deadline.count()) +
                                             " ms: " + last);
}

DaemonOps grpc_daemon_ops() {
  DaemonOps ops;
  ops.status = [](const std::string &addr, Ms deadline, DaemonView *v) {
    ftpair::v1::StatusReply r;
    std::string err;
    if (!status_of(addr, &r, &err, deadline)) return Unavailable(err);
    *v = {r.node_id(), r.role(), r.state(), r.sync().in_sync(), r.flows()};
    return Status::Ok();
  };
  ops.final_checkpoint = [](const std::string &addr, Ms deadline, Json *detail) {
    auto stub = ftpair::v1::Control::NewStub(grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()));
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + deadline);
    ftpair::v1::CheckpointRequest req;
    req.set_snapshot(true);
    ftpair::v1::CheckpointReply rep;
    grpc::Status st = stub->Checkpoint(&ctx, req, &rep);
    if (!st.ok())
      return Status(st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ? Code::DEADLINE_EXCEEDED : Code::UNAVAILABLE,
                    st.error_message());
    *detail = {{"epoch", rep.epoch()}, {"acked_epoch", rep.acked_epoch()}, {"records", rep.records()},
               {"snapshot", rep.snapshot_path()}};
    return Status::Ok();
  };
  return ops;
}

}  // namespace ftpair::virt
