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
//
// Note [Noise scale at the end of a run]
// The moving average above describes the last ~1 / (1 - decay) steps, and in those
// steps the noise scale moves: near a minimum |G|^2 shrinks while tr(Sigma) does not,
// so B_simple grows as training goes on. An average over a stretch of the run is
// weighted towards its start, where |G|^2 is largest (the ratio of averages is
// sum tr(Sigma_t) / sum |G_t|^2), and lags the value at the end. A run to a target
// (dtrain sweep) wants the noise scale where the run stops, which the moving average
// cannot give precisely: a shorter average is local but, with a few steps of two close
// batch sizes each, too noisy (|G|^2 near the end is small against its estimator's
// noise, about sqrt(2 tr(Sigma^2)) / B_small a step), and a run of a few large steps
// has no steps near its end to average.
// So the run measures it once more at its final weights, where nothing moves: P
// gradients of the global batch B on P further batches of training data, without an
// update. They are P independent draws of G_B, which has mean G and covariance
// Sigma / B, so with S = mean_p |G_p|^2 and M = |mean_p G_p|^2 (the batch sizes B and
// P B of Note [Gradient noise scale]):
//   |G|^2    ~ (P M - S) / (P - 1)
//   tr Sigma ~ B P / (P - 1) (S - M)
// both unbiased, and local by construction. For Gaussian gradient noise the |G|^2
// estimate's standard deviation is sqrt(4 G^T Sigma G / (P B) + 2 tr(Sigma^2) / (P B)^2):
// it falls with the samples P B, not with the gap between two batch sizes, and is
// |G|^2 / k once P B is about 4 k^2 G^T Sigma G / |G|^4 (a multiple of B_simple where
// the noise along G is like the rest). So some thousands of samples resolve the |G|^2
// near a target (log.noise_end_samples, 4096 by default); tr(Sigma) has P - 1 degrees
// of freedom, so P is at least 8 (noise_scale_end_batches). The cost is P B samples of
// forward and backward, once, and one more gradient's memory for the sum of the G_p.
// The run reached its target at these weights, so the value is the noise scale at the
// target up to the last step's progress: a run of S steps ends at most one step (about
// 1/S of its way) past the target, which is why dtrain sweep weights each run's value
// by its steps (runtime/sweep_report.h).
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

// Note [Noise scale at the end of a run]: how many batches of `global_batch` the
// measurement at the final weights takes for about `samples` samples (at least 8).
int64_t noise_scale_end_batches(int64_t samples, int64_t global_batch);

// The noise scale at fixed weights from `batches` >= 2 independent gradients of `batch`
// samples: `mean_batch_sq` is the mean of their |G_p|^2, `mean_gradient_sq` the squared
// norm of their mean. b_simple is 0 when the |G|^2 estimate is not positive.
struct NoiseScaleMeasurement {
  double gradient_sq = 0.0, trace_sigma = 0.0, b_simple = 0.0;
};
NoiseScaleMeasurement noise_scale_from_repeated_batches(double mean_batch_sq, double mean_gradient_sq, double batch,
                                                        int64_t batches);

// The end-of-run summary line: B_simple against the global batch, and what it means.
// `how`: where the value comes from ("moving average", "at the final weights");
// `measured`: the run had two batch sizes or measured at its end; `enabled`: log.noise_scale.
std::string noise_scale_verdict(double b_simple, const std::string& how, int64_t global_batch, bool measured,
                                bool enabled);

}  // namespace dtrain
