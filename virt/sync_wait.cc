#include "virt/sync_wait.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <thread>

#include "control.grpc.pb.h"

namespace ftpair::virt {

namespace {

using Channel = std::shared_ptr<grpc::Channel>;

Channel channel_to(const std::string &addr) { return grpc::CreateChannel(addr, grpc::InsecureChannelCredentials()); }

bool status_on(const Channel &ch, const std::string &addr, ftpair::v1::StatusReply *out, std::string *err, Ms deadline) {
  auto stub = ftpair::v1::Control::NewStub(ch);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
  grpc::Status st = stub->Status(&ctx, ftpair::v1::StatusRequest(), out);
  if (!st.ok()) *err = addr + ": " + st.error_message();
  return st.ok();
}

bool status_of(const std::string &addr, ftpair::v1::StatusReply *out, std::string *err, Ms deadline = Ms(1500)) {
  return status_on(channel_to(addr), addr, out, err, deadline);
}

}  // namespace

Status wait_standby_in_sync(const std::string &standby, const std::string &active, Ms deadline, Json *detail) {
  auto t0 = std::chrono::steady_clock::now();
  auto end = t0 + deadline;
  std::string last = "no answer yet";
  double first_answer_s = -1;
  /* Until the replacement first answers, a fresh channel (and connection) for each probe, with a
   * short first deadline doubled after each attempt that timed out (to 1.5 s). A claimed spare
   * takes over an address whose old owner is gone: the first SYN can leave before its gratuitous
   * ARP and go to the old MAC, and TCP would resend it only after 1 s. A fresh connection after
   * 250 ms finds the new MAC. Once it has answered, the address has changed hands: its channel is
   * kept (until a call on it fails), as the active's is throughout, and the polls that follow cost
   * one call each, no connection. The active is asked only once the standby says it is in sync. */
  Ms probe(250);
  Channel standby_ch, active_ch = channel_to(active);
  while (std::chrono::steady_clock::now() < end) {
    ftpair::v1::StatusReply s, a;
    std::string err;
    const auto tp = std::chrono::steady_clock::now();
    Channel ch = standby_ch ? standby_ch : channel_to(standby);
    const bool answered = status_on(ch, standby, &s, &err, standby_ch ? Ms(1500) : probe);
    if (!answered && !standby_ch && std::chrono::steady_clock::now() - tp >= probe) probe = std::min(probe * 2, Ms(1500));
    // A kept channel that fails (the daemon restarted, say) would sit in gRPC's reconnect backoff
    // (1 s and more): back to a fresh connection per probe.
    if (!answered) standby_ch.reset();
    if (answered) {
      standby_ch = ch;
      if (first_answer_s < 0)
        first_answer_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      last = "standby " + s.node_id() + " " + s.state() + " in_sync=" + (s.sync().in_sync() ? "1" : "0") +
             " flows=" + std::to_string(s.flows());
      const bool standby_ready = s.role() == "standby" && s.state() == "STANDBY_READY" && s.sync().in_sync();
      if (standby_ready && status_on(active_ch, active, &a, &err, Ms(1500))) {
        // Flow counts are reported, not compared: under live traffic they differ between epochs.
        bool ok = a.role() == "active" && a.sync().in_sync() && a.sync().peer() == standby;
        last += "; active " + a.node_id() + " " + a.role() + " in_sync=" + (a.sync().in_sync() ? "1" : "0") +
                " peer=" + a.sync().peer() + " flows=" + std::to_string(a.flows());
        if (ok) {
          *detail = {{"standby", standby},
                     {"active", active},
                     {"standby_node", s.node_id()},
                     {"state", s.state()},
                     {"flows", s.flows()},
                     {"active_flows", a.flows()},
                     {"full_syncs", a.sync().full_syncs()},
                     {"daemon_answered_s", first_answer_s}};
          return Status::Ok();
        }
      } else if (standby_ready) {
        last = err;
      }
    } else {
      last = err;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
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
