/* Prometheus text exposition: families are declared once (name, type, help) and samples
 * follow. Names follow the conventions: ftpair_ prefix, _total for counters. */
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ftpair {

class Exposition {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;
  // Starts a family. type: counter | gauge | histogram | info.
  Exposition &family(const std::string &name, const char *type, const std::string &help);
  Exposition &sample(double v, const Labels &labels = {});
  Exposition &sample_suffix(const std::string &suffix, double v, const Labels &labels = {});
  // A histogram from cumulative bucket counts (upper bounds in the family's unit).
  Exposition &histogram(const std::vector<double> &bounds, const std::vector<uint64_t> &cumulative,
                        double sum, uint64_t count, const Labels &labels = {});
  const std::string &text() const { return out_; }

 private:
  std::string cur_;
  std::string out_;
};

}  // namespace ftpair
