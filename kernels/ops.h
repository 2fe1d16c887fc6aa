// The op set. Every op takes the Context (device, allocator, workspace, and on GPUs
// the stream and library handles) and raw device pointers with explicit shapes, and
// runs on the context's backend: kernels/cpu/ (OpenBLAS and loops) or kernels/cuda/.
//
// Conventions, the same for every backend:
//  - row-major storage; images are NCHW; convolution weights are (out, in, kh, kw)
//    and linear weights are (out, in), as in PyTorch, so flat parameter buffers match.
//  - ops named *_backward that produce parameter gradients ADD into them (gradient
//    accumulation over micro-steps relies on it); data gradients are overwritten.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "kernels/context.h"
#include "kernels/device_timeline.h"
#include "kernels/dtype.h"
#include "kernels/flat_range.h"

namespace dtrain {

struct Conv2dShape {
  int64_t batch, in_channels, height, width;
  int64_t out_channels, kernel, stride, padding;
  int64_t out_height() const { return (height + 2 * padding - kernel) / stride + 1; }
  int64_t out_width() const { return (width + 2 * padding - kernel) / stride + 1; }
};

// Whether each conv2d op of a shape runs a deterministic algorithm: the same inputs
// give the same bits on every run. The CPU's always do; cuDNN's do unless it offers no
// deterministic algorithm for the shape (Note [cuDNN algorithm choice]).
struct Conv2dDeterminism {
  bool forward = true;
  bool backward_data = true;
  bool backward_filter = true;
};

struct Pool2dShape {
  int64_t batch, channels, height, width;
  int64_t window, stride;
  int64_t out_height() const { return (height - window) / stride + 1; }
  int64_t out_width() const { return (width - window) / stride + 1; }
};

// What a fused linear forward applies to its product (ops::linear_forward).
enum class LinearEpilogue : uint8_t { kBias, kBiasGelu };

// grad_scale: each gradient is multiplied by it (one fp32 multiplication) before the
// update reads it, so the update is bit for bit scale(grads, grad_scale) followed by
// the update at 1, without that pass over the gradients: gradient clipping's
// coefficient (runtime/gradient_clipping.h), as llm.c folds it into its AdamW kernel.
// The gradients themselves are not written.
struct SgdHyper {
  float lr, momentum, weight_decay;
  bool nesterov;
  float grad_scale = 1.0f;
};

struct AdamWHyper {
  float lr, beta1, beta2, eps, weight_decay;
  int64_t step;  // 1 for the first update (bias correction)
  float grad_scale = 1.0f;
};

// The interface each backend implements. Call the free functions below instead.
// Note [Batch prefetch]: an Uploader copies host transfer memory to the device on a
// side stream, so the next micro-batch travels while the current one computes.
//   release():           the compute-stream work queued so far is the last that reads
//                        the destinations before the next upload;
//   upload(dst, src, n): queued after the work queued before the last release() (or,
//                        before any release, after all work queued so far), so it
//                        overlaps whatever compute was queued since;
//   make_visible():      compute-stream work queued from now on sees the uploads;
//   wait_source_free():  blocks the host until the uploads have read their sources.
// On the CPU the copy happens at once and the rest is nothing.
class Uploader {
 public:
  virtual ~Uploader() = default;
  virtual void release() = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;
  virtual void make_visible() = 0;
  virtual void wait_source_free() = 0;
};

class OpsBackend {
 public:
  virtual ~OpsBackend() = default;
  virtual const char* name() const = 0;

  virtual void gemm(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                    float alpha, ConstTypedPtr a, int64_t lda, ConstTypedPtr b, int64_t ldb,
                    float beta, TypedPtr c, int64_t ldc) = 0;
  // The workspace one gemm of these shapes and types takes, for the memory model.
  virtual size_t gemm_workspace_bytes(int64_t m, int64_t n, int64_t k, DType ab, DType c) const { return 0; }
  virtual void add_bias(Context& ctx, TypedPtr y, ConstTypedPtr bias, int64_t outer,
                        int64_t channels, int64_t inner) = 0;
  virtual void bias_backward(Context& ctx, ConstTypedPtr dy, float* dbias, int64_t outer,
                             int64_t channels, int64_t inner) = 0;
  // The workspace one bias_backward of this shape takes, for the memory model.
  virtual size_t bias_backward_workspace_bytes(int64_t outer, int64_t channels, int64_t inner) const { return 0; }
  virtual void relu_forward(Context& ctx, const float* x, float* y, int64_t n) = 0;
  virtual void relu_backward(Context& ctx, const float* y, const float* dy, float* dx,
                             int64_t n) = 0;
  // The most workspace (Context::workspace plus anything borrowed) the three conv2d
  // ops of shape s take, for the memory model.
  virtual size_t conv2d_workspace_bytes(Context& ctx, const Conv2dShape& s) = 0;
  virtual Conv2dDeterminism conv2d_determinism(Context& ctx, const Conv2dShape& s) = 0;
  virtual void conv2d_forward(Context& ctx, const Conv2dShape& s, const float* x,
                              const float* w, const float* bias, float* y) = 0;
  virtual void conv2d_backward_data(Context& ctx, const Conv2dShape& s, const float* dy,
                                    const float* w, float* dx) = 0;
  virtual void conv2d_backward_filter(Context& ctx, const Conv2dShape& s, const float* x,
                                      const float* dy, float* dw, float* dbias) = 0;
  virtual void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* x, float* y,
                                 int32_t* argmax) = 0;
  virtual void maxpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dy,
                                  const int32_t* argmax, float* dx) = 0;
  virtual void softmax_cross_entropy(Context& ctx, ConstTypedPtr logits, const int32_t* labels,
                                     int64_t batch, int64_t classes, float grad_scale,
                                     TypedPtr dlogits, double* stats, double loss_weight) = 0;
  // The workspace softmax_cross_entropy takes for `batch` rows, for the memory model.
  virtual size_t softmax_cross_entropy_workspace_bytes(int64_t batch) const = 0;
  virtual void sgd_update(Context& ctx, float* params, const float* grads, float* momentum,
                          int64_t n, const SgdHyper& h) = 0;
  // The default is sgd_update over each span in turn: Note [Optimizers over spans].
  virtual void sgd_update_spans(Context& ctx, float* params, const float* grads, float* momentum,
                                const std::vector<DecaySpan>& spans, const SgdHyper& h);
  // The transformer ops (Note [Transformer ops]). Not pure: a backend without them
  // (a test's fake) throws Error naming the op when one is called.
  virtual void layernorm_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr weight, ConstTypedPtr bias,
                                 TypedPtr y, float* mean, float* rstd, int64_t rows, int64_t channels);
  virtual void layernorm_backward(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, ConstTypedPtr weight,
                                  const float* mean, const float* rstd, TypedPtr dx, float* dweight,
                                  float* dbias, int64_t rows, int64_t channels, bool accumulate_dx);
  // The workspace one layernorm_backward of this shape takes, for the memory model.
  virtual size_t layernorm_backward_workspace_bytes(int64_t rows, int64_t channels) const { return 0; }
  virtual void add_layernorm_forward(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr residual_out,
                                     ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y, float* mean,
                                     float* rstd, int64_t rows, int64_t channels);
  virtual void linear_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias, TypedPtr pre,
                              TypedPtr y, int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue);
  virtual size_t linear_forward_workspace_bytes(int64_t rows, int64_t in, int64_t out, DType type) const;
  virtual void gelu_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n);
  virtual void gelu_backward(Context& ctx, ConstTypedPtr x, ConstTypedPtr dy, TypedPtr dx, int64_t n);
  // The default is the chain (gemm, then gelu_backward in place): Note [Fused GELU
  // backward].
  virtual void linear_backward_input_gelu(Context& ctx, ConstTypedPtr dy, ConstTypedPtr w, ConstTypedPtr pre,
                                          TypedPtr dpre, int64_t rows, int64_t in, int64_t out);
  // The default is the chain (gemm, then bias_backward): Note [Fused bias gradient].
  virtual void linear_parameter_gradients(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, float* dw, float* db,
                                          int64_t rows, int64_t in, int64_t out);
  virtual size_t linear_parameter_gradients_workspace_bytes(int64_t rows, int64_t in, int64_t out,
                                                            DType type) const;
  virtual void add(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr y, int64_t n);
  virtual void scale(Context& ctx, float* x, int64_t n, float alpha);
  virtual void convert(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n);
  virtual void embedding_forward(Context& ctx, const int32_t* tokens, ConstTypedPtr wte,
                                 ConstTypedPtr wpe, TypedPtr y, int64_t batch, int64_t seq,
                                 int64_t channels, int64_t vocab);
  virtual void embedding_backward(Context& ctx, ConstTypedPtr dy, const int32_t* tokens, float* dwte,
                                  float* dwpe, int64_t batch, int64_t seq, int64_t channels,
                                  int64_t vocab);
  virtual size_t embedding_backward_workspace_bytes(int64_t batch, int64_t seq, int64_t channels,
                                                    int64_t vocab) const;
  virtual void attention_forward(Context& ctx, ConstTypedPtr qkv, TypedPtr out, TypedPtr saved,
                                 int64_t batch, int64_t seq, int64_t channels, int64_t heads);
  virtual void attention_backward(Context& ctx, ConstTypedPtr dout, ConstTypedPtr qkv, ConstTypedPtr out,
                                  ConstTypedPtr saved, TypedPtr dqkv, int64_t batch, int64_t seq,
                                  int64_t channels, int64_t heads);
  virtual size_t attention_workspace_bytes(int64_t batch, int64_t seq, int64_t channels,
                                           int64_t heads, DType type) const;
  // The bytes of attention's saved state. The default: the probabilities, B*H*T*T
  // values of the type; a fused backend keeps less (Note [Fused attention]).
  virtual size_t attention_saved_bytes(int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                                       DType type) const;
  // Whether attention's backward of this shape runs a deterministic algorithm (Note
  // [Fused attention]: cuDNN's, with CudaOptions::deterministic off, is not); for the
  // plan's report (Note [Determinism report]). The default: yes.
  virtual bool attention_backward_deterministic(int64_t /*batch*/, int64_t /*seq*/, int64_t /*channels*/,
                                                int64_t /*heads*/, DType /*type*/) const {
    return true;
  }
  // Whether the bf16 GEMMs' algorithms are chosen by timing them in this process (Note
  // [GEMM autotuning]), so that another process may choose others; for the plan's report.
  virtual bool gemm_algorithms_timed() const { return false; }
  virtual void dropout_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t samples,
                               int64_t per_sample, const int64_t* sample_ids, uint64_t key, float p);
  virtual void dropout_backward(Context& ctx, ConstTypedPtr dy, TypedPtr dx, int64_t samples,
                                int64_t per_sample, const int64_t* sample_ids, uint64_t key, float p);
  virtual void adamw_update(Context& ctx, float* params, const float* grads, float* m, float* v,
                            bf16* params_bf16, int64_t n, const AdamWHyper& h) = 0;
  // The default is adamw_update over each span in turn: Note [Optimizers over spans].
  virtual void adamw_update_spans(Context& ctx, float* params, const float* grads, float* m, float* v,
                                  bf16* params_bf16, const std::vector<DecaySpan>& spans, const AdamWHyper& h);
  virtual void fill(Context& ctx, float* x, int64_t n, float value) = 0;
  virtual void sum_squares(Context& ctx, const float* x, int64_t n, double scale, double* out) = 0;
  virtual void copy_from_host(Context& ctx, void* dst, const void* src, size_t bytes) = 0;
  virtual void copy_to_host(Context& ctx, void* dst, const void* src, size_t bytes) = 0;
  // Waits for the work queued on ctx's device (nothing to wait for on the CPU).
  virtual void synchronize(Context& ctx) {}
  // How many times the host has waited for the device's queued work so far
  // (synchronize(), copy_to_host()): the trainer reports it per step, so a step that
  // stalls the queue more than its one read-back of the loss shows. -1 where nothing
  // is queued (the CPU, whose ops run as they are called).
  virtual int64_t host_syncs() const { return -1; }
  // Marks on ctx's compute queue that say when the device got to them (Note [Device
  // timeline], kernels/device_timeline.h); null where ops run as they are called (CPU).
  virtual std::unique_ptr<DeviceTimeline> make_timeline(Context& ctx) { return nullptr; }
  // The device's peak fp32 FLOP/s (FMA lanes x 2 x clock), or 0 when unknown (CPU).
  virtual double peak_flops() const { return 0.0; }
  // Host memory for transfers to and from the device: page-locked on GPUs, so copies
  // run asynchronously at full speed; plain aligned memory on the CPU.
  virtual void* alloc_host(size_t bytes) { return std::aligned_alloc(64, (bytes + 63) / 64 * 64); }
  virtual void free_host(void* p) { std::free(p); }
  // An Uploader for ctx's device (Note [Batch prefetch]).
  virtual std::unique_ptr<Uploader> make_uploader(Context& ctx);
  // State a backend keeps per op shape (the CUDA backend's cuDNN plan for each
  // convolution shape, batch size included), made on first use and kept for reuse.
  // The batch planner asks about many batch sizes that never run, and calls
  // release_plans() when it is done so their plans do not stay for the whole run;
  // the shapes that do run make theirs again on first use.
  virtual void release_plans() {}
  virtual size_t plan_count() const { return 0; }
};

namespace ops {

// C = alpha * op(A) * op(B) + beta * C, with op(A) m x k and op(B) k x n.
// Types (Note [bf16 storage]): A, B and C all fp32; or A and B bf16, C bf16 or fp32
// (fp32 accumulation either way; a bf16 C is rounded once, after beta * C is added).
inline void gemm(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                 float alpha, ConstTypedPtr a, int64_t lda, ConstTypedPtr b, int64_t ldb,
                 float beta, TypedPtr c, int64_t ldc) {
  ctx.backend().gemm(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
inline size_t gemm_workspace_bytes(Context& ctx, int64_t m, int64_t n, int64_t k, DType ab, DType c) {
  return ctx.backend().gemm_workspace_bytes(m, n, k, ab, c);
}
// y[o, c, i] += bias[c], with y viewed as (outer, channels, inner); y and bias of one type.
inline void add_bias(Context& ctx, TypedPtr y, ConstTypedPtr bias, int64_t outer, int64_t channels,
                     int64_t inner) {
  ctx.backend().add_bias(ctx, y, bias, outer, channels, inner);
}
// dbias[c] += sum over o and i of dy[o, c, i] (dy fp32 or bf16, dbias fp32).
inline void bias_backward(Context& ctx, ConstTypedPtr dy, float* dbias, int64_t outer,
                          int64_t channels, int64_t inner) {
  ctx.backend().bias_backward(ctx, dy, dbias, outer, channels, inner);
}
inline size_t bias_backward_workspace_bytes(Context& ctx, int64_t outer, int64_t channels, int64_t inner) {
  return ctx.backend().bias_backward_workspace_bytes(outer, channels, inner);
}
// y = max(x, 0). x and y may alias.
inline void relu_forward(Context& ctx, const float* x, float* y, int64_t n) {
  ctx.backend().relu_forward(ctx, x, y, n);
}
// dx = dy where y > 0, else 0 (y is the forward output).
inline void relu_backward(Context& ctx, const float* y, const float* dy, float* dx, int64_t n) {
  ctx.backend().relu_backward(ctx, y, dy, dx, n);
}
// y (N, Co, Ho, Wo) = conv(x (N, Ci, H, W), w (Co, Ci, K, K)) + bias (Co); bias may be null.
inline void conv2d_forward(Context& ctx, const Conv2dShape& s, const float* x, const float* w,
                           const float* bias, float* y) {
  ctx.backend().conv2d_forward(ctx, s, x, w, bias, y);
}
// dx (N, Ci, H, W) = gradient of the input, overwritten.
inline void conv2d_backward_data(Context& ctx, const Conv2dShape& s, const float* dy,
                                 const float* w, float* dx) {
  ctx.backend().conv2d_backward_data(ctx, s, dy, w, dx);
}
// dw (Co, Ci, K, K) += weight gradient; dbias (Co) += bias gradient when not null.
inline void conv2d_backward_filter(Context& ctx, const Conv2dShape& s, const float* x,
                                   const float* dy, float* dw, float* dbias) {
  ctx.backend().conv2d_backward_filter(ctx, s, x, dy, dw, dbias);
}
// y (N, C, Ho, Wo) = max over each window; argmax holds the flat index in the
// (H, W) plane of the winner, for backward. Ties go to the first in row-major order.
inline void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* x, float* y,
                              int32_t* argmax) {
  ctx.backend().maxpool2d_forward(ctx, s, x, y, argmax);
}
// dx (N, C, H, W) = dy routed to the argmax of each window, overwritten.
inline void maxpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dy,
                               const int32_t* argmax, float* dx) {
  ctx.backend().maxpool2d_backward(ctx, s, dy, argmax, dx);
}
// Softmax cross-entropy over rows of logits (batch, classes) with SUM reduction.
// stats[0] += loss_weight * (sum of per-row losses); stats[1] += loss_weight * (number
// of rows whose argmax is the label), both in double, on the device. When dlogits is
// not null it is overwritten with grad_scale * (softmax(logits) - onehot(label)).
// dlogits may be logits itself (a language model's B x T x V logits are then held
// once). loss_weight is 1 for a classifier (a row is a sample) and 1/T for a language
// model (a sample's loss is the mean over its T tokens).
// In bf16 (logits and dlogits of one type) the loss and the softmax are computed in
// fp32 and only the stored gradient is rounded.
// On CUDA this is the fused classifier (Note [Fused classifier] in
// kernels/cuda/cross_entropy.cu): no probabilities are materialised.
inline void softmax_cross_entropy(Context& ctx, ConstTypedPtr logits, const int32_t* labels,
                                  int64_t batch, int64_t classes, float grad_scale,
                                  TypedPtr dlogits, double* stats, double loss_weight = 1.0) {
  ctx.backend().softmax_cross_entropy(ctx, logits, labels, batch, classes, grad_scale, dlogits,
                                      stats, loss_weight);
}
inline size_t softmax_cross_entropy_workspace_bytes(Context& ctx, int64_t batch) {
  return ctx.backend().softmax_cross_entropy_workspace_bytes(batch);
}
// One fused pass of SGD over a flat range: decoupled weight decay p -= lr*wd*p, then
// buf = momentum*buf + g; p -= lr * (nesterov ? g + momentum*buf : buf).
inline void sgd_update(Context& ctx, float* params, const float* grads, float* momentum, int64_t n,
                       const SgdHyper& h) {
  ctx.backend().sgd_update(ctx, params, grads, momentum, n, h);
}
// One fused pass of AdamW (Loshchilov and Hutter) over a flat range, as PyTorch's AdamW.
// params_bf16, when not null, receives the updated parameters rounded to bf16 in the
// same pass (the bf16 copy a model computes with, Note [bf16 storage]).
inline void adamw_update(Context& ctx, float* params, const float* grads, float* m, float* v,
                         int64_t n, const AdamWHyper& h, bf16* params_bf16 = nullptr) {
  ctx.backend().adamw_update(ctx, params, grads, m, v, params_bf16, n, h);
}
// Note [Optimizers over spans]
// SGD or AdamW over the spans of a flat range, the offsets counted from the start of
// params (and of grads and the state: momentum, m, v, params_bf16): each span's
// elements updated as sgd_update or adamw_update with h, its weight decay
// h.weight_decay where the span decays and 0 where not, so bit for bit the update over
// each span in turn, which is the default op. A GPT's spans alternate between matrices
// and the biases and gains around them (98 for GPT-2 124M, half of them a few thousand
// elements): a launch each was 98 launches per step, with a tail each (2.1% of an H100
// step's kernel time); an MLP's few spans cost it launches of a step of a few hundred
// microseconds. On CUDA, spans that follow one another are one launch (up to
// kMaxLaunchSpans of them, kernels/cuda/optimizer_kernels.cuh), each thread finding its
// elements' span from a table passed with the launch.
inline void sgd_update_spans(Context& ctx, float* params, const float* grads, float* momentum,
                             const std::vector<DecaySpan>& spans, const SgdHyper& h) {
  ctx.backend().sgd_update_spans(ctx, params, grads, momentum, spans, h);
}
inline void adamw_update_spans(Context& ctx, float* params, const float* grads, float* m, float* v,
                               const std::vector<DecaySpan>& spans, const AdamWHyper& h,
                               bf16* params_bf16 = nullptr) {
  ctx.backend().adamw_update_spans(ctx, params, grads, m, v, params_bf16, spans, h);
}
inline void fill(Context& ctx, float* x, int64_t n, float value) {
  ctx.backend().fill(ctx, x, n, value);
}

// Note [Transformer ops]
// The ops of a GPT-2 block, on (rows, channels) activations with rows = batch x seq:
//  - LayerNorm over the last dimension, eps 1e-5, as torch.nn.LayerNorm. Forward
//    saves each row's mean and 1/std (rows floats each) for backward.
//  - GELU in its tanh form (GPT-2's, torch's approximate='tanh').
//  - Attention: qkv (B, T, 3C) holds q, k and v side by side, head h in features
//    [h*C/H, (h+1)*C/H) of each (nanoGPT's c_attn output); out (B, T, C) holds the
//    heads side by side. Causal, scaled by 1/sqrt(C/H). probs (B, H, T, T) is the
//    one T x T tensor kept for backward (the softmax output; entries above the
//    diagonal are 0); backward takes what else it needs from the workspace.
//  - Embedding: y[b, t] = wte[token[b, t]] + wpe[t]. Its backward adds into dwte and
//    dwpe in a fixed order (no float atomics whose order varies), so it is
//    deterministic. A token outside [0, vocab) is a DataError naming it.
//  - Dropout: element i of sample s is dropped when a hash of (key, sample_ids[s], i)
//    falls below p (kernels/dropout_hash.h, the same function on every backend);
//    kept ones are scaled by 1/(1-p). No mask is stored: backward hashes again.
//    The key mixes the seed, the step and the layer (never the rank or micro-step), so
//    every layout drops the same units of the same sample.
// As everywhere: parameter gradients are ADDED, data gradients overwritten, except
// where layernorm_backward is told to accumulate into dx (the residual stream).
// Types (Note [bf16 storage]): the typed tensors of one call are all fp32 or all bf16
// (the LayerNorm's weight and bias, and the embedding's tables, included); row
// statistics and parameter gradients are always fp32.

// Note [Fused residual LayerNorm]
// A GPT block closes with a residual add whose sum the next LayerNorm (the next block's
// ln_1, or ln_f) reads at once. add_layernorm_forward does both in one pass per row:
// a and b are read once and the sum written once, and the LayerNorm reads the row back
// from cache, where the chain reads a, b, writes the sum and then reads it again from
// memory. Its contract is "the chain, bit for bit", not "within a tolerance": the
// LayerNorm normalises the STORED sum (in bf16 the rounded one), as the chain does, so
// fusing changes no number a model computes (the golden tests hold unchanged) and no
// byte it holds (no workspace, no new activation). Backward needs nothing new:
// layernorm_backward already accumulates its dx into the residual stream's gradient.

// y = LayerNorm(x) * weight + bias over rows of `channels`; mean and rstd: rows floats.
inline void layernorm_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr weight, ConstTypedPtr bias,
                              TypedPtr y, float* mean, float* rstd, int64_t rows, int64_t channels) {
  ctx.backend().layernorm_forward(ctx, x, weight, bias, y, mean, rstd, rows, channels);
}
// dweight, dbias += their gradients; dx = (accumulate_dx ? dx : 0) + input gradient.
inline void layernorm_backward(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, ConstTypedPtr weight,
                               const float* mean, const float* rstd, TypedPtr dx, float* dweight,
                               float* dbias, int64_t rows, int64_t channels, bool accumulate_dx) {
  ctx.backend().layernorm_backward(ctx, dy, x, weight, mean, rstd, dx, dweight, dbias, rows, channels,
                                   accumulate_dx);
}
inline size_t layernorm_backward_workspace_bytes(Context& ctx, int64_t rows, int64_t channels) {
  return ctx.backend().layernorm_backward_workspace_bytes(rows, channels);
}
// The residual add fused with the LayerNorm that reads its sum (Note [Fused residual
// LayerNorm]): residual_out = a + b, rounded once when stored as add() rounds it, then
// y = LayerNorm(residual_out) * weight + bias with mean and rstd, computed from the
// STORED residual_out exactly as layernorm_forward computes them. On every backend the
// result is bit for bit that backend's add() followed by its layernorm_forward(); it
// takes no workspace. residual_out may alias a or b; y aliases none of the others.
inline void add_layernorm_forward(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr residual_out,
                                  ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y, float* mean, float* rstd,
                                  int64_t rows, int64_t channels) {
  ctx.backend().add_layernorm_forward(ctx, a, b, residual_out, weight, bias, y, mean, rstd, rows, channels);
}
// Note [Fused linear epilogue]
// A linear layer's forward is a GEMM followed by its bias (and, for the MLP's c_fc,
// GELU). cuBLASLt can apply both in the GEMM's epilogue, on the fp32 accumulator,
// before anything is stored: so the fused op's contract is ONE rounding per stored
// value, not the chain's. With v = x W^T + bias, in fp32 (the product summed in fp32,
// in an order of the backend's GEMM, then the bias added in fp32):
//   kBias:      y = round(v)                        (pre is not touched; may be null)
//   kBiasGelu:  pre = round(v), y = round(gelu_tanh(v))
// where round is the identity in fp32, so in fp32 the op is the chain gemm, add_bias,
// gelu_forward exactly. In bf16 the chain rounds the product, then the sum with the
// bias, then takes GELU of the rounded pre; the fused op differs from it by at most
// a rounding or two (tests/unit/kernels/test_fused_ops.cpp derives the bound). GELU's
// backward reads the stored (rounded) pre, as the chain's does.
//
// Note [cuBLASLt GELU]
// On CUDA in bf16 the GELU linear is one cuBLASLt GEMM (CUBLASLT_EPILOGUE_GELU_AUX_BIAS,
// kernels/cuda/linear_lt.h): pre = round(v) as above, but y = round(g(v)) with g
// cuBLASLt's own evaluation of the tanh form, which NVIDIA does not document. The
// promise there: g(v) = v (1 + t) / 2 with t within e = 2^-10 of tanh relative (twice
// the 2^-11 PTX gives tanh.approx.f32, the fastest tanh a GEMM epilogue would use:
// the margin is for the evaluation nobody documents) and |t| <= 1, so
// |g(v) - gelu_tanh(v)| <= e |v| / 2 + 2^-24. The bound is absolute in |v|: where v is
// large and positive that is a fraction of a bf16 ulp of y (y ~ v), but in the negative
// tail, where y = v (1 + t) / 2 tends to 0 and 1 + t cancels, y's RELATIVE accuracy is
// lost (at v = -3, y ~ -0.0036 against an allowed 7e-4). The derivative in the backward
// GEMM (Note [Fused GELU backward]) is g'(v) = (1 + t) / 2 + v (1 - t^2) k (1 + 3a v^2)
// / 2 (k = sqrt(2/pi), a = 0.044715); with 1 - t^2 moved by 2 |t| e |t| + (e t)^2 it
// moves by at most e (1/2 + k |v| (1 + 3a v^2) (1 + e / 2)), absolute too.
// tests/gpu/test_fused_ops.cpp holds the GPU to both against the CPU; the cost of the
// lost tail, if any, shows in the bf16 GPT's trajectory against the CPU's
// (tests/e2e/gpu_gpt_checks.sh). fp32 keeps the unfused forms and the backend's
// gelu_tanh.
//
// y (rows, out) = epilogue(x (rows, in) W (out, in)^T + bias (out)); x, w, bias, pre
// and y all of one type. pre and y alias nothing. Takes at most
// linear_forward_workspace_bytes(rows, in, out, type) of workspace.
inline void linear_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias, TypedPtr pre,
                           TypedPtr y, int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue) {
  ctx.backend().linear_forward(ctx, x, w, bias, pre, y, rows, in, out, epilogue);
}
inline size_t linear_forward_workspace_bytes(Context& ctx, int64_t rows, int64_t in, int64_t out, DType type) {
  return ctx.backend().linear_forward_workspace_bytes(rows, in, out, type);
}
// y = gelu_tanh(x); x and y may alias.
inline void gelu_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) {
  ctx.backend().gelu_forward(ctx, x, y, n);
}
// dx = gelu_tanh'(x) * dy; dx may alias dy.
inline void gelu_backward(Context& ctx, ConstTypedPtr x, ConstTypedPtr dy, TypedPtr dx, int64_t n) {
  ctx.backend().gelu_backward(ctx, x, dy, dx, n);
}
// Note [Fused GELU backward]
// The input gradient of a linear whose input was gelu_tanh(pre) (the MLP's c_proj),
// taken through GELU: dpre = gelu_tanh'(pre) * (dy W), with dy (rows, out), W (out, in),
// pre and dpre (rows, in), all of one type. It replaces the chain gemm (dx = dy W)
// then gelu_backward (dpre = gelu_tanh'(pre) * dx), and the default backend op IS that
// chain, so the CPU's bits are the chain's. On CUDA in bf16 it is one cuBLASLt GEMM
// with CUBLASLT_EPILOGUE_DGELU (kernels/cuda/linear_lt.h): GELU's derivative is applied
// to the fp32 product, and dpre rounded once where the chain rounds dx first, with
// cuBLASLt's own evaluation of the derivative (Note [cuBLASLt GELU] bounds it).
// tests/gpu/test_fused_ops.cpp holds the GPU to the CPU chain within both differences.
// dpre aliases nothing; no workspace beyond the gemm's.
inline void linear_backward_input_gelu(Context& ctx, ConstTypedPtr dy, ConstTypedPtr w, ConstTypedPtr pre,
                                       TypedPtr dpre, int64_t rows, int64_t in, int64_t out) {
  ctx.backend().linear_backward_input_gelu(ctx, dy, w, pre, dpre, rows, in, out);
}
// Note [Fused bias gradient]
// A linear layer's parameter gradients: dw (out, in) += dy^T x and db (out) += the sums
// over rows of dy, with dy (rows, out) and x (rows, in) of one type, dw and db fp32. The
// default backend op is the chain gemm then bias_backward, so the CPU's bits are the
// chain's. On CUDA in bf16 it is one cuBLASLt GEMM with CUBLASLT_EPILOGUE_BGRADB
// (kernels/cuda/linear_lt.h), which reads dy once for both: cuBLASLt sums the columns
// of dy in fp32, in its own order, into a workspace vector (the epilogue overwrites),
// which one pass then adds into db. The chain's bias_backward read all of dy a second
// time (3.9% of a GPT-2 124M step's kernel time on an H100, bench/RESULTS.md). Like the
// GEMM's own, cuBLASLt's order is fixed for a shape on a given device and library, so a
// run repeats bit for bit there; bias_backward's sums, in double over a partition of
// the shape alone, also agreed across GPUs, which the bf16 GEMMs never did.
// tests/gpu/test_fused_ops.cpp bounds the GPU against the CPU chain.
inline void linear_parameter_gradients(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, float* dw, float* db,
                                       int64_t rows, int64_t in, int64_t out) {
  ctx.backend().linear_parameter_gradients(ctx, dy, x, dw, db, rows, in, out);
}
inline size_t linear_parameter_gradients_workspace_bytes(Context& ctx, int64_t rows, int64_t in, int64_t out,
                                                         DType type) {
  return ctx.backend().linear_parameter_gradients_workspace_bytes(rows, in, out, type);
}
// y = a + b elementwise; y may alias a or b (y += b is add(y, b, y)).
inline void add(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr y, int64_t n) {
  ctx.backend().add(ctx, a, b, y, n);
}
// x *= alpha (gradient clipping now rides in the optimizer: Optimizer::step's grad_scale).
inline void scale(Context& ctx, float* x, int64_t n, float alpha) { ctx.backend().scale(ctx, x, n, alpha); }
// y = x converted to y's type (fp32 to bf16 rounds to nearest even; bf16 to fp32 is
// exact; the same type copies). x and y do not overlap.
inline void convert(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) { ctx.backend().convert(ctx, x, y, n); }
// y (B, T, C) = wte[tokens] + wpe[t]; tokens (B, T) int32, wte (V, C), wpe (>= T, C).
inline void embedding_forward(Context& ctx, const int32_t* tokens, ConstTypedPtr wte, ConstTypedPtr wpe,
                              TypedPtr y, int64_t batch, int64_t seq, int64_t channels, int64_t vocab) {
  ctx.backend().embedding_forward(ctx, tokens, wte, wpe, y, batch, seq, channels, vocab);
}
// dwte[v] += sum of dy[b, t] over tokens[b, t] == v; dwpe[t] += sum over b of dy[b, t].
inline void embedding_backward(Context& ctx, ConstTypedPtr dy, const int32_t* tokens, float* dwte,
                               float* dwpe, int64_t batch, int64_t seq, int64_t channels, int64_t vocab) {
  ctx.backend().embedding_backward(ctx, dy, tokens, dwte, dwpe, batch, seq, channels, vocab);
}
inline size_t embedding_backward_workspace_bytes(Context& ctx, int64_t batch, int64_t seq,
                                                 int64_t channels, int64_t vocab) {
  return ctx.backend().embedding_backward_workspace_bytes(batch, seq, channels, vocab);
}
// Causal multi-head attention: out (B, T, C) from qkv (B, T, 3C). `saved` holds what
// backward needs besides qkv and out, attention_saved_bytes of it (a pointer of the
// compute type): the softmax probabilities (B, H, T, T) where a backend materialises
// them (the CPU's, and CUDA's unfused path), or each row's log-sum-exp (B, H, T) fp32
// where it fuses (Note [Fused attention], kernels/cuda/fused_attention.h: cuDNN's; Note
// [Own fused attention], kernels/cuda/flash_attention.h: dtrain's, where cuDNN declines).
inline void attention_forward(Context& ctx, ConstTypedPtr qkv, TypedPtr out, TypedPtr saved, int64_t batch,
                              int64_t seq, int64_t channels, int64_t heads) {
  ctx.backend().attention_forward(ctx, qkv, out, saved, batch, seq, channels, heads);
}
// dqkv (B, T, 3C) overwritten from dout (B, T, C) and the forward's qkv, out and saved.
inline void attention_backward(Context& ctx, ConstTypedPtr dout, ConstTypedPtr qkv, ConstTypedPtr out,
                               ConstTypedPtr saved, TypedPtr dqkv, int64_t batch, int64_t seq, int64_t channels,
                               int64_t heads) {
  ctx.backend().attention_backward(ctx, dout, qkv, out, saved, dqkv, batch, seq, channels, heads);
}
inline size_t attention_saved_bytes(Context& ctx, int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                                    DType type) {
  return ctx.backend().attention_saved_bytes(batch, seq, channels, heads, type);
}
// The most workspace either attention op takes, for the memory model.
inline size_t attention_workspace_bytes(Context& ctx, int64_t batch, int64_t seq, int64_t channels,
                                        int64_t heads, DType type = DType::kF32) {
  return ctx.backend().attention_workspace_bytes(batch, seq, channels, heads, type);
}
// y = dropout(x) over `samples` rows of `per_sample` elements; sample_ids (device,
// `samples` int64) name each row's sample. x and y may alias. p = 0 copies.
inline void dropout_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t samples, int64_t per_sample,
                            const int64_t* sample_ids, uint64_t key, float p) {
  ctx.backend().dropout_forward(ctx, x, y, samples, per_sample, sample_ids, key, p);
}
// dx = dy where forward kept the element (scaled by 1/(1-p)), else 0; dx may alias dy.
inline void dropout_backward(Context& ctx, ConstTypedPtr dy, TypedPtr dx, int64_t samples, int64_t per_sample,
                             const int64_t* sample_ids, uint64_t key, float p) {
  ctx.backend().dropout_backward(ctx, dy, dx, samples, per_sample, sample_ids, key, p);
}
// out[0] += scale * (sum of x[i]^2), accumulated in double on the device (gradient
// norms). The same inputs give the same sum every run on a device (a fixed order).
inline void sum_squares(Context& ctx, const float* x, int64_t n, double scale, double* out) {
  ctx.backend().sum_squares(ctx, x, n, scale, out);
}
// Workspace bytes conv2d of shape s takes (forward and both backwards), for planning.
inline size_t conv2d_workspace_bytes(Context& ctx, const Conv2dShape& s) {
  return ctx.backend().conv2d_workspace_bytes(ctx, s);
}
// Which conv2d ops of shape s run a deterministic algorithm, for the plan's report.
inline Conv2dDeterminism conv2d_determinism(Context& ctx, const Conv2dShape& s) {
  return ctx.backend().conv2d_determinism(ctx, s);
}
// Whether attention's backward of this shape is deterministic, for the plan's report.
inline bool attention_backward_deterministic(Context& ctx, int64_t batch, int64_t seq, int64_t channels,
                                             int64_t heads, DType type) {
  return ctx.backend().attention_backward_deterministic(batch, seq, channels, heads, type);
}
inline void copy_from_host(Context& ctx, void* dst, const void* src, size_t bytes) {
  ctx.backend().copy_from_host(ctx, dst, src, bytes);
}
inline void copy_to_host(Context& ctx, void* dst, const void* src, size_t bytes) {
  ctx.backend().copy_to_host(ctx, dst, src, bytes);
}

}  // namespace ops
}  // namespace dtrain
