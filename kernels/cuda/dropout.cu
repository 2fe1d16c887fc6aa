// Dropout without a stored mask (Note [Transformer ops], kernels/ops.h): element i of
// row s is kept when dropout_keeps(key, sample_ids[s], i, p) (kernels/dropout_hash.h,
// the function the CPU calls too), so both backends drop exactly the same elements, and
// backward hashes again instead of reading a mask. Kept elements are multiplied by
// 1/(1-p), computed once in float on the host as on the CPU; dropped ones are written 0.
// In bf16 the product is rounded once (kernels/cuda/storage.cuh).
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/dropout_hash.h"

namespace dtrain {

namespace {

using cuda::kBlockThreads;
using cuda::typed;

// out = keep ? in * keep_scale : 0; out may alias in (one thread reads, then writes).
// Forward and backward are the same map: the gradient of a kept element is scaled
// like the element, and a dropped one has none.
struct DropoutOp {
  int64_t per_sample;
  const int64_t* sample_ids;
  uint64_t key;
  float p, keep_scale;
  __device__ float operator()(int64_t i, float v) const {
    const int64_t s = i / per_sample;
    const int64_t element = i - s * per_sample;
    return dropout_keeps(key, sample_ids[s], element, p) ? v * keep_scale : 0.0f;
  }
};

template <class T>
__global__ void dropout_kernel(const T* in, T* out, int64_t n, int64_t packs, DropoutOp op) {
  cuda::map_elements(in, out, n, packs, op);
}

void check_probability(float p) {
  DTRAIN_ASSERT(p >= 0.0f && p <= 1.0f, "dropout probability " << p << " is outside [0, 1]");
}

}  // namespace

void CudaBackend::dropout_forward(Context& /*ctx*/, ConstTypedPtr x_t, TypedPtr y_t, int64_t samples,
                                  int64_t per_sample, const int64_t* sample_ids, uint64_t key, float p) {
  check_probability(p);
  const int64_t n = samples * per_sample;
  if (n == 0) return;
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = typed<T>(x_t, "dropout");
    T* y = typed<T>(y_t, "dropout");
    if (p == 0.0f) {  // keeps every element, unscaled: a copy
      if (x != y) {
        DTRAIN_CUDA_CHECK(cudaMemcpyAsync(y, x, static_cast<size_t>(n) * sizeof(T), cudaMemcpyDeviceToDevice,
                                          stream()));
      }
      return;
    }
    // p = 1 drops everything (every draw is below 1); the scale is then never used.
    const float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    dropout_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(
        x, y, n, cuda::pack_count(n, x, y), DropoutOp{per_sample, sample_ids, key, p, keep_scale});
    DTRAIN_CUDA_LAUNCH_CHECK();
  });
}

void CudaBackend::dropout_backward(Context& ctx, ConstTypedPtr dy_t, TypedPtr dx_t, int64_t samples,
                                   int64_t per_sample, const int64_t* sample_ids, uint64_t key, float p) {
  dropout_forward(ctx, dy_t, dx_t, samples, per_sample, sample_ids, key, p);
}

}  // namespace dtrain
