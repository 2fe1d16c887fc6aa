// Convolution as im2col + GEMM (conv2d_im2col.cpp): dtrain's CPU convolution before
// oneDNN, kept as the oracle the oneDNN ops (conv2d.cpp) are tested against
// (tests/unit/kernels/test_cpu_conv2d.cpp), and itself tested against the direct
// convolution. Private to kernels/cpu/ and its tests; the backend does not call it.
// Each function has the contract of its namesake in kernels/ops.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"

namespace dtrain::cpu {

// Scratch budget for the im2col column matrix and its GEMM partner of one chunk.
inline constexpr size_t kConvWorkspaceBudget = size_t{64} << 20;
// The default takes this much of it per thread, so that a thread's share of a chunk
// stays in cache (Note [conv2d chunk size] in conv2d_im2col.cpp).
inline constexpr size_t kConvChunkBytesPerThread = size_t{4} << 20;
// The budget argument meaning "kConvChunkBytesPerThread per thread of the context,
// at most kConvWorkspaceBudget": the default.
inline constexpr size_t kConvCacheBudget = 0;

// Samples per im2col chunk: as many as fit `budget_bytes` of workspace (the column
// matrix (Ci*K*K, chunk*Ho*Wo) plus an (Co, chunk*Ho*Wo) GEMM operand), at least 1
// and at most the batch. A pure function, so the chunking is testable on its own.
int64_t conv2d_im2col_chunk_samples(const Conv2dShape& s, size_t budget_bytes);
// The workspace the three ops of shape s ask the context for (one chunk's) with the
// default budget.
size_t conv2d_im2col_workspace_bytes(const Context& ctx, const Conv2dShape& s);

// The budget parameter exists for tests that force several chunks on small shapes, or
// the whole batch in one (kConvWorkspaceBudget). The weight gradient's last bits
// depend on the chunks, so on the budget, which by default grows with the threads.
void conv2d_im2col_forward(Context& ctx, const Conv2dShape& s, const float* x, const float* w,
                           const float* bias, float* y, size_t budget_bytes = kConvCacheBudget);
void conv2d_im2col_backward_data(Context& ctx, const Conv2dShape& s, const float* dy,
                                 const float* w, float* dx,
                                 size_t budget_bytes = kConvCacheBudget);
void conv2d_im2col_backward_filter(Context& ctx, const Conv2dShape& s, const float* x,
                                   const float* dy, float* dw, float* dbias,
                                   size_t budget_bytes = kConvCacheBudget);

}  // namespace dtrain::cpu
