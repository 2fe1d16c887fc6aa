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
//
// The kernels live here, apart from their launches (optimizers.cu), so that the unit
// tests' SIMT emulator (tests/unit/kernels/simt_emulator.h) runs this very source on
// the CPU in CI and checks its bits against the CPU op's
// (tests/unit/kernels/test_optimizers_emulated.cpp): it keeps to the CUDA names the
// emulator defines, and to from_float (kernels/cuda/storage.cuh on the device, the
// test's own on the host), which the includer provides first.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cuda/launch.cuh"
#include "kernels/ops.h"

namespace dtrain::cuda::optim {

enum class SgdKind { Plain, Momentum, Nesterov };

template <SgdKind kind>
__global__ void sgd_kernel(float* params, const float* grads, float* momentum, int64_t n,
                           float lr, float lr_wd, float mu, float grad_scale) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    float p = params[i];
    p = __fsub_rn(p, __fmul_rn(lr_wd, p));  // decoupled weight decay
    const float g = __fmul_rn(grads[i], grad_scale);
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

// The per-step scalars, computed on the host as the CPU op computes them.
struct AdamWScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  float step_size;     // lr / (1 - beta1^t)
  float inv_sqrt_bc2;  // 1 / sqrt(1 - beta2^t)
  float decay;         // 1 - lr * weight_decay
  float grad_scale;    // AdamWHyper::grad_scale
};

// params_bf16 (B: the device's or the host's bf16 type) is written only when kBf16Copy.
template <bool kBf16Copy, class B>
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, B* params_bf16, int64_t n,
                             AdamWScalars k) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const float g = __fmul_rn(grads[i], k.grad_scale);
    const float mi = __fadd_rn(__fmul_rn(k.beta1, m[i]), __fmul_rn(k.one_minus_beta1, g));
    const float vi =
        __fadd_rn(__fmul_rn(k.beta2, v[i]), __fmul_rn(__fmul_rn(k.one_minus_beta2, g), g));
    m[i] = mi;
    v[i] = vi;
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), k.inv_sqrt_bc2), k.eps);
    const float p = __fsub_rn(__fmul_rn(params[i], k.decay), __fdiv_rn(__fmul_rn(k.step_size, mi), denom));
    params[i] = p;
    if constexpr (kBf16Copy) params_bf16[i] = from_float<B>(p);
  }
}

// AdamW's scalars for step h.step: the bias corrections in double, as the CPU op: 1 -
// beta^t loses most of its digits in float when beta is close to 1 and t is small.
inline AdamWScalars adamw_scalars(const AdamWHyper& h) {
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
  k.grad_scale = h.grad_scale;
  return k;
}

}  // namespace dtrain::cuda::optim
