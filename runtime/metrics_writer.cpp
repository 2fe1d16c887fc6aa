#include "runtime/metrics_writer.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "kernels/errors.h"

namespace dtrain {

MetricsWriter::MetricsWriter(const std::string& path) : path_(path), out_(path, std::ios::app) {
  if (!out_) throw DataError("cannot write metrics file '" + path + "': check that the run directory is writable");
}

void MetricsWriter::write(const std::string& kind, const std::vector<std::pair<std::string, double>>& fields) {
  std::string line = "{\"kind\":\"" + kind + "\"";
  char num[64];
  for (const auto& [key, value] : fields) {
    if (std::isfinite(value)) {
      std::snprintf(num, sizeof(num), "%.10g", value);
    } else {
      std::snprintf(num, sizeof(num), "null");  // JSON has no NaN or Inf
    }
    line += ",\"" + key + "\":" + num;
  }
  line += "}\n";
  out_ << line;
  out_.flush();
  if (!out_) throw DataError("writing metrics file '" + path_ + "' failed: is the disk full?");
}

void MetricsWriter::keep_up_to_step(const std::string& path, int64_t step) {
  std::ifstream in(path);
  std::vector<std::string> kept;
  const std::string tag = "\"step\":";
  for (std::string line; std::getline(in, line);) {
    const size_t at = line.find(tag);
    if (at != std::string::npos && std::strtod(line.c_str() + at + tag.size(), nullptr) > static_cast<double>(step)) continue;
    kept.push_back(line);
  }
  in.close();
  std::ofstream out(path, std::ios::trunc);
  for (const auto& line : kept) out << line << "\n";
}

}  // namespace dtrain
