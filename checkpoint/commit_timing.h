/* Where an epoch's commit time goes, stage by stage, on the active (issue 18's breakdown).
 *
 *   close    a packet held for the epoch, until the epoch's flip begins (strict mode: how long
 *            the scheduler took to notice held output and close the epoch)
 *   pause    the workers parked for the flip
 *   capture  the flip's end until every worker copied its part of the cut
 *   encode   the capture as Sync messages
 *   send     the messages written to the stream
 *   ack      written, until the standby's acknowledgement was read back; it includes:
 *   apply    the standby's own time applying the epoch (from the acknowledgement; 0 samples
 *            from a standby too old to say)
 *   release  the acknowledgement published to the workers, until a worker sent what it held
 *            (the workers' sum and count: a mean, not samples)
 *
 * Only the per-epoch (incremental) path is timed; a full sync has its own figures. Samples
 * are kept per stage in a ring (the newest kMaxSamples); sums and counts are for /metrics. */
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace ftpair::ckpt {

enum class CommitStage : uint8_t { CLOSE, PAUSE, CAPTURE, ENCODE, SEND, ACK, APPLY, COUNT };
inline constexpr size_t kCommitStages = size_t(CommitStage::COUNT);
const char *commit_stage_name(CommitStage s);

class CommitTiming {
 public:
  static constexpr size_t kMaxSamples = 1 << 16;

  void record(CommitStage s, uint64_t ns);
  // The stage's kept samples, oldest first.
  std::vector<uint64_t> samples(CommitStage s) const;
  void clear_samples();
  uint64_t sum_ns(CommitStage s) const { return sum_[size_t(s)].load(std::memory_order_relaxed); }
  uint64_t count(CommitStage s) const { return count_[size_t(s)].load(std::memory_order_relaxed); }

 private:
  mutable std::mutex mu_;
  std::array<std::vector<uint64_t>, kCommitStages> ring_;
  std::array<size_t, kCommitStages> next_{};
  std::array<std::atomic<uint64_t>, kCommitStages> sum_{}, count_{};
};

}  // namespace ftpair::ckpt
