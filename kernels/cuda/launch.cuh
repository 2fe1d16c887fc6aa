// Launch geometry shared by the CUDA op kernels; included by kernels/cuda/*.cu, and by
// the kernel sources the unit tests' SIMT emulator compiles for the host.
//
// Elementwise kernels use grid-stride loops with 64-bit indices: the grid is sized to
// fill the device a few times over (CudaBackend::blocks_for), never to cover n, so any
// n (also above 2^31) gets a legal grid, and no index wraps.
#pragma once

#include <cstdint>

// `#pragma unroll` for nvcc, nothing for the host compiler (the kernels that the unit
// tests' SIMT emulator also compiles: tests/unit/kernels/simt_emulator.h).
// DTRAIN_UNROLL_BY(n): `#pragma unroll n`, likewise.
#if defined(__CUDACC__)
#define DTRAIN_UNROLL _Pragma("unroll")
#define DTRAIN_PRAGMA(text) _Pragma(#text)
#define DTRAIN_UNROLL_BY(n) DTRAIN_PRAGMA(unroll n)
#else
#define DTRAIN_UNROLL
#define DTRAIN_UNROLL_BY(n)
#endif

namespace dtrain::cuda {

inline constexpr int kBlockThreads = 256;
inline constexpr int kWarpSize = 32;

// First index and stride of a grid-stride loop, in 64 bits.
__device__ inline int64_t grid_start() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

}  // namespace dtrain::cuda
