// The loops GELU runs in, on contiguous runs of elements: the GELU op's forward and
// backward (gelu.cpp) and the fused linear's epilogue (gemm.cpp), in fp32 and bf16.
// Compiled for the widest vectors the CPU has, with the same bits on every CPU (Note
// [Arithmetic clones] in gelu_rows.cpp). Private to kernels/cpu/.
#pragma once

#include <cstdint>

#include "kernels/dtype.h"

namespace dtrain::cpu {

// y[i] = gelu_tanh(x[i]), stored once; x and y may alias.
void gelu_forward_run(const float* x, float* y, int64_t n);
void gelu_forward_run(const bf16* x, bf16* y, int64_t n);

// dx[i] = gelu_tanh'(x[i]) dy[i], stored once; dx may alias dy.
void gelu_backward_run(const float* x, const float* dy, float* dx, int64_t n);
void gelu_backward_run(const bf16* x, const bf16* dy, bf16* dx, int64_t n);

// The linear epilogue on one run of a row (Note [Fused linear epilogue], kernels/ops.h):
// v = product[j] + bias[j] in fp32, y[j] = v, or with GELU pre[j] = v and
// y[j] = gelu_tanh(v), each stored once. The expressions are add_bias's and
// gelu_forward_run's, so fp32 gives the chain's bits.
void bias_epilogue_run(const float* product, const float* bias, float* y, int64_t n);
void bias_epilogue_run(const float* product, const bf16* bias, bf16* y, int64_t n);
void bias_gelu_epilogue_run(const float* product, const float* bias, float* pre, float* y, int64_t n);
void bias_gelu_epilogue_run(const float* product, const bf16* bias, bf16* pre, bf16* y, int64_t n);

}  // namespace dtrain::cpu
