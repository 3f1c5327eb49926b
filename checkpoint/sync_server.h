/* A standalone standby endpoint: the Replication.Sync service around an Applier, on its
 * own gRPC server. The daemon runs its own service (with roles); this one serves the unit
 * tests and the benchmarks, which need a real standby over real sockets without a daemon. */
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "checkpoint/applier.h"
#include "common/status.h"
#include "dataplane/flow_table.h"
#include "replication.grpc.pb.h"

namespace ftpair::ckpt {

// Maps an ftpair Status to the gRPC status the standby answers with.
grpc::Status to_grpc_status(const Status &s);

class SyncService final : public v1::Replication::Service {
 public:
  SyncService(Applier &ap, uint64_t generation) : ap_(ap), generation_(generation) {}

  // One stream at a time: a new stream cancels the previous one, as a reconnecting active
  // replaces its old stream.
  grpc::Status Sync(grpc::ServerContext *ctx,
                    grpc::ServerReaderWriter<v1::SyncReply, v1::SyncMessage> *stream) override;

  // The error of every stream that ended with one.
  std::vector<std::string> errors();
  unsigned streams() const { return streams_.load(); }

 private:
  grpc::Status serve(grpc::ServerReaderWriter<v1::SyncReply, v1::SyncMessage> *stream);

  Applier &ap_;
  const uint64_t generation_;
  std::mutex stream_mu_;
  std::mutex cur_mu_;
  grpc::ServerContext *cur_ctx_ = nullptr;
  std::vector<std::string> errors_;
  std::atomic<unsigned> streams_{0};
};

// A flow table, its applier and a Sync server on 127.0.0.1.
class SyncServer {
 public:
  // want_port 0 = any free port. Returns null and sets *err on failure.
  static std::unique_ptr<SyncServer> start(const std::string &name, uint32_t capacity, int want_port,
                                           std::string *err);
  ~SyncServer();
  void shutdown();

  int port() const { return port_; }
  dp::FlowTable &table() { return *table_; }
  std::mutex &table_mutex() { return mu_; }
  Applier &applier() { return *ap_; }
  SyncService &service() { return *svc_; }

 private:
  SyncServer() = default;
  std::unique_ptr<dp::FlowTable> table_;
  std::mutex mu_;
  std::unique_ptr<Applier> ap_;
  std::unique_ptr<SyncService> svc_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

}  // namespace ftpair::ckpt
