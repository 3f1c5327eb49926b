#include "checkpoint/sync_link.h"

#include <algorithm>

#include "checkpoint/record_codec.h"
#include "common/clock.h"
#include "proto/rpc/rpc.h"

namespace ftpair::ckpt {

SyncLink::SyncLink(std::string addr, std::shared_ptr<grpc::ChannelCredentials> creds)
    : addr_(std::move(addr)),
      channel_(rpc::make_channel(addr_, std::move(creds), rpc::ChannelKind::SYNC)),
      stub_(v1::Replication::NewStub(channel_)),
      format_(kRecordFormatV1) {}

void SyncLink::open() { stream_ = stub_->Sync(&ctx_); }

Status SyncLink::hello(const v1::SyncMessage &msg) {
  v1::SyncReply reply;
  if (!stream_->Write(msg) || !stream_->Read(&reply) || !reply.has_hello())
    return Unavailable("the stream to " + addr_ + " ended before the hello reply");
  format_.store(reply.hello().chosen_record_format());
  if (!format_supported(format_.load()))
    return FailedPrecondition("the instance at " + addr_ + " chose record format " + std::to_string(format_.load()) +
                              ", which this build does not speak");
  // Below format 4 the records of several shards travel at global slots: the far end's one
  // table must have that many.
  const v1::Hello &mine = msg.hello();
  const uint64_t global = uint64_t(std::max(1u, mine.shards())) * mine.shard_capacity();
  if (format_.load() < kRecordFormatV4 && mine.shards() > 1 && reply.hello().flow_capacity() < global)
    return FailedPrecondition("the instance at " + addr_ + " reads record format " + std::to_string(format_.load()) +
                              " (no shards) into " + std::to_string(reply.hello().flow_capacity()) +
                              " slots, and this node's " + std::to_string(mine.shards()) + " workers need " +
                              std::to_string(global) + ": upgrade it, or give it that flows.capacity");
  std::lock_guard<std::mutex> g(peer_mu_);
  peer_node_ = reply.hello().node_id();
  peer_version_ = reply.hello().software_version();
  hello_ns.store(mono_ns());
  return Status::Ok();
}

void SyncLink::mark_ready() { ready_.store(true); }

void SyncLink::read_acks(const std::function<bool()> &keep_reading,
                         const std::function<void(const v1::Ack &ack)> &on_ack) {
  v1::SyncReply reply;
  for (;;) {
    if (!keep_reading()) return;
    if (!stream_->Read(&reply)) break;
    if (reply.has_ack()) on_ack(reply.ack());
  }
  if (!cancelled_.load()) peer_ended_.store(true);
}

bool SyncLink::write(const std::vector<v1::SyncMessage> &msgs, const std::function<void(double progress)> &on_chunk) {
  const bool chunked = msgs.size() > 1 && msgs[0].checkpoint().full();
  std::lock_guard<std::mutex> w(write_mu_);
  for (size_t i = 0; i < msgs.size(); i++) {
    if (broken_.load()) return false;
    if (!stream_->Write(msgs[i])) {
      // The call is over (gRPC: a failed Write means the stream is closed): no cancel, so
      // that finish() can still read the standby's status, if it ended the stream.
      broken_.store(true);
      return false;
    }
    if (chunked) on_chunk(0.99 * double(i + 1) / double(msgs.size()));
  }
  return true;
}

bool SyncLink::write_made(size_t count, const std::function<bool(size_t i, v1::SyncMessage *msg)> &make,
                          const std::function<void(double progress)> &on_chunk, uint64_t *bytes) {
  std::lock_guard<std::mutex> w(write_mu_);
  v1::SyncMessage m;
  *bytes = 0;
  for (size_t i = 0; i < count; i++) {
    if (broken_.load()) return false;
    if (!make(i, &m)) {
      break_off();
      return false;
    }
    if (!stream_->Write(m)) {
      broken_.store(true);  // as in write(): the call is over, its status still to read
      return false;
    }
    *bytes += m.ByteSizeLong();
    on_chunk(0.99 * double(i + 1) / double(count));
  }
  return true;
}

std::string SyncLink::finish() {
  /* A stream the standby ended has its status (a refused epoch says why: a gap, a corrupt
   * batch, a diverged table); a cancel from here would replace it with CANCELLED. */
  if (peer_ended_.load())
    broken_.store(true);
  else
    break_off();
  grpc::Status st;
  {
    std::lock_guard<std::mutex> w(write_mu_);
    st = stream_->Finish();
  }
  return st.ok() ? "stream closed" : st.error_message();
}

void SyncLink::cancel() {
  cancelled_.store(true);
  ctx_.TryCancel();
}

void SyncLink::break_off() {
  broken_.store(true);
  cancelled_.store(true);
  ctx_.TryCancel();
}

std::string SyncLink::peer_node() const {
  std::lock_guard<std::mutex> g(peer_mu_);
  return peer_node_;
}

std::string SyncLink::peer_version() const {
  std::lock_guard<std::mutex> g(peer_mu_);
  return peer_version_;
}

}  // namespace ftpair::ckpt
