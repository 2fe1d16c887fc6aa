// GELU in its tanh form (GPT-2's; torch's approximate='tanh') on the context's stream:
//
//   gelu(x)  = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//
// The derivative uses 1 - tanh^2 for sech^2 rather than 1/cosh^2, which overflows
// for |u| > 89 in float. In float, with tanhf (CUDA's is within 2 ulp, the host's
// within 1), so a GPU result is within a few ulp of the CPU's, not the same bits.
// In bf16 the same float formulas run on the widened inputs, and each result is
// rounded once (kernels/cuda/storage.cuh).
#include <cstdint>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gelu.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace dtrain {

namespace {

using cuda::kBlockThreads;
using cuda::typed;

using cuda::kGeluCubic;
using cuda::kSqrt2OverPi;

struct GeluForward {
  __device__ float operator()(int64_t /*i*/, float v) const { return cuda::gelu_tanh(v); }
};

struct GeluBackward {
  __device__ float operator()(int64_t /*i*/, float v, float dy) const {
    const float u = kSqrt2OverPi * (v + kGeluCubic * v * v * v);
    const float t = tanhf(u);
    const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v * v);
    const float grad = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
    return grad * dy;
  }
};

// x and y may alias: each element is read, then written, by one thread.
template <class T>
__global__ void gelu_forward_kernel(const T* x, T* y, int64_t n, int64_t packs) {
  cuda::map_elements(x, y, n, packs, GeluForward{});
}

// dx may alias dy.
template <class T>
__global__ void gelu_backward_kernel(const T* x, const T* dy, T* dx, int64_t n, int64_t packs) {
  cuda::map_elements(x, dy, dx, n, packs, GeluBackward{});
}

}  // namespace

void CudaBackend::gelu_forward(Context& /*ctx*/, ConstTypedPtr x_t, TypedPtr y_t, int64_t n) {
  if (n == 0) return;
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = typed<T>(x_t, "gelu_forward");
    T* y = typed<T>(y_t, "gelu_forward");
    gelu_forward_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(x, y, n,
                                                                                      cuda::pack_count(n, x, y));
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::gelu_backward(Context& /*ctx*/, ConstTypedPtr x_t, ConstTypedPtr dy_t, TypedPtr dx_t, int64_t n) {
  if (n == 0) return;
  cuda::storage_dispatch(dx_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = typed<T>(x_t, "gelu_backward");
    const T* dy = typed<T>(dy_t, "gelu_backward");
    T* dx = typed<T>(dx_t, "gelu_backward");
    gelu_backward_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(
        x, dy, dx, n, cuda::pack_count(n, x, dy, dx));
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace dtrain
