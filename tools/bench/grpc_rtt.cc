/* grpc_rtt: the floor under strict mode's "ack" stage. One small checkpoint and its
 * acknowledgement, round trip, on a loopback Sync stream (the real service, real sockets),
 * through each of gRPC's ways of driving the stream:
 *
 *   sync         both ends on gRPC's synchronous API, the client writing and reading on one
 *                thread (the fewest hand-offs that API allows);
 *   sync_reader  as the engine does today (checkpoint/sync_link.cc): one thread writes, another
 *                reads the acknowledgements and hands each back;
 *   async        both ends on the asynchronous API, each with a completion queue that one
 *                thread of ours drives, blocking in Next();
 *   async_spin   the same, the two threads polling their queues instead of blocking (each
 *                takes a CPU whole: on two vCPUs, the whole machine);
 *   async_spin_active, async_spin_standby   only one end polls, the other blocks;
 *   engine_sync  the engine's shape before the asynchronous link: one thread writes (the
 *                checkpoint thread), another reads and takes the time itself (the link
 *                thread, which publishes the acked epoch to the workers with no hand-back);
 *                the standby on the synchronous API (checkpoint/sync_server.cc);
 *   engine_async the asynchronous link's shape (checkpoint/sync_link.cc): the writing thread
 *                starts each Write, one thread of ours drives the client's completion queue
 *                and takes the time when the acknowledgement's Read completes; the standby
 *                synchronous, as in the daemon;
 *   engine_async_spin  the same, the driving thread polling while an epoch is unacknowledged.
 *
 * Emits grpc_rtt_us_p50 / _p99 {api} as JSON lines. Usage: grpc_rtt [round_trips] [api...]
 */
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "replication.grpc.pb.h"

namespace v1 = ftpair::v1;
using Clock = std::chrono::steady_clock;

namespace {

[[noreturn]] void die(const std::string &why) {
  std::fprintf(stderr, "grpc_rtt: %s\n", why.c_str());
  std::exit(1);
}

void *tag(intptr_t n) { return reinterpret_cast<void *>(n); }

// Waits for the next event of cq: blocking, or polling with a zero deadline.
bool next(grpc::CompletionQueue &cq, bool spin, void **t, bool *ok) {
  if (!spin) return cq.Next(t, ok);
  for (;;) {
    switch (cq.AsyncNext(t, ok, gpr_time_0(GPR_CLOCK_MONOTONIC))) {
      case grpc::CompletionQueue::GOT_EVENT: return true;
      case grpc::CompletionQueue::SHUTDOWN: return false;
      case grpc::CompletionQueue::TIMEOUT: break;
    }
  }
}

// The standby's end on the synchronous API: an acknowledgement per message.
class SyncEcho final : public v1::Replication::Service {
  grpc::Status Sync(grpc::ServerContext *, grpc::ServerReaderWriter<v1::SyncReply, v1::SyncMessage> *s) override {
    v1::SyncMessage m;
    v1::SyncReply r;
    while (s->Read(&m)) {
      r.mutable_ack()->set_epoch(m.checkpoint().epoch());
      if (!s->Write(r)) break;
    }
    return grpc::Status::OK;
  }
};

// The standby's end on the asynchronous API: one stream, one thread driving its queue.
void async_echo(v1::Replication::AsyncService &svc, grpc::ServerCompletionQueue &cq, bool spin) {
  grpc::ServerContext ctx;
  grpc::ServerAsyncReaderWriter<v1::SyncReply, v1::SyncMessage> rw(&ctx);
  svc.RequestSync(&ctx, &rw, &cq, &cq, tag(1));
  v1::SyncMessage m;
  v1::SyncReply r;
  void *t;
  bool ok;
  while (next(cq, spin, &t, &ok)) {
    const intptr_t what = reinterpret_cast<intptr_t>(t);
    if (what == 4) return;  // finished
    if (!ok) {
      if (what == 1) return;  // the server shuts down before a call came
      rw.Finish(grpc::Status::OK, tag(4));
      continue;
    }
    if (what == 1 || what == 3) {
      rw.Read(&m, tag(2));  // accepted, or the last acknowledgement went: read the next
    } else if (what == 2) {
      r.mutable_ack()->set_epoch(m.checkpoint().epoch());
      rw.Write(r, tag(3));
    }
  }
}

struct Result {
  std::vector<double> us;
};

void report(const std::string &api, std::vector<double> us) {
  std::sort(us.begin(), us.end());
  const auto pct = [&](double p) { return us[std::min(us.size() - 1, size_t(p * double(us.size())))]; };
  std::fprintf(stderr, "%-12s %zu round trips: p50 %.1f us, p99 %.1f us\n", api.c_str(), us.size(), pct(0.5),
               pct(0.99));
  for (const char *which : {"p50", "p99"})
    std::printf("{\"name\": \"grpc_rtt_us_%s\", \"value\": %.2f, \"unit\": \"us\", \"params\": {\"api\": \"%s\", "
                "\"round_trips\": %zu, \"message\": \"checkpoint with an epoch, its ack\"}}\n",
                which, pct(which[1] == '5' ? 0.5 : 0.99), api.c_str(), us.size());
  std::fflush(stdout);
}

v1::SyncMessage checkpoint(uint64_t epoch) {
  v1::SyncMessage m;
  m.mutable_checkpoint()->set_epoch(epoch);
  return m;
}

std::vector<double> run_sync(v1::Replication::Stub &stub, int n, bool reader_thread) {
  grpc::ClientContext ctx;
  auto s = stub.Sync(&ctx);
  std::vector<double> us;
  us.reserve(size_t(n));
  if (!reader_thread) {
    v1::SyncReply r;
    for (int i = 0; i < n; i++) {
      const auto t0 = Clock::now();
      if (!s->Write(checkpoint(uint64_t(i))) || !s->Read(&r)) die("sync: the stream ended");
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
  } else {
    // The acknowledgement comes back through a reader thread and a condition variable, as
    // the engine's link thread hands acks to the checkpoint thread.
    std::mutex mu;
    std::condition_variable cv;
    uint64_t acked = 0;
    bool ended = false;
    std::thread reader([&] {
      v1::SyncReply r;
      while (s->Read(&r)) {
        std::lock_guard<std::mutex> g(mu);
        acked = r.ack().epoch() + 1;
        cv.notify_one();
      }
      std::lock_guard<std::mutex> g(mu);
      ended = true;
      cv.notify_one();
    });
    for (int i = 0; i < n; i++) {
      const auto t0 = Clock::now();
      if (!s->Write(checkpoint(uint64_t(i)))) die("sync_reader: the stream ended");
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return acked > uint64_t(i) || ended; });
      if (ended) die("sync_reader: the stream ended");
      us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    s->WritesDone();
    reader.join();
    s->Finish();
    return us;
  }
  s->WritesDone();
  s->Finish();
  return us;
}

/* The engine's shapes: a writer (the checkpoint thread) and a second thread that sees the
 * acknowledgement and takes the time, as the engine's link thread publishes the acked epoch
 * to the workers itself. The writer waits for the acknowledgement before the next write
 * (strict mode at low load: one epoch in flight), outside the timed interval. */
std::vector<double> run_engine(v1::Replication::Stub &stub, int n, bool async, bool spin) {
  std::vector<double> us(size_t(n), 0.0);
  std::vector<Clock::time_point> t0(static_cast<size_t>(n));
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<int> acked{0};  // epochs acknowledged (an epoch i is acked when acked > i)
  std::atomic<bool> ended{false};
  const auto took = [&](uint64_t epoch) {
    const size_t i = size_t(epoch);
    if (i < us.size()) us[i] = std::chrono::duration<double, std::micro>(Clock::now() - t0[i]).count();
    std::lock_guard<std::mutex> g(mu);
    acked.store(int(epoch) + 1);
    cv.notify_one();
  };
  const auto wait_ack = [&](int i) {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return acked.load() > i || ended.load(); });
    if (ended.load()) die("engine: the stream ended");
  };
  grpc::ClientContext ctx;
  if (!async) {
    auto s = stub.Sync(&ctx);
    std::thread reader([&] {
      v1::SyncReply r;
      while (s->Read(&r)) took(r.ack().epoch());
      std::lock_guard<std::mutex> g(mu);
      ended.store(true);
      cv.notify_one();
    });
    for (int i = 0; i < n; i++) {
      t0[size_t(i)] = Clock::now();
      if (!s->Write(checkpoint(uint64_t(i)))) die("engine_sync: the stream ended");
      wait_ack(i);
    }
    s->WritesDone();
    reader.join();
    s->Finish();
    return us;
  }
  grpc::CompletionQueue cq;
  auto rw = stub.PrepareAsyncSync(&ctx, &cq);
  rw->StartCall(tag(1));
  // Writes completed, counting StartCall's (gRPC sends the initial metadata with the write
  // operations: the first Write waits for it).
  std::atomic<int> written{0};
  std::thread driver([&] {
    v1::SyncReply r;
    void *t;
    bool ok;
    bool reading = false;
    for (;;) {
      // Polls only while an epoch is out (written, not acknowledged), as the link would.
      const bool poll = spin && acked.load() < n && acked.load() <= written.load();
      if (!next(cq, poll, &t, &ok)) break;
      const intptr_t what = reinterpret_cast<intptr_t>(t);
      if (!ok && what != 5 && what != 6) {
        std::lock_guard<std::mutex> g(mu);
        ended.store(true);
        cv.notify_one();
        break;
      }
      if (what == 1 && !reading) {
        reading = true;
        written.fetch_add(1);
        rw->Read(&r, tag(3));
      } else if (what == 2) {
        written.fetch_add(1);
      } else if (what == 3) {
        took(r.ack().epoch());
        rw->Read(&r, tag(3));
      } else if (what == 5 || what == 6) {
        break;
      }
    }
  });
  for (int i = 0; i < n; i++) {
    while (written.load() <= i && !ended.load()) std::this_thread::yield();  // one Write at a time
    t0[size_t(i)] = Clock::now();
    rw->Write(checkpoint(uint64_t(i)), tag(2));
    wait_ack(i);
  }
  ctx.TryCancel();
  driver.join();
  grpc::Status st;
  rw->Finish(&st, tag(6));
  cq.Shutdown();
  void *t;
  bool ok;
  while (cq.Next(&t, &ok)) {
  }
  return us;
}

std::vector<double> run_async(v1::Replication::Stub &stub, int n, bool spin) {
  grpc::CompletionQueue cq;
  grpc::ClientContext ctx;
  auto rw = stub.PrepareAsyncSync(&ctx, &cq);
  rw->StartCall(tag(1));
  void *t;
  bool ok;
  if (!next(cq, spin, &t, &ok) || !ok) die("async: the call did not start");
  std::vector<double> us;
  us.reserve(size_t(n));
  v1::SyncReply r;
  for (int i = 0; i < n; i++) {
    const auto t0 = Clock::now();
    const v1::SyncMessage m = checkpoint(uint64_t(i));
    rw->Write(m, tag(2));
    rw->Read(&r, tag(3));
    for (int got = 0; got < 2;) {
      if (!next(cq, spin, &t, &ok) || !ok) die("async: the stream ended");
      got++;
    }
    us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  rw->WritesDone(tag(5));
  if (!next(cq, spin, &t, &ok)) die("async: no WritesDone");
  grpc::Status st;
  rw->Finish(&st, tag(6));
  if (!next(cq, spin, &t, &ok)) die("async: no Finish");
  cq.Shutdown();
  while (cq.Next(&t, &ok)) {
  }
  return us;
}

}  // namespace

int main(int argc, char **argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 20000;
  std::vector<std::string> apis;
  for (int i = 2; i < argc; i++) apis.emplace_back(argv[i]);
  const std::vector<std::string> known = {"sync",          "sync_reader",  "async",       "async_spin",
                                          "async_spin_active", "async_spin_standby", "engine_sync",
                                          "engine_async",  "engine_async_spin", "engine_sync_server_async",
                                          "engine_async_server_async"};
  if (apis.empty()) apis = known;
  if (n < 100) die("round_trips: at least 100");
  for (const std::string &api : apis) {
    if (std::find(known.begin(), known.end(), api) == known.end()) {
      std::string all;
      for (const std::string &k : known) all += (all.empty() ? "" : ", ") + k;
      die("unknown api '" + api + "' (" + all + ")");
    }
    const bool engine = api.rfind("engine", 0) == 0;
    // The server: asynchronous for the async* shapes and the engine's *_server_async ones.
    const bool server_async = api.size() > 13 && api.compare(api.size() - 13, 13, "_server_async") == 0;
    const bool async = api.rfind("async", 0) == 0 || server_async;
    const bool spin_active = api == "async_spin" || api == "async_spin_active";
    const bool spin_standby = api == "async_spin" || api == "async_spin_standby";
    SyncEcho sync_svc;
    v1::Replication::AsyncService async_svc;
    grpc::ServerBuilder b;
    int port = 0;
    b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    std::unique_ptr<grpc::ServerCompletionQueue> scq;
    if (async) {
      b.RegisterService(&async_svc);
      scq = b.AddCompletionQueue();
    } else {
      b.RegisterService(&sync_svc);
    }
    auto server = b.BuildAndStart();
    if (!server || port == 0) die("cannot listen on 127.0.0.1");
    std::thread echo;
    if (async) echo = std::thread([&] { async_echo(async_svc, *scq, spin_standby); });
    auto stub = v1::Replication::NewStub(
        grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
    std::vector<double> us = engine  ? run_engine(*stub, n, api.rfind("engine_async", 0) == 0, api == "engine_async_spin")
                             : async ? run_async(*stub, n, spin_active)
                                     : run_sync(*stub, n, api == "sync_reader");
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    if (scq) scq->Shutdown();
    if (echo.joinable()) echo.join();
    if (scq) {
      void *t;
      bool ok;
      while (scq->Next(&t, &ok)) {
      }
    }
    us.erase(us.begin(), us.begin() + std::min<size_t>(us.size() / 10, 1000));  // the first ones warm up
    report(api, std::move(us));
  }
  return 0;
}
