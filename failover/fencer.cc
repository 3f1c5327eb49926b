#include "failover/fencer.h"

#include "common/clock.h"
#include "common/log.h"

namespace ftpair::fo {

namespace {

auto &L = log::component("fence");

constexpr int64_t kFailureLogGapNs = 1000000000;  // a stuck fence is retried every beat check

// "none": succeeds without doing anything, and only when the operator allowed it.
class NoneFencer final : public Fencer {
 public:
  const char *kind() const override { return "none"; }
  std::string target() const override { return "nothing (failover.allow_fence_none)"; }

 protected:
  Status stop_peer(std::chrono::milliseconds) override { return Status::Ok(); }
};

}  // namespace

Status Fencer::fence(std::chrono::milliseconds deadline) {
  const int64_t t0 = mono_ns();
  Status st = stop_peer(deadline);
  const int64_t now = mono_ns();
  const double ms = double(now - t0) / 1e6;
  std::lock_guard<std::mutex> g(log_mu_);
  if (st.ok()) {
    L.info("{} fencing of {}: ok in {:.1f} ms", kind(), target(), ms);
    unlogged_failures_ = 0;
    return st;
  }
  if (last_failure_log_ns_ != 0 && now - last_failure_log_ns_ < kFailureLogGapNs) {
    unlogged_failures_++;
    return st;
  }
  const std::string folded =
      unlogged_failures_ ? " (and " + std::to_string(unlogged_failures_) + " failed attempts since the last line)" : "";
  L.warn("{} fencing of {}: failed after {:.1f} ms: {}{}", kind(), target(), ms, st.message(), folded);
  last_failure_log_ns_ = now;
  unlogged_failures_ = 0;
  return st;
}

const char *fence_kind_name(FenceKind k) {
  switch (k) {
    case FenceKind::NONE: return "none";
    case FenceKind::PROCESS: return "process";
    case FenceKind::LIBVIRT: return "libvirt";
  }
  return "?";
}

bool parse_peer_ref(const std::string &s, PeerRef *out) {
  const size_t slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == s.size() || s.find('/', slash + 1) != std::string::npos)
    return false;
  out->pair = s.substr(0, slash);
  out->node = s.substr(slash + 1);
  return true;
}

bool parse_fence_kind(const std::string &s, FenceKind *out) {
  for (FenceKind k : {FenceKind::NONE, FenceKind::PROCESS, FenceKind::LIBVIRT})
    if (s == fence_kind_name(k)) {
      *out = k;
      return true;
    }
  return false;
}

std::unique_ptr<Fencer> make_none_fencer(const FenceConfig &cfg, Status *st) {
  if (!cfg.allow_none) {
    *st = InvalidArgument("failover.fence: 'none' cannot stop a live peer; set failover.allow_fence_none: true to accept that");
    return nullptr;
  }
  return std::make_unique<NoneFencer>();
}

}  // namespace ftpair::fo
