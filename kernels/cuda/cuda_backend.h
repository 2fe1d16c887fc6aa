// The CUDA backend of the op set: cuBLAS for GEMM, cuDNN for convolution, own kernels
// for the rest. One CudaBackend per Context, owning everything that is per device:
//
//   stream   non-blocking, so it never waits for the legacy default stream; every op,
//            copy and library call of the context is queued on it, in order
//   cuBLAS   handle on the stream, workspace from the device allocator
//   cuDNN    handle on the stream, per-shape algorithm choice (kernels/cuda/conv2d_plan.h)
//   tf32     whether GEMM and convolution may use TF32 tensor cores
//
// The op families live in one file each and define the members of this class:
// gemm.cpp, conv2d.cpp, elementwise.cu, pool.cu, cross_entropy.cu, optimizers.cu,
// convert.cu, and the transformer ops' layernorm.cu, gelu.cu, embedding.cu,
// attention.cu, dropout.cu; cuda_backend.cpp has the handles, copies and
// synchronization. The ops that take typed tensors run fp32 or bf16 (Note [bf16
// storage], kernels/dtype.h); their kernels are templates on the storage type
// (kernels/cuda/storage.cuh).
//
// Note [Label check on the device]
// The CPU op throws DataError for a label outside [0, classes). Labels live on the
// device here, and reading them back before every launch would stall the stream, so
// the cross-entropy kernel records the first bad row (and its label) of the first
// launch that has one in a few device words and skips it; the host reads the word at the next synchronization point
// (synchronize(), copy_to_host()) and throws the same DataError there. Until then the
// bad rows contribute nothing: zero loss, zero gradient, never an out-of-range write.
// The embedding's tokens are checked the same way, in a record of their own
// (embedding.cu): a bad token reads no row of wte (its output row is wpe alone) and
// adds to no row of dwte, and the next synchronization throws a DataError naming the
// token, its sample and position. The alternative, checking tokens on the host, would
// need them on the host before every step (they are uploaded asynchronously by the
// prefetcher, Note [Batch prefetch]) or a device-to-host read and a stream sync per
// call; this check costs a compare per token and nothing on the host until the next
// synchronization, which every step has anyway (the loss read-back).
// kernels/cuda/index_check.cuh has the device half.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdint>
#include <memory>
#include <type_traits>

#include "kernels/context.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/fused_attention.h"
#include "kernels/cuda/linear_lt.h"
#include "kernels/memory.h"
#include "kernels/ops.h"

namespace dtrain {

// The stream every op of a CUDA context runs on. Other parts (NCCL in comm/, the
// trainer's prefetch) order their own streams against it with events. Throws
// DeviceError when `ctx` is not a CUDA context.
cudaStream_t cuda_stream(Context& ctx);
// The device index of a CUDA context (for cudaSetDevice on other threads).
int cuda_device(Context& ctx);

class ConvPlanCache;

namespace cuda_detail {
struct StreamDeleter {
  void operator()(cudaStream_t s) const;
};
struct CublasDeleter {
  void operator()(cublasHandle_t h) const;
};
struct CudnnDeleter {
  void operator()(cudnnHandle_t h) const;
};
struct PinnedDeleter {
  void operator()(void* p) const;
};
}  // namespace cuda_detail

class CudaBackend final : public OpsBackend {
 public:
  // Makes the stream and handles on options.device, which must be the current device.
  // `allocator` must outlive the backend (the Context destroys them in that order).
  CudaBackend(CudaCachingAllocator& allocator, const CudaOptions& options);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const char* name() const override { return "cuda"; }

  // gemm.cpp
  void gemm(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
            float alpha, ConstTypedPtr a, int64_t lda, ConstTypedPtr b, int64_t ldb, float beta,
            TypedPtr c, int64_t ldc) override;
  // elementwise.cu
  void add_bias(Context& ctx, TypedPtr y, ConstTypedPtr bias, int64_t outer, int64_t channels,
                int64_t inner) override;
  void bias_backward(Context& ctx, ConstTypedPtr dy, float* dbias, int64_t outer,
                     int64_t channels, int64_t inner) override;
  size_t bias_backward_workspace_bytes(int64_t outer, int64_t channels, int64_t inner) const override;
  void relu_forward(Context& ctx, const float* x, float* y, int64_t n) override;
  void relu_backward(Context& ctx, const float* y, const float* dy, float* dx,
                     int64_t n) override;
  void fill(Context& ctx, float* x, int64_t n, float value) override;
  // reduce.cu
  void sum_squares(Context& ctx, const float* x, int64_t n, double scale, double* out) override;
  // conv2d.cpp
  size_t conv2d_workspace_bytes(Context& ctx, const Conv2dShape& s) override;
  Conv2dDeterminism conv2d_determinism(Context& ctx, const Conv2dShape& s) override;
  void conv2d_forward(Context& ctx, const Conv2dShape& s, const float* x, const float* w,
                      const float* bias, float* y) override;
  void conv2d_backward_data(Context& ctx, const Conv2dShape& s, const float* dy, const float* w,
                            float* dx) override;
  void conv2d_backward_filter(Context& ctx, const Conv2dShape& s, const float* x,
                              const float* dy, float* dw, float* dbias) override;
  // pool.cu
  void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* x, float* y,
                         int32_t* argmax) override;
  void maxpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dy,
                          const int32_t* argmax, float* dx) override;
  // cross_entropy.cu
  void softmax_cross_entropy(Context& ctx, ConstTypedPtr logits, const int32_t* labels,
                             int64_t batch, int64_t classes, float grad_scale, TypedPtr dlogits,
                             double* stats, double loss_weight) override;
  size_t softmax_cross_entropy_workspace_bytes(int64_t batch) const override;
  // layernorm.cu
  void layernorm_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y,
                         float* mean, float* rstd, int64_t rows, int64_t channels) override;
  void layernorm_backward(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, ConstTypedPtr weight,
                          const float* mean, const float* rstd, TypedPtr dx, float* dweight, float* dbias,
                          int64_t rows, int64_t channels, bool accumulate_dx) override;
  void add_layernorm_forward(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr residual_out,
                             ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y, float* mean, float* rstd,
                             int64_t rows, int64_t channels) override;
  size_t layernorm_backward_workspace_bytes(int64_t rows, int64_t channels) const override;
  // linear.cu
  void linear_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias, TypedPtr pre, TypedPtr y,
                      int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue) override;
  size_t linear_forward_workspace_bytes(int64_t rows, int64_t in, int64_t out, DType type) const override;
  // gelu.cu
  void gelu_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) override;
  void gelu_backward(Context& ctx, ConstTypedPtr x, ConstTypedPtr dy, TypedPtr dx, int64_t n) override;
  void linear_backward_input_gelu(Context& ctx, ConstTypedPtr dy, ConstTypedPtr w, ConstTypedPtr pre, TypedPtr dpre,
                                  int64_t rows, int64_t in, int64_t out) override;
  void linear_parameter_gradients(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, float* dw, float* db,
                                  int64_t rows, int64_t in, int64_t out) override;
  size_t linear_parameter_gradients_workspace_bytes(int64_t rows, int64_t in, int64_t out,
                                                    DType type) const override;
  // elementwise.cu
  void add(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr y, int64_t n) override;
  void scale(Context& ctx, float* x, int64_t n, float alpha) override;
  // convert.cu
  void convert(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) override;
  // embedding.cu
  void embedding_forward(Context& ctx, const int32_t* tokens, ConstTypedPtr wte, ConstTypedPtr wpe, TypedPtr y,
                         int64_t batch, int64_t seq, int64_t channels, int64_t vocab) override;
  void embedding_backward(Context& ctx, ConstTypedPtr dy, const int32_t* tokens, float* dwte, float* dwpe,
                          int64_t batch, int64_t seq, int64_t channels, int64_t vocab) override;
  size_t embedding_backward_workspace_bytes(int64_t batch, int64_t seq, int64_t channels,
                                            int64_t vocab) const override;
  // attention.cu
  void attention_forward(Context& ctx, ConstTypedPtr qkv, TypedPtr out, TypedPtr probs, int64_t batch,
                         int64_t seq, int64_t channels, int64_t heads) override;
  // Fused: cuDNN's SDPA where fused_attention() takes the shape, else dtrain's own
  // kernels where flash_attention() does (Note [Own fused attention]); else unfused.
  void attention_backward(Context& ctx, ConstTypedPtr dout, ConstTypedPtr qkv, ConstTypedPtr out,
                          ConstTypedPtr saved, TypedPtr dqkv, int64_t batch, int64_t seq, int64_t channels,
                          int64_t heads) override;
  size_t attention_workspace_bytes(int64_t batch, int64_t seq, int64_t channels,
                                   int64_t heads, DType type) const override;
  size_t attention_saved_bytes(int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                               DType type) const override;
  // cuDNN's backward where it takes the shape and CudaOptions::deterministic is off.
  bool attention_backward_deterministic(int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                                        DType type) const override;
  bool gemm_algorithms_timed() const override { return linear_lt_->autotune(); }
  const FusedAttention& fused_attention() const { return *fused_attention_; }
  const FlashAttention& flash_attention() const { return *flash_attention_; }
  const LinearLt& linear_lt() const { return *linear_lt_; }
  // dropout.cu
  void dropout_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t samples, int64_t per_sample,
                       const int64_t* sample_ids, uint64_t key, float p) override;
  void dropout_backward(Context& ctx, ConstTypedPtr dy, TypedPtr dx, int64_t samples, int64_t per_sample,
                        const int64_t* sample_ids, uint64_t key, float p) override;
  // optimizers.cu
  void sgd_update(Context& ctx, float* params, const float* grads, float* momentum, int64_t n,
                  const SgdHyper& h) override;
  void sgd_update_spans(Context& ctx, float* params, const float* grads, float* momentum,
                        const std::vector<DecaySpan>& spans, const SgdHyper& h) override;
  void adamw_update(Context& ctx, float* params, const float* grads, float* m, float* v,
                    bf16* params_bf16, int64_t n, const AdamWHyper& h) override;
  void adamw_update_spans(Context& ctx, float* params, const float* grads, float* m, float* v, bf16* params_bf16,
                          const std::vector<DecaySpan>& spans, const AdamWHyper& h) override;

  // cuda_backend.cpp
  // Queued on the stream. A pageable `src` may be reused as soon as this returns (CUDA
  // stages it); a page-locked one (HostBuffer) is read when the stream gets there, so
  // it must not be overwritten before a synchronize() or an event says so.
  void copy_from_host(Context& ctx, void* dst, const void* src, size_t bytes) override;
  // Returns once the bytes are on the host (and checks Note [Label check on the device]).
  void copy_to_host(Context& ctx, void* dst, const void* src, size_t bytes) override;
  void synchronize(Context& ctx) override;
  // With the waits of the GEMM timings (Note [GEMM autotuning]), which only autotune has.
  int64_t host_syncs() const override { return host_syncs_ + linear_lt_->tuning_syncs(); }
  // cuda_timeline.cpp: events on the compute stream (Note [Device timeline]).
  std::unique_ptr<DeviceTimeline> make_timeline(Context& ctx) override;
  // With TF32 allowed, the tensor-core TF32 rate is not counted: this is the fp32 peak.
  double peak_flops() const override;
  void* alloc_host(size_t bytes) override;
  void free_host(void* p) override;
  // uploader.cpp: a side stream and events per uploader (Note [Batch prefetch]).
  std::unique_ptr<Uploader> make_uploader(Context& ctx) override;
  // conv2d.cpp: the cuDNN plans, one per convolution shape (kernels/cuda/conv2d_plan.h).
  void release_plans() override;
  size_t plan_count() const override;

  cudaStream_t stream() const { return stream_.get(); }
  int device() const { return device_; }
  bool tf32() const { return tf32_; }
  const CudaFusions& fusions() const { return fusions_; }
  // Calls that took the fused LayerNorm backward, and launches of the optimizers' span
  // kernels: what the tests and benches read to know which path ran (LinearLt counts
  // its own GEMMs).
  int64_t fused_layernorm_backward_calls() const { return fused_layernorm_backward_calls_; }
  int64_t optimizer_span_launches() const { return optimizer_span_launches_; }

 private:
  // Blocks for a grid-stride loop over n items of `items_per_block` each.
  unsigned blocks_for(int64_t n, int64_t items_per_block) const;
  // A strided-batched row-major GEMM (gemm.cpp, for attention.cu), as gemm() with its
  // types for `batch` operands each `stride_*` elements after the last.
  void gemm_strided_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                            ConstTypedPtr a, int64_t lda, int64_t stride_a, ConstTypedPtr b, int64_t ldb,
                            int64_t stride_b, float beta, TypedPtr c, int64_t ldc, int64_t stride_c,
                            int64_t batch);
  // Throws DataError when a kernel flagged a bad label or token since the last check.
  void check_device_errors();

  CudaCachingAllocator& allocator_;
  int64_t host_syncs_ = 0;
  const int device_;
  const bool tf32_;
  const CudaFusions fusions_;
  int64_t fused_layernorm_backward_calls_ = 0;
  int64_t optimizer_span_launches_ = 0;
  int sm_count_ = 1;
  std::unique_ptr<std::remove_pointer_t<cudaStream_t>, cuda_detail::StreamDeleter> stream_;
  std::unique_ptr<std::remove_pointer_t<cublasHandle_t>, cuda_detail::CublasDeleter> cublas_;
  std::unique_ptr<std::remove_pointer_t<cudnnHandle_t>, cuda_detail::CudnnDeleter> cudnn_;
  Buffer cublas_workspace_;
  // Note [Label check on the device]: two records of cuda::kIndexRecordWords words
  // (kernels/cuda/index_check.cuh), the labels' at word 0 and the tokens' at word
  // kTokenRecord, each all ones while nothing is recorded.
  static constexpr int kTokenRecord = 4;
  unsigned long long* label_record() const { return label_error_.as<unsigned long long>(); }
  unsigned long long* token_record() const { return label_error_.as<unsigned long long>() + kTokenRecord; }
  Buffer label_error_;
  std::unique_ptr<unsigned long long, cuda_detail::PinnedDeleter> label_error_host_;
  // Launches since the last check that may record; each passes its number to the kernel.
  unsigned long long label_launches_ = 0;
  unsigned long long token_launches_ = 0;
  std::unique_ptr<ConvPlanCache> conv_plans_;
  std::unique_ptr<FusedAttention> fused_attention_;
  std::unique_ptr<FlashAttention> flash_attention_;
  // The bf16 bias linear in one cuBLASLt GEMM (linear.cu), on cublas_workspace_.
  std::unique_ptr<LinearLt> linear_lt_;
};

}  // namespace dtrain
