// Note [Own fused attention] (flash_attention.h): the host half, which checks the
// shape, sizes the shared memory and launches the kernels of
// flash_attention_kernels.cuh.
#include "kernels/cuda/flash_attention.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/check.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/storage.cuh"

namespace dtrain::cuda::flash {
// The block's dynamic shared memory, as the kernels see it (the emulator has its own).
__device__ inline float* block_shared() {
  extern __shared__ float4 flash_shared_memory[];
  return reinterpret_cast<float*>(flash_shared_memory);
}
}  // namespace dtrain::cuda::flash

#include "kernels/cuda/flash_attention_kernels.cuh"

namespace dtrain {

namespace {

using cuda::flash::backward_shared_bytes;
using cuda::flash::forward_shared_bytes;
using cuda::flash::grid_rows;
using cuda::flash::kThreads;

constexpr int64_t kMaxHeadSize = 8 * cuda::flash::kWarpLanes;
constexpr size_t kDefaultSharedBytes = 48 * 1024;  // what a block gets without opting in

// Lets `kernel` take `bytes` of dynamic shared memory past the default 48 KB.
template <class Kernel>
void allow_shared(Kernel kernel, size_t bytes) {
  if (bytes <= kDefaultSharedBytes) return;
  DTRAIN_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
}

}  // namespace

FlashAttention::FlashAttention(int device, bool enabled) : enabled_(enabled) {
  int optin = 0;
  DTRAIN_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  max_shared_bytes_ = static_cast<size_t>(optin);
}

std::string FlashAttention::declined(const FusedAttentionShape& s) const {
  if (!enabled_) return "fused attention is off (CudaOptions::fused_attention)";
  if (s.heads <= 0 || s.channels % s.heads != 0) return "channels do not split into the heads";
  const int64_t hs = s.channels / s.heads;
  if (hs > kMaxHeadSize) {
    return "head size " + std::to_string(hs) + " is over " + std::to_string(kMaxHeadSize);
  }
  if (backward_shared_bytes(hs) > max_shared_bytes_) {
    return "head size " + std::to_string(hs) + " needs " + std::to_string(backward_shared_bytes(hs)) +
           " bytes of shared memory a block; this device gives " + std::to_string(max_shared_bytes_);
  }
  constexpr int64_t kIntMax = std::numeric_limits<int>::max();
  if (s.seq > kIntMax || 3 * s.channels > kIntMax) return "seq or 3 * channels exceeds int";
  if (s.batch * s.heads > 65535) return "batch * heads exceeds the grid's 65535 in y";
  return "";
}

size_t FlashAttention::workspace_bytes(const FusedAttentionShape& s) const {
  return static_cast<size_t>(s.batch * s.heads * s.seq) * sizeof(float);
}

void FlashAttention::forward(cudaStream_t stream, DType type, const FusedAttentionShape& s, const void* qkv,
                             void* out, float* stats) const {
  DTRAIN_ASSERT(supports(s), "own fused attention forward of a declined shape: " << declined(s));
  const int64_t hs = s.channels / s.heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const dim3 grid(grid_rows(s.seq), static_cast<unsigned>(s.batch * s.heads));
  const size_t shared = forward_shared_bytes(hs);
  cuda::storage_dispatch(type, [&](auto tag) {
    using P = typename decltype(tag)::type;
    cuda::flash::head_dispatch(hs, [&](auto dpl) {
      const auto kernel = cuda::flash::forward<P, decltype(dpl)::value>;
      allow_shared(kernel, shared);
      kernel<<<grid, kThreads, shared, stream>>>(static_cast<const P*>(qkv), static_cast<P*>(out), stats,
                                                  static_cast<int>(s.seq), static_cast<int>(s.channels),
                                                  static_cast<int>(s.heads), scale);
    });
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void FlashAttention::backward(cudaStream_t stream, DType type, const FusedAttentionShape& s, const void* qkv,
                              const void* out, const void* dout, const float* stats, void* dqkv,
                              float* workspace) const {
  DTRAIN_ASSERT(supports(s), "own fused attention backward of a declined shape: " << declined(s));
  const int64_t hs = s.channels / s.heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const dim3 grid(grid_rows(s.seq), static_cast<unsigned>(s.batch * s.heads));
  const size_t shared = backward_shared_bytes(hs);
  const int64_t rows = s.batch * s.heads * s.seq;
  const auto seq = static_cast<int>(s.seq), channels = static_cast<int>(s.channels), heads = static_cast<int>(s.heads);
  cuda::storage_dispatch(type, [&](auto tag) {
    using P = typename decltype(tag)::type;
    const auto* q = static_cast<const P*>(qkv);
    const auto* dO = static_cast<const P*>(dout);
    auto* dq = static_cast<P*>(dqkv);
    cuda::flash::row_dot<P><<<cuda::flash::row_dot_blocks(rows), kThreads, 0, stream>>>(
        dO, static_cast<const P*>(out), workspace, rows, seq, channels, heads);
    DTRAIN_CUDA_LAUNCH_CHECK();
    cuda::flash::head_dispatch(hs, [&](auto dpl) {
      constexpr int kDpl = decltype(dpl)::value;
      const auto dq_kernel = cuda::flash::backward_dq<P, kDpl>;
      const auto dkv_kernel = cuda::flash::backward_dkv<P, kDpl>;
      allow_shared(dq_kernel, shared);
      allow_shared(dkv_kernel, shared);
      dq_kernel<<<grid, kThreads, shared, stream>>>(q, dO, stats, workspace, dq, seq, channels, heads, scale);
      DTRAIN_CUDA_LAUNCH_CHECK();
      dkv_kernel<<<grid, kThreads, shared, stream>>>(q, dO, stats, workspace, dq, seq, channels, heads, scale);
      DTRAIN_CUDA_LAUNCH_CHECK();
    });
  });
}

}  // namespace dtrain
