// A target on an evaluation metric, at which a training run stops (dtrain sweep): the
// held-out loss or one of the model's metrics (Model::eval_metrics), e.g.
// eval_accuracy >= 0.88 or eval_loss <= 1.6.
//
// Note [Target evaluation schedule]
// Steps to a target are only known to the resolution of the evaluations. A run with a
// target evaluates at every step up to 1 / resolution, and after that whenever the
// step count has grown by the factor (1 + resolution) since the last grid point (a
// geometric grid: step s is due when floor(log(s) / log(1 + r)) differs from that of
// s - 1). The step at which the target is first seen is then at most a factor
// (1 + r) (and one step) past the first step that reached it, whatever the scale of
// the run, for about (1/r) (1 + ln(S r)) evaluations in S steps. Every rank computes
// the same schedule from the step alone, and sees the same all-reduced evaluation, so
// all ranks stop at the same step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/model.h"

namespace dtrain {

struct EvalTarget {
  std::string key;        // as in metrics.jsonl: eval_loss, eval_accuracy, eval_bits_per_byte
  double value = 0.0;
  bool higher_is_better = false;  // accuracy: reached at >=; losses: reached at <=
  double resolution = 0.05;       // Note [Target evaluation schedule]

  // "eval_accuracy >= 0.88"
  std::string describe() const;
};

// The metric keys a model's evaluation reports: eval_loss, then eval_<name> for each
// of Model::eval_metrics.
std::vector<std::string> eval_metric_keys(const std::vector<Metric>& model_metrics);

// Parses KEY=VALUE. Throws UsageError naming the text and listing `known_keys` when
// the key is not one of them, or when the value is not a finite number.
EvalTarget parse_eval_target(const std::string& text, const std::vector<std::string>& known_keys);

// Whether a run with a target evaluates after optimizer step `step` (1-based).
bool target_evaluation_due(int64_t step, double resolution);

// The value of `key` in an evaluation (its loss and metrics); throws Error when the
// evaluation has no such metric.
double eval_metric_value(const std::string& key, double eval_loss, const std::vector<Metric>& metrics);

// Whether an evaluation reaches the target.
bool target_reached(const EvalTarget& target, double eval_loss, const std::vector<Metric>& metrics);

}  // namespace dtrain
