// Dropout without a stored mask (Note [Transformer ops], kernels/ops.h): element i of
// row s is kept when dropout_keeps(key, sample_ids[s], i, p) (kernels/dropout_hash.h,
// the function the CPU calls too), so both backends drop exactly the same elements, and
// backward hashes again instead of reading a mask. Kept elements are multiplied by
// 1/(1-p), computed once in float on the host as on the CPU; dropped ones are written 0.
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/dropout_hash.h"

namespace dtrain {

namespace {

using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;

// out = keep ? in * keep_scale : 0; out may alias in (one thread reads, then writes).
// Forward and backward are the same map: the gradient of a kept element is scaled
// like the element, and a dropped one has none.
__global__ void dropout_kernel(const float* in, float* out, int64_t samples, int64_t per_sample,
                               const int64_t* sample_ids, uint64_t key, float p, float keep_scale) {
  const int64_t n = samples * per_sample;
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const int64_t s = i / per_sample;
    const int64_t element = i - s * per_sample;
    out[i] = dropout_keeps(key, sample_ids[s], element, p) ? in[i] * keep_scale : 0.0f;
  }
}

void check_probability(float p) {
  DTRAIN_ASSERT(p >= 0.0f && p <= 1.0f, "dropout probability " << p << " is outside [0, 1]");
}

}  // namespace

void CudaBackend::dropout_forward(Context& /*ctx*/, ConstTypedPtr x_t, TypedPtr y_t, int64_t samples,
                                  int64_t per_sample, const int64_t* sample_ids, uint64_t key, float p) { const float* x = x_t.f32(); float* y = y_t.f32();
  check_probability(p);
  const int64_t n = samples * per_sample;
  if (n == 0) return;
  if (p == 0.0f) {  // keeps every element, unscaled: a copy
    if (x != y) {
      DTRAIN_CUDA_CHECK(cudaMemcpyAsync(y, x, static_cast<size_t>(n) * sizeof(float),
                                        cudaMemcpyDeviceToDevice, stream()));
    }
    return;
  }
  // p = 1 drops everything (every draw is below 1); the scale is then never used.
  const float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
  dropout_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(
      x, y, samples, per_sample, sample_ids, key, p, keep_scale);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::dropout_backward(Context& ctx, ConstTypedPtr dy_t, TypedPtr dx_t, int64_t samples,
                                   int64_t per_sample, const int64_t* sample_ids, uint64_t key, float p) { const float* dy = dy_t.f32(); float* dx = dx_t.f32();
  dropout_forward(ctx, dy, dx, samples, per_sample, sample_ids, key, p);
}

}  // namespace dtrain
