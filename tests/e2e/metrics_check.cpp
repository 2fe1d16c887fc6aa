// Checks on the metrics.jsonl files that finished runs wrote, for the end-to-end tests.
//   metrics_check compare REL STEPS DIR_A DIR_B...   train loss at steps 1..STEPS of every
//                                                     run within REL relative of DIR_A's
//   metrics_check min-accuracy MIN DIR                the last eval_accuracy is at least MIN
// Exit 0 when the check holds, 1 when it does not, 2 for unusable input.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

// The number after "key": in a flat JSON object line, if present.
std::optional<double> field(const std::string& line, const std::string& key) {
  const std::string tag = "\"" + key + "\":";
  const size_t at = line.find(tag);
  if (at == std::string::npos) return std::nullopt;
  return std::strtod(line.c_str() + at + tag.size(), nullptr);
}

std::vector<std::string> lines_of(const std::string& dir) {
  std::ifstream in(dir + "/metrics.jsonl");
  if (!in) {
    std::cerr << "metrics_check: cannot read " << dir << "/metrics.jsonl\n";
    std::exit(2);
  }
  std::vector<std::string> out;
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

std::map<long, double> train_losses(const std::string& dir) {
  std::map<long, double> losses;
  for (const auto& line : lines_of(dir)) {
    if (line.find("\"kind\":\"train\"") == std::string::npos) continue;
    losses[static_cast<long>(*field(line, "step"))] = *field(line, "loss");
  }
  return losses;
}

int compare(double rel, long steps, const std::vector<std::string>& dirs) {
  const auto reference = train_losses(dirs[0]);
  int failures = 0;
  for (size_t d = 1; d < dirs.size(); ++d) {
    const auto other = train_losses(dirs[d]);
    double worst = 0.0;
    for (long s = 1; s <= steps; ++s) {
      if (!reference.count(s) || !other.count(s)) {
        std::cerr << "step " << s << " missing in " << (reference.count(s) ? dirs[d] : dirs[0]) << "\n";
        return 1;
      }
      const double a = reference.at(s), b = other.at(s);
      const double r = std::fabs(a - b) / std::max(std::fabs(a), 1e-12);
      worst = std::max(worst, r);
      if (r > rel) {
        std::printf("step %ld: loss %.10g in %s vs %.10g in %s: relative difference %.3g > %.3g\n", s, b,
                    dirs[d].c_str(), a, dirs[0].c_str(), r, rel);
        ++failures;
      }
    }
    std::printf("%s vs %s: %ld steps, largest relative loss difference %.3g (bound %.3g)\n", dirs[d].c_str(),
                dirs[0].c_str(), steps, worst, rel);
  }
  return failures == 0 ? 0 : 1;
}

int min_accuracy(double min, const std::string& dir) {
  std::optional<double> last;
  for (const auto& line : lines_of(dir)) {
    if (auto a = field(line, "eval_accuracy")) last = a;
  }
  if (!last) {
    std::cerr << dir << "/metrics.jsonl has no eval line\n";
    return 1;
  }
  std::printf("final test accuracy %.4f (required at least %.4f)\n", *last, min);
  return *last >= min ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string> a(argv + 1, argv + argc);
  if (a.size() >= 4 && a[0] == "compare") {
    return compare(std::atof(a[1].c_str()), std::atol(a[2].c_str()), std::vector<std::string>(a.begin() + 3, a.end()));
  }
  if (a.size() == 3 && a[0] == "min-accuracy") return min_accuracy(std::atof(a[1].c_str()), a[2]);
  std::cerr << "usage: metrics_check compare REL STEPS DIR_A DIR_B... | metrics_check min-accuracy MIN DIR\n";
  return 2;
}
