/* The daemon's gRPC services, thin: each handler reads its request, calls the daemon's core
 * function (the one a test or a tool would call) and maps the Status with rpc::to_grpc.
 * ftpair.v1.Replication is checkpoint/sync_server's SyncService, served with hooks. */
#pragma once

#include <grpcpp/grpcpp.h>

#include "control.grpc.pb.h"
#include "peer.grpc.pb.h"

namespace ftpair {

class Daemon;

// ftpair.v1.Control: operators and ftpairctl.
class ControlService final : public v1::Control::Service {
 public:
  explicit ControlService(Daemon &d) : d_(d) {}
  // With wait_in_sync_ms, a long poll (Daemon::wait_in_sync).
  grpc::Status Status(grpc::ServerContext *ctx, const v1::StatusRequest *req, v1::StatusReply *out) override;
  grpc::Status Checkpoint(grpc::ServerContext *, const v1::CheckpointRequest *req, v1::CheckpointReply *out) override;
  grpc::Status Flows(grpc::ServerContext *, const v1::FlowsRequest *req, v1::FlowsReply *out) override;
  grpc::Status Config(grpc::ServerContext *, const v1::ConfigRequest *, v1::ConfigReply *out) override;
  grpc::Status Switchover(grpc::ServerContext *, const v1::SwitchoverRequest *req, v1::SwitchoverReply *out) override;
  // Reads the binary at most 32 MiB/s (512 MiB at most), at normal priority, then stages it.
  grpc::Status StageUpgrade(grpc::ServerContext *, grpc::ServerReader<v1::UpgradeChunk> *reader,
                            v1::UpgradeReply *out) override;
  grpc::Status Upgrade(grpc::ServerContext *, const v1::UpgradeRequest *req, v1::UpgradeReply *out) override;

 private:
  Daemon &d_;
};

// ftpair.v1.Peer: the other node of the pair (beats, takeover) and a new instance (join).
class PeerService final : public v1::Peer::Service {
 public:
  explicit PeerService(Daemon &d) : d_(d) {}
  grpc::Status Heartbeat(grpc::ServerContext *, const v1::Beat *req, v1::Beat *reply) override;
  grpc::Status Takeover(grpc::ServerContext *, const v1::TakeoverRequest *req, v1::TakeoverReply *out) override;
  grpc::Status Join(grpc::ServerContext *, const v1::JoinRequest *req, v1::JoinReply *out) override;

 private:
  Daemon &d_;
};

}  // namespace ftpair
