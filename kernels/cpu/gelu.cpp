// GELU in its tanh form (GPT-2's; torch.nn.GELU(approximate='tanh')):
//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gelu.h"
#include "kernels/cpu/storage.h"
#include "kernels/cpu/vector_math.h"

namespace dtrain::cpu {

namespace {

template <class T>
void gelu_forward_typed(Context& ctx, const T* x, T* y, int64_t n) {
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) y[i] = narrow<T>(gelu_tanh(widen(x[i])));
}

template <class T>
void gelu_backward_typed(Context& ctx, const T* x, const T* dy, T* dx, int64_t n) {
  // d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) du/dx, with t = tanh(u).
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float v = widen(x[i]);
    const float u = kSqrt2OverPi * (v + kGeluCubic * v * v * v);
    const float t = simd_tanh(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v * v);
    dx[i] = narrow<T>((0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du) * widen(dy[i]));
  }
}

}  // namespace

void gelu_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) {
  with_storage(common_type("gelu_forward", {{"x", x}, {"y", y}}), [&](auto tag) {
    using T = decltype(tag);
    gelu_forward_typed(ctx, typed<T>(x), typed<T>(y), n);
  });
}

void gelu_backward(Context& ctx, ConstTypedPtr x, ConstTypedPtr dy, TypedPtr dx, int64_t n) {
  with_storage(common_type("gelu_backward", {{"x", x}, {"dy", dy}, {"dx", dx}}), [&](auto tag) {
    using T = decltype(tag);
    gelu_backward_typed(ctx, typed<T>(x), typed<T>(dy), typed<T>(dx), n);
  });
}

}  // namespace dtrain::cpu
