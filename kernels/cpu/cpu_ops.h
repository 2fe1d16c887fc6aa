// The CPU op families behind CpuBackend (private to kernels/cpu/ and its tests).
// Each function has the contract of its namesake in kernels/ops.h.
//
// Threading: one pool, OpenMP's, with ctx.num_threads() threads. Loops run on it, and
// so does GEMM: OpenBLAS is kept to one thread, and gemm() gives each OpenMP thread a
// slab of the product (Note [One thread pool] in gemm.cpp). With OpenBLAS's own pool
// next to OpenMP's, its workers spin (sched_yield) for a while after every GEMM and
// share a core with the OpenMP worker of the loop that follows: with 2 threads on 2
// cores that made CNN training about 1.4x slower and the MLP's speed vary 2.5x from
// run to run (bench/RESULTS.md). Reductions are split over a fixed partition, so results do
// not depend on scheduling. GEMM results do not depend on the number of threads either;
// a convolution's weight gradient does, in its last bits, as its chunks of samples
// grow with the threads (Note [conv2d chunk size] in conv2d.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/ops.h"

namespace dtrain::cpu {

// Below this many elements a loop runs on one thread: waking a team costs more.
// On `parallel for simd` loops the threshold goes in an `if (parallel : ...)` clause:
// a plain `if` applies to the simd construct too (OpenMP 5), and small loops would
// then also lose their vectorisation.
inline constexpr int64_t kParallelMinWork = int64_t{1} << 15;

// Scratch budget for the im2col column matrix and its GEMM partner of one chunk.
inline constexpr size_t kConvWorkspaceBudget = size_t{64} << 20;
// The backend's convolutions take this much of it per thread, so that a thread's share
// of a chunk stays in cache (Note [conv2d chunk size] in conv2d.cpp).
inline constexpr size_t kConvChunkBytesPerThread = size_t{4} << 20;
// The budget argument meaning "kConvChunkBytesPerThread per thread of the context,
// at most kConvWorkspaceBudget": the default, and what the backend uses.
inline constexpr size_t kConvCacheBudget = 0;

void gemm(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
          int64_t ldc);

void add_bias(Context& ctx, float* y, const float* bias, int64_t outer, int64_t channels,
              int64_t inner);
void bias_backward(Context& ctx, const float* dy, float* dbias, int64_t outer, int64_t channels,
                   int64_t inner);
void relu_forward(Context& ctx, const float* x, float* y, int64_t n);
void relu_backward(Context& ctx, const float* y, const float* dy, float* dx, int64_t n);
void fill(Context& ctx, float* x, int64_t n, float value);
void sum_squares(Context& ctx, const float* x, int64_t n, double scale, double* out);
void copy_from_host(Context& ctx, void* dst, const void* src, size_t bytes);
void copy_to_host(Context& ctx, void* dst, const void* src, size_t bytes);

// Samples per im2col chunk: as many as fit `budget_bytes` of workspace (the column
// matrix (Ci*K*K, chunk*Ho*Wo) plus an (Co, chunk*Ho*Wo) GEMM operand), at least 1
// and at most the batch. A pure function, so the chunking is testable on its own.
int64_t conv2d_chunk_samples(const Conv2dShape& s, size_t budget_bytes);
// The workspace the three conv2d ops of shape s ask the context for (one chunk's).
size_t conv2d_workspace_bytes(const Context& ctx, const Conv2dShape& s);

// The budget parameter exists for tests that force several chunks on small shapes, or
// the whole batch in one (kConvWorkspaceBudget).
void conv2d_forward(Context& ctx, const Conv2dShape& s, const float* x, const float* w,
                    const float* bias, float* y, size_t budget_bytes = kConvCacheBudget);
void conv2d_backward_data(Context& ctx, const Conv2dShape& s, const float* dy, const float* w,
                          float* dx, size_t budget_bytes = kConvCacheBudget);
void conv2d_backward_filter(Context& ctx, const Conv2dShape& s, const float* x, const float* dy,
                            float* dw, float* dbias, size_t budget_bytes = kConvCacheBudget);

void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* x, float* y,
                       int32_t* argmax);
void maxpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dy,
                        const int32_t* argmax, float* dx);

void softmax_cross_entropy(Context& ctx, const float* logits, const int32_t* labels,
                           int64_t batch, int64_t classes, float grad_scale, float* dlogits,
                           double* stats, double loss_weight);

void sgd_update(Context& ctx, float* params, const float* grads, float* momentum, int64_t n,
                const SgdHyper& h);
void adamw_update(Context& ctx, float* params, const float* grads, float* m, float* v, int64_t n,
                  const AdamWHyper& h);

}  // namespace dtrain::cpu
