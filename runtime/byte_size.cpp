#include "runtime/byte_size.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <utility>

namespace dtrain {

int64_t parse_byte_size(const std::string& text) {
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1.0},           {"B", 1.0},           {"KB", 1e3},           {"MB", 1e6},
      {"GB", 1e9},         {"TB", 1e12},         {"KiB", 1024.0},       {"MiB", 1048576.0},
      {"GiB", 1073741824.0}, {"TiB", 1099511627776.0}};
  const char* kHelp = "expected a size in bytes, or a number with a unit: B, KB, MB, GB, KiB, MiB, GiB (512MiB)";
  size_t end = 0;
  double number = 0.0;
  try {
    number = std::stod(text, &end);
  } catch (const std::exception&) {
    throw std::invalid_argument(kHelp);
  }
  while (end < text.size() && std::isspace(static_cast<unsigned char>(text[end]))) ++end;
  const std::string unit = text.substr(end);
  for (const auto& [name, scale] : kUnits) {
    if (unit != name) continue;
    const double bytes = number * scale;
    if (!(bytes >= 0.0) || bytes > 9.0e18) throw std::invalid_argument("the size must be between 0 and 8 EiB");
    if (scale == 1.0 && bytes != std::floor(bytes)) throw std::invalid_argument("a size in bytes must be whole");
    return static_cast<int64_t>(std::llround(bytes));
  }
  throw std::invalid_argument(std::string("unknown unit '") + unit + "'; " + kHelp);
}

std::string format_bytes(double bytes) {
  char buf[32];
  if (bytes < 1024.0) {
    std::snprintf(buf, sizeof(buf), "%.0f B", bytes);
  } else if (bytes < 1048576.0) {
    std::snprintf(buf, sizeof(buf), "%.1f KiB", bytes / 1024.0);
  } else if (bytes < 1073741824.0) {
    std::snprintf(buf, sizeof(buf), "%.1f MiB", bytes / 1048576.0);
  } else {
    std::snprintf(buf, sizeof(buf), "%.2f GiB", bytes / 1073741824.0);
  }
  return buf;
}

}  // namespace dtrain
