// The fit of a batch-size sweep to McCandlish et al.'s model (2018, "An Empirical
// Model of Large-Batch Training", eq. 2.11): the optimizer steps S and the samples E
// (= S x B) a run at global batch B needs to reach a target satisfy
//   (S / S_min - 1) (E / E_min - 1) = 1,
// equivalently S = S_min (1 + B_crit / B) and E = E_min (1 + B / B_crit), with the
// critical batch B_crit = E_min / S_min.
//
// Note [Sweep fit]
// Since E = S B in every point, the relation leaves two free parameters, S_min and
// B_crit, and is fitted as least squares on log S (the steps span decades, and their
// errors are relative): minimise sum_i (log S_i - log S_min - log(1 + B_crit / B_i))^2.
// For a given B_crit the best log S_min is the mean of log S_i - log(1 + B_crit / B_i);
// B_crit is found by a grid over log B_crit from a thousandth of the smallest batch to
// a thousand times the largest, refined by golden-section search. A B_crit at either
// end of that range is unresolved by the ladder and said so.
// The uncertainty, an interval for each parameter that aims at 90% coverage:
// - several seeds, each with at least 3 points that reached the target: the pooled fit
//   of all points, with an interval from the spread of the seeds' own fits (Student's t
//   on their logs: pooled x exp(+-t sd / sqrt(n)));
// - one seed: a bootstrap of the residuals (scaled by sqrt(n / (n - 2)) for the two
//   fitted parameters), 400 resamples refitted, the 2.5th and 97.5th percentiles: on
//   ladders of 9 points the 5th-95th interval held the truth in only about 82% of them
//   (few residuals understate the spread), this one in about 89%
//   (tests/unit/runtime/test_sweep_fit.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrain {

// One run of the sweep as the fit sees it.
struct SweepPoint {
  int64_t batch = 0;     // the global batch B
  int64_t seed = 0;
  bool reached = false;  // whether it reached the target
  int64_t steps = 0;     // steps to the target (reached only)
};

struct FitValue {
  double value = 0.0;
  double low = 0.0, high = 0.0;  // the interval (Note [Sweep fit])
};

struct SweepFit {
  bool ok = false;         // enough points to fit (3 or more that reached the target)
  FitValue s_min, e_min, b_crit;
  int points = 0;          // points used
  int seeds = 0;           // distinct seeds among them
  std::string uncertainty; // how the interval was found, one line
  bool b_crit_resolved = true;  // false: B_crit at the end of the search range
  // One line per point left out ("batch 16, seed 1: never reached the target; left
  // out of the fit"), and why there is no fit when !ok.
  std::vector<std::string> notes;

  // The model's steps and samples at batch B (ok only).
  double steps_at(double batch) const { return s_min.value * (1.0 + b_crit.value / batch); }
  double samples_at(double batch) const { return e_min.value * (1.0 + batch / b_crit.value); }
};

SweepFit fit_sweep(const std::vector<SweepPoint>& points);

// The least-squares curve alone (Note [Sweep fit]) through (batch[i], steps[i]):
// {S_min, B_crit}. At least two distinct batches.
struct CurveFit {
  double s_min = 0.0, b_crit = 0.0;
  bool at_edge = false;
};
CurveFit fit_steps_curve(const std::vector<double>& batches, const std::vector<double>& steps);

}  // namespace dtrain
