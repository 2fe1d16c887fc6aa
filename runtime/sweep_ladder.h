// The ladder of a batch-size sweep (dtrain sweep): which global batches it runs, that
// each can be planned on these ranks before any run starts, where each point's run
// lives, and the record a finished point leaves behind.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dtrain {

// `--batches auto`: powers of two doubling from a small batch (the largest power of
// two at most 1/64 of `largest_plain`, and at least the world size) up to the largest
// power of two at most `largest_plain`, then `largest_plain` itself when it is not a
// power of two, and two rungs past it (x2 and x4), which need accumulation.
// `largest_plain`: the largest global batch the memory plans with k = 1.
std::vector<int64_t> auto_batch_ladder(int64_t largest_plain, int world_size);

// "32,64,128" -> {32, 64, 128}. Throws UsageError naming the bad entry, or a repeat.
std::vector<int64_t> parse_batch_list(const std::string& text);

// Why a global batch cannot be run on these ranks, or nothing when it can.
// `capacity`: each rank's largest micro-batch (train.micro_batch auto), or empty with
// `micro_batch` > 0 given; `train_samples`: an epoch's samples (one step at least).
std::optional<std::string> batch_unplannable(int64_t global_batch, const std::vector<int64_t>& capacity,
                                             int64_t micro_batch, int world_size, int64_t train_samples);

// The run directory of a point inside the sweep directory: "b000064-seed1".
std::string sweep_point_dir(int64_t batch, int64_t seed);

// What a finished point leaves in its run directory (point.json, one line of JSON).
struct SweepRecord {
  int64_t batch = 0, seed = 0;
  int64_t accumulation = 1;  // k of its plan
  bool reached = false;
  int64_t steps = 0;         // to the target, or all the run's steps when not reached
  int64_t samples = 0;       // steps x batch
  double epochs = 0.0;       // samples / the epoch's samples
  double wall_s = 0.0;       // the training's wall time, summed over interrupted parts
  double final_metric = 0.0; // the target's metric at the run's last evaluation
  double b_simple = 0.0;     // the noise scale at the run's end (TrainResult::noise_scale); 0: not measured
  std::string target;        // EvalTarget::describe(), to refuse mixing targets
};

std::string sweep_record_json(const SweepRecord& r);
// Throws DataError naming `source` when a field is missing.
SweepRecord parse_sweep_record(const std::string& line, const std::string& source);

}  // namespace dtrain
