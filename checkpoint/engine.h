/* The checkpoint engine (active side).
 *
 * One thread decides when to checkpoint (interval, dirty threshold, held output in strict
 * mode, or an explicit request), quiesces the interface agent, flips the epoch, resumes the
 * workers, waits for the worker's incremental capture, encodes it in packed batches and
 * sends it on the Sync stream. A second thread owns the stream: it connects to the standby,
 * says hello, reads acknowledgements and notices when the standby is gone.
 *
 * The workers never wait for the standby: the capture is bounded by the table, sends
 * happen on this thread, and strict mode's held output has its own bounded buffer with a
 * configured fallback. */
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/status.h"
#include "dataplane/agent.h"
#include "dataplane/flow_table.h"
#include "replication.grpc.pb.h"

namespace ftpair::ckpt {

struct EngineConfig {
  std::string node_id;
  std::string peer;  // host:port of the standby's gRPC server; empty = no replication
  bool strict = false;
  bool fallback_relaxed = true;  // strict mode with no standby in sync: release output
  std::chrono::microseconds interval{1000};
  uint32_t dirty_threshold = 4096;
  std::chrono::microseconds quiesce_timeout{2000};
  std::chrono::microseconds strict_min_gap{50};  // strict: earliest re-checkpoint when output is held
  uint32_t chunk_records = 32768;
  std::chrono::milliseconds ack_timeout{1500};  // sent but unacknowledged this long: standby lost
  std::chrono::milliseconds connect_backoff{200};
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // null = insecure
  std::function<uint64_t()> generation = [] { return 0; };
};

inline constexpr double kPauseBucketsUs[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000};
inline constexpr size_t kPauseBuckets = sizeof(kPauseBucketsUs) / sizeof(kPauseBucketsUs[0]);

struct EngineStats {
  std::atomic<uint64_t> checkpoints{0}, aborted{0}, skipped_idle{0};
  std::atomic<uint64_t> records_sent{0}, bytes_sent{0}, full_syncs{0}, full_sync_records{0};
  std::atomic<uint64_t> standby_lost{0}, connects{0};
  std::atomic<uint64_t> pause_buckets[kPauseBuckets] = {};
  std::atomic<uint64_t> pause_count{0}, pause_ns_sum{0}, pause_ns_max{0};
  std::atomic<int64_t> last_checkpoint_unix_ns{0}, last_ack_unix_ns{0};
  std::atomic<double> last_full_sync_seconds{0};
  std::atomic<uint64_t> last_full_sync_records{0};  // records in the newest full sync
};

class Engine {
 public:
  Engine(EngineConfig cfg, dp::FlowTable &flows, dp::InterfaceAgent &agent);
  ~Engine();

  void start();
  void stop();
  // Checkpoints and replication run only while this node is active.
  void set_replicating(bool on);
  bool replicating() const { return replicating_.load(); }

  /* Takes a checkpoint now and waits until the standby acknowledges it. Returns the epoch
   * and records in it; UNAVAILABLE without a standby in sync (the epoch still flips),
   * DEADLINE_EXCEEDED when no acknowledgement came in time. */
  Status checkpoint_now(std::chrono::milliseconds timeout, uint64_t *epoch, uint64_t *records);
  // Runs fn while every worker is parked (serialised with checkpoints).
  Status with_workers_parked(const std::function<void()> &fn);

  bool connected() const { return connected_.load(); }
  bool in_sync() const { return in_sync_.load(); }
  uint64_t acked_epoch() const { return acked_.load(); }
  uint64_t sent_epoch() const { return sent_.load(); }
  uint64_t current_epoch() const { return flows_.epoch(); }
  uint64_t lag_bytes() const;
  double full_sync_progress() const { return progress_.load(); }
  std::string peer() const { return cfg_.peer; }
  const EngineStats &stats() const { return stats_; }
  bool strict() const { return cfg_.strict; }
  // Exact pause samples (ns) of the last checkpoints, oldest first (benchmarks).
  std::vector<uint64_t> pause_samples() const;
  void clear_pause_samples();
  // Last error reported by the standby or the transport, for status output.
  std::string last_error() const;
  // Record format negotiated on the standby's stream (0 when none).
  uint32_t record_format() const;

  /* In-service upgrade: a second stream, to a new instance of the standby node (the
   * joiner). It gets a full sync, then every epoch the standby gets, each in the record
   * format it negotiated. Its acknowledgements release no held output until
   * promote_joiner() makes its stream the standby's and closes the old one. */
  Status add_joiner(const std::string &addr);
  Status promote_joiner(const std::string &addr);
  void drop_joiner(const std::string &why);
  struct JoinerStatus {
    std::string addr, node, version, error;
    bool connected = false, in_sync = false;
    double progress = 0;
    uint32_t format = 0;
    uint64_t acked = 0;
  };
  JoinerStatus joiner_status() const;

 private:
  struct Link;
  void loop();
  void link_loop(bool joiner);
  bool run_checkpoint(bool explicit_request);
  void send_captures(uint64_t epoch, const std::shared_ptr<Link> &primary, bool primary_full,
                     const std::shared_ptr<Link> &joiner, bool joiner_full);
  bool write_messages(const std::shared_ptr<Link> &link, const std::vector<v1::SyncMessage> &msgs, bool primary);
  void handle_ack(const std::shared_ptr<Link> &link, uint64_t epoch);
  void on_ack(uint64_t epoch);
  void mark_lost(const std::string &why);
  void update_release();
  void record_pause(uint64_t ns);

  EngineConfig cfg_;
  dp::FlowTable &flows_;
  dp::InterfaceAgent &agent_;
  std::atomic<bool> running_{false};
  std::atomic<bool> replicating_{false};
  std::thread loop_thread_, link_thread_;
  // Joiner streams: a thread whose link was promoted keeps reading it as the standby's and
  // ends with it; promote_joiner starts a fresh one for the next joiner (link_mu_).
  std::vector<std::thread> joiner_threads_;
  std::mutex barrier_mu_;  // one quiesce at a time

  mutable std::mutex link_mu_;
  std::shared_ptr<Link> link_;
  std::shared_ptr<Link> joiner_;  // link_mu_
  std::string joiner_addr_;       // link_mu_; empty = no joiner wanted
  std::string joiner_error_;      // link_mu_
  std::condition_variable link_cv_;
  std::atomic<bool> connected_{false}, in_sync_{false}, need_full_{true};
  std::atomic<uint64_t> acked_{0}, sent_{0};
  std::atomic<double> progress_{0};
  std::chrono::steady_clock::time_point oldest_unacked_{};

  std::mutex req_mu_;
  std::condition_variable req_cv_;
  uint64_t req_seq_ = 0, req_done_ = 0;
  uint64_t req_epoch_ = 0;
  uint64_t req_records_ = 0;

  mutable std::mutex lag_mu_;
  std::deque<std::pair<uint64_t, uint64_t>> unacked_bytes_;  // epoch, bytes
  std::string last_error_;

  mutable std::mutex samples_mu_;
  std::vector<uint64_t> samples_;
  size_t samples_next_ = 0;
  EngineStats stats_;
  std::chrono::steady_clock::time_point full_start_{};
};

}  // namespace ftpair::ckpt
