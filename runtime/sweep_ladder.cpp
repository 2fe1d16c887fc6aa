#include "runtime/sweep_ladder.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

#include "kernels/errors.h"
#include "runtime/batch_plan.h"

namespace dtrain {
namespace {

int64_t floor_power_of_two(int64_t n) {
  int64_t p = 1;
  while (p * 2 <= n) p *= 2;
  return p;
}

std::optional<std::string> string_field(const std::string& line, const std::string& key) {
  const std::string tag = "\"" + key + "\":\"";
  const size_t at = line.find(tag);
  if (at == std::string::npos) return std::nullopt;
  const size_t end = line.find('"', at + tag.size());
  if (end == std::string::npos) return std::nullopt;
  return line.substr(at + tag.size(), end - at - tag.size());
}

}  // namespace

std::vector<int64_t> auto_batch_ladder(int64_t largest_plain, int world_size) {
  const int64_t top = floor_power_of_two(std::max<int64_t>(1, largest_plain));
  int64_t low = floor_power_of_two(std::max<int64_t>(1, top / 64));
  while (low < world_size) low *= 2;
  std::vector<int64_t> ladder;
  for (int64_t b = low; b <= top; b *= 2) ladder.push_back(b);
  if (largest_plain != top && largest_plain >= world_size) ladder.push_back(largest_plain);
  ladder.push_back(2 * largest_plain);
  ladder.push_back(4 * largest_plain);
  return ladder;
}

std::vector<int64_t> parse_batch_list(const std::string& text) {
  std::vector<int64_t> batches;
  std::set<int64_t> seen;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    char* end = nullptr;
    errno = 0;
    const long long b = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || end != item.c_str() + item.size() || errno != 0 || b < 1) {
      throw UsageError("--batches " + text + ": '" + item + "' is not a positive whole number; give e.g. " +
                       "--batches 32,64,128 or --batches auto");
    }
    if (!seen.insert(b).second) throw UsageError("--batches " + text + ": " + item + " is given twice");
    batches.push_back(b);
  }
  if (batches.empty()) throw UsageError("--batches is empty; give e.g. --batches 32,64,128 or --batches auto");
  return batches;
}

std::optional<std::string> batch_unplannable(int64_t global_batch, const std::vector<int64_t>& capacity,
                                             int64_t micro_batch, int world_size, int64_t train_samples) {
  if (global_batch > train_samples) {
    return "global batch " + std::to_string(global_batch) + " is larger than the " + std::to_string(train_samples) +
           " training samples of an epoch (an epoch would have no step)";
  }
  try {
    const std::string where = "global batch " + std::to_string(global_batch);
    if (micro_batch > 0) {
      make_uniform_plan(global_batch, micro_batch, world_size, where);
    } else {
      plan_from_capacities(capacity, global_batch, where);
    }
  } catch (const ConfigError& e) {
    return std::string(e.what());
  }
  return std::nullopt;
}

std::string sweep_point_dir(int64_t batch, int64_t seed) {
  char name[64];
  std::snprintf(name, sizeof(name), "b%06lld-seed%lld", static_cast<long long>(batch), static_cast<long long>(seed));
  return name;
}

std::string sweep_record_json(const SweepRecord& r) {
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "{\"batch\":%lld,\"seed\":%lld,\"accumulation\":%lld,\"reached\":%s,\"steps\":%lld,\"samples\":%lld,"
                "\"epochs\":%.6g,\"wall_s\":%.6g,\"final_metric\":%.8g,\"b_simple\":%.6g,",
                static_cast<long long>(r.batch), static_cast<long long>(r.seed),
                static_cast<long long>(r.accumulation), r.reached ? "true" : "false",
                static_cast<long long>(r.steps), static_cast<long long>(r.samples), r.epochs, r.wall_s,
                r.final_metric, r.b_simple);
  return std::string(buf) + "\"target\":\"" + r.target + "\"}";
}

SweepRecord parse_sweep_record(const std::string& line, const std::string& source) {
  auto number = [&](const std::string& key) {
    const std::string tag = "\"" + key + "\":";
    const size_t at = line.find(tag);
    if (at == std::string::npos) {
      throw DataError(source + ": no \"" + key + "\" in the point's record; delete its run directory to run it again");
    }
    return std::strtod(line.c_str() + at + tag.size(), nullptr);
  };
  SweepRecord r;
  r.batch = static_cast<int64_t>(number("batch"));
  r.seed = static_cast<int64_t>(number("seed"));
  r.accumulation = static_cast<int64_t>(number("accumulation"));
  r.reached = line.find("\"reached\":true") != std::string::npos;
  r.steps = static_cast<int64_t>(number("steps"));
  r.samples = static_cast<int64_t>(number("samples"));
  r.epochs = number("epochs");
  r.wall_s = number("wall_s");
  r.final_metric = number("final_metric");
  r.b_simple = number("b_simple");
  r.target = string_field(line, "target").value_or("");
  return r;
}

}  // namespace dtrain
