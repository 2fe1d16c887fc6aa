#include "runtime/sweep_fit.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include "kernels/rng.h"

namespace dtrain {
namespace {

// Sum of squared residuals and the best log S_min for one B_crit (Note [Sweep fit]).
struct Residuals {
  double sse = 0.0, log_s_min = 0.0;
};

Residuals residuals_at(double b_crit, const std::vector<double>& batches, const std::vector<double>& log_steps) {
  const size_t n = batches.size();
  double mean = 0.0;
  for (size_t i = 0; i < n; ++i) mean += log_steps[i] - std::log1p(b_crit / batches[i]);
  mean /= static_cast<double>(n);
  Residuals r;
  r.log_s_min = mean;
  for (size_t i = 0; i < n; ++i) {
    const double e = log_steps[i] - mean - std::log1p(b_crit / batches[i]);
    r.sse += e * e;
  }
  return r;
}

CurveFit fit_log_curve(const std::vector<double>& batches, const std::vector<double>& log_steps) {
  const auto [lo_it, hi_it] = std::minmax_element(batches.begin(), batches.end());
  const double lo = std::log(*lo_it * 1e-3), hi = std::log(*hi_it * 1e3);
  constexpr int kGrid = 120;
  int best = 0;
  double best_sse = 0.0;
  for (int g = 0; g <= kGrid; ++g) {
    const double u = lo + (hi - lo) * g / kGrid;
    const double sse = residuals_at(std::exp(u), batches, log_steps).sse;
    if (g == 0 || sse < best_sse) {
      best = g;
      best_sse = sse;
    }
  }
  // Golden-section search in the grid cells either side of the best grid point.
  const double step = (hi - lo) / kGrid;
  double a = lo + step * std::max(0, best - 1), b = lo + step * std::min(kGrid, best + 1);
  const double phi = (std::sqrt(5.0) - 1.0) / 2.0;
  double c = b - phi * (b - a), d = a + phi * (b - a);
  double fc = residuals_at(std::exp(c), batches, log_steps).sse, fd = residuals_at(std::exp(d), batches, log_steps).sse;
  for (int it = 0; it < 60; ++it) {
    if (fc < fd) {
      b = d, d = c, fd = fc;
      c = b - phi * (b - a);
      fc = residuals_at(std::exp(c), batches, log_steps).sse;
    } else {
      a = c, c = d, fc = fd;
      d = a + phi * (b - a);
      fd = residuals_at(std::exp(d), batches, log_steps).sse;
    }
  }
  const double u = (a + b) / 2.0;
  CurveFit fit;
  fit.b_crit = std::exp(u);
  fit.s_min = std::exp(residuals_at(fit.b_crit, batches, log_steps).log_s_min);
  fit.at_edge = best == 0 || best == kGrid;
  return fit;
}

// The q-quantile of `v` (sorted in place), linear between order statistics.
double quantile(std::vector<double>& v, double q) {
  std::sort(v.begin(), v.end());
  const double pos = q * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  if (i + 1 >= v.size()) return v.back();
  return v[i] + (pos - static_cast<double>(i)) * (v[i + 1] - v[i]);
}

// Student's t for a two-sided 90% interval with `dof` degrees of freedom.
double t_90(int dof) {
  static const double table[] = {6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812,
                                 1.796, 1.782, 1.771, 1.761, 1.753, 1.746, 1.740, 1.734, 1.729, 1.725};
  if (dof < 1) return table[0];
  if (dof <= 20) return table[dof - 1];
  return 1.645 + 2.0 / dof;  // approaches the normal's 1.645
}

std::string batch_and_seed(const SweepPoint& p) {
  return "batch " + std::to_string(p.batch) + ", seed " + std::to_string(p.seed);
}

}  // namespace

CurveFit fit_steps_curve(const std::vector<double>& batches, const std::vector<double>& steps) {
  std::vector<double> log_steps;
  for (double s : steps) log_steps.push_back(std::log(s));
  return fit_log_curve(batches, log_steps);
}

SweepFit fit_sweep(const std::vector<SweepPoint>& points) {
  SweepFit fit;
  std::vector<double> batches, log_steps;
  std::map<int64_t, std::vector<size_t>> by_seed;  // seed -> indices into batches
  std::set<int64_t> distinct;
  for (const SweepPoint& p : points) {
    if (!p.reached || p.steps < 1) {
      fit.notes.push_back(batch_and_seed(p) + ": never reached the target; left out of the fit");
      continue;
    }
    by_seed[p.seed].push_back(batches.size());
    batches.push_back(static_cast<double>(p.batch));
    log_steps.push_back(std::log(static_cast<double>(p.steps)));
    distinct.insert(p.batch);
  }
  fit.points = static_cast<int>(batches.size());
  fit.seeds = static_cast<int>(by_seed.size());
  if (batches.size() < 3 || distinct.size() < 3) {
    fit.notes.push_back("no fit: it needs points at 3 or more batches that reached the target, and has " +
                        std::to_string(distinct.size()));
    return fit;
  }
  const CurveFit central = fit_log_curve(batches, log_steps);
  fit.ok = true;
  fit.b_crit_resolved = !central.at_edge;
  fit.s_min.value = central.s_min;
  fit.b_crit.value = central.b_crit;
  fit.e_min.value = central.s_min * central.b_crit;

  // Per-replicate fits, as logs of {S_min, B_crit, E_min}.
  std::vector<double> s_logs, b_logs, e_logs;
  auto add = [&](const CurveFit& f) {
    s_logs.push_back(std::log(f.s_min));
    b_logs.push_back(std::log(f.b_crit));
    e_logs.push_back(std::log(f.s_min * f.b_crit));
  };
  int full_seeds = 0;
  for (const auto& [seed, idx] : by_seed) {
    std::set<double> seed_batches;
    for (size_t i : idx) seed_batches.insert(batches[i]);
    if (seed_batches.size() >= 3) ++full_seeds;
  }
  if (full_seeds >= 2) {
    for (const auto& [seed, idx] : by_seed) {
      std::vector<double> b, l;
      for (size_t i : idx) b.push_back(batches[i]), l.push_back(log_steps[i]);
      if (std::set<double>(b.begin(), b.end()).size() >= 3) add(fit_log_curve(b, l));
    }
    const int n = static_cast<int>(b_logs.size());
    const double t = t_90(n - 1);
    auto interval = [&](FitValue& v, const std::vector<double>& logs) {
      double mean = 0.0, var = 0.0;
      for (double x : logs) mean += x;
      mean /= n;
      for (double x : logs) var += (x - mean) * (x - mean);
      const double half = t * std::sqrt(var / (n - 1)) / std::sqrt(static_cast<double>(n));
      v.low = v.value * std::exp(-half);
      v.high = v.value * std::exp(half);
    };
    interval(fit.s_min, s_logs);
    interval(fit.b_crit, b_logs);
    interval(fit.e_min, e_logs);
    fit.uncertainty = "90% interval from the spread of " + std::to_string(n) + " seeds' own fits (Student's t)";
    return fit;
  }
  const size_t n = batches.size();
  std::vector<double> fitted(n), resid(n);
  const double inflate = n > 2 ? std::sqrt(static_cast<double>(n) / static_cast<double>(n - 2)) : 1.0;
  for (size_t i = 0; i < n; ++i) {
    fitted[i] = std::log(central.s_min) + std::log1p(central.b_crit / batches[i]);
    resid[i] = (log_steps[i] - fitted[i]) * inflate;
  }
  constexpr int kResamples = 400;
  Rng rng(Rng::mix(0x5eed, n));
  std::vector<double> sample(n);
  for (int r = 0; r < kResamples; ++r) {
    for (size_t i = 0; i < n; ++i) sample[i] = fitted[i] + resid[rng.below(n)];
    add(fit_log_curve(batches, sample));
  }
  auto interval = [&](FitValue& v, std::vector<double>& logs) {
    v.low = std::min(v.value, std::exp(quantile(logs, 0.025)));
    v.high = std::max(v.value, std::exp(quantile(logs, 0.975)));
  };
  interval(fit.s_min, s_logs);
  interval(fit.b_crit, b_logs);
  interval(fit.e_min, e_logs);
  fit.uncertainty = "interval from a bootstrap of the residuals (one seed; " + std::to_string(kResamples) +
                    " resamples, 2.5th to 97.5th percentile)";
  return fit;
}

}  // namespace dtrain
