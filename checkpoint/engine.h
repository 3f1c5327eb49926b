/* The checkpoint engine (active side): the façade that the daemon drives.
 *
 * One thread decides when to checkpoint (interval, dirty threshold, held output in strict
 * mode, or an explicit request), quiesces the interface agent, flips the epoch, resumes the
 * workers, waits for the worker's incremental capture, encodes it in packed batches and
 * sends it on the Sync stream. A second thread owns the stream: it connects to the standby,
 * says hello, reads acknowledgements and notices when the standby is gone. During an
 * in-service upgrade a third stream feeds the joining instance.
 *
 * The workers never wait for the standby: the capture is bounded by the table, sends
 * happen on this thread, and strict mode's held output has its own bounded buffer with a
 * configured fallback.
 *
 * Where each part lives:
 *   engine.cc            start, stop, role, status and pause figures
 *   engine_scheduler.cc  when to checkpoint, run_checkpoint, pauses, output-commit release
 *   engine_link.cc       the standby's stream: connect, hello, acks, watchdog, standby lost
 *   engine_joiners.cc    the joining instance's stream: add, drop, promote
 *   sync_link.{h,cc}     one Sync stream (the transport)
 *   capture_encoder.{h,cc}  a capture as Sync messages (pure; fuzzed alone) */
#pragma once

#include <array>
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

#include "checkpoint/capture_encoder.h"
#include "checkpoint/commit_timing.h"
#include "checkpoint/sync_link.h"
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
  // The configured flow capacity that the hello announces (0: the tables' slots together).
  uint32_t flow_capacity = 0;
  std::chrono::milliseconds ack_timeout{1500};  // sent but unacknowledged this long: standby lost
  std::chrono::milliseconds connect_backoff{200};
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // null = insecure
  std::function<uint64_t()> generation = [] { return 0; };
  /* The session log's sequence number at the cut (IpfixExporter::cut_sequence), called with
   * the workers parked right after each epoch flip and carried in that epoch's checkpoint.
   * Empty when the node logs nothing. */
  std::function<uint32_t()> log_sequence;
  /* The commit path's threads (the checkpoint loop and the streams' readers) at real-time
   * priority (common/realtime.h), when permitted; a full sync drops back to normal priority
   * for its duration. Off by default: where the commit path shares a core with the packet
   * path (a 2-vCPU VM) each epoch's wake-ups preempt it (docs/BENCHMARKS.md). */
  bool realtime = false;
  // The workers' CPUs: the real-time threads keep off them where others are allowed.
  std::vector<int> worker_cpus;
};

inline constexpr double kPauseBucketsUs[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000};
inline constexpr size_t kPauseBuckets = sizeof(kPauseBucketsUs) / sizeof(kPauseBucketsUs[0]);

struct EngineStats {
  std::atomic<uint64_t> checkpoints{0}, aborted{0}, skipped_idle{0};
  // A control-plane request's parks (run_parked) that timed out; a request gives up after kParkAttempts.
  std::atomic<uint64_t> park_timeouts{0};
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
  /* The tables are the workers' shards, table i of worker i, all of one capacity; one epoch
   * flip with every worker parked cuts them all at once. The engine stamps each with its
   * shard number (FlowTable::set_shard). */
  Engine(EngineConfig cfg, std::vector<dp::FlowTable *> tables, dp::InterfaceAgent &agent);
  Engine(EngineConfig cfg, dp::FlowTable &flows, dp::InterfaceAgent &agent)
      : Engine(std::move(cfg), std::vector<dp::FlowTable *>{&flows}, agent) {}
  ~Engine();  // stop()

  // Starts the checkpoint and stream threads (idempotent); nothing replicates until set_replicating(true).
  void start();
  // Cancels the streams and joins every thread (idempotent).
  void stop();
  // Checkpoints and replication run only while this node is active.
  void set_replicating(bool on);
  /* The standby's heartbeat RPC (or another beat of its that says it is booting, such as its
   * announcement: `how` names which, for the log) reached this active. A link that is down is retried now rather
   * than after the rest of connect_backoff (at most once per connect_backoff, so a standby that
   * beats often and refuses the stream is not retried faster than without this). `booting`: the
   * standby says it has just started, so no stream of ours reaches it; a link that has stood for
   * a while is an old one (its machine gone, the address taken over, say by a warm spare) that
   * keepalive has not yet found dead: it is cancelled and a new one made at once (at most once
   * per 5 s). */
  void standby_is_up(bool booting, const char *how = "its Heartbeat");
  bool replicating() const { return replicating_.load(); }

  /* Takes a checkpoint now and waits until the standby acknowledges it. Returns the epoch
   * and records in it; UNAVAILABLE without a standby in sync (the epoch still flips),
   * DEADLINE_EXCEEDED when no acknowledgement came in time. */
  Status checkpoint_now(std::chrono::milliseconds timeout, uint64_t *epoch, uint64_t *records);
  // Runs fn while every worker is parked (serialised with checkpoints).
  Status with_workers_parked(const std::function<void()> &fn);
  /* A transaction's parked phase: DEADLINE_EXCEEDED if the workers do not park (fn is not
   * run), else fn's own Status. The workers resume on return, an exception included.
   * Each park waits at most kParkWait for the last worker (what the parked ones may be held);
   * one that times out (a worker off its CPU on a busy machine) lets them all go, and after
   * kParkGap (with the barrier free for a checkpoint) it is tried again, up to kParkAttempts
   * parks in all, so that a flows dump, a snapshot or a role change does not fail on one
   * scheduling delay. The price, only while a worker is that late: the others are parked up
   * to kParkAttempts x kParkWait out of every (kParkWait + kParkGap). Timeouts:
   * stats().park_timeouts. */
  static constexpr std::chrono::milliseconds kParkWait{100};
  static constexpr std::chrono::milliseconds kParkGap{10};
  static constexpr unsigned kParkAttempts = 3;
  Status run_parked(const std::function<Status()> &fn);

  // The standby's stream: up, and holding a full copy (acknowledged full sync).
  bool connected() const { return connected_.load(); }
  bool in_sync() const { return in_sync_.load(); }
  uint64_t acked_epoch() const { return acked_.load(); }
  /* The newest epoch whose session-log events may leave:
   *   - active with a standby in sync: the epoch it acknowledged;
   *   - active with none in sync (none configured, lost, or still syncing): every epoch, since
   *     holding the log would back it up until it is lost;
   *   - not active: the last acknowledged one, so what an old active still holds never leaves
   *     (the new active numbers from its cut; start_sequence() discards the rest). */
  uint64_t log_release_epoch() const {
    return replicating_.load() && !in_sync_.load() ? UINT64_MAX : acked_.load();
  }
  uint64_t sent_epoch() const { return sent_.load(); }
  uint64_t current_epoch() const { return tables_[0]->epoch(); }
  // Bytes sent to the standby and not yet acknowledged.
  uint64_t lag_bytes() const;
  double full_sync_progress() const { return progress_.load(); }
  std::string peer() const { return cfg_.peer; }
  /* The standby's stream as the standby itself last said on it (Control.Status): the node id of
   * its hello reply, the role state (v1::RoleState; 0 = unset) and flows of its last
   * acknowledgement, and the seconds since it answered the hello (-1: no stream answered). */
  struct StandbyView {
    std::string node;
    int role_state = 0;
    uint64_t flows = 0;
    double stream_age_s = -1;
  };
  StandbyView standby_view() const;
  const EngineStats &stats() const { return stats_; }
  bool strict() const { return cfg_.strict; }
  // Exact pause samples (ns) of the last checkpoints, oldest first (benchmarks).
  std::vector<uint64_t> pause_samples() const { return timing_.samples(CommitStage::PAUSE); }
  void clear_pause_samples() { timing_.clear_samples(); }
  // Where each epoch's commit time went, stage by stage (commit_timing.h).
  const CommitTiming &commit_timing() const { return timing_; }
  // Whether the commit path's threads got real-time priority (false until they started).
  bool realtime() const { return realtime_ok_.load(); }
  // Last error reported by the standby or the transport, for status output.
  std::string last_error() const;
  // Record format negotiated on the standby's stream (0 when none).
  uint32_t record_format() const;

  /* In-service upgrade: a second stream, to a new instance of the standby node (the
   * joiner). It gets a full sync, then every epoch the standby gets, each in the record
   * format it negotiated. Its acknowledgements release no held output until
   * promote_joiner() makes its stream the standby's and closes the old one. */
  // FAILED_PRECONDITION when this node is not active or another address is joining;
  // INVALID_ARGUMENT for an empty address. The same address again is OK.
  Status add_joiner(const std::string &addr);
  // FAILED_PRECONDITION unless the joiner at addr is connected and in sync.
  Status promote_joiner(const std::string &addr);
  // Forgets the joiner and closes its stream; why shows in joiner_status().error.
  void drop_joiner(const std::string &why);
  struct JoinerStatus {
    std::string addr, node, version, error;
    bool connected = false, in_sync = false;
    double progress = 0;
    uint32_t format = 0;
    uint64_t acked = 0;
  };
  // The joiner wanted (addr), its stream's state, and the last error on it.
  JoinerStatus joiner_status() const;

 private:
  using Clock = std::chrono::steady_clock;
  using LinkPtr = std::shared_ptr<SyncLink>;

  // engine_scheduler.cc
  void loop();
  bool run_checkpoint(bool explicit_request);
  void send_captures(uint64_t epoch, const LinkPtr &primary_link, bool primary_full, const LinkPtr &joiner_link,
                     bool joiner_full);
  /* A full sync to the standby alone (no joiner): each chunk encoded just before it is
   * written, so that encoding overlaps the standby's apply; the captures are released after
   * the last chunk. */
  void send_full_pipelined(uint64_t epoch, const LinkPtr &link, const std::vector<dp::CapturedSlot> &cap,
                           CaptureHeader h);
  /* The standby's stream, for both: epoch goes on it now (its lag counts from here; a full
   * sync is counted and said); a full sync's chunk was taken, with bytes written so far (a
   * standby that keeps taking chunks is alive); all of it was written. */
  void primary_sending(uint64_t epoch, SyncLink &link, bool full, size_t records, size_t messages, uint64_t bytes);
  void primary_chunk_taken(uint64_t epoch, double progress, uint64_t bytes);
  void primary_sent(uint64_t epoch, SyncLink &link, size_t records, uint64_t bytes);
  void update_release();
  // engine.cc
  void record_pause(uint64_t ns);
  uint32_t dirty_count() const;
  uint64_t held_now() const;  // strict mode: packets held on every worker
  // engine_scheduler.cc: the newest cut over every shard, once each worker copied its part
  bool captures_done(uint64_t epoch) const;
  const std::vector<dp::CapturedSlot> &gather_captures();
  void release_captures();
  // engine_link.cc
  void link_loop(bool joiner);
  v1::SyncMessage hello_message() const;
  void watch_standby(Clock::time_point now);  // link_mu_ held
  void handle_ack(const LinkPtr &link, const v1::Ack &ack);
  void on_ack(uint64_t epoch, uint64_t apply_ns);
  void commit_path_realtime(const char *thread);
  void link_ended(const LinkPtr &link, const std::string &why);
  void mark_lost(const std::string &why);
  // engine_joiners.cc
  void on_joiner_ack(const LinkPtr &link, uint64_t epoch);
  void watch_joiner(Clock::time_point now);  // link_mu_ held

  EngineConfig cfg_;
  std::vector<dp::FlowTable *> tables_;  // shard i = worker i
  dp::InterfaceAgent &agent_;
  std::vector<dp::CapturedSlot> gathered_;  // checkpoint thread: the shards' captures, in one
  std::atomic<bool> running_{false};
  std::atomic<bool> replicating_{false};
  std::thread loop_thread_, link_thread_;
  // Joiner streams: a thread whose link was promoted keeps reading it as the standby's and
  // ends with it; promote_joiner starts a fresh one for the next joiner (link_mu_).
  std::vector<std::thread> joiner_threads_;
  std::mutex barrier_mu_;  // one quiesce at a time
  uint32_t cut_log_sequence_ = 0;  // the newest cut's session-log sequence (checkpoint thread)

  mutable std::mutex link_mu_;
  LinkPtr link_;                  // the standby's stream
  LinkPtr joiner_;                // link_mu_
  std::string joiner_addr_;       // link_mu_; empty = no joiner wanted
  std::string joiner_error_;      // link_mu_
  std::condition_variable link_cv_;
  // The standby's sync state (a joiner's is on its link).
  std::atomic<bool> connected_{false}, in_sync_{false}, need_full_{true};
  std::atomic<int64_t> last_standby_kick_ns_{0};
  std::atomic<bool> retry_now_{false};  // the standby link's next attempt without the backoff
  std::atomic<int64_t> last_stale_cancel_ns_{0};
  std::atomic<uint64_t> acked_{0}, sent_{0};
  std::atomic<double> progress_{0};
  std::atomic<int64_t> full_start_ns_{0};  // mono_ns() when the standby's full sync began

  std::mutex req_mu_;
  std::condition_variable req_cv_;
  uint64_t req_seq_ = 0, req_done_ = 0;
  uint64_t req_epoch_ = 0;
  uint64_t req_records_ = 0;

  mutable std::mutex lag_mu_;
  std::deque<std::pair<uint64_t, uint64_t>> unacked_bytes_;  // epoch, bytes
  Clock::time_point oldest_unacked_{};                       // lag_mu_
  std::string last_error_;                                   // lag_mu_

  /* Epochs written and not yet acknowledged, for the ack stage's timing: ring by epoch,
   * (epoch, mono_ns when its write ended); lag_mu_. Full syncs are not entered. */
  static constexpr size_t kInFlight = 64;
  std::array<std::pair<uint64_t, int64_t>, kInFlight> in_flight_{};
  /* The agent's clock at the last cut, taken with the workers parked (checkpoint thread): a
   * packet held after it waits for an epoch not closed yet. */
  uint64_t cut_clock_ns_ = 0;
  std::atomic<bool> realtime_ok_{false};
  CommitTiming timing_;
  EngineStats stats_;
};

}  // namespace ftpair::ckpt
