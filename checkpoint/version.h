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
/* A build that plays the previous release (ftpaird-prev, for upgrade tests) narrows the
 * newest record format it speaks and names itself differently. 0 = this build's newest. */
void set_record_format_max(uint32_t format);
const char *software_version();
void set_software_version(const char *v);  // a string literal (kept, not copied)

struct Negotiated {
  uint32_t protocol = 0;
  uint32_t record_format = 0;
};

/* Picks the highest protocol and record format both sides support. Returns false with
 * *why naming both sides' versions when there is none. */
bool negotiate(const VersionRange &local, const VersionRange &peer, Negotiated *out, std::string *why);

}  // namespace ftpair::ckpt
