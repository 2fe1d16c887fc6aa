// GELU in its tanh form (GPT-2's; torch.nn.GELU(approximate='tanh')):
//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/vector_math.h"

namespace dtrain::cpu {

namespace {

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCubic = 0.044715f;

}  // namespace

void gelu_forward(Context& ctx, const float* x, float* y, int64_t n) {
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = kSqrt2OverPi * (v + kGeluCubic * v * v * v);
    y[i] = 0.5f * v * (1.0f + simd_tanh(u));
  }
}

void gelu_backward(Context& ctx, const float* x, const float* dy, float* dx, int64_t n) {
  // d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, with t = tanh(u).
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    const float u = kSqrt2OverPi * (v + kGeluCubic * v * v * v);
    const float t = simd_tanh(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v * v);
    dx[i] = (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du) * dy[i];
  }
}

}  // namespace dtrain::cpu
