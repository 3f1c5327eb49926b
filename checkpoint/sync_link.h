/* One Sync stream from the active to one instance of the standby node: the standby itself,
 * or the new instance that joins it during an upgrade. It holds the channel (the SYNC
 * keepalive policy of proto/rpc), says hello, writes the checkpoints, reads the
 * acknowledgements back and tells the watchdog when the far end has gone quiet.
 *
 * The engine decides what a link is for (the standby's stream or a joiner's) and keeps the
 * per-stream bookkeeping in the public atomics below; this class owns the transport only.
 * Threads: the engine's link thread opens, says hello, reads and finishes; the checkpoint
 * thread writes (write_mu_ keeps it from racing Finish); any thread may cancel. */
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/status.h"
#include "replication.grpc.pb.h"

namespace ftpair::ckpt {

class SyncLink {
 public:
  using Clock = std::chrono::steady_clock;

  // A channel to addr with creds (null = plaintext); the stream starts with open().
  SyncLink(std::string addr, std::shared_ptr<grpc::ChannelCredentials> creds);

  const std::string &addr() const { return addr_; }
  // Starts the stream. Register the link first, so that stop() and the watchdog can cancel a
  // stream whose far end never answers.
  void open();
  /* Sends the hello and reads the reply. OK once the far end chose a record format that this
   * build speaks (format() then returns it); UNAVAILABLE when the stream ends first,
   * FAILED_PRECONDITION for a format this build does not know. */
  Status hello(const v1::SyncMessage &msg);
  // The engine has set up its state for the stream: checkpoints may go on it now.
  void mark_ready();
  // Reads replies until the stream ends or keep_reading() turns false; on_ack per ack.
  void read_acks(const std::function<bool()> &keep_reading, const std::function<void(const v1::Ack &ack)> &on_ack);
  /* Writes msgs in order. False when one cannot be written (the link is then broken and
   * cancelled). For a full sync in several chunks, on_chunk(progress) after each one, with
   * progress in (0, 0.99]: the far end took it, so it is alive. */
  bool write(const std::vector<v1::SyncMessage> &msgs, const std::function<void(double progress)> &on_chunk);
  /* As write, for count messages made one at a time by make(i, &msg) just before each is
   * written (false from make: stop, the link is broken off), so that making the next one
   * overlaps the far end's reading of the last. *bytes: what was written. */
  bool write_made(size_t count, const std::function<bool(size_t i, v1::SyncMessage *msg)> &make,
                  const std::function<void(double progress)> &on_chunk, uint64_t *bytes);
  // Breaks and cancels the stream, then collects how it ended: "stream closed" or gRPC's reason.
  std::string finish();
  // Cancels the stream; its reader sees it end (any thread).
  void cancel();
  // Marks the link broken (no checkpoint goes on it any more) and cancels the stream.
  void break_off();

  bool ready() const { return ready_.load(); }
  bool broken() const { return broken_.load(); }
  bool usable() const { return ready_.load() && !broken_.load(); }
  // The hello got no answer within timeout.
  bool hello_overdue(Clock::time_point now, std::chrono::milliseconds timeout) const {
    return !ready_.load() && now - started_ > timeout;
  }
  // Since the link was made (before its hello).
  Clock::duration age(Clock::time_point now) const { return now - started_; }
  uint32_t format() const { return format_.load(); }
  // The far end's identity from its hello reply.
  std::string peer_node() const;
  std::string peer_version() const;

  // The engine's bookkeeping of this stream (see engine.h for who writes what).
  std::atomic<uint64_t> full_epoch{0};    // epoch of the full sync sent on it (checkpoint thread)
  std::atomic<uint64_t> full_records{0};  // records in that full sync
  // A joiner's own sync state; the standby's lives in the engine, promote_joiner moves it.
  std::atomic<bool> need_full{true}, in_sync{false};
  std::atomic<uint64_t> acked{0}, sent{0};
  std::atomic<double> progress{0};
  std::atomic<int64_t> unacked_since_ns{0};  // mono_ns(); 0 = nothing unacknowledged
  std::atomic<bool> promoted{false};         // a joiner's link that became the standby's
  std::atomic<int64_t> full_start_ns{0};     // mono_ns() when its full sync began
  // What the far end said in its last acknowledgement (handle_ack, on the link thread).
  std::atomic<int> ack_role_state{0};  // v1::RoleState; 0 = unset (none yet, or an older far end)
  std::atomic<uint64_t> ack_flows{0};
  std::atomic<int64_t> hello_ns{0};  // mono_ns() when the far end answered the hello (hello()); 0 = not yet

 private:
  const std::string addr_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Replication::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::SyncMessage, v1::SyncReply>> stream_;
  std::mutex write_mu_;
  std::atomic<bool> ready_{false}, broken_{false};
  // The standby ended the stream (a Read came back false without a cancel from this side):
  // finish() then takes the standby's own status rather than cancelling first.
  std::atomic<bool> peer_ended_{false};
  std::atomic<bool> cancelled_{false};  // this side cancelled the call (cancel, break_off)
  const Clock::time_point started_ = Clock::now();
  std::atomic<uint32_t> format_;  // kRecordFormatV1 until the hello reply chooses
  mutable std::mutex peer_mu_;
  std::string peer_node_, peer_version_;
};

}  // namespace ftpair::ckpt
