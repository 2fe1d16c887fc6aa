// The gradient noise scale estimator against a case with a known answer: the loss
// L(w) = mean_i |w - x_i|^2 / 2 with x_i ~ N(mu, sigma^2 I) in D dimensions has
// per-sample gradients g_i = w - x_i, so the true gradient is G = w - mu, the
// per-sample covariance is sigma^2 I, tr(Sigma) = D sigma^2, and
// B_simple = D sigma^2 / |w - mu|^2.
#include <gtest/gtest.h>

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

TEST(NoiseScale, VerdictComparesTheGlobalBatchWithTheEstimate) {
  NoiseScaleEstimator est(0.9);
  est.add(1.0, 500.0);  // B_simple = 500
  EXPECT_NE(noise_scale_verdict(est, 64, true, true).find("below it"), std::string::npos);
  EXPECT_NE(noise_scale_verdict(est, 4096, true, true).find("above it"), std::string::npos);
  EXPECT_NE(noise_scale_verdict(est, 64, false, true).find("needs two batch sizes"), std::string::npos);
  EXPECT_EQ(noise_scale_verdict(est, 64, true, false), "");
}

}  // namespace
}  // namespace dtrain
