// The gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018, "An
// Empirical Model of Large-Batch Training", appendix A.1): below it, a larger batch
// cuts the steps a model needs almost in proportion; above it, more memory buys fewer
// steps only at the cost of more epochs.
//
// Note [Gradient noise scale]
// The mean gradient of a batch of B samples has E|G_B|^2 = |G|^2 + tr(Sigma) / B. Two
// batch sizes B_small < B_big measured on the same step give unbiased estimates
//   |G|^2    ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
//   tr Sigma ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)
// Each is noisy, so each gets its own exponential moving average, and B_simple is the
// ratio of the averages (not the average of ratios, which is biased).
// In dtrain G_big is the all-reduced gradient (B_big = G). G_small is each rank's
// gradient before the all-reduce (B_small = k * b_r) when there are several ranks, else
// the first micro-step's gradient (B_small = b) when k >= 2; with one rank and k = 1
// there is only one batch size and no estimate. With several small batches (ranks) the
// estimates are averaged; they are linear in each |G_small,r|^2, so every rank adds its
// terms with its own weights (SmallBatchWeights) into one all-reduced sum.
#pragma once

#include <cstdint>
#include <string>

namespace dtrain {

// Rank r's weights: with |g|^2 the squared norm of its raw gradient buffer (which
// holds the sum of its samples' gradients divided by G, contract 2), the per-rank
// estimates are
//   |G|^2_r  = to_gradient_sq * |G_big|^2 - a * |g|^2
//   trSig_r  = b * |g|^2 - to_trace * |G_big|^2
struct SmallBatchWeights {
  double a = 0.0, b = 0.0, to_gradient_sq = 0.0, to_trace = 0.0;
};
SmallBatchWeights small_batch_weights(double small_batch, double big_batch);

class NoiseScaleEstimator {
 public:
  explicit NoiseScaleEstimator(double ema_decay) : decay_(ema_decay) {}

  // One step's unbiased estimates of |G|^2 and tr(Sigma).
  void add(double gradient_sq, double trace_sigma);
  // One step from mean-gradient norms at two batch sizes (the formulas above).
  void add_from_batches(double small_sq, double small_batch, double big_sq, double big_batch);
  // One step in the trainer's form: `count` small batches each added a_r |g_r|^2 into
  // small_a and b_r |g_r|^2 into small_b (their SmallBatchWeights); the weight sums
  // are the sums of their to_gradient_sq and to_trace. Adds the averages of the
  // per-batch estimates.
  void add_weighted(double small_a, double small_b, double big_sq, double gradient_sq_weights,
                    double trace_weights, double count);

  // The moving averages, for checkpoints: {|G|^2 average, tr Sigma average, weight}.
  struct State {
    double gradient_sq_ema = 0, trace_ema = 0, weight = 0;
    int64_t steps = 0;
  };
  State state() const { return {gradient_sq_ema_, trace_ema_, weight_, steps_}; }
  void restore(const State& s) {
    gradient_sq_ema_ = s.gradient_sq_ema;
    trace_ema_ = s.trace_ema;
    weight_ = s.weight;
    steps_ = s.steps;
  }

  bool ready() const { return steps_ > 0; }
  int64_t steps() const { return steps_; }
  // Bias-corrected moving averages (as Adam's), so early steps are not pulled to 0.
  double gradient_sq() const;
  double trace_sigma() const;
  // trace_sigma() / gradient_sq(); 0 until ready, and while the |G|^2 average is not
  // positive (the signal is buried in noise: the estimate is then meaningless).
  double b_simple() const;

 private:
  double decay_;
  double gradient_sq_ema_ = 0.0;
  double trace_ema_ = 0.0;
  double weight_ = 0.0;  // 1 - decay^steps: the bias correction
  int64_t steps_ = 0;
};

// The end-of-run summary line: B_simple against the global batch, and what it means.
// `measured`: the run had two batch sizes; `enabled`: log.noise_scale.
std::string noise_scale_verdict(const NoiseScaleEstimator& estimator, int64_t global_batch, bool measured,
                                bool enabled);

}  // namespace dtrain
