// GELU in its tanh form (GPT-2's; torch's approximate='tanh') on one float, for the
// kernels that apply it: gelu.cu's op and the linear epilogue (linear.cu).
#pragma once

namespace dtrain::cuda {

inline constexpr float kSqrt2OverPi = 0.7978845608028654f;
inline constexpr float kGeluCubic = 0.044715f;

//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).
__device__ __forceinline__ float gelu_tanh(float v) {
  const float u = kSqrt2OverPi * (v + kGeluCubic * v * v * v);
  return 0.5f * v * (1.0f + tanhf(u));
}

}  // namespace dtrain::cuda
