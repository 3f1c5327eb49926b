/* The standby's end of Replication.Sync: the one Sync service, around an Applier. The daemon
 * serves it with hooks into its role (refuse while active, the generation, the standby state);
 * SyncServer puts it on a gRPC server of its own for the unit tests and the benchmarks, which
 * need a real standby over real sockets without a daemon. The service logs (component "sync")
 * one line when a full sync starts, one when it is applied (records, seconds), and one per
 * refused stream with the reason.
 *
 * The stream is served on gRPC's asynchronous API (SyncEndpoint): each stream gets a thread
 * of ours and a completion queue of its own, and that thread reads a checkpoint, applies it
 * and writes the acknowledgement, blocking in the queue's Next between them. So the thread
 * that waits for the next message is the one that polls the socket for it, and nothing is
 * handed between threads on the commit path (on the synchronous API a thread of gRPC's
 * pool polled and woke the handler's thread: tools/bench/grpc_rtt measures the two). */
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "checkpoint/applier.h"
#include "common/status.h"
#include "dataplane/flow_table.h"
#include "replication.grpc.pb.h"

namespace ftpair::ckpt {

// What the service asks of its host. Every hook may be left empty.
struct SyncHooks {
  // Refuses a stream before it starts (a daemon that is active takes no checkpoints).
  std::function<Status()> admit;
  // Refuses a client that is not the peer (its certificate's identity), before anything else.
  std::function<Status(const grpc::ServerContext &)> authorize;
  // The generation the hello is judged against (0 when unset).
  std::function<uint64_t()> generation;
  // The stream moved the standby to in sync (true) or out of it (false).
  std::function<void(bool in_sync)> on_sync_state;
  // This node's role state, sent in every acknowledgement (Ack.role_state); unset when empty.
  std::function<v1::RoleState()> role_state;
  /* The stream's thread (gRPC's, for the stream's life) at real-time priority while it
   * applies epochs, as the active's commit path (common/realtime.h); a full sync's chunks at
   * normal priority. */
  bool realtime = false;
  /* The scrub after each acknowledged epoch rereads scrub_budget() slots: 2,048 a
   * millisecond since the previous one, at least this many and at most 2,048. So its cost
   * follows time, not the epoch rate (strict mode can close 10,000 epochs a second). */
  uint32_t scrub_floor_slots = 256;
  // This node's workers' CPUs: the real-time stream thread keeps off them (common/realtime.h).
  std::vector<int> worker_cpus;
};

// Slots to scrub after an epoch that came elapsed_ns after the previous scrub.
inline uint32_t scrub_budget(int64_t elapsed_ns, uint32_t floor_slots) {
  constexpr uint32_t kPerMs = 2048;
  const int64_t by_time = elapsed_ns <= 0 ? 0 : elapsed_ns / 1000000 * kPerMs + elapsed_ns % 1000000 * kPerMs / 1000000;
  const uint32_t t = by_time >= kPerMs ? kPerMs : uint32_t(by_time);
  return t < floor_slots ? (floor_slots < kPerMs ? floor_slots : kPerMs) : t;
}

// One Sync stream's reads and writes, one at a time, each blocking until it completes.
class SyncStreamIO {
 public:
  virtual ~SyncStreamIO() = default;
  virtual bool read(v1::SyncMessage *m) = 0;
  virtual bool write(const v1::SyncReply &r) = 0;
};

class SyncService {
 public:
  SyncService(Applier &ap, SyncHooks hooks) : ap_(ap), hooks_(std::move(hooks)) {}

  // One stream at a time: a new stream cancels the previous one, as a reconnecting active
  // replaces its old stream. Runs on the stream's thread until the stream ends.
  grpc::Status sync(grpc::ServerContext *ctx, SyncStreamIO &stream);

  // Cancels the stream being served, if any (a node that becomes active).
  void cancel_current();
  // The error of every stream that ended with one.
  std::vector<std::string> errors();
  // Why the newest refused stream was refused; empty once a stream got through its hello.
  std::string last_refusal() const;
  unsigned streams() const { return streams_.load(); }

 private:
  grpc::Status serve(SyncStreamIO &stream);

  void refused(const std::string &why);
  void sync_state(bool in_sync) {
    if (hooks_.on_sync_state) hooks_.on_sync_state(in_sync);
  }

  Applier &ap_;
  const SyncHooks hooks_;
  std::mutex stream_mu_;
  mutable std::mutex cur_mu_;
  grpc::ServerContext *cur_ctx_ = nullptr;
  std::vector<std::string> errors_;   // cur_mu_
  std::string last_refusal_;          // cur_mu_
  std::atomic<unsigned> streams_{0};
};

/* Replication.Sync on one grpc::Server, through the asynchronous API, for a SyncService (which
 * may be served on several servers: a new instance serves on its temporary and its final
 * port). attach() before the server is built, start() once it is, stop() after the server's
 * Shutdown (it drains the queues and joins the threads; the destructor does it too). */
class SyncEndpoint {
 public:
  explicit SyncEndpoint(SyncService &svc);
  ~SyncEndpoint();
  SyncEndpoint(const SyncEndpoint &) = delete;
  SyncEndpoint &operator=(const SyncEndpoint &) = delete;

  void attach(grpc::ServerBuilder *b);
  void start();
  void stop();

 private:
  struct Call;
  void accept_loop();
  void request_next();
  void serve(Call *call);
  void reap(bool all);

  SyncService &svc_;
  v1::Replication::AsyncService async_;
  std::unique_ptr<grpc::ServerCompletionQueue> cq_;
  std::thread acceptor_;
  std::unique_ptr<Call> pending_;  // the call requested from gRPC, not yet arrived (acceptor)
  struct Serving {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex serving_mu_;
  std::vector<Serving> serving_;
  bool started_ = false;
  std::mutex stop_mu_;
  bool stopping_ = false;  // stop_mu_: stop() has begun, the queue is shut down, request nothing more
};

// A flow table, its applier and a Sync server on 127.0.0.1.
class SyncServer {
 public:
  // want_port 0 = any free port. Returns null and sets *err on failure.
  /* workers: this standby's shards, each table of capacity flows, a flow homed by its LAN
   * host as the dataplane does (dp::host_bucket(in_ip) % workers). */
  static std::unique_ptr<SyncServer> start(const std::string &name, uint32_t capacity, int want_port,
                                           std::string *err, unsigned workers = 1, SyncHooks hooks = {});
  ~SyncServer();
  void shutdown();

  int port() const { return port_; }
  dp::FlowTable &table() { return *tables_[0]; }
  dp::FlowTable &table(unsigned w) { return *tables_[w]; }
  unsigned workers() const { return unsigned(tables_.size()); }
  std::mutex &table_mutex() { return mu_; }
  Applier &applier() { return *ap_; }
  SyncService &service() { return *svc_; }

 private:
  SyncServer() = default;
  std::vector<std::unique_ptr<dp::FlowTable>> tables_;
  std::mutex mu_;
  std::unique_ptr<Applier> ap_;
  std::unique_ptr<SyncService> svc_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<SyncEndpoint> endpoint_;
  int port_ = 0;
};

}  // namespace ftpair::ckpt
