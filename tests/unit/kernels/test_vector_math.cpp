// The vectorisable exp and tanh of kernels/cpu/vector_math.h against libm (double),
// to the bounds their header states.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/vector_math.h"

namespace dtrain::cpu {
namespace {

TEST(VectorMath, ExpIsWithinTwoUlpOverItsRange) {
  double worst = 0.0;
  for (float x = -87.0f; x <= 88.0f; x += 0.00731f) {
    const double want = std::exp(static_cast<double>(x));
    const double ulp = std::nextafter(static_cast<float>(want), INFINITY) - static_cast<float>(want);
    worst = std::max(worst, std::abs(simd_exp(x) - want) / ulp);
  }
  EXPECT_LE(worst, 2.0);
  EXPECT_EQ(simd_exp(0.0f), 1.0f);
}

TEST(VectorMath, TanhIsWithinItsAbsoluteBoundAndOdd) {
  double worst = 0.0;
  for (float u = -20.0f; u <= 20.0f; u += 0.000917f) {
    worst = std::max(worst, std::abs(simd_tanh(u) - std::tanh(static_cast<double>(u))));
    EXPECT_EQ(simd_tanh(-u), -simd_tanh(u));
  }
  EXPECT_LE(worst, 1.5e-7);
  EXPECT_EQ(simd_tanh(0.0f), 0.0f);
  EXPECT_EQ(simd_tanh(40.0f), 1.0f);
}

}  // namespace
}  // namespace dtrain::cpu
