#include "checkpoint/commit_timing.h"

namespace ftpair::ckpt {

const char *commit_stage_name(CommitStage s) {
  switch (s) {
    case CommitStage::CLOSE: return "close";
    case CommitStage::PAUSE: return "pause";
    case CommitStage::CAPTURE: return "capture";
    case CommitStage::ENCODE: return "encode";
    case CommitStage::SEND: return "send";
    case CommitStage::ACK: return "ack";
    case CommitStage::APPLY: return "apply";
    case CommitStage::COUNT: break;
  }
  return "unknown";
}

void CommitTiming::record(CommitStage s, uint64_t ns) {
  const size_t i = size_t(s);
  sum_[i].fetch_add(ns, std::memory_order_relaxed);
  count_[i].fetch_add(1, std::memory_order_relaxed);
  std::lock_guard<std::mutex> g(mu_);
  std::vector<uint64_t> &r = ring_[i];
  if (r.size() < kMaxSamples) {
    r.push_back(ns);
  } else {
    r[next_[i]] = ns;
    next_[i] = (next_[i] + 1) % kMaxSamples;
  }
}

std::vector<uint64_t> CommitTiming::samples(CommitStage s) const {
  const size_t i = size_t(s);
  std::lock_guard<std::mutex> g(mu_);
  const std::vector<uint64_t> &r = ring_[i];
  if (r.size() < kMaxSamples) return r;
  std::vector<uint64_t> out(r.begin() + long(next_[i]), r.end());
  out.insert(out.end(), r.begin(), r.begin() + long(next_[i]));
  return out;
}

void CommitTiming::clear_samples() {
  std::lock_guard<std::mutex> g(mu_);
  for (size_t i = 0; i < kCommitStages; i++) {
    ring_[i].clear();
    next_[i] = 0;
  }
}

}  // namespace ftpair::ckpt
