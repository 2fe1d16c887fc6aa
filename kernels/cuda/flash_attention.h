// dtrain's own fused causal attention: the fallback for the shapes cuDNN's SDPA
// declines (fused_attention.h), fp32 storage among them.
//
// Note [Own fused attention]
// The unfused path (attention.cu) keeps the T x T probabilities of every head for
// backward: B*H*T*T values a layer. Where cuDNN cannot fuse (fp32; bf16 head sizes that
// are not multiples of 8 or are over 128; seq or channels that are not multiples of 8;
// a build without the cuDNN frontend), these kernels do what FlashAttention-2 does, in
// plain fp32 SIMT arithmetic (no tensor cores: a fallback, never the fast path):
//   forward   each warp carries 4 query rows through the keys, 32 at a time in shared
//             memory, the 4 sharing each read of a key (Note [Own attention's shared
//             rows], flash_attention_kernels.cuh), with an online softmax; it writes
//             out and each row's log-sum-exp of its scaled scores (fp32, B*H*T), the
//             same statistic cuDNN keeps, so the op's saved state is the same size on
//             either fused path.
//   backward  D_i = dO_i . O_i once per row (workspace, B*H*T floats); then one pass
//             over keys per query row for dQ, and one pass over queries per key row for
//             dK and dV, each recomputing P_ij = exp(s q_i.k_j - lse_i).
// Each output element is one warp's alone, summed in a fixed order: no atomics, so a run
// repeats bit for bit, and recompute (memory.recompute) stays bit-identical.
//
// Numerics against the CPU oracle: every intermediate is fp32 (bf16 is only storage,
// read by to_float and written rounded once), so in fp32 the two differ by the order of
// sums and the online softmax's rescaling, and in bf16 also by the CPU's rounding of P
// to bf16 before P V. Neither rounds dS. The bound of tests/gpu/attention_bounds.h,
// derived for cuDNN's kernel, which rounds more, covers it; CI runs these kernels on
// the CPU under a SIMT emulator (tests/unit/kernels/test_flash_attention_emulated.cpp)
// against that bound, and tests/gpu/test_flash_attention.cpp runs them on a GPU.
//
// Where it runs: head size up to 256 (each lane owns up to 8 of a head's dimensions),
// and the kernels' shared memory (in backward 32 rows of hs rounded up to 4 floats, 64
// of hs + 1, the warps' stages and the tile's statistics: backward_shared_bytes) within
// what the device gives a block.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>

#include "kernels/cuda/fused_attention.h"
#include "kernels/dtype.h"

namespace dtrain {

class FlashAttention {
 public:
  // `enabled` false declines every shape; `device` says how much shared memory a block
  // may have.
  FlashAttention(int device, bool enabled);

  bool supports(const FusedAttentionShape& s) const { return declined(s).empty(); }
  // Why supports() said no ("" when it said yes).
  std::string declined(const FusedAttentionShape& s) const;
  // Backward's workspace: D, one float a row. Forward takes none.
  size_t workspace_bytes(const FusedAttentionShape& s) const;

  // qkv (B, T, 3C), out (B, T, C), dout (B, T, C), dqkv (B, T, 3C) of `type`; stats
  // (B, H, T) fp32. Queued on `stream`.
  void forward(cudaStream_t stream, DType type, const FusedAttentionShape& s, const void* qkv, void* out,
               float* stats) const;
  void backward(cudaStream_t stream, DType type, const FusedAttentionShape& s, const void* qkv, const void* out,
                const void* dout, const float* stats, void* dqkv, float* workspace) const;

 private:
  bool enabled_;
  size_t max_shared_bytes_;  // the device's opt-in limit for one block
};

}  // namespace dtrain
