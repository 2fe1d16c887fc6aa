// Bias, ReLU, fill, add and scale on the context's stream. Bias and add take fp32 or
// bf16 tensors (kernels/cuda/storage.cuh: computed in float, each stored value rounded
// once); relu, fill and scale are fp32 only.
//
// bias_backward is a reduction with a fixed partition, summed in double, so it is
// deterministic run to run, like the CPU op. For inner == 1 (a linear layer's bias:
// dy is (rows, channels)) it is the column sums of kernels/cuda/column_sums.cuh
// (Note [Column sum partition]: chunks of rows -> double partials in the context's
// workspace -> a second kernel adds them in chunk order; bias_backward_workspace_bytes
// says how much). For inner > 1 (a convolution's) a block per channel sums its planes,
// block shape and per-thread strides constant.
#include <cmath>
#include <cstdint>

#include "kernels/context.h"
#include "kernels/cuda/column_sums.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace dtrain {

namespace {

using cuda::from_float;
using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;
using cuda::kPackElements;
using cuda::Pack;
using cuda::to_float;
using cuda::typed;

// `packs` > 0 only when inner == 1 and kPackElements divides channels: a pack then lies
// in one row, and its bias is one pack of the bias vector.
template <class T>
__global__ void add_bias_kernel(T* y, const T* bias, int64_t total, int64_t channels,
                                int64_t inner, int64_t packs) {
  auto* yp = reinterpret_cast<Pack<T>*>(y);
  const auto* bp = reinterpret_cast<const Pack<T>*>(bias);
  for (int64_t p = grid_start(); p < packs; p += grid_stride()) {
    Pack<T> v = yp[p];
    const Pack<T> b = bp[(p * kPackElements) % channels / kPackElements];
#pragma unroll
    for (int k = 0; k < kPackElements; ++k) v.v[k] = from_float<T>(to_float(v.v[k]) + to_float(b.v[k]));
    yp[p] = v;
  }
  for (int64_t i = packs * kPackElements + grid_start(); i < total; i += grid_stride()) {
    y[i] = from_float<T>(to_float(y[i]) + to_float(bias[(i / inner) % channels]));
  }
}

// The terms of dbias[c] += sum_o dy[o, c] for dy (outer, channels), for cuda::column_sums.
template <class T>
struct BiasTerms {
  static constexpr int kOutputs = 1;
  const T* dy;
  template <int V>
  __device__ void add(int64_t /*row*/, int64_t at, double (&acc)[1][V]) const {
    float v[V];
    cuda::load_floats<V>(dy + at, v);
#pragma unroll
    for (int k = 0; k < V; ++k) acc[0][k] += v[k];
  }
};

// dbias[c] += sum over o, i of dy[o, c, i]: one block per channel.
template <class T>
__global__ void bias_backward_planes(const T* dy, float* dbias, int64_t outer,
                                     int64_t channels, int64_t inner) {
  __shared__ double partial[kBlockThreads];
  const int64_t per_channel = outer * inner;
  for (int64_t c = blockIdx.x; c < channels; c += gridDim.x) {
    double acc = 0.0;
    for (int64_t j = threadIdx.x; j < per_channel; j += kBlockThreads) {
      const int64_t o = j / inner;
      acc += to_float(dy[(o * channels + c) * inner + (j - o * inner)]);
    }
    partial[threadIdx.x] = acc;
    __syncthreads();
    for (int half = kBlockThreads / 2; half > 0; half /= 2) {
      if (threadIdx.x < half) partial[threadIdx.x] += partial[threadIdx.x + half];
      __syncthreads();
    }
    if (threadIdx.x == 0) dbias[c] += static_cast<float>(partial[0]);
    __syncthreads();  // `partial` is reused by the next channel
  }
}

// `x < 0 ? 0 : x` rather than fmaxf: a NaN passes through, as on the CPU.
__global__ void relu_forward_kernel(const float* x, float* y, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const float v = x[i];
    y[i] = v < 0.0f ? 0.0f : v;
  }
}

__global__ void relu_backward_kernel(const float* y, const float* dy, float* dx, int64_t n) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

// One float operation per element (and one rounding to bf16), so the results are the
// CPU's bits. Aliasing of y with a or b is fine: each element is read before it is
// written, by one thread.
struct AddOp {
  __device__ float operator()(int64_t /*i*/, float a, float b) const { return a + b; }
};
template <class T>
__global__ void add_kernel(const T* a, const T* b, T* y, int64_t n, int64_t packs) {
  cuda::map_elements(a, b, y, n, packs, AddOp{});
}

__global__ void scale_kernel(float* x, int64_t n, float alpha) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) x[i] *= alpha;
}

__global__ void fill_kernel(float* x, int64_t n, float value) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) x[i] = value;
}

}  // namespace

void CudaBackend::add_bias(Context& /*ctx*/, TypedPtr y_t, ConstTypedPtr bias_t, int64_t outer,
                           int64_t channels, int64_t inner) {
  const int64_t total = outer * channels * inner;
  if (total == 0) return;
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* y = typed<T>(y_t, "add_bias");
    const T* bias = typed<T>(bias_t, "add_bias");
    const int64_t packs = inner == 1 && channels % kPackElements == 0 ? cuda::pack_count(total, y, bias) : 0;
    add_bias_kernel<<<blocks_for(total, kBlockThreads), kBlockThreads, 0, stream()>>>(
        y, bias, total, channels, inner, packs);
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

size_t CudaBackend::bias_backward_workspace_bytes(int64_t outer, int64_t channels, int64_t inner) const {
  return inner == 1 ? cuda::column_sum_workspace_bytes(outer, channels, BiasTerms<float>::kOutputs) : 0;
}

void CudaBackend::bias_backward(Context& ctx, ConstTypedPtr dy_t, float* dbias, int64_t outer,
                                int64_t channels, int64_t inner) {
  if (channels == 0 || outer == 0 || inner == 0) return;  // nothing to add
  cuda::storage_dispatch(dy_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* dy = typed<T>(dy_t, "bias_backward");
    if (inner == 1) {
      auto* partials = static_cast<double*>(ctx.workspace(bias_backward_workspace_bytes(outer, channels, inner)));
      cuda::column_sums(stream(), BiasTerms<T>{dy}, cuda::rows_packable(channels, dy), outer, channels, partials,
                        cuda::ColumnOutputs<1>{{dbias}});
    } else {
      bias_backward_planes<<<blocks_for(channels, 1), kBlockThreads, 0, stream()>>>(
          dy, dbias, outer, channels, inner);
      DTRAIN_CUDA_LAUNCH_CHECK();
    }
  });
}

void CudaBackend::relu_forward(Context& /*ctx*/, const float* x, float* y, int64_t n) {
  if (n == 0) return;
  relu_forward_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(x, y, n);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::relu_backward(Context& /*ctx*/, const float* y, const float* dy, float* dx,
                                int64_t n) {
  if (n == 0) return;
  relu_backward_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(y, dy, dx,
                                                                                     n);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::fill(Context& /*ctx*/, float* x, int64_t n, float value) {
  if (n == 0) return;
  // +0.0f is all zero bytes, which the driver's memset writes at full bandwidth: the
  // kernel's 4-byte stores averaged 119 us a call in the GPT's H100 profile, zeroing
  // the gradients every step among them. -0.0f and every other value take the kernel.
  if (value == 0.0f && !std::signbit(value)) {
    DTRAIN_CUDA_CHECK(cudaMemsetAsync(x, 0, static_cast<size_t>(n) * sizeof(float), stream()));
    return;
  }
  fill_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(x, n, value);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::add(Context& /*ctx*/, ConstTypedPtr a_t, ConstTypedPtr b_t, TypedPtr y_t, int64_t n) {
  if (n == 0) return;
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* a = typed<T>(a_t, "add");
    const T* b = typed<T>(b_t, "add");
    T* y = typed<T>(y_t, "add");
    add_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(a, b, y, n,
                                                                             cuda::pack_count(n, a, b, y));
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::scale(Context& /*ctx*/, float* x, int64_t n, float alpha) {
  if (n == 0) return;
  scale_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(x, n, alpha);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace dtrain
