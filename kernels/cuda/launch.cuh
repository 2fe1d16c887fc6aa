// Launch geometry shared by the CUDA op kernels; included by kernels/cuda/*.cu only.
//
// Elementwise kernels use grid-stride loops with 64-bit indices: the grid is sized to
// fill the device a few times over (CudaBackend::blocks_for), never to cover n, so any
// n (also above 2^31) gets a legal grid, and no index wraps.
#pragma once

#include <cstdint>

namespace dtrain::cuda {

inline constexpr int kBlockThreads = 256;
inline constexpr int kWarpSize = 32;

// First index and stride of a grid-stride loop, in 64 bits.
__device__ inline int64_t grid_start() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

}  // namespace dtrain::cuda
