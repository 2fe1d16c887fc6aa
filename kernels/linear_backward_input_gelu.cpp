// The default linear_backward_input_gelu (Note [Fused GELU backward], kernels/ops.h):
// the chain the op fuses, on the backend's own gemm and gelu_backward, so that a backend
// without a fused form (the CPU's, cpu-async's, CUDA's fp32) keeps the chain's bits.
#include <cstdint>

#include "kernels/ops.h"

namespace dtrain {

void OpsBackend::linear_backward_input_gelu(Context& ctx, ConstTypedPtr dy, ConstTypedPtr w, ConstTypedPtr pre,
                                            TypedPtr dpre, int64_t rows, int64_t in, int64_t out) {
  gemm(ctx, false, false, rows, in, out, 1.0f, dy, out, w, in, 0.0f, dpre, in);
  gelu_backward(ctx, pre, dpre, dpre, rows * in);
}

}  // namespace dtrain
