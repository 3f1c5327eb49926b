#include "checkpoint/version.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>

#include "checkpoint/record_codec.h"

namespace ftpair::ckpt {

namespace {
std::atomic<uint32_t> g_format_max{0};
std::atomic<const char *> g_version{FTPAIR_VERSION};
}  // namespace

void set_record_format_max(uint32_t format) { g_format_max.store(format); }
const char *software_version() { return g_version.load(); }
void set_software_version(const char *v) { g_version.store(v); }

VersionRange local_versions() {
  VersionRange v;
  // FTPAIR_RECORD_FORMAT_MAX narrows what this process writes and reads, so one build can
  // play the previous release in upgrade tests.
  uint32_t max_format = kRecordFormatNewest;
  if (format_supported(g_format_max.load())) max_format = g_format_max.load();
  if (const char *e = std::getenv("FTPAIR_RECORD_FORMAT_MAX")) {
    uint32_t f = static_cast<uint32_t>(std::strtoul(e, nullptr, 10));
    if (format_supported(f)) max_format = f;
  }
  for (uint32_t f = max_format; f >= kRecordFormatOldest && f > 0; f--) v.record_formats.push_back(f);
  return v;
}

static std::string describe(const VersionRange &v) {
  std::string s = "protocol " + std::to_string(v.protocol_min) + ".." + std::to_string(v.protocol_max) + ", record formats [";
  for (size_t i = 0; i < v.record_formats.size(); i++) s += (i ? "," : "") + std::to_string(v.record_formats[i]);
  return s + "]";
}

bool negotiate(const VersionRange &local, const VersionRange &peer, Negotiated *out, std::string *why) {
  uint32_t lo = std::max(local.protocol_min, peer.protocol_min);
  uint32_t hi = std::min(local.protocol_max, peer.protocol_max);
  if (lo > hi) {
    *why = std::string("peer too ") + (peer.protocol_max < local.protocol_min ? "old" : "new") +
           ": peer speaks " + describe(peer) + "; this node speaks " + describe(local);
    return false;
  }
  uint32_t best = 0;
  for (uint32_t f : local.record_formats)
    if (std::find(peer.record_formats.begin(), peer.record_formats.end(), f) != peer.record_formats.end())
      best = std::max(best, f);
  if (best == 0) {
    uint32_t peer_max = peer.record_formats.empty() ? 0 : *std::max_element(peer.record_formats.begin(), peer.record_formats.end());
    uint32_t local_max = local.record_formats.empty() ? 0 : *std::max_element(local.record_formats.begin(), local.record_formats.end());
    *why = std::string("no common record format: peer too ") + (peer_max < local_max ? "old" : "new") +
           ": peer speaks " + describe(peer) + "; this node speaks " + describe(local);
    return false;
  }
  out->protocol = hi;
  out->record_format = best;
  return true;
}

}  // namespace ftpair::ckpt
