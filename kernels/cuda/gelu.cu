// GELU in its tanh form (GPT-2's; torch's approximate='tanh') on the context's stream:
//
//   gelu(x)  = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//
// The derivative uses 1 - tanh^2 for sech^2 rather than 1/cosh^2, which overflows
// for |u| > 89 in float. In float, with tanhf (CUDA's is within 2 ulp, the host's
// within 1), so a GPU result is within a few ulp of the CPU's, not the same bits.
#include <cstdint>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"

namespace dtrain {

namespace {

using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;

constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kGeluCoeff = 0.044715f;

// x and y may alias: each element is read, then written, by one thread.
__global__ void gelu_forward_kernel(const float* x, float* y, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const float v = x[i];
    const float u = kSqrt2OverPi * (v + kGeluCoeff * v * v * v);
    y[i] = 0.5f * v * (1.0f + tanhf(u));
  }
}

// dx may alias dy.
__global__ void gelu_backward_kernel(const float* x, const float* dy, float* dx, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const float v = x[i];
    const float u = kSqrt2OverPi * (v + kGeluCoeff * v * v * v);
    const float t = tanhf(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCoeff * v * v);
    const float grad = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
    dx[i] = grad * dy[i];
  }
}

}  // namespace

void CudaBackend::gelu_forward(Context& /*ctx*/, ConstTypedPtr x_t, TypedPtr y_t, int64_t n) { const float* x = x_t.f32(); float* y = y_t.f32();
  if (n == 0) return;
  gelu_forward_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(x, y, n);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::gelu_backward(Context& /*ctx*/, ConstTypedPtr x_t, ConstTypedPtr dy_t, TypedPtr dx_t, int64_t n) { const float* x = x_t.f32(); const float* dy = dy_t.f32(); float* dx = dx_t.f32();
  if (n == 0) return;
  gelu_backward_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(x, dy, dx, n);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace dtrain
