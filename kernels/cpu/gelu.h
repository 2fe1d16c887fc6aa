// GELU in its tanh form (GPT-2's; torch.nn.GELU(approximate='tanh')) on one fp32 value,
// for the loops that apply it: gelu.cpp's op and the fused linear epilogue (gemm.cpp),
// which must give the same bits (Note [Fused linear epilogue] in kernels/ops.h).
// Inline and branch-free, so `omp simd` loops vectorise it. Private to kernels/cpu/.
#pragma once

#include "kernels/cpu/vector_math.h"

namespace dtrain::cpu {

inline constexpr float kSqrt2OverPi = 0.7978845608028654f;
inline constexpr float kGeluCubic = 0.044715f;

//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).
inline float gelu_tanh(float v) {
  const float u = kSqrt2OverPi * (v + kGeluCubic * v * v * v);
  return 0.5f * v * (1.0f + simd_tanh(u));
}

}  // namespace dtrain::cpu
