/* The heartbeat monitor: beats both ways over ftpair.v1.Peer every interval.
 *
 * Each node calls the other's Heartbeat with its own beat; the reply is the peer's beat.
 * The peer counts as heard when either direction succeeds. Decisions stay with the host:
 * the monitor reports every beat heard and, each interval, whether the peer has been
 * silent for more than miss_threshold intervals. */
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "peer.grpc.pb.h"

namespace ftpair::fo {

struct MonitorConfig {
  std::string peer;  // host:port
  std::chrono::milliseconds interval{10};
  uint32_t miss_threshold = 4;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
};

struct MonitorHooks {
  std::function<void(v1::Beat *)> fill_local;
  std::function<void(const v1::Beat &)> on_peer_beat;
  // Called every interval while the peer has been silent past the threshold.
  std::function<void(const std::string &reason)> on_peer_silent;
};

class Monitor {
 public:
  Monitor(MonitorConfig cfg, MonitorHooks hooks);
  ~Monitor();
  void start();
  void stop();
  // The Peer.Heartbeat handler: records the peer's beat, fills ours.
  void heard(const v1::Beat &peer_beat, v1::Beat *reply);

  bool ever_heard() const { return ever_heard_.load(); }
  bool peer_silent() const;
  double silence_seconds() const;
  uint64_t misses() const { return misses_.load(); }
  uint64_t beats_sent() const { return sent_.load(); }
  v1::Beat last_peer_beat() const;
  const MonitorConfig &config() const { return cfg_; }

 private:
  void loop();
  void record(const v1::Beat &b);

  MonitorConfig cfg_;
  MonitorHooks hooks_;
  std::atomic<bool> running_{false};
  std::thread thread_;
  std::atomic<int64_t> last_heard_ns_{0};  // steady clock
  std::atomic<bool> ever_heard_{false};
  std::atomic<uint64_t> misses_{0}, sent_{0}, seq_{0};
  mutable std::mutex beat_mu_;
  v1::Beat last_beat_;
};

}  // namespace ftpair::fo
