// The bf16 linear with its bias in the GEMM's epilogue (cuBLASLt's
// CUBLASLT_EPILOGUE_BIAS): y = round(x W^T + bias) straight from the GEMM's fp32
// accumulators, one rounding, as Note [Fused linear epilogue] (kernels/ops.h) asks.
// linear.cu otherwise has cuBLAS write the product in fp32 to a workspace and adds the
// bias in a second pass, which reads and writes every output again: in a GPT-2 124M
// step on an H200, about a tenth of the step's kernel time.
//
// Only the bias epilogue: cuBLASLt's GELU epilogues do not promise the tanh form and
// its fp32 evaluation that the CPU ops define, so the GELU linear keeps the two-pass
// form. A shape cuBLASLt has no algorithm for, or a pointer under 16-byte alignment,
// is declined (run returns false, nothing queued) and takes the two-pass form too.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

namespace dtrain {

class BiasLinearLt {
 public:
  // `workspace` (device, `workspace_bytes`) is lent to every GEMM; the caller keeps it
  // for as long as this lives and uses it only on the same stream.
  BiasLinearLt(void* workspace, size_t workspace_bytes);
  ~BiasLinearLt();
  BiasLinearLt(const BiasLinearLt&) = delete;
  BiasLinearLt& operator=(const BiasLinearLt&) = delete;

  // y (rows, out) = x (rows, in) W^T + bias, W (out, in), bias (out), all bf16, queued
  // on `stream`; false, with nothing queued, where the shape or alignment is declined.
  bool run(cudaStream_t stream, const void* x, const void* w, const void* bias, void* y, int64_t rows, int64_t in,
           int64_t out);
  // The GEMMs queued so far (for the tests: that a shape took this path).
  int64_t calls() const { return calls_; }

 private:
  struct Plan;  // one shape's descriptors and algorithm, or that it has none
  Plan& plan(int64_t rows, int64_t in, int64_t out);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_;
  size_t workspace_bytes_;
  int64_t calls_ = 0;
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::unique_ptr<Plan>> plans_;
};

}  // namespace dtrain
