// The bf16 sum of the collectives (Note [bf16 sum], comm/bf16_sum.h): each combination
// is the fp32 sum rounded once to bf16, to nearest even. Expected values come from
// hand-worked ties and from an independent rounding of the exact sum in double.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "comm/bf16_sum.h"
#include "kernels/dtype.h"

namespace dtrain {
namespace {

float sum_of(float a, float b) {
  const bf16 in = float_to_bf16(a);
  bf16 inout = float_to_bf16(b);
  bf16_sum_into(&in, &inout, 1);
  return bf16_to_float(inout);
}

// The exact sum of two bf16 values rounded to 8 significant bits, ties to even, in
// double arithmetic (no fp32 step): exact while their exponents are within 44 of each
// other (8 + 44 + 1 bits fit in a double's 53), for sums in the normal range.
float exact_sum_rounded(float a, float b) {
  const double s = static_cast<double>(a) + static_cast<double>(b);
  if (s == 0.0) return 0.0f;
  int e = 0;
  std::frexp(s, &e);  // |s| in [2^(e-1), 2^e)
  // 8 significant bits above the point; nearbyint rounds ties to even (FE_TONEAREST).
  return static_cast<float>(std::ldexp(std::nearbyint(std::ldexp(s, 8 - e)), e - 8));
}

TEST(Bf16Sum, ExactSumsStayExact) {
  EXPECT_EQ(sum_of(3.0f, 5.0f), 8.0f);
  EXPECT_EQ(sum_of(1.5f, -1.5f), 0.0f);
  EXPECT_EQ(sum_of(-0.25f, 0.125f), -0.125f);
  EXPECT_EQ(sum_of(120.0f, 136.0f), 256.0f);
}

TEST(Bf16Sum, TiesRoundToEven) {
  // Near 1 the bf16 spacing is 2^-7; 2^-8 is half of it.
  const float half_ulp = std::ldexp(1.0f, -8), ulp = std::ldexp(1.0f, -7);
  EXPECT_EQ(sum_of(1.0f, half_ulp), 1.0f);                    // 1 + half: 1 is even
  EXPECT_EQ(sum_of(1.0f + ulp, half_ulp), 1.0f + 2 * ulp);    // 1 + 1.5 ulp: up to the even 1 + 2 ulp
  EXPECT_EQ(sum_of(-1.0f, -half_ulp), -1.0f);                 // symmetric for negatives
  EXPECT_EQ(sum_of(-1.0f - ulp, -half_ulp), -1.0f - 2 * ulp);
  // Off a tie the nearest wins: 1 + 0.75 ulp goes up, 1 + 0.25 ulp down.
  EXPECT_EQ(sum_of(1.0f, 0.75f * ulp), 1.0f + ulp);
  EXPECT_EQ(sum_of(1.0f, 0.25f * ulp), 1.0f);
  // A carry into the exponent: (2 - ulp) + ulp/2 ties between 2 - ulp (odd) and 2.
  EXPECT_EQ(sum_of(2.0f - ulp, half_ulp), 2.0f);
}

TEST(Bf16Sum, EqualsTheRoundedFp32SumAndTheRoundedExactSumOnRandomPairs) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> exponent(127 - 20, 127 + 20), mantissa(0, 127), sign(0, 1);
  auto random_bf16 = [&] {
    return bf16{static_cast<uint16_t>((sign(rng) << 15) | (exponent(rng) << 7) | mantissa(rng))};
  };
  const size_t n = 100000;
  std::vector<bf16> in(n), inout(n), before(n);
  for (size_t i = 0; i < n; ++i) in[i] = random_bf16(), inout[i] = before[i] = random_bf16();
  // Some pairs a tie apart: b = a's half spacing (a random sign), so the fp32 sum is a
  // tie that only the last rounding decides.
  for (size_t i = 0; i < n; i += 10) {
    const float a = bf16_to_float(in[i]);
    int e = 0;
    std::frexp(a, &e);
    inout[i] = before[i] = float_to_bf16(std::ldexp(sign(rng) ? 1.0f : -1.0f, e - 9));
  }
  bf16_sum_into(in.data(), inout.data(), n);
  int wrong_fp32 = 0, wrong_exact = 0;
  for (size_t i = 0; i < n; ++i) {
    const float a = bf16_to_float(in[i]), b = bf16_to_float(before[i]), got = bf16_to_float(inout[i]);
    wrong_fp32 += float_to_bf16(a + b).bits != inout[i].bits;
    wrong_exact += got != exact_sum_rounded(a, b);
  }
  EXPECT_EQ(wrong_fp32, 0);
  EXPECT_EQ(wrong_exact, 0);
}

TEST(Bf16Sum, IsCommutative) {
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> value(-4.0f, 4.0f);
  for (int i = 0; i < 10000; ++i) {
    const float a = round_bf16(value(rng)), b = round_bf16(value(rng));
    ASSERT_EQ(sum_of(a, b), sum_of(b, a)) << a << " + " << b;
  }
}

}  // namespace
}  // namespace dtrain
