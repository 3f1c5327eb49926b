/* Commissioning: a guest learns its role and parameters from its environment.
 * Sources: SMBIOS type 11 OEM strings "ftpair:key=value" (put there by `ftpair-virt deploy`),
 * read from /sys/firmware/dmi/entries/11-*\/raw, or from the whole table
 * /sys/firmware/dmi/tables/DMI when the dmi-sysfs module is not loaded; or a config drive: a
 * directory (or a mounted ISO labelled FTPAIR) holding ftpair.yaml with the same keys.
 * The parsers are pure functions over bytes: they never read past the buffer and never throw. */
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace ftpair::virt {

struct StringsOrError {
  std::vector<std::string> strings;
  std::string error;  // empty when ok
  bool ok() const { return error.empty(); }
};

// Parses one raw SMBIOS structure that must be type 11 (OEM strings): header (type, length,
// handle), count byte, then the string set ending in a double NUL. Returns the `count` strings,
// or an error naming what is wrong (truncated, wrong type, count mismatch, unterminated set).
StringsOrError parse_smbios_type11(const uint8_t *data, size_t len);

// Walks a whole SMBIOS table (structures back to back, up to type 127 or the end) and returns the
// strings of every type 11 structure in table order; an error if the table is malformed.
StringsOrError parse_dmi_table_type11(const uint8_t *data, size_t len);

// What a node derives: flat dotted keys (node.role, node.id, peer.grpc, management.grpc, ...)
// with the source each came from.
struct Commission {
  std::map<std::string, std::string> values;
  std::map<std::string, std::string> source_of;
};

// Adds "ftpair:key=value" strings from `source`; strings without the ftpair: prefix are
// ignored (other software owns them). Refuses a malformed ftpair string and a key given twice
// with different values (naming both sources).
Status add_oem_strings(const std::vector<std::string> &strings, const std::string &source, Commission *c);

// Adds a config drive's ftpair.yaml (a map of key: value, nested maps flattened to dotted keys).
Status add_config_drive_yaml(const std::string &yaml_text, const std::string &source, Commission *c);

// Checks that the result is complete and consistent: node.role active|standby, node.id,
// peer.grpc and management.grpc present and distinct. The error says which key and why.
Status validate(const Commission &c);

// Reads the environment: SMBIOS entries under `dmi_dir` (entries/11-*/raw, else tables/DMI) and
// the config drive directory if it exists. Refuses when neither has any ftpair key.
Status commission_from_environment(const std::string &dmi_dir, const std::string &config_drive, Commission *c);

// Whether a derived key belongs in ftpaird's config (pair, management.address, peer.candidates and
// pool.* are for the host or the guest's init, not the daemon).
bool is_daemon_key(const std::string &key);

// The derived values as an ftpaird YAML config fragment (nested maps), to merge over a base.
std::string to_config_yaml(const Commission &c);

// Merges the derived values into a base ftpaird config. A key the base leaves unset (or, for
// node.role, sets to "auto") takes the derived value; a base key that is set to something else
// contradicts the environment and is refused, naming the key and both values.
// A key "default.<key>" (the host's VM profile, virt/spec.h) sets <key> only where neither the
// base config nor another commissioned key does.
inline constexpr char kDefaultPrefix[] = "default.";
Status merge_into_config(const std::string &base_yaml, const Commission &c, std::string *out);

}  // namespace ftpair::virt
