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
// not depend on scheduling. GEMM results do not depend on the number of threads either,
// nor do convolutions: oneDNN's primitives run one to a thread, over groups of samples
// fixed by the batch (Note [oneDNN convolutions] in conv2d.cpp).
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

// Scratch budget of a GEMM on bf16 inputs, which widens blocks of op(A), op(B) and
// (for a bf16 C) C to fp32 and runs the fp32 GEMM on them (Note [bf16 GEMM] in
// gemm.cpp). One block of 32 rows and columns is always taken, whatever k.
inline constexpr size_t kGemmWorkspaceBudget = size_t{64} << 20;

// The block of C one widened product covers: rows of op(A) and columns of op(B).
struct GemmBlock {
  int64_t rows, cols;
};
// The blocks of a bf16 GEMM (c_bf16: C is bf16 too): the whole product when it fits
// `budget_bytes`, else the largest blocks that do. A pure function of the shape, so
// the workspace formula and the op agree whatever the threads.
GemmBlock gemm_bf16_block(int64_t m, int64_t n, int64_t k, bool c_bf16, size_t budget_bytes);
// The workspace gemm takes: 0 for fp32, the widened block for bf16 inputs (k > 0).
size_t gemm_workspace_bytes(int64_t m, int64_t n, int64_t k, DType ab, DType c,
                            size_t budget_bytes = kGemmWorkspaceBudget);

// Types as ops::gemm. The budget parameter exists for tests that force several blocks.
void gemm(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
          ConstTypedPtr a, int64_t lda, ConstTypedPtr b, int64_t ldb, float beta, TypedPtr c,
          int64_t ldc, size_t budget_bytes = kGemmWorkspaceBudget);

// In gemm.cpp: the fused linear forward (Note [Fused linear epilogue] in kernels/ops.h),
// its epilogue applied to each fp32 block of the product before it is stored.
void linear_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias, TypedPtr pre, TypedPtr y,
                    int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue);
// The bf16 product's blocks, as gemm's for a bf16 C; 0 for fp32.
size_t linear_forward_workspace_bytes(int64_t rows, int64_t in, int64_t out, DType type);
// The bf16 linear's epilogue on rows [r0, r0 + rows) of the output (out columns, packed):
// v = block + bias in fp32, stored once as y (and pre, for GELU), block holding those
// rows' fp32 product with row stride out. For a product computed elsewhere (the native
// GEMM, gemm_native.cpp); linear_forward applies the same to its own blocks.
void linear_epilogue_rows(Context& ctx, const float* block, int64_t r0, int64_t rows, int64_t out, const bf16* bias,
                          bf16* pre, bf16* y, LinearEpilogue epilogue);

void add_bias(Context& ctx, TypedPtr y, ConstTypedPtr bias, int64_t outer, int64_t channels,
              int64_t inner);
void bias_backward(Context& ctx, ConstTypedPtr dy, float* dbias, int64_t outer, int64_t channels,
                   int64_t inner);
void relu_forward(Context& ctx, const float* x, float* y, int64_t n);
void relu_backward(Context& ctx, const float* y, const float* dy, float* dx, int64_t n);
void fill(Context& ctx, float* x, int64_t n, float value);
void sum_squares(Context& ctx, const float* x, int64_t n, double scale, double* out);
void copy_from_host(Context& ctx, void* dst, const void* src, size_t bytes);
void copy_to_host(Context& ctx, void* dst, const void* src, size_t bytes);

// Throws Error naming `op` when s is no valid convolution.
void conv2d_check_shape(const Conv2dShape& s, const char* op);

// The convolutions on oneDNN (Note [oneDNN convolutions] in conv2d.cpp), with the
// primitives of each shape from `plans` (conv2d_plan.h; the backend owns one).
class ConvPlanCache;

// At most this many groups of samples per convolution call, so at most this many
// threads of a rank work on one.
inline constexpr int64_t kConvMaxGroups = 16;
// Below this many multiply-adds a convolution call runs on one thread.
inline constexpr int64_t kConvParallelMinMacs = int64_t{1} << 20;
// The backward-weights partials in flight take at most this much workspace (at least
// one partial is always taken).
inline constexpr size_t kConvPartialBytes = size_t{16} << 20;

// A batch split into `count` groups of consecutive samples: the first `larger` groups
// hold size + 1 samples, the others `size`. A function of the batch alone, never of
// the threads, so that results are not either.
struct ConvSampleGroups {
  int64_t count = 0, size = 0, larger = 0;
  int64_t first(int64_t g) const { return g * size + (g < larger ? g : larger); }
  int64_t samples(int64_t g) const { return size + (g < larger ? 1 : 0); }
};
// min(batch, kConvMaxGroups) groups whose sizes differ by at most one.
ConvSampleGroups conv2d_sample_groups(int64_t batch);

// The workspace the three ops of shape s take with ctx's threads, to the byte.
size_t conv2d_workspace_bytes(Context& ctx, ConvPlanCache& plans, const Conv2dShape& s);
void conv2d_forward(Context& ctx, ConvPlanCache& plans, const Conv2dShape& s, const float* x,
                    const float* w, const float* bias, float* y);
void conv2d_backward_data(Context& ctx, ConvPlanCache& plans, const Conv2dShape& s,
                          const float* dy, const float* w, float* dx);
void conv2d_backward_filter(Context& ctx, ConvPlanCache& plans, const Conv2dShape& s,
                            const float* x, const float* dy, float* dw, float* dbias);

void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* x, float* y,
                       int32_t* argmax);
void maxpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dy,
                        const int32_t* argmax, float* dx);

void softmax_cross_entropy(Context& ctx, ConstTypedPtr logits, const int32_t* labels,
                           int64_t batch, int64_t classes, float grad_scale, TypedPtr dlogits,
                           double* stats, double loss_weight);

// The transformer ops (Note [Transformer ops] in kernels/ops.h), one file per idea:
// layernorm.cpp, gelu.cpp, elementwise.cpp (add, scale), embedding.cpp, attention.cpp,
// dropout.cpp. None of them depends on the number of threads, bit for bit: every sum
// runs in an order fixed by the shapes alone. Each takes fp32 or bf16 tensors
// (kernels/cpu/storage.h) with the contract of its namesake in kernels/ops.h.
void layernorm_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y,
                       float* mean, float* rstd, int64_t rows, int64_t channels);
void layernorm_backward(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, ConstTypedPtr weight,
                        const float* mean, const float* rstd, TypedPtr dx, float* dweight, float* dbias,
                        int64_t rows, int64_t channels, bool accumulate_dx);
// In layernorm.cpp: the same row code as layernorm_forward, after add's rounding.
void add_layernorm_forward(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr residual_out,
                           ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y, float* mean, float* rstd,
                           int64_t rows, int64_t channels);
void gelu_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n);
void gelu_backward(Context& ctx, ConstTypedPtr x, ConstTypedPtr dy, TypedPtr dx, int64_t n);
void add(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr y, int64_t n);
void scale(Context& ctx, float* x, int64_t n, float alpha);
void embedding_forward(Context& ctx, const int32_t* tokens, ConstTypedPtr wte, ConstTypedPtr wpe, TypedPtr y,
                       int64_t batch, int64_t seq, int64_t channels, int64_t vocab);
// Takes no workspace: threads split the channels, and each walks all (b, t) in order.
void embedding_backward(Context& ctx, ConstTypedPtr dy, const int32_t* tokens, float* dwte, float* dwpe,
                        int64_t batch, int64_t seq, int64_t channels, int64_t vocab);
void attention_forward(Context& ctx, ConstTypedPtr qkv, TypedPtr out, TypedPtr probs, int64_t batch,
                       int64_t seq, int64_t channels, int64_t heads);
void attention_backward(Context& ctx, ConstTypedPtr dout, ConstTypedPtr qkv, ConstTypedPtr probs,
                        TypedPtr dqkv, int64_t batch, int64_t seq, int64_t channels, int64_t heads);
// Budget for the attention ops' scratch, one slot per (batch, head) pair in flight; at
// least one slot is always taken, whatever T. A slot is one T x T matrix for fp32
// backward (fp32 forward takes none), and for bf16 the pair's operands widened to fp32
// (Note [bf16 attention] in attention.cpp).
inline constexpr size_t kAttentionWorkspaceBudget = size_t{64} << 20;
// At most this many (batch, head) pairs are in flight in attention backward.
inline constexpr int64_t kAttentionMaxSlots = 16;
// The bytes of one slot of the attention ops' scratch.
size_t attention_slot_bytes(int64_t seq, int64_t channels, int64_t heads, DType type);
// How many slots the attention ops take: a pure function of the shape (not of the
// threads), so the memory model and the op agree on every backend.
int64_t attention_scratch_slots(int64_t batch, int64_t seq, int64_t channels, int64_t heads, DType type);
size_t attention_workspace_bytes(int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                                 DType type = DType::kF32);
void dropout_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t samples, int64_t per_sample,
                     const int64_t* sample_ids, uint64_t key, float p);
void dropout_backward(Context& ctx, ConstTypedPtr dy, TypedPtr dx, int64_t samples, int64_t per_sample,
                      const int64_t* sample_ids, uint64_t key, float p);

// One OpenBLAS GEMM on the calling thread, for callers that run independent products
// on the team themselves (attention's heads). Dimensions must fit OpenBLAS's integers
// (checked by the caller, outside any parallel region); k > 0.
void gemm_serial(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc);
// Throws Error when v does not fit OpenBLAS's integer type (`what` names it).
void check_blas_dimension(int64_t v, const char* what);

void sgd_update(Context& ctx, float* params, const float* grads, float* momentum, int64_t n,
                const SgdHyper& h);
void adamw_update(Context& ctx, float* params, const float* grads, float* m, float* v, bf16* params_bf16,
                  int64_t n, const AdamWHyper& h);
// Note [bf16 storage]: fp32 to bf16 rounds to nearest even, bf16 to fp32 widens.
void convert(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n);

}  // namespace dtrain::cpu
