/* The daemon's side of the in-service upgrade: UpgradeLink is the coordinator's narrow view
 * of this daemon (control/upgrade.h), and the daemon's upgrade calls forward to it. */
#include <chrono>

#include "common/log.h"
#include "common/sha256.h"
#include "control/daemon.h"

namespace ftpair {

Status ckpt_self_digest(std::string *hex) { return sha256_file("/proc/self/exe", hex); }

class Daemon::UpgradeLink final : public UpgradeHost {
 public:
  explicit UpgradeLink(Daemon &d) : d_(d) {}

  fo::Role role() const override { return d_.role(); }
  ckpt::Engine &engine() override { return *d_.engine_; }
  ckpt::Applier &applier() override { return *d_.applier_; }
  Status become_standby(const std::string &why) override { return d_.become_standby(why); }
  std::string peer_node_id() const override { return d_.monitor_ ? d_.monitor_->last_peer_beat().node_id() : ""; }

  bool beside() const override { return d_.beside_.load(); }
  void set_beside(bool on) override { d_.beside_.store(on); }
  bool retiring() const override { return d_.retiring_.load(); }
  void set_retiring(bool on) override { d_.retiring_.store(on); }

  void stop_monitor() override {
    if (d_.dp_watch_) d_.dp_watch_->stop();
    if (d_.monitor_) d_.monitor_->stop();
  }
  void start_monitor() override {
    if (!d_.monitor_) return;
    d_.monitor_->assume_heard();
    d_.monitor_->start();
    if (d_.dp_watch_) d_.dp_watch_->start();
  }

  Status listen_configured_grpc() override {
    uint16_t port = 0;
    Status st = d_.open_grpc(d_.cfg_.grpc, &d_.grpc_final_, &d_.sync_ep_final_, &port);
    if (!st.ok()) return st;
    d_.grpc_port_ = port;
    d_.serving_state_ = -1;  // tick() pushes the health state to the new server too
    d_.protected_state_ = -1;
    return Status::Ok();
  }
  Status serve_configured_metrics() override {
    if (!d_.cfg_.metrics.set()) return Status::Ok();
    d_.http_.stop();
    return d_.http_.start(d_.cfg_.metrics);
  }
  void release_ports() override {
    d_.shutdown_grpc(std::chrono::milliseconds(100));
    d_.http_.stop();
  }
  uint16_t grpc_port() const override { return d_.grpc_port_; }
  void write_pidfile() override { d_.write_pidfile(); }
  std::shared_ptr<grpc::Channel> channel(const std::string &addr) override { return d_.peer_channel(addr); }

  void request_exit() override { d_.exit_requested_.store(true); }
  bool exit_requested() const override { return d_.exit_requested_.load(); }
  std::string self_sha256() const override { return d_.self_sha_; }
  bool test_hooks() const override { return d_.test_hooks_.load(); }
  void set_worker_stall(bool on) override { d_.set_worker_stall(on); }

 private:
  Daemon &d_;
};

std::unique_ptr<UpgradeCoordinator> Daemon::make_upgrade() {
  return std::make_unique<UpgradeCoordinator>(cfg_, launch_, std::make_unique<UpgradeLink>(*this));
}

Status Daemon::stage_upgrade(const std::string &bytes, const std::string &claimed_sha256, v1::UpgradeReply *out) {
  return upgrade_->stage(bytes, claimed_sha256, out);
}

Status Daemon::upgrade(const v1::UpgradeRequest &req, v1::UpgradeReply *out) { return upgrade_->request(req, out); }

Status Daemon::join(const v1::JoinRequest &req, v1::JoinReply *out) { return upgrade_->join(req, out); }

void Daemon::fill_upgrade(v1::UpgradeStatus *u) { upgrade_->fill(u); }


}  // namespace ftpair
