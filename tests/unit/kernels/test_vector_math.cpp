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

// The clamp limits the range by integer min/max on order keys; out-of-range inputs
// take the bounds' values, and a NaN does not vanish into one.
TEST(VectorMath, ExpClampsItsRangeAndKeepsNaNVisible) {
  EXPECT_EQ(simd_exp(-1000.0f), simd_exp(-87.0f));
  EXPECT_EQ(simd_exp(1000.0f), simd_exp(88.0f));
  EXPECT_GT(simd_exp(-87.0f), 0.0f);
  EXPECT_TRUE(std::isnan(simd_exp(NAN)));
  EXPECT_TRUE(std::isnan(simd_exp(-NAN)));
  EXPECT_TRUE(std::isnan(simd_tanh(NAN)));
  EXPECT_EQ(clamp_vectorisable(-3.0f, -2.0f, 5.0f), -2.0f);
  EXPECT_EQ(clamp_vectorisable(-1.5f, -2.0f, 5.0f), -1.5f);
  EXPECT_EQ(clamp_vectorisable(7.0f, -2.0f, 5.0f), 5.0f);
  EXPECT_EQ(clamp_vectorisable(-0.0f, -2.0f, 5.0f), -0.0f);
}

}  // namespace
}  // namespace dtrain::cpu
