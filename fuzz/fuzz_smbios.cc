/* fuzz_smbios: the guest's commissioning parsers (virt/commission.cc): one raw SMBIOS type
 * 11 structure or a whole DMI table, then the OEM strings through add_oem_strings, validate
 * and to_config_yaml; or a config drive's ftpair.yaml. Byte 0 selects: 0 structure, 1 table,
 * 2 config drive YAML; the rest is the input. The parsers promise never to read past the
 * buffer and never to throw; a result is strings or a named error, never both. */
#include <string>
#include <vector>

#include "fuzz/fuzz_common.h"
#include "virt/commission.h"

using namespace ftpair;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0] % 3;
  const uint8_t *d = data + 1;
  const size_t n = size - 1;
  virt::Commission c;
  Status s;
  if (mode == 2) {
    s = virt::add_config_drive_yaml(std::string(reinterpret_cast<const char *>(d), n), "fuzz-drive", &c);
  } else {
    virt::StringsOrError r = mode == 0 ? virt::parse_smbios_type11(d, n) : virt::parse_dmi_table_type11(d, n);
    if (fuzz::verbose()) std::fprintf(stderr, "parse: %zu strings, error '%s'\n", r.strings.size(), r.error.c_str());
    if (!r.ok()) {
      FUZZ_CHECK(r.strings.empty() || mode == 1, "error '%s' with %zu strings", r.error.c_str(), r.strings.size());
      return 0;
    }
    for (const auto &str : r.strings) FUZZ_CHECK(str.size() < n, "a string longer than its input");
    s = virt::add_oem_strings(r.strings, "fuzz-smbios", &c);
  }
  if (fuzz::verbose()) std::fprintf(stderr, "add: %s, %zu keys\n", s.ok() ? "ok" : s.message().c_str(), c.values.size());
  if (!s.ok()) {
    FUZZ_CHECK(!s.message().empty(), "an error without a message");
    return 0;
  }
  s = virt::validate(c);
  if (fuzz::verbose()) std::fprintf(stderr, "validate: %s\n", s.ok() ? "ok" : s.message().c_str());
  if (s.ok()) {
    for (const char *k : {"node.role", "node.id", "management.grpc"})
      FUZZ_CHECK(c.values.count(k), "validated without %s", k);
    const std::string yaml = virt::to_config_yaml(c);
    FUZZ_CHECK(!yaml.empty(), "empty config fragment");
  }
  return 0;
}
