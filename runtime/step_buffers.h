// What one rank's training step holds beyond the model: the double-buffered input
// batch and the step's scalar sums (the model holds its own loss gradient). The trainer and the planner's
// probe step allocate the same, so the probe measures what training will hold.
#pragma once

#include <cstdint>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/tensor.h"
#include "models/model.h"
#include "runtime/device_batch.h"

namespace dtrain {

// The step's device scalars (doubles), all-reduced together once per step except
// kGradSqNorm, which every rank computes from the same reduced gradients.
enum StepStat : int {
  kLossSum = kModelLossSum,  // sum of the per-sample losses of the global batch
  kCorrect = kModelMetric,   // the model's statistic (a classifier's correct predictions)
  kSmallGradA = 2,    // noise scale: sum over ranks of a_r |g_r|^2 (Note [Gradient noise scale])
  kSmallGradB = 3,    // noise scale: sum over ranks of b_r |g_r|^2
  kStopRequests = 4,  // ranks asked to stop (a signal) when the step began
  kGradSqNorm = 5,    // |G|^2 of the reduced gradient (not all-reduced: equal everywhere)
  kStepStats = 6,
};

struct StepBuffers {
  StepBuffers(Context& ctx, const SampleLayout& layout, int64_t micro_batch);

  // Bytes per sample of micro-batch the buffers take: two input slots.
  static int64_t bytes_per_sample(const SampleLayout& layout) { return DeviceBatch::bytes_per_sample(layout); }

  DeviceBatch batch;
  Buffer stats;    // kStepStats doubles
};

}  // namespace dtrain
