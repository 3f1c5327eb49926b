#include "tools/ftpairctl/render.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <vector>

#include <google/protobuf/descriptor.h>

namespace ftpairctl {

namespace pb = google::protobuf;
using json = nlohmann::ordered_json;

namespace {

std::string base64(const std::string &in) {
  static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8 | uint8_t(in[i + 2]);
    out += {tbl[v >> 18], tbl[(v >> 12) & 63], tbl[(v >> 6) & 63], tbl[v & 63]};
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16;
    out += {tbl[v >> 18], tbl[(v >> 12) & 63], '=', '='};
  } else if (i + 2 == in.size()) {
    uint32_t v = uint32_t(uint8_t(in[i])) << 16 | uint32_t(uint8_t(in[i + 1])) << 8;
    out += {tbl[v >> 18], tbl[(v >> 12) & 63], tbl[(v >> 6) & 63], '='};
  }
  return out;
}

// Value of field f of m: element i when f is repeated, the single value otherwise.
json field_value(const pb::Message &m, const pb::FieldDescriptor *f, int i) {
  const pb::Reflection *r = m.GetReflection();
  const bool rep = f->is_repeated();
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32: return rep ? r->GetRepeatedInt32(m, f, i) : r->GetInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_INT64: return rep ? r->GetRepeatedInt64(m, f, i) : r->GetInt64(m, f);
    case pb::FieldDescriptor::CPPTYPE_UINT32: return rep ? r->GetRepeatedUInt32(m, f, i) : r->GetUInt32(m, f);
    case pb::FieldDescriptor::CPPTYPE_UINT64: return rep ? r->GetRepeatedUInt64(m, f, i) : r->GetUInt64(m, f);
    case pb::FieldDescriptor::CPPTYPE_DOUBLE: return rep ? r->GetRepeatedDouble(m, f, i) : r->GetDouble(m, f);
    case pb::FieldDescriptor::CPPTYPE_FLOAT: return rep ? r->GetRepeatedFloat(m, f, i) : r->GetFloat(m, f);
    case pb::FieldDescriptor::CPPTYPE_BOOL: return rep ? r->GetRepeatedBool(m, f, i) : r->GetBool(m, f);
    case pb::FieldDescriptor::CPPTYPE_ENUM:
      return (rep ? r->GetRepeatedEnum(m, f, i) : r->GetEnum(m, f))->name();
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      std::string s = rep ? r->GetRepeatedString(m, f, i) : r->GetString(m, f);
      return f->type() == pb::FieldDescriptor::TYPE_BYTES ? base64(s) : s;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      return to_json(rep ? r->GetRepeatedMessage(m, f, i) : r->GetMessage(m, f));
  }
  return nullptr;
}

std::string fmt(const char *f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

const char *yes_no(bool b) { return b ? "yes" : "no"; }

// Lines of "label  value" with the values in one column.
class Block {
 public:
  Block &add(const std::string &label, const std::string &value) {
    rows_.emplace_back(label, value);
    return *this;
  }
  std::string str() const {
    size_t w = 0;
    for (const auto &r : rows_) w = std::max(w, r.first.size());
    std::string out;
    for (const auto &[label, value] : rows_) {
      out += label;
      if (!value.empty()) out += std::string(w + 2 - label.size(), ' ') + value;
      out += '\n';
    }
    return out;
  }

 private:
  std::vector<std::pair<std::string, std::string>> rows_;
};

std::string logfmt_value(const std::string &v) {
  if (!v.empty() && v.find_first_of(" \"=\t") == std::string::npos) return v;
  std::string q = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') q += '\\';
    q += c;
  }
  return q + "\"";
}

std::string age_value(double s) { return s < 0 ? "never" : fmt("%.3f", s); }

}  // namespace

json to_json(const pb::Message &msg) {
  json out = json::object();
  const pb::Descriptor *d = msg.GetDescriptor();
  const pb::Reflection *r = msg.GetReflection();
  for (int k = 0; k < d->field_count(); k++) {
    const pb::FieldDescriptor *f = d->field(k);
    if (f->containing_oneof() && !r->HasField(msg, f)) continue;  // only the set member of a oneof
    if (f->is_map()) {
      json obj = json::object();
      for (int i = 0; i < r->FieldSize(msg, f); i++) {
        const pb::Message &e = r->GetRepeatedMessage(msg, f, i);
        json key = field_value(e, e.GetDescriptor()->map_key(), -1);
        obj[key.is_string() ? key.get<std::string>() : key.dump()] = field_value(e, e.GetDescriptor()->map_value(), -1);
      }
      out[f->name()] = std::move(obj);
    } else if (f->is_repeated()) {
      json arr = json::array();
      for (int i = 0; i < r->FieldSize(msg, f); i++) arr.push_back(field_value(msg, f, i));
      out[f->name()] = std::move(arr);
    } else {
      out[f->name()] = field_value(msg, f, -1);
    }
  }
  return out;
}

std::string format_age(double s) {
  if (s < 0) return "never";
  if (s < 10) return fmt("%.3f s ago", s);
  if (s < 120) return fmt("%.1f s ago", s);
  uint64_t t = static_cast<uint64_t>(s);
  char buf[64];
  if (t < 3600)
    std::snprintf(buf, sizeof buf, "%" PRIu64 "m%02" PRIu64 "s ago", t / 60, t % 60);
  else
    std::snprintf(buf, sizeof buf, "%" PRIu64 "h%02" PRIu64 "m ago", t / 3600, t / 60 % 60);
  return buf;
}

std::string format_bytes(uint64_t b) {
  if (b < 1024) return std::to_string(b) + " B";
  if (b < (uint64_t(1) << 20)) return fmt("%.1f KiB", double(b) / 1024);
  if (b < (uint64_t(1) << 30)) return fmt("%.1f MiB", double(b) / (1 << 20));
  return fmt("%.1f GiB", double(b) / (1 << 30));
}

std::string render_status(const ftpair::v1::StatusReply &s) {
  const auto &y = s.sync();
  Block b;
  b.add("node", s.node_id());
  b.add("software", "ftpaird " + s.software_version());
  b.add("role", s.role());
  b.add("state", s.state());
  b.add("generation", std::to_string(s.generation()));
  if (!s.upgrade_stage().empty() && s.upgrade_stage() != "idle") {
    const auto &u = s.upgrade();
    b.add("upgrade", u.stage() + (u.message().empty() ? "" : ": " + u.message()));
    if (u.beside_pid())
      b.add("  new instance", "pid " + std::to_string(u.beside_pid()) + " at " + u.beside_address() + ", version " +
                                  u.beside_version() + ", " +
                                  (u.beside_in_sync() ? std::string("in sync") : fmt("full sync %.0f%%", 100 * u.beside_sync_progress())));
  }
  if (!s.upgrade().joiner_address().empty()) {
    const auto &u = s.upgrade();
    b.add("joining instance", u.joiner_address() + " (" + u.joiner_version() + ", record format " +
                                  std::to_string(u.joiner_record_format()) + "), " +
                                  (u.joiner_in_sync() ? std::string("in sync") : fmt("full sync %.0f%%", 100 * u.joiner_sync_progress())));
  }
  b.add("dataplane", s.dataplane_healthy() ? "healthy" : "UNHEALTHY");
  b.add("health", s.serving() ? "SERVING" : "NOT_SERVING");
  if (s.restart_pending_size() > 0) {
    std::string keys;
    for (const auto &k : s.restart_pending()) keys += (keys.empty() ? "" : ", ") + k;
    b.add("restart needed", keys);
  }
  for (const auto &w : s.security_warnings()) b.add("SECURITY", w);
  for (const auto &a : s.alarms()) b.add("ALARM", a);
  std::string flows = std::to_string(s.flows()) + " of " + std::to_string(s.flow_capacity());
  if (s.flow_capacity()) flows += fmt(" (%.1f%%)", 100.0 * double(s.flows()) / double(s.flow_capacity()));
  if (s.workers() > 1) flows += ", on " + std::to_string(s.workers()) + " workers";
  b.add("flows", flows);
  b.add("peer node", (s.peer_role().empty() ? std::string("role unknown") : s.peer_role()) + ", " +
                         (s.peer_reachable() ? "reachable" : "not reachable"));
  if (!s.dataplane_beats().empty()) b.add("dataplane beats", s.dataplane_beats());
  for (const auto &p : s.ports())
    b.add("port " + p.name(), p.device() + ", driver " + (p.driver().empty() ? "?" : p.driver()) + ", " + p.mac() +
                                  ", link " + (p.link_up() ? "up" : "down") +
                                  (p.link_speed_mbps() ? " " + std::to_string(p.link_speed_mbps()) + " Mb/s" : std::string()));
  b.add("checkpoints", std::to_string(s.checkpoints()) + " (" + std::to_string(s.checkpoints_aborted()) + " aborted)");
  b.add("last checkpoint", format_age(s.last_checkpoint_age_seconds()));
  b.add("last pause", fmt("%.1f µs", s.last_pause_us()));
  b.add("sync", "");
  b.add("  peer", y.peer().empty() ? "(none)" : y.peer());
  if (!y.peer_node().empty()) {
    // The active's standby, as it last said on its stream (its hello, its last acknowledgement).
    std::string said = "node " + y.peer_node();
    if (y.peer_state() != ftpair::v1::ROLE_STATE_UNSPECIFIED) {
      std::string st = ftpair::v1::RoleState_Name(y.peer_state());
      if (st.rfind("ROLE_STATE_", 0) == 0) st = st.substr(11);
      said += ", " + (st.empty() ? std::to_string(int(y.peer_state())) : st) + ", " + std::to_string(y.peer_flows()) +
              " flows";
    }
    said += fmt(", stream up %.1f s", y.stream_age_seconds());
    b.add("  standby says", said);
  }
  b.add("  mode", y.mode());
  if (s.upgrade().record_format()) b.add("  record format", std::to_string(s.upgrade().record_format()));
  b.add("  connected", yes_no(y.connected()));
  b.add("  in sync", yes_no(y.in_sync()));
  b.add("  epoch", std::to_string(y.epoch()));
  b.add("  acked epoch", std::to_string(y.acked_epoch()));
  b.add("  lag", std::to_string(y.lag_epochs()) + " epochs, " + format_bytes(y.lag_bytes()));
  b.add("  last ack", format_age(y.last_ack_age_seconds()));
  b.add("  full syncs", std::to_string(y.full_syncs()));
  const double p = y.full_sync_progress();
  b.add("  full sync progress", p > 0 && p < 1 ? fmt("%.1f%%", 100 * p) : "none running");
  b.add("  exposure", std::to_string(y.exposure_epochs()) + " epochs");
  if (y.fingerprints_checked() || y.divergences())
    b.add("  divergences", std::to_string(y.divergences()) + " (of " + std::to_string(y.fingerprints_checked()) +
                               " epochs' fingerprints compared)" +
                               (y.diverged_epoch() ? "; diverged at epoch " + std::to_string(y.diverged_epoch()) +
                                                         ", waiting for a full sync"
                                                   : ""));
  return b.str();
}

std::string render_status_line(const ftpair::v1::StatusReply &s) {
  const auto &y = s.sync();
  std::string l;
  auto kv = [&](const char *k, const std::string &v) {
    if (!l.empty()) l += ' ';
    l += k;
    l += '=';
    l += logfmt_value(v);
  };
  kv("node", s.node_id());
  kv("role", s.role());
  kv("state", s.state());
  kv("generation", std::to_string(s.generation()));
  kv("dataplane", s.dataplane_healthy() ? "healthy" : "unhealthy");
  kv("health", s.serving() ? "serving" : "not_serving");
  kv("flows", std::to_string(s.flows()) + "/" + std::to_string(s.flow_capacity()));
  kv("peer", y.peer());
  kv("connected", yes_no(y.connected()));
  kv("in_sync", yes_no(y.in_sync()));
  kv("mode", y.mode());
  kv("epoch", std::to_string(y.epoch()));
  kv("acked", std::to_string(y.acked_epoch()));
  kv("lag_epochs", std::to_string(y.lag_epochs()));
  kv("lag_bytes", std::to_string(y.lag_bytes()));
  kv("ack_age_s", age_value(y.last_ack_age_seconds()));
  kv("full_syncs", std::to_string(y.full_syncs()));
  kv("exposure", std::to_string(y.exposure_epochs()));
  kv("divergences", std::to_string(y.divergences()));
  kv("checkpoint_age_s", age_value(s.last_checkpoint_age_seconds()));
  kv("pause_us", fmt("%.1f", s.last_pause_us()));
  kv("checkpoints", std::to_string(s.checkpoints()));
  kv("aborted", std::to_string(s.checkpoints_aborted()));
  return l;
}

std::string render_switchover(const ftpair::v1::SwitchoverReply &r) {
  std::string out = r.message().empty() ? std::string("switchover done") : r.message();
  out += '\n';
  if (r.duration_ms() > 0 || r.packets_held() > 0)
    out += fmt("took %.3f ms", r.duration_ms()) + ", " + std::to_string(r.packets_held()) + " packets held\n";
  return out;
}

std::string render_checkpoint(const ftpair::v1::CheckpointReply &r, bool snapshot_asked) {
  Block b;
  b.add("epoch", std::to_string(r.epoch()));
  b.add("acked epoch", std::to_string(r.acked_epoch()));
  b.add("records", std::to_string(r.records()));
  b.add("pause", fmt("%.1f µs", r.pause_us()));
  b.add("snapshot", !r.snapshot_path().empty() ? r.snapshot_path()
                    : snapshot_asked           ? "none written"
                                               : "not requested (--snapshot)");
  return b.str();
}

std::string render_flows(const ftpair::v1::FlowsReply &r) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"SLOT", "PROTO", "INSIDE", "OUTSIDE", "NAT", "STATE"});
  // A slot is its worker's table's: WORKER/SLOT once a flow of a worker past 0 shows.
  bool sharded = false;
  for (const auto &f : r.flows()) sharded |= f.worker() > 0;
  for (const auto &f : r.flows())
    rows.push_back({sharded ? std::to_string(f.worker()) + "/" + std::to_string(f.slot()) : std::to_string(f.slot()),
                    f.proto(), f.inside(), f.outside(), f.nat(), f.state()});
  std::string out;
  if (r.flows_size() > 0) {
    std::vector<size_t> w(rows[0].size(), 0);
    for (const auto &row : rows)
      for (size_t c = 0; c < row.size(); c++) w[c] = std::max(w[c], row[c].size());
    for (const auto &row : rows) {
      std::string line;
      for (size_t c = 0; c < row.size(); c++) {
        const std::string &cell = row[c];
        if (c == 0) {  // slot: right-aligned number
          line += std::string(w[c] - cell.size(), ' ') + cell;
        } else {
          line += "  " + cell;
          if (c + 1 < row.size()) line += std::string(w[c] - cell.size(), ' ');
        }
      }
      out += line + '\n';
    }
  }
  out += std::to_string(r.flows_size()) + " of " + std::to_string(r.total()) + " flows at epoch " +
         std::to_string(r.epoch()) + '\n';
  return out;
}

}  // namespace ftpairctl
