// RUN_DIR/metrics.jsonl: one JSON object per line, flushed per line so a crashed or
// preempted run keeps what it logged. Written by rank 0 only.
//   train: {"kind":"train","step","epoch","loss","lr","samples","samples_per_s","time_s"}
//   eval:  {"kind":"eval","step","eval_loss","eval_accuracy"}
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace dtrain {

class MetricsWriter {
 public:
  explicit MetricsWriter(const std::string& path);
  // Numbers are written with 10 significant digits; keys in the order given.
  void write(const std::string& kind, const std::vector<std::pair<std::string, double>>& fields);

  // Drops the lines of steps after `step` from the file at `path` (a resumed run
  // continues its metrics from the checkpoint's step, not after the lost steps).
  static void keep_up_to_step(const std::string& path, int64_t step);

 private:
  std::string path_;
  std::ofstream out_;
};

}  // namespace dtrain
