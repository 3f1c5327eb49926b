#include "virt/commission.h"

#include <dirent.h>

#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <sys/stat.h>

#include <yaml-cpp/yaml.h>

namespace ftpair::virt {

namespace {

constexpr uint8_t kOemStringsType = 11;
constexpr uint8_t kEndOfTableType = 127;
constexpr char kPrefix[] = "ftpair:";

// Reads the string set that starts at `off`: NUL-terminated strings, the set ending with an
// empty string (so a set without strings is two NULs). Sets *end to one past the final NUL.
bool read_string_set(const uint8_t *d, size_t len, size_t off, std::vector<std::string> *out, size_t *end,
                     std::string *err) {
  if (off + 2 > len) {
    *err = "string set truncated at byte " + std::to_string(off) + " of " + std::to_string(len);
    return false;
  }
  if (d[off] == 0 && d[off + 1] == 0) {
    *end = off + 2;
    return true;
  }
  size_t i = off;
  while (i < len) {
    size_t start = i;
    while (i < len && d[i] != 0) ++i;
    if (i >= len) {
      *err = "string " + std::to_string(out->size() + 1) + " is not NUL-terminated";
      return false;
    }
    out->emplace_back(reinterpret_cast<const char *>(d + start), i - start);
    ++i;  // past its NUL
    if (i < len && d[i] == 0) {
      *end = i + 1;
      return true;
    }
  }
  *err = "string set has no terminating double NUL";
  return false;
}

// Parses the structure at `off`; *next is where the following one starts.
bool parse_structure(const uint8_t *d, size_t len, size_t off, uint8_t *type, std::vector<std::string> *strings,
                     size_t *next, std::string *err) {
  if (off + 4 > len) {
    *err = "structure header truncated (" + std::to_string(len - off) + " bytes, need 4)";
    return false;
  }
  *type = d[off];
  uint8_t flen = d[off + 1];
  if (flen < 4) {
    *err = "structure length " + std::to_string(flen) + " is below the 4-byte header";
    return false;
  }
  if (off + flen > len) {
    *err = "formatted area of " + std::to_string(flen) + " bytes runs past the end";
    return false;
  }
  return read_string_set(d, len, off + flen, strings, next, err);
}

StringsOrError type11_strings(const uint8_t *d, size_t len, size_t off, std::vector<std::string> set) {
  StringsOrError r;
  uint8_t flen = d[off + 1];
  if (flen < 5) {
    r.error = "type 11 structure length " + std::to_string(flen) + " has no count byte";
    return r;
  }
  size_t count = d[off + 4];
  if (set.size() < count) {
    r.error = "type 11 count says " + std::to_string(count) + " strings, found " + std::to_string(set.size());
    return r;
  }
  set.resize(count);
  r.strings = std::move(set);
  (void)len;
  return r;
}

void put(Commission *c, const std::string &key, const std::string &value, const std::string &source, Status *st) {
  auto it = c->values.find(key);
  if (it != c->values.end() && it->second != value) {
    *st = FailedPrecondition("commission: contradictory " + key + ": '" + it->second + "' from " +
                             c->source_of[key] + " but '" + value + "' from " + source);
    return;
  }
  c->values[key] = value;
  if (it == c->values.end()) c->source_of[key] = source;
}

bool valid_key(const std::string &k) {
  if (k.empty() || k.front() == '.' || k.back() == '.') return false;
  return std::all_of(k.begin(), k.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
  });
}

void flatten(const YAML::Node &n, const std::string &prefix, std::vector<std::pair<std::string, std::string>> *out,
             std::string *err) {
  for (auto it = n.begin(); it != n.end() && err->empty(); ++it) {
    std::string key = prefix.empty() ? it->first.as<std::string>() : prefix + "." + it->first.as<std::string>();
    if (it->second.IsMap())
      flatten(it->second, key, out, err);
    else if (it->second.IsScalar())
      out->emplace_back(key, it->second.as<std::string>());
    else
      *err = key + ": must be a scalar or a map";
  }
}

bool read_file(const std::string &path, std::string *out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  *out = ss.str();
  return true;
}

bool is_dir(const std::string &p) {
  struct stat sb;
  return ::stat(p.c_str(), &sb) == 0 && S_ISDIR(sb.st_mode);
}

}  // namespace

StringsOrError parse_smbios_type11(const uint8_t *data, size_t len) {
  StringsOrError r;
  if (data == nullptr) len = 0;
  std::vector<std::string> set;
  uint8_t type = 0;
  size_t next = 0;
  if (!parse_structure(data, len, 0, &type, &set, &next, &r.error)) return r;
  if (type != kOemStringsType) {
    r.error = "structure type is " + std::to_string(type) + ", not 11 (OEM strings)";
    return r;
  }
  return type11_strings(data, len, 0, std::move(set));
}

StringsOrError parse_dmi_table_type11(const uint8_t *data, size_t len) {
  StringsOrError r;
  if (data == nullptr) len = 0;
  size_t off = 0;
  while (off < len) {
    std::vector<std::string> set;
    uint8_t type = 0;
    size_t next = 0;
    std::string err;
    if (!parse_structure(data, len, off, &type, &set, &next, &err)) {
      r.error = "DMI table, structure at byte " + std::to_string(off) + ": " + err;
      r.strings.clear();
      return r;
    }
    if (type == kOemStringsType) {
      StringsOrError one = type11_strings(data, len, off, std::move(set));
      if (!one.ok()) {
        r.error = "DMI table, structure at byte " + std::to_string(off) + ": " + one.error;
        r.strings.clear();
        return r;
      }
      r.strings.insert(r.strings.end(), one.strings.begin(), one.strings.end());
    }
    if (type == kEndOfTableType) break;
    off = next;
  }
  return r;
}

Status add_oem_strings(const std::vector<std::string> &strings, const std::string &source, Commission *c) {
  Status st;
  for (const auto &s : strings) {
    if (s.rfind(kPrefix, 0) != 0) continue;
    std::string kv = s.substr(sizeof(kPrefix) - 1);
    auto eq = kv.find('=');
    if (eq == std::string::npos)
      return InvalidArgument("commission: OEM string '" + s + "' from " + source + " is not ftpair:key=value");
    std::string key = kv.substr(0, eq);
    if (!valid_key(key))
      return InvalidArgument("commission: OEM string '" + s + "' from " + source + " has a bad key '" + key + "'");
    put(c, key, kv.substr(eq + 1), source, &st);
    if (!st.ok()) return st;
  }
  return st;
}

Status add_config_drive_yaml(const std::string &yaml_text, const std::string &source, Commission *c) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception &e) {
    return InvalidArgument("commission: " + source + ": not YAML: " + e.what());
  }
  if (!root.IsMap()) return InvalidArgument("commission: " + source + ": must be a map of key: value");
  std::vector<std::pair<std::string, std::string>> kvs;
  std::string err;
  try {
    flatten(root, "", &kvs, &err);
  } catch (const YAML::Exception &e) {
    err = e.what();
  }
  if (!err.empty()) return InvalidArgument("commission: " + source + ": " + err);
  Status st;
  for (const auto &[k, v] : kvs) {
    if (!valid_key(k)) return InvalidArgument("commission: " + source + ": bad key '" + k + "'");
    put(c, k, v, source, &st);
    if (!st.ok()) return st;
  }
  return st;
}

Status validate(const Commission &c) {
  auto get = [&](const std::string &k) -> const std::string * {
    auto it = c.values.find(k);
    return it == c.values.end() ? nullptr : &it->second;
  };
  // A spare does not know which node it will replace: it carries peer.candidates (both nodes)
  // instead of peer.grpc and joins whichever is active.
  if (get("peer.grpc") == nullptr && get("peer.candidates") != nullptr && !get("peer.candidates")->empty()) {
    for (const char *k : {"node.role", "node.id", "management.grpc"})
      if (get(k) == nullptr || get(k)->empty())
        return FailedPrecondition(std::string("commission: ftpair:") + k + " is missing from the environment");
    if (*get("node.role") != "standby")
      return FailedPrecondition("commission: ftpair:peer.candidates is only for a standby spare, node.role is '" +
                                *get("node.role") + "'");
    return Status::Ok();
  }
  for (const char *k : {"node.role", "node.id", "peer.grpc", "management.grpc"})
    if (get(k) == nullptr || get(k)->empty())
      return FailedPrecondition(std::string("commission: ftpair:") + k + " is missing from the environment");
  // "a" and "a.b" cannot both be set: one would be a value and a map at once.
  for (auto it = c.values.begin(); it != c.values.end(); ++it) {
    auto nx = c.values.lower_bound(it->first + ".");
    if (nx != c.values.end() && nx->first.rfind(it->first + ".", 0) == 0)
      return FailedPrecondition("commission: ftpair:" + it->first + " (from " + c.source_of.at(it->first) +
                                ") is a value but ftpair:" + nx->first + " makes it a section");
  }
  const std::string &role = *get("node.role");
  if (role != "active" && role != "standby")
    return FailedPrecondition("commission: ftpair:node.role '" + role + "' is not active or standby");
  if (*get("peer.grpc") == *get("management.grpc"))
    return FailedPrecondition("commission: ftpair:peer.grpc and ftpair:management.grpc are both '" +
                              *get("peer.grpc") + "': a node cannot be its own peer");
  return Status::Ok();
}

Status commission_from_environment(const std::string &dmi_dir, const std::string &config_drive, Commission *c) {
  bool any_source = false;
  // One file per type 11 structure; sorted so the result does not depend on readdir order.
  std::vector<std::string> raws;
  if (DIR *d = ::opendir((dmi_dir + "/entries").c_str())) {
    while (dirent *e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n.rfind("11-", 0) == 0) raws.push_back(dmi_dir + "/entries/" + n + "/raw");
    }
    ::closedir(d);
  }
  std::sort(raws.begin(), raws.end());
  std::vector<std::string> strings;
  std::string source;
  if (!raws.empty()) {
    for (const auto &p : raws) {
      std::string bytes;
      if (!read_file(p, &bytes)) return Unavailable("commission: cannot read " + p);
      StringsOrError r = parse_smbios_type11(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
      if (!r.ok()) return InvalidArgument("commission: " + p + ": " + r.error);
      strings.insert(strings.end(), r.strings.begin(), r.strings.end());
    }
    source = "SMBIOS (" + dmi_dir + "/entries/11-*)";
  } else {
    std::string bytes, table = dmi_dir + "/tables/DMI";
    if (read_file(table, &bytes)) {
      StringsOrError r = parse_dmi_table_type11(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
      if (!r.ok()) return InvalidArgument("commission: " + table + ": " + r.error);
      strings = std::move(r.strings);
      source = "SMBIOS (" + table + ")";
    }
  }
  size_t before = c->values.size();
  if (Status st = add_oem_strings(strings, source, c); !st.ok()) return st;
  any_source = c->values.size() > before;
  if (!config_drive.empty() && is_dir(config_drive)) {
    std::string text, path = config_drive + "/ftpair.yaml";
    if (!read_file(path, &text))
      return FailedPrecondition("commission: config drive " + config_drive + " has no readable ftpair.yaml");
    if (Status st = add_config_drive_yaml(text, "config drive " + path, c); !st.ok()) return st;
    any_source = true;
  }
  if (!any_source)
    return FailedPrecondition("commission: no ftpair:* SMBIOS OEM strings under " + dmi_dir +
                              " and no config drive" + (config_drive.empty() ? "" : " at " + config_drive) +
                              ": nothing to derive a role from");
  return validate(*c);
}

namespace {

struct Tree {
  std::string value;
  std::map<std::string, Tree> kids;
};

void emit(YAML::Emitter &out, const Tree &t) {
  out << YAML::BeginMap;
  for (const auto &[k, v] : t.kids) {
    out << YAML::Key << k << YAML::Value;
    if (v.kids.empty())
      out << v.value;
    else
      emit(out, v);
  }
  out << YAML::EndMap;
}

}  // namespace

bool is_daemon_key(const std::string &k) {
  // Not daemon keys: the pair name (host side), the guest address (network setup by the guest's
  // init), a spare's peer candidates and its pool keys (the spare's init waits for the host to
  // say which node it replaces, then writes that node's peer.grpc; see virt/guest.h).
  return k != "pair" && k != "management.address" && k != "peer.candidates" && k.rfind("pool.", 0) != 0;
}

std::string to_config_yaml(const Commission &c) {
  Tree root;
  for (const auto &[key, v] : c.values) {
    std::string k = key;
    if (k.rfind(kDefaultPrefix, 0) == 0) {
      k = k.substr(sizeof(kDefaultPrefix) - 1);
      if (c.values.count(k)) continue;
    }
    if (!is_daemon_key(k)) continue;
    Tree *t = &root;
    std::stringstream ks(k);
    for (std::string part; std::getline(ks, part, '.');) t = &t->kids[part];
    t->value = v;
  }
  YAML::Emitter out;
  emit(out, root);
  return std::string(out.c_str()) + "\n";
}

Status merge_into_config(const std::string &base_yaml, const Commission &c, std::string *out) {
  YAML::Node root;
  try {
    root = YAML::Load(base_yaml);
  } catch (const YAML::Exception &e) {
    return InvalidArgument(std::string("commission: base config is not YAML: ") + e.what());
  }
  if (!root) root = YAML::Node(YAML::NodeType::Map);
  if (!root.IsMap()) return InvalidArgument("commission: base config must be a YAML map");
  Tree derived;
  // In the base config already? (A "default.<key>" from the host gives way to it.)
  auto in_base = [&](const std::string &k) {
    YAML::Node n = YAML::Clone(root);
    std::stringstream ks(k);
    for (std::string part; std::getline(ks, part, '.');) {
      if (!n.IsMap() || !n[part]) return false;
      n = n[part];
    }
    return true;
  };
  for (const auto &[key, v] : c.values) {
    std::string k = key;
    if (k.rfind(kDefaultPrefix, 0) == 0) {
      k = k.substr(sizeof(kDefaultPrefix) - 1);
      if (c.values.count(k) || in_base(k)) continue;
    }
    if (!is_daemon_key(k)) continue;
    Tree *t = &derived;
    std::stringstream ks(k);
    for (std::string part; std::getline(ks, part, '.');) t = &t->kids[part];
    t->value = v;
  }
  // Walks the derived tree alongside the base; every map on the way is materialised before
  // descending (yaml-cpp's operator[] on a missing key only yields a placeholder).
  std::string err;
  std::function<void(YAML::Node, const Tree &, const std::string &)> merge = [&](YAML::Node node, const Tree &t,
                                                                               const std::string &path) {
    for (const auto &[k, sub] : t.kids) {
      if (!err.empty()) return;
      std::string key = path.empty() ? k : path + "." + k;
      if (!sub.kids.empty()) {
        if (!node[k]) node[k] = YAML::Node(YAML::NodeType::Map);
        if (!node[k].IsMap()) {
          err = "commission: base config " + key + " is not a section";
          return;
        }
        merge(node[k], sub, key);
        continue;
      }
      if (node[k] && node[k].IsScalar()) {
        std::string have = node[k].as<std::string>();
        bool open = key == "node.role" && have == "auto";
        if (!open && have != sub.value) {
          err = "commission: base config sets " + key + ": '" + have + "' but the environment (" +
                c.source_of.at(key) + ") says '" + sub.value + "'";
          return;
        }
      }
      node[k] = sub.value;
    }
  };
  try {
    merge(root, derived, "");
  } catch (const YAML::Exception &e) {
    err = std::string("commission: merging into the base config: ") + e.what();
  }
  if (!err.empty()) return FailedPrecondition(err);
  YAML::Emitter o;
  o << root;
  *out = std::string(o.c_str()) + "\n";
  return Status::Ok();
}

}  // namespace ftpair::virt
