/* The daemon: one node's dataplane, its checkpoint engine and applier, its role, and the
 * management surface (gRPC and /metrics). The gRPC handlers and any tool call the same
 * core functions here and map their Status. */
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "checkpoint/applier.h"
#include "checkpoint/engine.h"
#include "control/config.h"
#include "control/http_server.h"
#include "control/node.h"
#include "control/status.h"
#include "control.pb.h"
#include "failover/role.h"

namespace ftpair {

class Daemon {
 public:
  explicit Daemon(const Config &cfg);
  ~Daemon();

  // Builds the node (EAL must be up), starts gRPC, /metrics and the worker, takes a role.
  Status start();
  // Clean shutdown: stops replication and the worker; an active writes a snapshot.
  void stop();

  // ---- core operations (gRPC handlers and tests call these) ----
  void status(v1::StatusReply *out);
  Status checkpoint(bool snapshot, v1::CheckpointReply *out);
  Status flows(uint32_t limit, v1::FlowsReply *out);
  Status become_active(const std::string &why);
  Status become_standby(const std::string &why);

  fo::Role role() const { return role_.load(); }
  uint64_t generation() const { return generation_value_.load(); }
  Node &node() { return *node_; }
  ckpt::Engine &engine() { return *engine_; }
  ckpt::Applier &applier() { return *applier_; }
  std::mutex &table_mutex() { return table_mu_; }
  const Config &config() const { return cfg_; }
  uint16_t grpc_port() const { return grpc_port_; }
  uint16_t metrics_port() const { return http_.port(); }
  std::string render_metrics();
  bool dataplane_healthy() const;

 private:
  class ReplicationService;
  class ControlService;
  Status restore_from_snapshot();
  Status write_snapshot(bool clean, std::string *path);
  std::string snapshot_path() const { return cfg_.state_dir + "/flows.snap"; }

  Config cfg_;
  fo::Generation generation_;
  std::atomic<uint64_t> generation_value_{0};
  std::atomic<fo::Role> role_{fo::Role::BOOT};
  std::mutex role_mu_;
  std::mutex table_mu_;
  std::unique_ptr<Node> node_;
  std::unique_ptr<ckpt::Engine> engine_;
  std::unique_ptr<ckpt::Applier> applier_;
  std::unique_ptr<ReplicationService> repl_svc_;
  std::unique_ptr<ControlService> ctl_svc_;
  std::unique_ptr<grpc::Server> grpc_;
  uint16_t grpc_port_ = 0;
  HttpServer http_;
  bool started_ = false;
};

}  // namespace ftpair
