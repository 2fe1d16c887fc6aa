// The gradient noise scale estimator against a case with a known answer: the loss
// L(w) = mean_i |w - x_i|^2 / 2 with x_i ~ N(mu, sigma^2 I) in D dimensions has
// per-sample gradients g_i = w - x_i, so the true gradient is G = w - mu, the
// per-sample covariance is sigma^2 I, tr(Sigma) = D sigma^2, and
// B_simple = D sigma^2 / |w - mu|^2.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/noise_scale.h"

namespace dtrain {
namespace {

constexpr int kDim = 40;
constexpr double kSigma = 1.5;

struct Quadratic {
  std::vector<double> w, mu;
  std::mt19937_64 rng{11};
  std::normal_distribution<double> normal{0.0, 1.0};

  Quadratic() : w(kDim), mu(kDim) {
    for (int d = 0; d < kDim; ++d) {
      mu[static_cast<size_t>(d)] = 0.1 * d;
      w[static_cast<size_t>(d)] = mu[static_cast<size_t>(d)] + (d % 2 ? 0.5 : -0.5);
    }
  }
  double true_gradient_sq() const { return kDim * 0.25; }
  double true_trace() const { return kDim * kSigma * kSigma; }
  // Sum over `count` fresh samples of their gradients w - x_i.
  std::vector<double> gradient_sum(int count) {
    std::vector<double> sum(kDim, 0.0);
    for (int i = 0; i < count; ++i) {
      for (int d = 0; d < kDim; ++d) {
        const double x = mu[static_cast<size_t>(d)] + kSigma * normal(rng);
        sum[static_cast<size_t>(d)] += w[static_cast<size_t>(d)] - x;
      }
    }
    return sum;
  }
};

double sq_norm(const std::vector<double>& v, double scale) {
  double s = 0.0;
  for (double x : v) s += (x * scale) * (x * scale);
  return s;
}

TEST(NoiseScale, TwoBatchSizesRecoverTheKnownGradientAndTrace) {
  Quadratic q;
  NoiseScaleEstimator est(0.995);
  const int small = 8, big = 64;
  for (int step = 0; step < 3000; ++step) {
    const std::vector<double> a = q.gradient_sum(small);
    std::vector<double> b = q.gradient_sum(big - small);
    for (int d = 0; d < kDim; ++d) b[static_cast<size_t>(d)] += a[static_cast<size_t>(d)];  // the big batch holds the small one
    est.add_from_batches(sq_norm(a, 1.0 / small), small, sq_norm(b, 1.0 / big), big);
  }
  EXPECT_NEAR(est.gradient_sq(), q.true_gradient_sq(), 0.1 * q.true_gradient_sq());
  EXPECT_NEAR(est.trace_sigma(), q.true_trace(), 0.1 * q.true_trace());
  const double truth = q.true_trace() / q.true_gradient_sq();  // 90
  EXPECT_NEAR(est.b_simple(), truth, 0.15 * truth);
}

// The trainer's form: ranks of different sizes, each with its raw gradient buffer
// (its samples' gradient sum divided by the global batch, DESIGN contract 2), added
// with its own weights into two sums that an all-reduce would add up.
TEST(NoiseScale, WeightedSumsOverUnequalRanksRecoverTheKnownAnswer) {
  Quadratic q;
  NoiseScaleEstimator est(0.995);
  const std::vector<int> rank_batch = {24, 8, 16, 16};  // G = 64
  const double g = 64;
  std::vector<SmallBatchWeights> weights;
  double gradient_sq_weights = 0, trace_weights = 0;
  for (int b : rank_batch) {
    weights.push_back(small_batch_weights(b, g));
    gradient_sq_weights += weights.back().to_gradient_sq;
    trace_weights += weights.back().to_trace;
  }
  for (int step = 0; step < 3000; ++step) {
    double small_a = 0, small_b = 0;
    std::vector<double> total(kDim, 0.0);
    for (size_t r = 0; r < rank_batch.size(); ++r) {
      const std::vector<double> sum = q.gradient_sum(rank_batch[r]);
      const double raw = sq_norm(sum, 1.0 / g);
      small_a += weights[r].a * raw;
      small_b += weights[r].b * raw;
      for (int d = 0; d < kDim; ++d) total[static_cast<size_t>(d)] += sum[static_cast<size_t>(d)];
    }
    est.add_weighted(small_a, small_b, sq_norm(total, 1.0 / g), gradient_sq_weights, trace_weights,
                     static_cast<double>(rank_batch.size()));
  }
  EXPECT_NEAR(est.gradient_sq(), q.true_gradient_sq(), 0.1 * q.true_gradient_sq());
  EXPECT_NEAR(est.trace_sigma(), q.true_trace(), 0.1 * q.true_trace());
}

TEST(NoiseScale, MovingAveragesAreBiasCorrected) {
  NoiseScaleEstimator est(0.9);
  EXPECT_FALSE(est.ready());
  est.add(4.0, 100.0);  // one step: the averages are that step's values, not 10% of them
  EXPECT_DOUBLE_EQ(est.gradient_sq(), 4.0);
  EXPECT_DOUBLE_EQ(est.trace_sigma(), 100.0);
  EXPECT_DOUBLE_EQ(est.b_simple(), 25.0);
  est.add(-1.0, 50.0);  // a noisy negative |G|^2 estimate is averaged, not dropped
  const double w = 0.9 * 0.1 + 0.1;
  EXPECT_NEAR(est.gradient_sq(), (0.9 * 0.1 * 4.0 + 0.1 * -1.0) / w, 1e-12);
}

// Note [Noise scale at the end of a run]: P gradients of batch B at fixed weights, on
// the Quadratic, whose truth is B_simple = D sigma^2 / |w - mu|^2. Over many
// repetitions the measurement is unbiased in |G|^2 and tr(Sigma), and the spread of
// its |G|^2 is the Note's, sqrt(4 G^T Sigma G / (P B) + 2 tr(Sigma^2) / (P B)^2).
TEST(NoiseScale, RepeatedBatchesAtFixedWeightsMeasureTheNoiseScaleThere) {
  Quadratic q;
  // Near a minimum: |G|^2 = 40 * 0.05^2 = 0.1 against tr(Sigma) = 90, B_simple = 900,
  // far above the batch, where a moving average of two close batch sizes is noise.
  for (int d = 0; d < kDim; ++d) q.w[static_cast<size_t>(d)] = q.mu[static_cast<size_t>(d)] + (d % 2 ? 0.05 : -0.05);
  const double true_gradient_sq = kDim * 0.05 * 0.05, true_trace = q.true_trace();
  const double truth = true_trace / true_gradient_sq;
  const int batch = 16;
  const int64_t batches = noise_scale_end_batches(8192, batch);
  ASSERT_EQ(batches, 512);
  const double samples = static_cast<double>(batches) * batch;
  const double sigma_sq = kSigma * kSigma;
  // G^T Sigma G = sigma^2 |G|^2, tr(Sigma^2) = D sigma^4: sd = 0.011, 11% of |G|^2.
  const double sd = std::sqrt(4 * sigma_sq * true_gradient_sq / samples + 2.0 * kDim * sigma_sq * sigma_sq / (samples * samples));
  const int repeats = 100;
  double gradient_sq_sum = 0, trace_sum = 0, squared_error = 0;
  int within_a_factor_of_2 = 0;
  for (int r = 0; r < repeats; ++r) {
    double batch_sq = 0;
    std::vector<double> total(kDim, 0.0);
    for (int64_t p = 0; p < batches; ++p) {
      const std::vector<double> g = q.gradient_sum(batch);
      batch_sq += sq_norm(g, 1.0 / batch);
      for (int d = 0; d < kDim; ++d) total[static_cast<size_t>(d)] += g[static_cast<size_t>(d)];
    }
    const NoiseScaleMeasurement m = noise_scale_from_repeated_batches(
        batch_sq / static_cast<double>(batches), sq_norm(total, 1.0 / samples), batch, batches);
    gradient_sq_sum += m.gradient_sq;
    trace_sum += m.trace_sigma;
    squared_error += (m.gradient_sq - true_gradient_sq) * (m.gradient_sq - true_gradient_sq);
    if (m.b_simple > truth / 2 && m.b_simple < truth * 2) ++within_a_factor_of_2;
  }
  // Unbiased: the means within 4 standard errors.
  EXPECT_NEAR(gradient_sq_sum / repeats, true_gradient_sq, 4 * sd / std::sqrt(double(repeats)));
  EXPECT_NEAR(trace_sum / repeats, true_trace, 0.01 * true_trace);
  // The spread is the Note's, to the precision of 100 repetitions (7%, so 25%).
  const double measured_sd = std::sqrt(squared_error / repeats);
  EXPECT_GT(measured_sd, 0.75 * sd);
  EXPECT_LT(measured_sd, 1.25 * sd);
  // And so every measurement lands within a factor 2 of the truth (4.6 sd away).
  EXPECT_EQ(within_a_factor_of_2, repeats);
}

// The case the measurement exists for: B_simple moves during training, and the moving
// average lags behind its value at the end (Note [Noise scale at the end of a run]).
TEST(NoiseScale, TheMovingAverageLagsWhileTheEndMeasurementDoesNot) {
  // Exact estimates (no noise) of a run whose |G|^2 halves every step while tr(Sigma)
  // stays: B_simple doubles every step, 10, 20, ..., 10 * 2^7 = 1280 at the end.
  NoiseScaleEstimator average(0.95);
  for (int step = 0; step < 8; ++step) average.add(std::ldexp(1.0, -step), 10.0);
  // The ratio of the two moving averages (their bias corrections cancel): step k
  // weighs 0.95^(7 - k) in both, so B_simple = sum 10 w_k / sum 2^-k w_k, about 46.
  double trace_sum = 0, gradient_sq_sum = 0;
  for (int k = 0; k < 8; ++k) {
    const double w = std::pow(0.95, 7 - k);
    trace_sum += 10.0 * w;
    gradient_sq_sum += std::ldexp(1.0, -k) * w;
  }
  EXPECT_NEAR(average.b_simple(), trace_sum / gradient_sq_sum, 1e-9 * trace_sum / gradient_sq_sum);
  EXPECT_LT(average.b_simple(), 1280.0 / 10);
  // At the final weights, |G|^2 = 2^-7 and tr(Sigma) = 10 in exact arithmetic: P draws
  // with E|G_p|^2 = |G|^2 + tr(Sigma) / B and E|mean G_p|^2 = |G|^2 + tr(Sigma) / (P B).
  const double g = std::ldexp(1.0, -7), trace = 10.0, b = 32.0;
  const NoiseScaleMeasurement m = noise_scale_from_repeated_batches(g + trace / b, g + trace / (8 * b), b, 8);
  EXPECT_NEAR(m.gradient_sq, g, 1e-12);
  EXPECT_NEAR(m.trace_sigma, trace, 1e-9);
  EXPECT_NEAR(m.b_simple, 1280.0, 1e-6);
}

TEST(NoiseScale, EndMeasurementTakesAtLeast8BatchesAndAboutTheSamplesAsked) {
  EXPECT_EQ(noise_scale_end_batches(4096, 256), 16);
  EXPECT_EQ(noise_scale_end_batches(4096, 1000), 8);   // tr(Sigma) needs some degrees of freedom
  EXPECT_EQ(noise_scale_end_batches(4096, 100), 41);   // rounded up
  EXPECT_EQ(noise_scale_end_batches(1, 4096), 8);
}

TEST(NoiseScale, EndMeasurementWithoutSignalReportsNoEstimate) {
  // The mean of the draws no closer to 0 than the draws' spread allows: |G|^2 <= 0.
  const NoiseScaleMeasurement m = noise_scale_from_repeated_batches(1.0, 1.0 / 8 - 0.01, 4, 8);
  EXPECT_LE(m.gradient_sq, 0.0);
  EXPECT_EQ(m.b_simple, 0.0);
}

TEST(NoiseScale, VerdictComparesTheGlobalBatchWithTheEstimate) {
  NoiseScaleEstimator est(0.9);
  est.add(1.0, 500.0);  // B_simple = 500
  const double b = est.b_simple();
  EXPECT_NE(noise_scale_verdict(b, "moving average", 64, true, true).find("below it"), std::string::npos);
  EXPECT_NE(noise_scale_verdict(b, "moving average", 4096, true, true).find("above it"), std::string::npos);
  EXPECT_NE(noise_scale_verdict(b, "moving average", 64, false, true).find("needs two batch sizes"), std::string::npos);
  EXPECT_NE(noise_scale_verdict(b, "at the final weights", 64, true, true).find("~ 500 (at the final weights)"),
            std::string::npos);
  EXPECT_EQ(noise_scale_verdict(b, "moving average", 64, true, false), "");
}

}  // namespace
}  // namespace dtrain
