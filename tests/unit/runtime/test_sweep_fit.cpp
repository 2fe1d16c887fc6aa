// The sweep's fit (runtime/sweep_fit.h) on points drawn from McCandlish's model with
// known parameters: S = S_min (1 + B_crit / B), E = S B, times log-normal noise.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/rng.h"
#include "runtime/sweep_fit.h"

namespace dtrain {
namespace {

constexpr double kSMin = 120.0, kBCrit = 300.0, kEMin = kSMin * kBCrit;

// A ladder of batches 16, 32, ..., 4096 for each seed; steps from the model with
// relative noise exp(sigma z), rounded to whole steps.
std::vector<SweepPoint> model_ladder(Rng& rng, int seeds, double sigma) {
  std::vector<SweepPoint> points;
  for (int seed = 1; seed <= seeds; ++seed) {
    for (int64_t b = 16; b <= 4096; b *= 2) {
      const double s = kSMin * (1.0 + kBCrit / static_cast<double>(b)) * std::exp(sigma * rng.normal());
      points.push_back({b, seed, true, std::max<int64_t>(1, std::llround(s))});
    }
  }
  return points;
}

bool inside(const FitValue& v, double truth) { return v.low <= truth && truth <= v.high; }

TEST(SweepFit, RecoversExactParametersWithoutNoise) {
  std::vector<SweepPoint> points;
  for (int64_t b = 16; b <= 4096; b *= 2) {
    // Unrounded steps are not integers; scale the model so that rounding is negligible.
    const double s = 1000.0 * kSMin * (1.0 + kBCrit / static_cast<double>(b));
    points.push_back({b, 1, true, std::llround(s)});
  }
  const SweepFit fit = fit_sweep(points);
  ASSERT_TRUE(fit.ok);
  EXPECT_NEAR(fit.b_crit.value / kBCrit, 1.0, 1e-4);
  EXPECT_NEAR(fit.s_min.value / (1000.0 * kSMin), 1.0, 1e-4);
  EXPECT_NEAR(fit.e_min.value / (1000.0 * kEMin), 1.0, 1e-4);
  EXPECT_TRUE(fit.b_crit_resolved);
  // The relation itself holds at every point: (S/S_min - 1)(E/E_min - 1) = 1.
  for (const SweepPoint& p : points) {
    const double s = static_cast<double>(p.steps), e = s * static_cast<double>(p.batch);
    EXPECT_NEAR((s / fit.s_min.value - 1.0) * (e / fit.e_min.value - 1.0), 1.0, 1e-3) << p.batch;
  }
}

// The reported 90% intervals hold the true parameters in about 90% of noisy ladders:
// between 160 and 193 of 200, three standard deviations of a binomial(200, 0.9) about
// its mean of 180 (sd 4.2), so intervals that are too narrow or too wide both fail.
// And the central values are close to the truth.
void expect_coverage(int seeds, double sigma) {
  Rng rng(Rng::mix(17, static_cast<uint64_t>(seeds)));
  constexpr int kTrials = 200;
  int s_in = 0, b_in = 0, e_in = 0;
  std::vector<double> s_errors, b_errors, e_errors;
  for (int t = 0; t < kTrials; ++t) {
    const SweepFit fit = fit_sweep(model_ladder(rng, seeds, sigma));
    ASSERT_TRUE(fit.ok);
    ASSERT_EQ(fit.seeds, seeds);
    s_in += inside(fit.s_min, kSMin);
    b_in += inside(fit.b_crit, kBCrit);
    e_in += inside(fit.e_min, kEMin);
    s_errors.push_back(std::abs(std::log(fit.s_min.value / kSMin)));
    b_errors.push_back(std::abs(std::log(fit.b_crit.value / kBCrit)));
    e_errors.push_back(std::abs(std::log(fit.e_min.value / kEMin)));
  }
  for (const auto& [name, in] : {std::pair{"S_min", s_in}, std::pair{"B_crit", b_in}, std::pair{"E_min", e_in}}) {
    EXPECT_GE(in, 160) << name << " inside its interval in " << in << " of " << kTrials;
    EXPECT_LE(in, 193) << name << " inside its interval in " << in << " of " << kTrials << ": wider than 90%";
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf("coverage of %d trials: S_min %d, B_crit %d, E_min %d; median log error S_min %.3f, B_crit %.3f, E_min %.3f\n",
              kTrials, s_in, b_in, e_in, median(s_errors), median(b_errors), median(e_errors));
  EXPECT_LT(median(b_errors), 0.25) << "median |log(B_crit fit / true)|";
  // S_min and E_min rest on every point (B_crit on the bend alone): each point's steps
  // carry 10% noise, so their fits err by a few percent; 15% is a biased fit.
  EXPECT_LT(median(s_errors), 0.15) << "median |log(S_min fit / true)|";
  EXPECT_LT(median(e_errors), 0.15) << "median |log(E_min fit / true)|";
}

TEST(SweepFit, OneSeedBootstrapIntervalCoversTheTruth) { expect_coverage(1, 0.1); }
TEST(SweepFit, ThreeSeedsIntervalCoversTheTruth) { expect_coverage(3, 0.1); }

TEST(SweepFit, PointsThatNeverReachedTheTargetAreLeftOutWithALine) {
  std::vector<SweepPoint> points;
  for (int64_t b = 16; b <= 4096; b *= 2) {
    points.push_back({b, 1, true, std::llround(1000.0 * kSMin * (1.0 + kBCrit / static_cast<double>(b)))});
  }
  points.push_back({8, 1, false, 0});
  points.push_back({8192, 1, false, 0});
  const SweepFit fit = fit_sweep(points);
  ASSERT_TRUE(fit.ok);
  EXPECT_EQ(fit.points, 9);
  EXPECT_NEAR(fit.b_crit.value / kBCrit, 1.0, 1e-4);
  ASSERT_EQ(fit.notes.size(), 2u);
  EXPECT_EQ(fit.notes[0], "batch 8, seed 1: never reached the target; left out of the fit");
  EXPECT_EQ(fit.notes[1], "batch 8192, seed 1: never reached the target; left out of the fit");
}

TEST(SweepFit, FewerThanThreeBatchesGiveNoFitAndSayWhy) {
  const SweepFit fit = fit_sweep({{64, 1, true, 100}, {128, 1, true, 60}, {256, 1, false, 0}});
  EXPECT_FALSE(fit.ok);
  ASSERT_EQ(fit.notes.size(), 2u);
  EXPECT_NE(fit.notes[1].find("3 or more batches"), std::string::npos) << fit.notes[1];
}

TEST(SweepFit, ABatchCritBeyondTheLadderIsFlaggedUnresolved) {
  // Perfect scaling throughout: S = 10^6 / B, B_crit far above the ladder.
  std::vector<SweepPoint> points;
  for (int64_t b = 16; b <= 256; b *= 2) points.push_back({b, 1, true, 1000000 / b});
  const SweepFit fit = fit_sweep(points);
  ASSERT_TRUE(fit.ok);
  EXPECT_FALSE(fit.b_crit_resolved);
}

}  // namespace
}  // namespace dtrain
