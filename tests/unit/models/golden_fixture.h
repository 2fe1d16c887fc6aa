// Reads the golden fixtures tests/golden/make_*golden.py write: '#' comment lines,
// 'KEY V...' lines and 'tensor NAME COUNT' followed by COUNT values, each the
// shortest decimal that reads back as PyTorch's exact float32.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace dtrain::testing_golden {

struct Fixture {
  std::map<std::string, std::vector<std::string>> keys;             // 'KEY V...' lines
  std::vector<std::pair<std::string, std::vector<float>>> tensors;  // in file order

  const std::vector<float>& tensor(const std::string& name) const {
    for (const auto& [n, v] : tensors) {
      if (n == name) return v;
    }
    throw std::runtime_error("fixture has no tensor '" + name + "'");
  }
  const std::vector<std::string>& key(const std::string& name) const {
    auto it = keys.find(name);
    if (it == keys.end()) throw std::runtime_error("fixture has no '" + name + "' line");
    return it->second;
  }
  int64_t integer(const std::string& name) const { return std::stoll(key(name).at(0)); }
  std::vector<int64_t> ints(const std::string& name) const {
    std::vector<int64_t> out;
    for (const std::string& s : key(name)) out.push_back(std::stoll(s));
    return out;
  }
  // The tensors whose names start with `prefix`, in file order, the prefix removed.
  std::vector<std::pair<std::string, const std::vector<float>*>> with_prefix(const std::string& prefix) const {
    std::vector<std::pair<std::string, const std::vector<float>*>> out;
    for (const auto& [n, v] : tensors) {
      if (n.rfind(prefix, 0) == 0) out.emplace_back(n.substr(prefix.size()), &v);
    }
    return out;
  }
};

// Throws std::runtime_error naming the file and line on anything malformed.
inline Fixture read_fixture(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open golden fixture " + path);
  Fixture f;
  std::string line;
  int line_no = 0;
  auto fail = [&](const std::string& why) {
    throw std::runtime_error(path + ":" + std::to_string(line_no) + ": " + why);
  };
  while (std::getline(in, line)) {
    ++line_no;
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string first;
    words >> first;
    if (first != "tensor") {
      std::vector<std::string>& values = f.keys[first];
      for (std::string w; words >> w;) values.push_back(w);
      continue;
    }
    std::string name;
    int64_t count = -1;
    if (!(words >> name >> count) || count < 0) fail("expected 'tensor NAME COUNT'");
    std::vector<float> values;
    values.reserve(static_cast<size_t>(count));
    while (static_cast<int64_t>(values.size()) < count && std::getline(in, line)) {
      ++line_no;
      std::istringstream nums(line);
      for (std::string w; nums >> w;) {
        char* end = nullptr;
        const float v = std::strtof(w.c_str(), &end);
        if (end != w.c_str() + w.size()) fail("'" + w + "' is not a number");
        values.push_back(v);
      }
    }
    if (static_cast<int64_t>(values.size()) != count) {
      fail("tensor " + name + " has " + std::to_string(values.size()) + " values, expected " +
           std::to_string(count));
    }
    f.tensors.emplace_back(name, std::move(values));
  }
  return f;
}

}  // namespace dtrain::testing_golden
