// The bf16 linear's GEMMs with their epilogues in cuBLASLt, so that what follows the
// product is applied to the fp32 accumulators before the one rounding, and no second
// pass reads and writes the output again:
//   forward, bias         y = round(x W^T + bias)                 CUBLASLT_EPILOGUE_BIAS
//   forward, bias + GELU  pre = round(v), y = round(GELU(v)),     CUBLASLT_EPILOGUE_GELU_AUX_BIAS
//                         v = x W^T + bias (pre is the auxiliary output)
//   input gradient        dpre = round(GELU'(pre) (dy W))         CUBLASLT_EPILOGUE_DGELU
//   through GELU          (pre the auxiliary input)
//   parameter gradients   dW += dy^T x in fp32, and the column     CUBLASLT_EPILOGUE_BGRADB
//                         sums of dy (the bias gradient) in fp32
// as Note [Fused linear epilogue] and Note [Fused GELU backward] (kernels/ops.h) ask.
// linear.cu otherwise has cuBLAS write the product in fp32 and adds the bias (and GELU)
// in a second pass, and the GELU backward is a pass of its own: on an H100 in a GPT-2
// 124M step the GELU linear's pass was 6.6% of the kernel time and the GELU backward's
// 3.4%, as the bias pass had been about a tenth on an H200 (bench/RESULTS.md).
//
// cuBLASLt's GELU is the tanh form (the one GPT-2 and the CPU ops use), but its
// evaluation is cuBLASLt's own: Note [cuBLASLt GELU] in kernels/ops.h says what the ops
// promise then, and tests/gpu/test_fused_ops.cpp bounds it against the CPU.
// The bias gradient rides on the weight gradient's GEMM, whose output is fp32 (the
// gradients), so the bias gradient cuBLASLt writes, in the output's type
// (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE in cublasLt.h), is fp32 too; it overwrites,
// so the caller adds it into the gradient that accumulates over micro-steps (Note
// [Fused bias gradient], kernels/ops.h). DGELU_BGRAD is not used: there the bias
// gradient would be in the input gradient's type, bf16.
// A shape cuBLASLt has no algorithm for, a pointer under 16-byte alignment, (GELU)
// an auxiliary matrix whose width is not a multiple of 8 (its leading dimension must
// be, cublasLt.h), or a dimension of 1 (kLtMinExtent in linear_lt.cpp) is declined:
// the call returns false, nothing queued, and the caller takes the unfused form.
//
// Note [GEMM autotuning]
// cuBLASLt's heuristic ranks its algorithms for a shape without running any, and these
// GEMMs run its first choice untimed, as cuBLAS's own calls run the algorithm its
// heuristic picks; the GEMMs were about half the kernel time of a GPT-2 124M step on an
// H100 (bench/RESULTS.md, the fourth GPU run). With autotune
// (CudaOptions::gemm_autotune), a shape's plan asks for up to kCandidates algorithms,
// and its first call times each of them: a warm-up call, then kRepeats calls between
// two events, the candidates back to back, and the host waits once, at the end. It
// keeps the one that choose_gemm_candidate (kernels/gemm_autotune.h) picks: the
// heuristic's first choice unless another is more than kMargin faster. Then the call
// itself runs, as it would have. The timing runs on the call's own operands, so that
// nothing is allocated for them: an output the call overwrites (beta 0) is written
// again by the call after the timing; one it adds into (beta != 0: the weight
// gradients, the classifier's among them) is copied aside first and back after, in a
// buffer from `scratch` (the backend's allocator, so the memory limit and the peak see
// it: up to the classifier's 154 MB at GPT-2's size, in the planner's probe steps too);
// where that does not fit, the shape keeps the heuristic's choice untimed. Each shape is
// timed on its first call: for a fixed micro-batch in the first step, while evaluation,
// a short last batch and the planner's probes bring shapes of their own, each timed
// once (the backend's host_syncs() counts the waits). The GEMMs without an epilogue
// (the classifier's, the input gradients) come through run_gemm, on the same plans,
// only with autotune: without it cuBLAS runs them as before (gemm.cpp).
// Off by default, for two reasons. The candidates sum the products in other orders
// (their tiles differ), so they round differently; and which one wins can change from
// run to run with the timing's noise, which the margin makes rarer but cannot rule
// out: a run with autotune is no longer repeated bit for bit by the next, and ranks
// that chose differently compute gradients that differ in the last bits before their
// all-reduce (which still leaves all ranks the same parameters). The user's setting is
// precision.gemm_autotune; bench/fusion_ablation's "gemm_autotune on" line measures
// what it buys in the GPT's step.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

namespace dtrain {

class Allocator;

class LinearLt {
 public:
  // `workspace` (device, `workspace_bytes`) is lent to every GEMM; the caller keeps it
  // for as long as this lives and uses it only on the same stream. `autotune`: Note
  // [GEMM autotuning], with `scratch` lending the buffer that keeps an accumulated
  // output during the timing (null: such shapes keep the heuristic's choice).
  LinearLt(void* workspace, size_t workspace_bytes, Allocator* scratch, bool autotune);
  ~LinearLt();
  LinearLt(const LinearLt&) = delete;
  LinearLt& operator=(const LinearLt&) = delete;

  // y (rows, out) = x (rows, in) W^T + bias, W (out, in), bias (out), all bf16, queued
  // on `stream`; with gelu_pre, y = GELU of that and gelu_pre (rows, out) the value
  // before GELU. False, with nothing queued, where the shape or alignment is declined.
  bool run(cudaStream_t stream, const void* x, const void* w, const void* bias, void* y, int64_t rows, int64_t in,
           int64_t out, void* gelu_pre = nullptr);
  // dpre (rows, in) = GELU'(pre) * (dy (rows, out) W (out, in)), pre (rows, in), all
  // bf16, queued on `stream`; false, with nothing queued, where declined.
  bool run_gelu_backward(cudaStream_t stream, const void* dy, const void* w, const void* pre, void* dpre,
                         int64_t rows, int64_t in, int64_t out);
  // dw (out, in) += dy^T x and column_sums (out) = the sums over rows of dy, with dy
  // (rows, out) and x (rows, in) bf16, dw and column_sums fp32 (column_sums
  // overwritten), queued on `stream`; false, with nothing queued, where declined.
  bool run_parameter_gradients(cudaStream_t stream, const void* dy, const void* x, float* dw, float* column_sums,
                               int64_t rows, int64_t in, int64_t out);
  // Column-major, as cublasGemmEx: C (m, n) = alpha op(A) op(B) + beta C, A and B bf16,
  // C bf16 or (c_fp32) fp32, fp32 accumulation, queued on `stream`; false, with nothing
  // queued, where declined. Only with autotune (Note [GEMM autotuning]): false without.
  bool run_gemm(cudaStream_t stream, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                const void* a, int64_t lda, const void* b, int64_t ldb, float beta, void* c, int64_t ldc,
                bool c_fp32);
  // The GEMMs queued so far, and those of them with GELU forward or backward or with
  // the bias gradient, or without an epilogue (for the tests: that a shape took this
  // path).
  int64_t calls() const { return calls_; }
  int64_t gelu_calls() const { return gelu_calls_; }
  int64_t gelu_backward_calls() const { return gelu_backward_calls_; }
  int64_t parameter_gradient_calls() const { return parameter_gradient_calls_; }
  int64_t plain_calls() const { return plain_calls_; }
  // Note [GEMM autotuning]: the candidates the heuristic offered, summed over the
  // shapes planned (1 a shape without autotune); the shapes whose candidates were timed
  // (those offered 2 or more), the candidates timed (not those that refused), and the
  // host's waits for the timings (one a timed shape).
  bool autotune() const { return autotune_; }
  int64_t candidates_offered() const { return candidates_offered_; }
  int64_t tuned_plans() const { return tuned_plans_; }
  int64_t timed_candidates() const { return timed_candidates_; }
  int64_t tuning_syncs() const { return tuning_syncs_; }

  static constexpr int kCandidates = 8;
  static constexpr int kRepeats = 3;
  static constexpr double kMargin = 0.03;

 private:
  enum class Kind { kBias, kBiasGelu, kGeluBackward, kParameterGradients, kPlain };
  struct Shape;  // a plan's GEMM in cuBLASLt's column-major terms
  struct Plan;   // one shape's descriptors and algorithm, or that it has none
  Plan& plan(Kind kind, const Shape& s);
  // Queues plan p's GEMM D = alpha op(A) op(B) + beta D; false (and p declined from now
  // on) when cuBLASLt refuses the call. Times p's candidates first on its first call.
  bool matmul(cudaStream_t stream, Plan& p, const void* a, const void* b, void* d, float alpha = 1.0f,
              float beta = 0.0f);
  void tune(cudaStream_t stream, Plan& p, const void* a, const void* b, void* d, float alpha, float beta);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  size_t workspace_bytes_;
  Allocator* scratch_;
  bool autotune_;
  int64_t calls_ = 0;
  int64_t gelu_calls_ = 0;
  int64_t gelu_backward_calls_ = 0;
  int64_t parameter_gradient_calls_ = 0;
  int64_t plain_calls_ = 0;
  int64_t candidates_offered_ = 0;
  int64_t tuned_plans_ = 0;
  int64_t timed_candidates_ = 0;
  int64_t tuning_syncs_ = 0;
  // kind, m, n, k, lda, ldb, ldd, and the transposes and D's type as bits
  std::map<std::array<int64_t, 8>, std::unique_ptr<Plan>> plans_;
};

}  // namespace dtrain
