/* Versions spoken on the Sync stream and how two nodes agree on them. */
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ftpair::ckpt {

inline constexpr uint32_t kProtocolVersionMin = 1;
inline constexpr uint32_t kProtocolVersionMax = 1;

struct VersionRange {
  uint32_t protocol_min = kProtocolVersionMin;
  uint32_t protocol_max = kProtocolVersionMax;
  std::vector<uint32_t> record_formats;  // newest first
};

// What this build speaks; record formats can be narrowed (e.g. to act as the previous release).
VersionRange local_versions();

struct Negotiated {
  uint32_t protocol = 0;
  uint32_t record_format = 0;
};

/* Picks the highest protocol and record format both sides support. Returns false with
 * *why naming both sides' versions when there is none. */
bool negotiate(const VersionRange &local, const VersionRange &peer, Negotiated *out, std::string *why);

}  // namespace ftpair::ckpt
