// A text as a JSON string literal, for the reports that write JSON by hand
// (plan.json, the scaling prediction): quotes and backslashes escaped, control
// characters dropped (the reports' texts have none that matter).
#pragma once

#include <string>

namespace dtrain {

inline std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

}  // namespace dtrain
