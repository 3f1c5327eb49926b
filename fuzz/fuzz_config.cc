/* fuzz_config: the daemon's config parser (control/config.cc) on arbitrary YAML text and
 * --set overrides. Input: the YAML text, then zero or more overrides, separated by NUL
 * bytes. Any input must give OK or INVALID_ARGUMENT with a message, never an exception or
 * a crash, and an accepted config must hold what the validation promises. */
#include <cstring>
#include <string>
#include <vector>

#include "control/config.h"
#include "fuzz/fuzz_common.h"

using namespace ftpair;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::vector<std::string> parts(1);
  for (size_t i = 0; i < size; i++) {
    if (data[i] == 0) {
      if (parts.size() == 9) break;  // at most 8 overrides
      parts.emplace_back();
    } else {
      parts.back().push_back(static_cast<char>(data[i]));
    }
  }
  const std::string yaml = parts[0];
  parts.erase(parts.begin());
  Config c;
  Status s = parse_config(yaml, parts, &c);
  if (ftpair::fuzz::verbose()) std::fprintf(stderr, "parse_config: %s\n", s.ok() ? "ok" : s.message().c_str());
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == Code::INVALID_ARGUMENT && s.message().rfind("config: ", 0) == 0,
               "error without the config: prefix or with code %d: %s", int(s.code()), s.message().c_str());
    return 0;
  }
  // What validation promises to the daemon.
  FUZZ_CHECK(!c.node_id.empty() && c.node_id.size() <= 32, "node.id '%s'", c.node_id.c_str());
  FUZZ_CHECK(c.nat_port_min >= 1 && c.nat_port_min <= c.nat_port_max, "nat ports %u..%u", c.nat_port_min,
             c.nat_port_max);
  FUZZ_CHECK(c.inside.prefix_len >= 8 && c.inside.prefix_len <= 30 && c.outside.prefix_len >= 8 &&
                 c.outside.prefix_len <= 30,
             "prefix lengths %u, %u", c.inside.prefix_len, c.outside.prefix_len);
  FUZZ_CHECK(!c.inside.device.empty() && c.inside.device != c.outside.device, "devices");
  FUZZ_CHECK(c.flow_capacity >= 16 && c.flow_capacity <= (1u << 26), "flows.capacity %u", c.flow_capacity);
  FUZZ_CHECK(c.inside.vmac_id >= 1 && c.outside.vmac_id >= 1, "vmac ids");
  for (const auto &f : c.forwards)
    FUZZ_CHECK((f.proto == 6 || f.proto == 17) && f.outside_port != 0, "port forward %u/%u", f.proto,
               f.outside_port);
  dp::NfConfig nf = c.nf_config();
  FUZZ_CHECK(nf.forwards.size() == c.forwards.size(), "nf_config forwards");
  std::vector<std::string> argv = c.eal_argv();
  FUZZ_CHECK(!argv.empty(), "eal_argv empty");
  return 0;
}
