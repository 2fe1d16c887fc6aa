// exp and tanh for loops the compiler vectorises. libm's scalar tanhf (through
// expm1f) cost about 45% of a GPT training step on the CPU in GELU alone (perf,
// bench/RESULTS.md); these are plain arithmetic, so `omp simd` loops run them 16
// floats at a time.
//  - exp: Cephes' expf: x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts, so r is
//    exact), a degree-7 polynomial for e^r, and 2^n put into the exponent bits.
//    Within 2 ulp of expf for x in [-87, 88]; below -87 it returns the smallest normal
//    float's scale (about 1e-38) instead of a subnormal; NaN and infinities give NaN.
//  - tanh(u) = sign(u) (1 - e) / (1 + e) with e = exp(-2|u|): the absolute error is at
//    most about 1.2e-7 everywhere (the cancellation in 1 - e near u = 0 costs relative
//    accuracy there, not absolute), which GELU, 0.5 x (1 + tanh u), turns into a
//    relative error of about 1e-7.
// tests/unit/kernels/test_vector_math.cpp holds both to these bounds against libm.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace dtrain::cpu {

// A float's bits as an int32 that orders as the float does (the magnitude bits of a
// negative float flipped), and back: the same map.
inline int32_t float_order_key(float x) {
  const int32_t b = std::bit_cast<int32_t>(x);
  return b ^ ((b >> 31) & 0x7fffffff);
}
inline float float_of_order_key(int32_t k) { return std::bit_cast<float>(k ^ ((k >> 31) & 0x7fffffff)); }

// x limited to [lo, hi] by integer min and max of the order keys. Not float selects
// or std::min/max on floats: GCC 12 turns those limited cases into branches of their
// own (where it folds the result to a constant), and a loop with branches is not
// vectorised; integer min/max stay branch-free.
inline float clamp_vectorisable(float x, float lo, float hi) {
  return float_of_order_key(std::min(std::max(float_order_key(x), float_order_key(lo)), float_order_key(hi)));
}

inline float simd_exp(float x_in) {
  const float x = clamp_vectorisable(x_in, -87.0f, 88.0f);
  // n = x / ln2 rounded to nearest: adding and subtracting 1.5 * 2^23 rounds a float of
  // magnitude below 2^22 to an integer in the current (nearest) rounding mode, in plain
  // arithmetic that vectorises on every x86-64 (std::floor needs SSE4.1's roundps, and
  // without it GCC leaves the loop scalar). |r| <= ln2/2 still holds.
  constexpr float kRoundMagic = 12582912.0f;
  const float n = (x * 1.44269504088896341f + kRoundMagic) - kRoundMagic;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  // + 0 x_in: a NaN stays a NaN (the clamp made it a bound), so divergence stays
  // visible; an infinite x_in gives NaN too (a select would keep exp(-inf) = 0, but it
  // stops the loop from vectorising, and GELU, the user, is NaN at infinities anyway).
  return p * scale + 0.0f * x_in;
}

inline float simd_tanh(float u) {
  const float e = simd_exp(-2.0f * std::abs(u));
  const float t = (1.0f - e) / (1.0f + e);
  return std::copysign(t, u);
}

}  // namespace dtrain::cpu
