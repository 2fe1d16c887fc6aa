// Note [Arithmetic clones]
// GELU's loops were about a quarter of a bf16 GPT step on the CPU (perf, bench/RESULTS.md):
// at the project's baseline ISA, SSE2, `omp simd` runs them four floats at a time and
// packs bf16 clumsily. So, as the row conversions (Note [Conversion clones],
// storage.cpp), they are compiled three times (target_clones: AVX-512F, AVX2, SSE2) and
// the loader picks the widest the CPU has. Unlike the conversions they compute in
// floating point, so this file is compiled with -ffp-contract=off (kernels/CMakeLists.txt):
// AVX2 and AVX-512 have fused multiply-adds, and a contracted a * b + c rounds once
// where the SSE2 clone rounds twice. Without contraction every clone does the same IEEE
// operations on each element (the loops are elementwise: no sum whose order the vector
// width could change), so every CPU gives the same bits, as before. test_gelu_rows.cpp
// holds the runs to the same formulas compiled for the baseline ISA, bit for bit.
#include "kernels/cpu/gelu_rows.h"

#include "kernels/cpu/gelu.h"
#include "kernels/cpu/storage.h"

namespace dtrain::cpu {

#define DTRAIN_ARITHMETIC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

namespace {

// gelu_tanh'(v), with 1 - t^2 for sech^2 (1/cosh^2 overflows for |u| > 89).
inline float gelu_slope(float v) {
  const float u = kSqrt2OverPi * (v + kGeluCubic * v * v * v);
  const float t = simd_tanh(u);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v * v);
  return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
}

}  // namespace

DTRAIN_ARITHMETIC_CLONES void gelu_forward_run(const float* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = gelu_tanh(x[i]);
}
DTRAIN_ARITHMETIC_CLONES void gelu_forward_run(const bf16* x, bf16* y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = narrow<bf16>(gelu_tanh(widen(x[i])));
}

DTRAIN_ARITHMETIC_CLONES void gelu_backward_run(const float* x, const float* dy, float* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = gelu_slope(x[i]) * dy[i];
}
DTRAIN_ARITHMETIC_CLONES void gelu_backward_run(const bf16* x, const bf16* dy, bf16* dx, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) dx[i] = narrow<bf16>(gelu_slope(widen(x[i])) * widen(dy[i]));
}

DTRAIN_ARITHMETIC_CLONES void bias_epilogue_run(const float* product, const float* bias, float* y, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] = product[j] + bias[j];
}
DTRAIN_ARITHMETIC_CLONES void bias_epilogue_run(const float* product, const bf16* bias, bf16* y, int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) y[j] = narrow<bf16>(product[j] + widen(bias[j]));
}

DTRAIN_ARITHMETIC_CLONES void bias_gelu_epilogue_run(const float* product, const float* bias, float* pre, float* y,
                                                     int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float v = product[j] + bias[j];
    pre[j] = v;
    y[j] = gelu_tanh(v);
  }
}
DTRAIN_ARITHMETIC_CLONES void bias_gelu_epilogue_run(const float* product, const bf16* bias, bf16* pre, bf16* y,
                                                     int64_t n) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    const float v = product[j] + widen(bias[j]);
    pre[j] = narrow<bf16>(v);
    y[j] = narrow<bf16>(gelu_tanh(v));
  }
}

}  // namespace dtrain::cpu
