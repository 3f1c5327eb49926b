#include "control/exposition.h"

#include <cmath>
#include <cstdio>

namespace ftpair {

namespace {
std::string escape(const std::string &v) {
  std::string o;
  for (char c : v) {
    if (c == '\\' || c == '"') o += '\\';
    if (c == '\n') {
      o += "\\n";
      continue;
    }
    o += c;
  }
  return o;
}
std::string fmt(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else
    std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}
std::string render_labels(const Exposition::Labels &labels) {
  if (labels.empty()) return "";
  std::string o = "{";
  for (size_t i = 0; i < labels.size(); i++) {
    if (i) o += ',';
    o += labels[i].first + "=\"" + escape(labels[i].second) + "\"";
  }
  return o + "}";
}
}  // namespace

Exposition &Exposition::family(const std::string &name, const char *type, const std::string &help) {
  cur_ = name;
  out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  return *this;
}

Exposition &Exposition::sample(double v, const Labels &labels) {
  out_ += cur_ + render_labels(labels) + " " + fmt(v) + "\n";
  return *this;
}

Exposition &Exposition::sample_suffix(const std::string &suffix, double v, const Labels &labels) {
  out_ += cur_ + suffix + render_labels(labels) + " " + fmt(v) + "\n";
  return *this;
}

Exposition &Exposition::histogram(const std::vector<double> &bounds, const std::vector<uint64_t> &cumulative,
                                  double sum, uint64_t count, const Labels &labels) {
  for (size_t i = 0; i < bounds.size(); i++) {
    Labels l = labels;
    l.emplace_back("le", fmt(bounds[i]));
    sample_suffix("_bucket", static_cast<double>(cumulative[i]), l);
  }
  Labels l = labels;
  l.emplace_back("le", "+Inf");
  sample_suffix("_bucket", static_cast<double>(count), l);
  sample_suffix("_sum", sum, labels);
  sample_suffix("_count", static_cast<double>(count), labels);
  return *this;
}

}  // namespace ftpair
