// exp and tanh for loops the compiler vectorises. libm's scalar tanhf (through
// expm1f) cost about 45% of a GPT training step on the CPU in GELU alone (perf,
// bench/RESULTS.md); these are plain arithmetic, so `omp simd` loops run them 16
// floats at a time.
//  - exp: Cephes' expf: x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts, so r is
//    exact), a degree-7 polynomial for e^r, and 2^n put into the exponent bits.
//    Within 2 ulp of expf for x in [-87, 88]; below -87 it returns the smallest normal
//    float's scale (about 1e-38) instead of a subnormal.
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

inline float simd_exp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
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
  return p * scale;
}

inline float simd_tanh(float u) {
  const float e = simd_exp(-2.0f * std::abs(u));
  const float t = (1.0f - e) / (1.0f + e);
  return std::copysign(t, u);
}

}  // namespace dtrain::cpu
