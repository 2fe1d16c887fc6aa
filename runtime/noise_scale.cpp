#include "runtime/noise_scale.h"

#include <algorithm>
#include <cstdio>

namespace dtrain {

SmallBatchWeights small_batch_weights(double small_batch, double big_batch) {
  // |G_small|^2 = (G / B_small)^2 |g|^2: the raw buffer is scaled by 1/G, not 1/B_small.
  const double to_mean = (big_batch / small_batch) * (big_batch / small_batch);
  SmallBatchWeights w;
  w.to_gradient_sq = big_batch / (big_batch - small_batch);
  w.a = small_batch / (big_batch - small_batch) * to_mean;
  const double inverse_gap = 1.0 / small_batch - 1.0 / big_batch;
  w.b = to_mean / inverse_gap;
  w.to_trace = 1.0 / inverse_gap;
  return w;
}

void NoiseScaleEstimator::add(double gradient_sq, double trace_sigma) {
  gradient_sq_ema_ = decay_ * gradient_sq_ema_ + (1.0 - decay_) * gradient_sq;
  trace_ema_ = decay_ * trace_ema_ + (1.0 - decay_) * trace_sigma;
  weight_ = decay_ * weight_ + (1.0 - decay_);
  ++steps_;
}

void NoiseScaleEstimator::add_from_batches(double small_sq, double small_batch, double big_sq,
                                           double big_batch) {
  add((big_batch * big_sq - small_batch * small_sq) / (big_batch - small_batch),
      (small_sq - big_sq) / (1.0 / small_batch - 1.0 / big_batch));
}

void NoiseScaleEstimator::add_weighted(double small_a, double small_b, double big_sq, double gradient_sq_weights,
                                       double trace_weights, double count) {
  add((gradient_sq_weights * big_sq - small_a) / count, (small_b - trace_weights * big_sq) / count);
}

double NoiseScaleEstimator::gradient_sq() const { return steps_ > 0 ? gradient_sq_ema_ / weight_ : 0.0; }

double NoiseScaleEstimator::trace_sigma() const { return steps_ > 0 ? trace_ema_ / weight_ : 0.0; }

double NoiseScaleEstimator::b_simple() const {
  const double g = gradient_sq();
  return g > 0.0 ? trace_sigma() / g : 0.0;
}

int64_t noise_scale_end_batches(int64_t samples, int64_t global_batch) {
  const int64_t batches = (samples + global_batch - 1) / global_batch;
  return std::max<int64_t>(8, batches);
}

NoiseScaleMeasurement noise_scale_from_repeated_batches(double mean_batch_sq, double mean_gradient_sq, double batch,
                                                        int64_t batches) {
  // Note [Noise scale at the end of a run]: the small batch is one draw (B), the big
  // one their mean (P B); the small-batch estimate averaged over the P draws is the
  // estimate from their mean |G_p|^2, as it is linear in it.
  NoiseScaleEstimator e(0.0);
  e.add_from_batches(mean_batch_sq, batch, mean_gradient_sq, batch * static_cast<double>(batches));
  return {e.gradient_sq(), e.trace_sigma(), e.b_simple()};
}

std::string noise_scale_verdict(double b, const std::string& how, int64_t global_batch, bool measured,
                                bool enabled) {
  if (!enabled) return "";
  if (!measured) {
    return "dtrain: gradient noise scale not estimated: it needs two batch sizes, so run on 2 or more ranks "
           "or with 2 or more accumulation steps\n";
  }
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.0f", b);
  if (b <= 0.0) {
    return "dtrain: gradient noise scale: no estimate yet (the gradient is buried in its noise; train longer)\n";
  }
  std::string line = "dtrain: gradient noise scale B_simple ~ " + std::string(buf) + " (" + how + "); the global batch " +
                     std::to_string(global_batch) + " is ";
  if (static_cast<double>(global_batch) < b) {
    line += "below it: a larger batch (more memory) would still cut the steps nearly in proportion";
  } else {
    line += "above it: more memory buys fewer steps only at the cost of more epochs (more samples in all)";
  }
  return line + "\n";
}

}  // namespace dtrain
