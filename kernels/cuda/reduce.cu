// Reductions over flat buffers on the context's stream, accumulated in double.
//
// Two passes with a fixed shape: each block of a grid sized by n alone (not by the
// device, so every GPU model adds in the same order) sums a grid-stride share into one
// slot of the workspace, then one block adds the slots in order. Nothing is atomic, so
// the same input gives the same sum on any device.
#include <cstdint>

#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"

namespace dtrain {

namespace {

using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;

// Enough blocks to fill any current GPU a few times over.
constexpr int64_t kSumBlocks = 1024;

// Tree sum of the block's values in shared memory; thread 0 returns the total.
__device__ double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = kBlockThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  return shared[0];
}

__global__ void sum_squares_blocks(const float* x, int64_t n, double* partial) {
  __shared__ double shared[kBlockThreads];
  double sum = 0.0;
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const double v = x[i];
    sum += v * v;
  }
  const double total = block_sum(sum, shared);
  if (threadIdx.x == 0) partial[blockIdx.x] = total;
}

__global__ void add_partials(const double* partial, int64_t count, double scale, double* out) {
  __shared__ double shared[kBlockThreads];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += kBlockThreads) sum += partial[i];
  const double total = block_sum(sum, shared);
  if (threadIdx.x == 0) out[0] += scale * total;
}

}  // namespace

void CudaBackend::sum_squares(Context& ctx, const float* x, int64_t n, double scale,
                              double* out) {
  if (n <= 0) return;
  const int64_t needed = (n + kBlockThreads - 1) / kBlockThreads;
  const auto blocks = static_cast<unsigned>(needed < kSumBlocks ? needed : kSumBlocks);
  auto* partial = static_cast<double*>(ctx.workspace(blocks * sizeof(double)));
  sum_squares_blocks<<<blocks, kBlockThreads, 0, stream()>>>(x, n, partial);
  DTRAIN_CUDA_LAUNCH_CHECK();
  add_partials<<<1, kBlockThreads, 0, stream()>>>(partial, blocks, scale, out);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace dtrain
