// Helpers shared by the CPU op tests (test_cpu_ops.cpp, test_cpu_conv2d.cpp): seeded
// inputs and comparisons that report the first offenders.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <vector>

#include "kernels/rng.h"

namespace dtrain::cpu_test {

inline constexpr double kRelTol = 1e-4;
inline constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

inline std::vector<float> random_normal(Rng& rng, size_t n, double scale = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(scale * rng.normal());
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// |got - ref| <= tol * (1 + |ref| + scale) everywhere; reports the first few offenders.
// `scale` (optional, per element) is the size of the terms a long reduction cancelled
// down to ref: float accumulation error grows with it, not with the result.
inline ::testing::AssertionResult all_close(const std::vector<float>& got,
                                            const std::vector<double>& ref,
                                            double tol = kRelTol,
                                            const std::vector<double>* scale = nullptr) {
  if (got.size() != ref.size()) {
    return ::testing::AssertionFailure()
           << "size " << got.size() << " != reference size " << ref.size();
  }
  std::ostringstream bad;
  size_t failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double extra = scale != nullptr ? (*scale)[i] : 0.0;
    if (!(err <= tol * (1.0 + std::fabs(ref[i]) + extra))) {
      if (failures < 5) bad << "\n  [" << i << "] got " << got[i] << ", want " << ref[i];
      ++failures;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << got.size()
                                       << " elements differ:" << bad.str();
}

// The same bits in every element (NaNs included).
inline ::testing::AssertionResult same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes " << a.size() << " and " << b.size();
  size_t differ = 0, first = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0 && differ++ == 0) first = i;
  }
  if (differ == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << differ << " of " << a.size() << " elements differ, the first ["
                                       << first << "]: " << a[first] << " vs " << b[first];
}

}  // namespace dtrain::cpu_test
