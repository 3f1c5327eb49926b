#include "control/grpc_services.h"

#include <chrono>
#include <thread>

#include "control/daemon.h"
#include "proto/rpc/rpc.h"

namespace ftpair {

grpc::Status ControlService::Status(grpc::ServerContext *ctx, const v1::StatusRequest *req, v1::StatusReply *out) {
  switch (d_.wait_in_sync(std::chrono::milliseconds(req->wait_in_sync_ms()), [ctx] { return ctx->IsCancelled(); })) {
    case Daemon::WaitEnd::DONE: break;
    case Daemon::WaitEnd::BUSY:
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          "refused: this node holds " + std::to_string(Daemon::kMaxInSyncWaiters) +
                              " waits for in sync already, the most it holds; ask without a wait, or later");
    case Daemon::WaitEnd::STOPPING:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "refused: the node is stopping its gRPC server");
  }
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
  /* Staging is background work: it must not delay the heartbeats that share the CPUs and the
   * management link. It reads at most 32 MiB/s (gRPC flow control then paces the sender), so
   * a bulk upload never floods the link. It runs at normal priority, not SCHED_IDLE: a thread
   * of the idle class that is preempted while it holds the allocator's arena lock (a large
   * allocation, or MALLOC_PERTURB_'s fill of one) keeps it for as long as the busy-polling
   * workers hold both CPUs, and the real-time beat threads that allocate from that arena wait
   * behind it. That stopped a lab active's beats for 20-40 ms while a 17 MB binary arrived,
   * and its standby took over (1 upload in 15). The sender declares the size in its first
   * chunk, so the buffer is allocated once, not grown by doubling. */
  constexpr double kBytesPerSecond = 32.0 * (1 << 20);
  const auto t0 = std::chrono::steady_clock::now();
  std::string bytes, claimed;
  v1::UpgradeChunk c;
  bool first = true;
  size_t declared = 0;  // the first chunk's size (0: the sender did not say)
  while (reader->Read(&c)) {
    if (first) {
      first = false;
      claimed = c.sha256();
      if (c.size() > kMaxBinary)
        return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "upgrade: the binary is larger than 512 MiB: refused");
      declared = size_t(c.size());
      bytes.reserve(declared);
    }
    if (bytes.size() + c.data().size() > kMaxBinary)
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "upgrade: the binary is larger than 512 MiB: refused");
    if (declared > 0 && bytes.size() + c.data().size() > declared)
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "upgrade: the sender declared " + std::to_string(declared) + " bytes and sent more: refused");
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
