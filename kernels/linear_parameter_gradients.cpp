// The default linear_parameter_gradients (Note [Fused bias gradient], kernels/ops.h):
// the chain the op fuses, on the backend's own gemm and bias_backward, so that a
// backend without a fused form (the CPU's, cpu-async's, CUDA's fp32) keeps the chain's
// bits.
#include <algorithm>
#include <cstdint>

#include "kernels/ops.h"

namespace dtrain {

void OpsBackend::linear_parameter_gradients(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, float* dw, float* db,
                                            int64_t rows, int64_t in, int64_t out) {
  gemm(ctx, true, false, out, in, rows, 1.0f, dy, out, x, in, 1.0f, dw, in);
  bias_backward(ctx, dy, db, rows, out, 1);
}

size_t OpsBackend::linear_parameter_gradients_workspace_bytes(int64_t rows, int64_t in, int64_t out,
                                                              DType type) const {
  return std::max(gemm_workspace_bytes(out, in, rows, type, DType::kF32), bias_backward_workspace_bytes(rows, out, 1));
}

}  // namespace dtrain
