#include "runtime/metrics_writer.h"

#include <cmath>
#include <cstdio>

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

}  // namespace dtrain
