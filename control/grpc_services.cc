#include "control/grpc_services.h"

#include <sched.h>

#include <chrono>
#include <thread>

#include "control/daemon.h"
#include "proto/rpc/rpc.h"

namespace ftpair {

namespace {
// The calling thread runs as SCHED_IDLE while this lives (then back to what it was).
class IdlePriority {
 public:
  IdlePriority() {
    policy_ = sched_getscheduler(0);
    sched_getparam(0, &param_);
    sched_param p{};
    ok_ = sched_setscheduler(0, SCHED_IDLE, &p) == 0;
  }
  ~IdlePriority() {
    if (ok_) sched_setscheduler(0, policy_, &param_);
  }
  IdlePriority(const IdlePriority &) = delete;
  IdlePriority &operator=(const IdlePriority &) = delete;

 private:
  int policy_ = SCHED_OTHER;
  sched_param param_{};
  bool ok_ = false;
};
}  // namespace

grpc::Status ControlService::Status(grpc::ServerContext *, const v1::StatusRequest *, v1::StatusReply *out) {
  d_.status(out);
  return grpc::Status::OK;
}

grpc::Status ControlService::Checkpoint(grpc::ServerContext *, const v1::CheckpointRequest *req,
                                        v1::CheckpointReply *out) {
  return rpc::to_grpc(d_.checkpoint(req->snapshot(), out));
}

grpc::Status ControlService::Flows(grpc::ServerContext *, const v1::FlowsRequest *req, v1::FlowsReply *out) {
  return rpc::to_grpc(d_.flows(req->limit(), out));
}

grpc::Status ControlService::Config(grpc::ServerContext *, const v1::ConfigRequest *, v1::ConfigReply *out) {
  out->set_yaml(d_.config_text());
  return grpc::Status::OK;
}

grpc::Status ControlService::Switchover(grpc::ServerContext *, const v1::SwitchoverRequest *req,
                                        v1::SwitchoverReply *out) {
  return rpc::to_grpc(d_.switchover(req->force(), out));
}

grpc::Status ControlService::StageUpgrade(grpc::ServerContext *, grpc::ServerReader<v1::UpgradeChunk> *reader,
                                          v1::UpgradeReply *out) {
  constexpr size_t kMaxBinary = 512u << 20;
  // Staging is background work: it must not delay the heartbeats that share the CPUs and
  // the management link. This thread runs as SCHED_IDLE, and reads at most 32 MiB/s (gRPC
  // flow control then paces the sender), so a bulk upload never floods the link.
  constexpr double kBytesPerSecond = 32.0 * (1 << 20);
  IdlePriority idle;
  const auto t0 = std::chrono::steady_clock::now();
  std::string bytes, claimed;
  v1::UpgradeChunk c;
  while (reader->Read(&c)) {
    if (claimed.empty()) claimed = c.sha256();
    if (bytes.size() + c.data().size() > kMaxBinary)
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "upgrade: the binary is larger than 512 MiB: refused");
    bytes += c.data();
    const auto due = t0 + std::chrono::duration<double>(double(bytes.size()) / kBytesPerSecond);
    std::this_thread::sleep_until(due);
  }
  return rpc::to_grpc(d_.stage_upgrade(bytes, claimed, out));
}

grpc::Status ControlService::Upgrade(grpc::ServerContext *, const v1::UpgradeRequest *req, v1::UpgradeReply *out) {
  return rpc::to_grpc(d_.upgrade(*req, out));
}

// Every Peer RPC is the peer's alone: with mTLS its certificate must name it (peer.identities).
grpc::Status PeerService::Heartbeat(grpc::ServerContext *ctx, const v1::Beat *req, v1::Beat *reply) {
  if (Status st = d_.authorize_peer(*ctx, "Peer.Heartbeat"); !st.ok()) return rpc::to_grpc(st);
  d_.heartbeat(*req, reply);
  return grpc::Status::OK;
}

grpc::Status PeerService::Takeover(grpc::ServerContext *ctx, const v1::TakeoverRequest *req, v1::TakeoverReply *out) {
  if (Status st = d_.authorize_peer(*ctx, "Peer.Takeover"); !st.ok()) return rpc::to_grpc(st);
  return rpc::to_grpc(d_.takeover(*req, out));
}

grpc::Status PeerService::Join(grpc::ServerContext *ctx, const v1::JoinRequest *req, v1::JoinReply *out) {
  if (Status st = d_.authorize_peer(*ctx, "Peer.Join"); !st.ok()) return rpc::to_grpc(st);
  return rpc::to_grpc(d_.join(*req, out));
}

}  // namespace ftpair
