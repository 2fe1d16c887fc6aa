#include "kernels/cpu/cpu_backend.h"

#include "kernels/cpu/conv2d_plan.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gemm_native.h"

namespace dtrain::cpu {

namespace {

class CpuBackend final : public OpsBackend {
 public:
  const char* name() const override { return "cpu"; }

  void gemm(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
            float alpha, ConstTypedPtr a, int64_t lda, ConstTypedPtr b, int64_t ldb, float beta,
            TypedPtr c, int64_t ldc) override {
    if (bf16_gemm_ == Bf16Gemm::kNative) {
      cpu::gemm_native(ctx, gemm_plans_, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    } else {
      cpu::gemm(ctx, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    }
  }
  size_t gemm_workspace_bytes(int64_t m, int64_t n, int64_t k, DType ab, DType c) const override {
    if (bf16_gemm_ == Bf16Gemm::kNative && ab == DType::kBF16) {
      return cpu::gemm_native_workspace_bytes(gemm_plans_, m, n, k, c);
    }
    return cpu::gemm_workspace_bytes(m, n, k, ab, c);
  }
  void add_bias(Context& ctx, TypedPtr y, ConstTypedPtr bias, int64_t outer, int64_t channels,
                int64_t inner) override {
    cpu::add_bias(ctx, y, bias, outer, channels, inner);
  }
  void bias_backward(Context& ctx, ConstTypedPtr dy, float* dbias, int64_t outer,
                     int64_t channels, int64_t inner) override {
    cpu::bias_backward(ctx, dy, dbias, outer, channels, inner);
  }
  void relu_forward(Context& ctx, const float* x, float* y, int64_t n) override {
    cpu::relu_forward(ctx, x, y, n);
  }
  void relu_backward(Context& ctx, const float* y, const float* dy, float* dx,
                     int64_t n) override {
    cpu::relu_backward(ctx, y, dy, dx, n);
  }
  size_t conv2d_workspace_bytes(Context& ctx, const Conv2dShape& s) override {
    return cpu::conv2d_workspace_bytes(ctx, conv_plans_, s);
  }
  // Single-threaded oneDNN primitives over groups of samples fixed by the batch, added
  // in a fixed order whatever the thread count (Note [oneDNN convolutions]).
  Conv2dDeterminism conv2d_determinism(Context&, const Conv2dShape&) override { return {}; }
  void conv2d_forward(Context& ctx, const Conv2dShape& s, const float* x, const float* w,
                      const float* bias, float* y) override {
    cpu::conv2d_forward(ctx, conv_plans_, s, x, w, bias, y);
  }
  void conv2d_backward_data(Context& ctx, const Conv2dShape& s, const float* dy, const float* w,
                            float* dx) override {
    cpu::conv2d_backward_data(ctx, conv_plans_, s, dy, w, dx);
  }
  void conv2d_backward_filter(Context& ctx, const Conv2dShape& s, const float* x,
                              const float* dy, float* dw, float* dbias) override {
    cpu::conv2d_backward_filter(ctx, conv_plans_, s, x, dy, dw, dbias);
  }
  void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* x, float* y,
                         int32_t* argmax) override {
    cpu::maxpool2d_forward(ctx, s, x, y, argmax);
  }
  void maxpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dy,
                          const int32_t* argmax, float* dx) override {
    cpu::maxpool2d_backward(ctx, s, dy, argmax, dx);
  }
  void softmax_cross_entropy(Context& ctx, ConstTypedPtr logits, const int32_t* labels,
                             int64_t batch, int64_t classes, float grad_scale, TypedPtr dlogits,
                             double* stats, double loss_weight) override {
    cpu::softmax_cross_entropy(ctx, logits, labels, batch, classes, grad_scale, dlogits, stats, loss_weight);
  }
  size_t softmax_cross_entropy_workspace_bytes(int64_t batch) const override {
    return static_cast<size_t>(batch) * sizeof(double);  // a loss per row (cross_entropy.cpp)
  }
  void sgd_update(Context& ctx, float* params, const float* grads, float* momentum, int64_t n,
                  const SgdHyper& h) override {
    cpu::sgd_update(ctx, params, grads, momentum, n, h);
  }
  void layernorm_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y,
                         float* mean, float* rstd, int64_t rows, int64_t channels) override {
    cpu::layernorm_forward(ctx, x, weight, bias, y, mean, rstd, rows, channels);
  }
  void layernorm_backward(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, ConstTypedPtr weight,
                          const float* mean, const float* rstd, TypedPtr dx, float* dweight, float* dbias,
                          int64_t rows, int64_t channels, bool accumulate_dx) override {
    cpu::layernorm_backward(ctx, dy, x, weight, mean, rstd, dx, dweight, dbias, rows, channels, accumulate_dx);
  }
  void add_layernorm_forward(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr residual_out,
                             ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y, float* mean, float* rstd,
                             int64_t rows, int64_t channels) override {
    cpu::add_layernorm_forward(ctx, a, b, residual_out, weight, bias, y, mean, rstd, rows, channels);
  }
  void linear_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias, TypedPtr pre, TypedPtr y,
                      int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue) override {
    if (bf16_gemm_ == Bf16Gemm::kNative) {
      cpu::linear_forward_native(ctx, gemm_plans_, x, w, bias, pre, y, rows, in, out, epilogue);
    } else {
      cpu::linear_forward(ctx, x, w, bias, pre, y, rows, in, out, epilogue);
    }
  }
  size_t linear_forward_workspace_bytes(int64_t rows, int64_t in, int64_t out, DType type) const override {
    if (bf16_gemm_ == Bf16Gemm::kNative && type == DType::kBF16) {
      return cpu::linear_forward_native_workspace_bytes(gemm_plans_, rows, in, out);
    }
    return cpu::linear_forward_workspace_bytes(rows, in, out, type);
  }
  void gelu_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) override { cpu::gelu_forward(ctx, x, y, n); }
  void gelu_backward(Context& ctx, ConstTypedPtr x, ConstTypedPtr dy, TypedPtr dx, int64_t n) override {
    cpu::gelu_backward(ctx, x, dy, dx, n);
  }
  void add(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr y, int64_t n) override { cpu::add(ctx, a, b, y, n); }
  void scale(Context& ctx, float* x, int64_t n, float alpha) override { cpu::scale(ctx, x, n, alpha); }
  void embedding_forward(Context& ctx, const int32_t* tokens, ConstTypedPtr wte, ConstTypedPtr wpe, TypedPtr y,
                         int64_t batch, int64_t seq, int64_t channels, int64_t vocab) override {
    cpu::embedding_forward(ctx, tokens, wte, wpe, y, batch, seq, channels, vocab);
  }
  void embedding_backward(Context& ctx, ConstTypedPtr dy, const int32_t* tokens, float* dwte, float* dwpe,
                          int64_t batch, int64_t seq, int64_t channels, int64_t vocab) override {
    cpu::embedding_backward(ctx, dy, tokens, dwte, dwpe, batch, seq, channels, vocab);
  }
  size_t embedding_backward_workspace_bytes(int64_t, int64_t, int64_t, int64_t) const override {
    return 0;  // threads split the channels (embedding.cpp)
  }
  void attention_forward(Context& ctx, ConstTypedPtr qkv, TypedPtr out, TypedPtr probs, int64_t batch,
                         int64_t seq, int64_t channels, int64_t heads) override {
    cpu::attention_forward(ctx, qkv, out, probs, batch, seq, channels, heads);
  }
  // The saved state is the probabilities (the default attention_saved_bytes); backward
  // does not read out.
  void attention_backward(Context& ctx, ConstTypedPtr dout, ConstTypedPtr qkv, ConstTypedPtr /*out*/,
                          ConstTypedPtr probs, TypedPtr dqkv, int64_t batch, int64_t seq, int64_t channels,
                          int64_t heads) override {
    cpu::attention_backward(ctx, dout, qkv, probs, dqkv, batch, seq, channels, heads);
  }
  size_t attention_workspace_bytes(int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                                   DType type) const override {
    return cpu::attention_workspace_bytes(batch, seq, channels, heads, type);
  }
  void dropout_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t samples, int64_t per_sample,
                       const int64_t* sample_ids, uint64_t key, float p) override {
    cpu::dropout_forward(ctx, x, y, samples, per_sample, sample_ids, key, p);
  }
  void dropout_backward(Context& ctx, ConstTypedPtr dy, TypedPtr dx, int64_t samples, int64_t per_sample,
                        const int64_t* sample_ids, uint64_t key, float p) override {
    cpu::dropout_backward(ctx, dy, dx, samples, per_sample, sample_ids, key, p);
  }
  void adamw_update(Context& ctx, float* params, const float* grads, float* m, float* v,
                    bf16* params_bf16, int64_t n, const AdamWHyper& h) override {
    cpu::adamw_update(ctx, params, grads, m, v, params_bf16, n, h);
  }
  void convert(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) override { cpu::convert(ctx, x, y, n); }
  void fill(Context& ctx, float* x, int64_t n, float value) override {
    cpu::fill(ctx, x, n, value);
  }
  void sum_squares(Context& ctx, const float* x, int64_t n, double scale, double* out) override {
    cpu::sum_squares(ctx, x, n, scale, out);
  }
  void copy_from_host(Context& ctx, void* dst, const void* src, size_t bytes) override {
    cpu::copy_from_host(ctx, dst, src, bytes);
  }
  void copy_to_host(Context& ctx, void* dst, const void* src, size_t bytes) override {
    cpu::copy_to_host(ctx, dst, src, bytes);
  }
  void release_plans() override {
    conv_plans_.clear();
    gemm_plans_.clear();
  }
  size_t plan_count() const override { return conv_plans_.size() + gemm_plans_.size(); }

 private:
  ConvPlanCache conv_plans_;  // the oneDNN primitives of each convolution group shape
  // The bf16 GEMM of DTRAIN_CPU_BF16 (Note [Native bf16 GEMM] in gemm_native.cpp), and
  // the native one's primitives of each slab shape (mutable: the workspace query makes
  // descriptors the way the op would).
  const Bf16Gemm bf16_gemm_ = bf16_gemm_from_environment();
  mutable GemmPlanCache gemm_plans_;
};

}  // namespace

OpsBackend& backend() {
  static CpuBackend instance;
  return instance;
}

}  // namespace dtrain::cpu
