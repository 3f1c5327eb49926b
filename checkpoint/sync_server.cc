#include "checkpoint/sync_server.h"

#include <algorithm>

#include "dataplane/port_pool.h"

#include <chrono>
#include <optional>
#include <thread>

#include "common/clock.h"
#include "common/log.h"
#include "common/realtime.h"
#include "proto/rpc/rpc.h"

namespace ftpair::ckpt {

namespace {

spdlog::logger &logger() {
  static auto &L = log::component("sync");
  return L;
}
}  // namespace

grpc::Status SyncService::sync(grpc::ServerContext *ctx, SyncStreamIO &stream) {
  if (hooks_.authorize) {
    Status st = hooks_.authorize(*ctx);
    if (!st.ok()) {
      refused(st.message());
      return rpc::to_grpc(st);
    }
  }
  if (hooks_.admit) {
    Status st = hooks_.admit();
    if (!st.ok()) {
      refused(st.message());
      return rpc::to_grpc(st);
    }
  }
  {
    // The newest stream wins: an active that reconnects must not wait for a dead one.
    std::lock_guard<std::mutex> g(cur_mu_);
    if (cur_ctx_) cur_ctx_->TryCancel();
  }
  std::lock_guard<std::mutex> one(stream_mu_);
  {
    std::lock_guard<std::mutex> g(cur_mu_);
    cur_ctx_ = ctx;
  }
  grpc::Status result = serve(stream);
  ap_.end_stream();
  {
    std::lock_guard<std::mutex> g(cur_mu_);
    if (cur_ctx_ == ctx) cur_ctx_ = nullptr;
    if (!result.ok()) errors_.push_back(result.error_message());
  }
  streams_++;
  if (!result.ok()) refused(result.error_message());
  return result;
}

// An active retries every connect backoff: a refusal is logged once until its reason changes
// or a stream gets through the hello.
void SyncService::refused(const std::string &why) {
  std::lock_guard<std::mutex> g(cur_mu_);
  if (why != last_refusal_) logger().warn("refused the active's stream: {}", why);
  last_refusal_ = why;
}

void SyncService::cancel_current() {
  std::lock_guard<std::mutex> g(cur_mu_);
  if (cur_ctx_) cur_ctx_->TryCancel();
}

std::string SyncService::last_refusal() const {
  std::lock_guard<std::mutex> g(cur_mu_);
  return last_refusal_;
}

std::vector<std::string> SyncService::errors() {
  std::lock_guard<std::mutex> g(cur_mu_);
  return errors_;
}

grpc::Status SyncService::serve(SyncStreamIO &stream) {
  ap_.begin_stream();
  const RealtimeScope rt(hooks_.realtime, kRealtimePriorityCommit, hooks_.worker_cpus);
  v1::SyncMessage m;
  if (!stream.read(&m)) return grpc::Status(grpc::StatusCode::CANCELLED, "stream closed before hello");
  if (!m.has_hello()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be a hello");
  v1::SyncReply reply;
  Status st = ap_.on_hello(m.hello(), hooks_.generation ? hooks_.generation() : 0, reply.mutable_hello());
  if (!st.ok()) {
    sync_state(false);  // a refused hello leaves this copy behind its active
    return rpc::to_grpc(st);
  }
  if (!stream.write(reply)) return grpc::Status(grpc::StatusCode::CANCELLED, "stream closed after hello");
  {
    std::lock_guard<std::mutex> g(cur_mu_);
    last_refusal_.clear();
  }
  sync_state(ap_.in_sync());
  int64_t full_start_ns = 0;
  uint64_t full_records = 0;
  int64_t last_scrub_ns = mono_ns();
  while (stream.read(&m)) {
    if (!m.has_checkpoint())
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "expected a checkpoint after hello");
    const v1::Checkpoint &c = m.checkpoint();
    bool ack = false;
    v1::SyncReply r;
    const int64_t received_ns = mono_ns();
    {
      // A full sync's chunks are long: at normal priority (common/realtime.h).
      std::optional<NormalPriority> normal;
      if (c.full()) normal.emplace();
      st = ap_.on_checkpoint(c, &ack, r.mutable_ack());
    }
    if (ack) r.mutable_ack()->set_apply_ns(uint64_t(mono_ns() - received_ns));
    if (!st.ok()) {
      sync_state(false);
      return rpc::to_grpc(st);
    }
    if (c.full()) {
      if (c.chunk() == 0) {
        full_start_ns = received_ns;
        full_records = 0;
        logger().info("full sync of epoch {} from {} started: {} flows at the cut", c.epoch(), ap_.peer_node(),
                      c.flows_at_cut());
      }
      for (const auto &b : c.batches()) full_records += b.count();
      if (ack)
        logger().info("full sync of epoch {} applied: {} records in {:.3f} s, {} flows", c.epoch(), full_records,
                      double(mono_ns() - full_start_ns) / 1e9, r.ack().flows());
    }
    if (ack) {
      if (ap_.in_sync()) sync_state(true);
      // After sync_state: the acknowledgement of a full sync says STANDBY_READY.
      if (hooks_.role_state) r.mutable_ack()->set_role_state(hooks_.role_state());
      if (!stream.write(r)) break;
      /* After the acknowledgement, so that it adds nothing to the commit path. One hash of
       * 32 bytes a slot, 2,048 slots a millisecond: a table of 1M slots is reread about
       * every half second. */
      const int64_t now = mono_ns();
      st = ap_.scrub_step(scrub_budget(now - last_scrub_ns, hooks_.scrub_floor_slots));
      last_scrub_ns = now;
      if (!st.ok()) {
        sync_state(false);
        return rpc::to_grpc(st);
      }
    }
  }
  return grpc::Status::OK;
}

namespace {
void *tag(intptr_t n) { return reinterpret_cast<void *>(n); }
constexpr intptr_t kTagNewCall = 1, kTagOp = 2;
}  // namespace

// One stream: its context, its reader-writer and the completion queue its thread drives.
struct SyncEndpoint::Call {
  grpc::ServerContext ctx;
  grpc::ServerAsyncReaderWriter<v1::SyncReply, v1::SyncMessage> rw{&ctx};
  grpc::CompletionQueue cq;
};

namespace {
// Reads and writes of one Call, each started and then waited for on the call's own queue by
// the thread that serves it.
class AsyncStreamIO final : public SyncStreamIO {
 public:
  AsyncStreamIO(grpc::ServerAsyncReaderWriter<v1::SyncReply, v1::SyncMessage> &rw, grpc::CompletionQueue &cq)
      : rw_(rw), cq_(cq) {}
  bool read(v1::SyncMessage *m) override {
    rw_.Read(m, tag(kTagOp));
    return wait();
  }
  bool write(const v1::SyncReply &r) override {
    rw_.Write(r, tag(kTagOp));
    return wait();
  }
  // Completes the stream with st (the active reads it as the stream's end).
  void finish(const grpc::Status &st) {
    rw_.Finish(st, tag(kTagOp));
    wait();
  }

 private:
  bool wait() {
    void *t = nullptr;
    bool ok = false;
    return cq_.Next(&t, &ok) && ok;
  }
  grpc::ServerAsyncReaderWriter<v1::SyncReply, v1::SyncMessage> &rw_;
  grpc::CompletionQueue &cq_;
};

void drain(grpc::CompletionQueue &cq) {
  void *t;
  bool ok;
  while (cq.Next(&t, &ok)) {
  }
}
}  // namespace

SyncEndpoint::SyncEndpoint(SyncService &svc) : svc_(svc) {}

SyncEndpoint::~SyncEndpoint() { stop(); }

void SyncEndpoint::attach(grpc::ServerBuilder *b) {
  b->RegisterService(&async_);
  cq_ = b->AddCompletionQueue();
}

void SyncEndpoint::start() {
  if (!cq_ || started_) return;
  started_ = true;
  request_next();
  acceptor_ = std::thread([this] { accept_loop(); });
}

void SyncEndpoint::request_next() {
  // stop() shuts the queue down under the same lock: no request may follow that.
  std::lock_guard<std::mutex> g(stop_mu_);
  if (stopping_) return;
  pending_ = std::make_unique<Call>();
  async_.RequestSync(&pending_->ctx, &pending_->rw, &pending_->cq, cq_.get(), tag(kTagNewCall));
}

void SyncEndpoint::accept_loop() {
  void *t;
  bool ok;
  while (cq_->Next(&t, &ok)) {
    if (!ok) continue;  // the server shuts down: the request ends unfilled, the queue follows
    // A stream arrived: a thread of its own serves it, and the next one is requested.
    Call *call = pending_.release();
    auto done = std::make_shared<std::atomic<bool>>(false);
    std::thread th([this, call, done] {
      serve(call);
      done->store(true);
    });
    std::lock_guard<std::mutex> g(serving_mu_);
    serving_.push_back({std::move(th), done});
    request_next();
    reap(false);
  }
  pending_.reset();
}

void SyncEndpoint::serve(Call *c) {
  std::unique_ptr<Call> call(c);
  AsyncStreamIO io(call->rw, call->cq);
  const grpc::Status st = svc_.sync(&call->ctx, io);
  io.finish(st);
  call->cq.Shutdown();
  drain(call->cq);
}

// Joins the streams' threads that have ended (serving_mu_ held), or all of them.
void SyncEndpoint::reap(bool all) {
  for (auto it = serving_.begin(); it != serving_.end();) {
    if (all || it->done->load()) {
      it->thread.join();
      it = serving_.erase(it);
    } else {
      ++it;
    }
  }
}

void SyncEndpoint::stop() {
  if (!cq_) return;
  {
    // A stream accepted just before the server's shutdown may still be handed to the acceptor,
    // which then requests the next one: not on a queue that is shut down (gRPC asserts).
    std::lock_guard<std::mutex> g(stop_mu_);
    if (stopping_) return;  // stopped already
    stopping_ = true;
    cq_->Shutdown();
  }
  if (acceptor_.joinable())
    acceptor_.join();
  else
    drain(*cq_);
  std::lock_guard<std::mutex> g(serving_mu_);
  reap(true);
}

std::unique_ptr<SyncServer> SyncServer::start(const std::string &name, uint32_t capacity, int want_port,
                                              std::string *err, unsigned workers, SyncHooks hooks) {
  std::unique_ptr<SyncServer> s(new SyncServer());
  std::vector<dp::FlowTable *> tables;
  for (unsigned w = 0; w < std::max(1u, workers); w++) {
    dp::FlowTableConfig c;
    c.capacity = capacity;
    c.name = w ? name + "_" + std::to_string(w) : name;
    s->tables_.push_back(dp::FlowTable::create(c, err));
    if (!s->tables_.back()) return nullptr;
    tables.push_back(s->tables_.back().get());
  }
  const unsigned n = unsigned(tables.size());
  s->ap_ = std::make_unique<Applier>(
      tables, [n](const dp::FlowState &st) { return unsigned(dp::host_bucket(st.in_ip)) % n; }, s->mu_, name);
  s->svc_ = std::make_unique<SyncService>(*s->ap_, std::move(hooks));
  // The port may be briefly unavailable right after a previous server closed it.
  for (int attempt = 0; attempt < 50 && !s->server_; attempt++) {
    grpc::ServerBuilder b;
    int got = 0;
    b.AddListeningPort("127.0.0.1:" + std::to_string(want_port), grpc::InsecureServerCredentials(), &got);
    rpc::apply_server_policy(&b);
    auto ep = std::make_unique<SyncEndpoint>(*s->svc_);
    ep->attach(&b);
    auto srv = b.BuildAndStart();
    if (srv && got > 0) {
      s->server_ = std::move(srv);
      s->port_ = got;
      s->endpoint_ = std::move(ep);
      s->endpoint_->start();
    } else {
      if (srv) srv->Shutdown();
      ep->stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  if (!s->server_) {
    *err = "cannot listen on 127.0.0.1:" + std::to_string(want_port);
    return nullptr;
  }
  return s;
}

void SyncServer::shutdown() {
  if (!server_) return;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100));
  server_->Wait();
  if (endpoint_) endpoint_->stop();
  server_.reset();
  endpoint_.reset();
}

SyncServer::~SyncServer() { shutdown(); }

}  // namespace ftpair::ckpt
