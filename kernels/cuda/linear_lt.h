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
// A shape cuBLASLt has no algorithm for, a pointer under 16-byte alignment, or (GELU)
// an auxiliary matrix whose width is not a multiple of 8 (its leading dimension must
// be, cublasLt.h) is declined: the call returns false, nothing queued, and the caller
// takes the unfused form.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

namespace dtrain {

class LinearLt {
 public:
  // `workspace` (device, `workspace_bytes`) is lent to every GEMM; the caller keeps it
  // for as long as this lives and uses it only on the same stream.
  LinearLt(void* workspace, size_t workspace_bytes);
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
  // The GEMMs queued so far, and those of them with GELU forward or backward or with
  // the bias gradient (for the tests: that a shape took this path).
  int64_t calls() const { return calls_; }
  int64_t gelu_calls() const { return gelu_calls_; }
  int64_t gelu_backward_calls() const { return gelu_backward_calls_; }
  int64_t parameter_gradient_calls() const { return parameter_gradient_calls_; }

 private:
  enum class Kind { kBias, kBiasGelu, kGeluBackward, kParameterGradients };
  struct Plan;  // one shape's descriptors and algorithm, or that it has none
  Plan& plan(Kind kind, int64_t rows, int64_t in, int64_t out);
  // Queues plan p's GEMM D = op(A) op(B) + beta D; false (and p declined from now on)
  // when cuBLASLt refuses the call.
  bool matmul(cudaStream_t stream, Plan& p, const void* a, const void* b, void* d, float beta = 0.0f);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  size_t workspace_bytes_;
  int64_t calls_ = 0;
  int64_t gelu_calls_ = 0;
  int64_t gelu_backward_calls_ = 0;
  int64_t parameter_gradient_calls_ = 0;
  std::map<std::tuple<Kind, int64_t, int64_t, int64_t>, std::unique_ptr<Plan>> plans_;
};

}  // namespace dtrain
