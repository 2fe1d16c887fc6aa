// Fused SGD and AdamW passes over a flat range, with exactly the formulas of
// kernels/ops.h. The scalars (lr * wd, bias corrections in double) are computed on the
// host as the CPU op does, and the per-element arithmetic uses explicitly rounded float
// operations in the CPU op's order, so nvcc cannot contract them into FMAs; with IEEE
// sqrt and division on both sides, the two backends are meant to compute the same bits.
// AdamW may also write the bf16 copy of the updated parameters (Note [bf16 storage]) in
// the same pass: __float2bfloat16_rn of the stored fp32 value, float_to_bf16's rounding.
// That is the fusion issue 15 asks of the optimizer (as llm.c's adamw kernel writes its
// low-precision copy): no separate convert() pass reads the fp32 parameters again after
// the update; tests/gpu/test_cuda_ops.cpp checks the copy's bits.
#include <cmath>
#include <cstdint>

#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace dtrain {

namespace {

using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;

enum class SgdKind { Plain, Momentum, Nesterov };

template <SgdKind kind>
__global__ void sgd_kernel(float* params, const float* grads, float* momentum, int64_t n,
                           float lr, float lr_wd, float mu) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    float p = params[i];
    p = __fsub_rn(p, __fmul_rn(lr_wd, p));  // decoupled weight decay
    const float g = grads[i];
    if constexpr (kind == SgdKind::Plain) {
      params[i] = __fsub_rn(p, __fmul_rn(lr, g));
    } else {
      const float buf = __fadd_rn(__fmul_rn(mu, momentum[i]), g);
      momentum[i] = buf;
      const float step = kind == SgdKind::Nesterov ? __fadd_rn(g, __fmul_rn(mu, buf)) : buf;
      params[i] = __fsub_rn(p, __fmul_rn(lr, step));
    }
  }
}

struct AdamWScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  float step_size;     // lr / (1 - beta1^t)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
  float decay;         // 1 - lr * weight_decay
};

// params_bf16 is read only when kBf16Copy.
template <bool kBf16Copy>
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, __nv_bfloat16* params_bf16,
                             int64_t n, AdamWScalars k) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const float g = grads[i];
    const float mi = __fadd_rn(__fmul_rn(k.beta1, m[i]), __fmul_rn(k.one_minus_beta1, g));
    const float vi =
        __fadd_rn(__fmul_rn(k.beta2, v[i]), __fmul_rn(__fmul_rn(k.one_minus_beta2, g), g));
    m[i] = mi;
    v[i] = vi;
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), k.inv_sqrt_bc2), k.eps);
    const float p = __fsub_rn(__fmul_rn(params[i], k.decay), __fdiv_rn(__fmul_rn(k.step_size, mi), denom));
    params[i] = p;
    if constexpr (kBf16Copy) params_bf16[i] = cuda::from_float<__nv_bfloat16>(p);
  }
}

}  // namespace

void CudaBackend::sgd_update(Context& /*ctx*/, float* params, const float* grads,
                             float* momentum, int64_t n, const SgdHyper& h) {
  // Without a buffer the update is plain SGD, which is only right when momentum is 0.
  DTRAIN_ASSERT(momentum != nullptr || h.momentum == 0.0f,
                "sgd_update: momentum " << h.momentum << " needs a momentum buffer");
  if (n == 0) return;
  const float lr_wd = h.lr * h.weight_decay;
  const unsigned blocks = blocks_for(n, kBlockThreads);
  if (momentum == nullptr) {
    sgd_kernel<SgdKind::Plain><<<blocks, kBlockThreads, 0, stream()>>>(params, grads, nullptr, n,
                                                                        h.lr, lr_wd, 0.0f);
  } else if (h.nesterov) {
    sgd_kernel<SgdKind::Nesterov><<<blocks, kBlockThreads, 0, stream()>>>(
        params, grads, momentum, n, h.lr, lr_wd, h.momentum);
  } else {
    sgd_kernel<SgdKind::Momentum><<<blocks, kBlockThreads, 0, stream()>>>(
        params, grads, momentum, n, h.lr, lr_wd, h.momentum);
  }
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::adamw_update(Context& /*ctx*/, float* params, const float* grads, float* m,
                               float* v, bf16* params_bf16, int64_t n, const AdamWHyper& h) {
  DTRAIN_ASSERT(h.step >= 1, "adamw_update: step " << h.step << " must count from 1");
  if (n == 0) return;
  // Bias corrections in double, as the CPU op: 1 - beta^t loses most of its digits in
  // float when beta is close to 1 and t is small.
  const double t = static_cast<double>(h.step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), t);
  AdamWScalars k{};
  k.beta1 = h.beta1;
  k.beta2 = h.beta2;
  k.one_minus_beta1 = 1.0f - h.beta1;
  k.one_minus_beta2 = 1.0f - h.beta2;
  k.eps = h.eps;
  k.step_size = static_cast<float>(h.lr / bc1);
  k.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  k.decay = 1.0f - h.lr * h.weight_decay;
  const unsigned blocks = blocks_for(n, kBlockThreads);
  if (params_bf16 == nullptr) {
    adamw_kernel<false><<<blocks, kBlockThreads, 0, stream()>>>(params, grads, m, v, nullptr, n, k);
  } else {
    adamw_kernel<true><<<blocks, kBlockThreads, 0, stream()>>>(params, grads, m, v,
                                                                reinterpret_cast<__nv_bfloat16*>(params_bf16), n, k);
  }
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace dtrain
