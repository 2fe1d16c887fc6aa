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
#include <vector>

#include "kernels/cuda/launch.cuh"
#include "kernels/ops.h"

namespace dtrain::cuda::optim {

enum class SgdKind { Plain, Momentum, Nesterov };

// Note [Optimizers over spans] (kernels/ops.h): spans that follow one another, in one
// launch. Their ends and decay flags travel in the launch's parameters (1 KiB, under
// the 4 KiB every CUDA version takes), so nothing is uploaded per step. Each thread
// walks its grid-stride elements in increasing order, so its span index only moves
// forward: one comparison per element, and at most kMaxLaunchSpans steps of the index
// in all.
inline constexpr int kMaxLaunchSpans = 128;
struct SpanTable {
  int64_t first = 0;                           // where the first span starts
  int64_t end[kMaxLaunchSpans] = {};           // where span s ends; increasing
  uint32_t decays[kMaxLaunchSpans / 32] = {};  // bit s % 32 of word s / 32: span s decays
  int count = 0;
};

// Whether element i decays, with s the span of the thread's previous element (0 at
// first), moved on to i's; i < the table's last end.
__device__ __forceinline__ bool span_decays(const SpanTable& spans, int& s, int64_t i) {
  while (i >= spans.end[s]) ++s;
  return ((spans.decays[s / 32] >> (s % 32)) & 1u) != 0u;
}

// Element i's update, with lr_wd = lr * weight_decay (0 where the parameter does not
// decay, as the CPU op computes it then).
template <SgdKind kind>
__device__ inline void sgd_element(float* params, const float* grads, float* momentum, int64_t i, float lr,
                                   float lr_wd, float mu, float grad_scale) {
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

template <SgdKind kind>
__global__ void sgd_kernel(float* params, const float* grads, float* momentum, int64_t n,
                           float lr, float lr_wd, float mu, float grad_scale) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    sgd_element<kind>(params, grads, momentum, i, lr, lr_wd, mu, grad_scale);
  }
}

// lr_wd where a span decays, lr_wd_off (lr * 0, as the CPU op gets it) where not.
template <SgdKind kind>
__global__ void sgd_spans_kernel(float* params, const float* grads, float* momentum, float lr, float lr_wd,
                                 float lr_wd_off, float mu, float grad_scale, SpanTable spans) {
  const int64_t n = spans.end[spans.count - 1];
  int s = 0;
  for (int64_t i = spans.first + grid_start(); i < n; i += grid_stride()) {
    const float decay = span_decays(spans, s, i) ? lr_wd : lr_wd_off;
    sgd_element<kind>(params, grads, momentum, i, lr, decay, mu, grad_scale);
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

// Element i's update, with `decay` for 1 - lr * weight_decay (k.decay, or 1 where the
// parameter does not decay: 1 - lr * 0 is 1 exactly, and p * 1 is p, as the CPU op
// computes it). params_bf16 (B: the device's or the host's bf16 type) is written only
// when kBf16Copy.
template <bool kBf16Copy, class B>
__device__ inline void adamw_element(float* params, const float* grads, float* m, float* v, B* params_bf16,
                                     int64_t i, const AdamWScalars& k, float decay) {
  const float g = __fmul_rn(grads[i], k.grad_scale);
  const float mi = __fadd_rn(__fmul_rn(k.beta1, m[i]), __fmul_rn(k.one_minus_beta1, g));
  const float vi = __fadd_rn(__fmul_rn(k.beta2, v[i]), __fmul_rn(__fmul_rn(k.one_minus_beta2, g), g));
  m[i] = mi;
  v[i] = vi;
  const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(vi), k.inv_sqrt_bc2), k.eps);
  const float p = __fsub_rn(__fmul_rn(params[i], decay), __fdiv_rn(__fmul_rn(k.step_size, mi), denom));
  params[i] = p;
  if constexpr (kBf16Copy) params_bf16[i] = from_float<B>(p);
}

template <bool kBf16Copy, class B>
__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, B* params_bf16, int64_t n,
                             AdamWScalars k) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    adamw_element<kBf16Copy>(params, grads, m, v, params_bf16, i, k, k.decay);
  }
}

template <bool kBf16Copy, class B>
__global__ void adamw_spans_kernel(float* params, const float* grads, float* m, float* v, B* params_bf16,
                                   AdamWScalars k, SpanTable spans) {
  const int64_t n = spans.end[spans.count - 1];
  int s = 0;
  for (int64_t i = spans.first + grid_start(); i < n; i += grid_stride()) {
    adamw_element<kBf16Copy>(params, grads, m, v, params_bf16, i, k, span_decays(spans, s, i) ? k.decay : 1.0f);
  }
}

// The launches' tables for `spans`, kMaxLaunchSpans at a time, empty spans left out;
// none when the spans do not each start where the one before ends (the op then takes
// the spans one by one). A host function, shared with the emulator's tests.
inline std::vector<SpanTable> span_tables(const std::vector<DecaySpan>& spans) {
  std::vector<SpanTable> tables;
  int64_t at = spans.empty() ? 0 : spans.front().offset;
  for (const DecaySpan& s : spans) {
    if (s.offset != at || s.count < 0) return {};
    if (s.count == 0) continue;
    if (tables.empty() || tables.back().count == kMaxLaunchSpans) {
      tables.emplace_back();
      tables.back().first = at;
    }
    SpanTable& t = tables.back();
    at += s.count;
    t.end[t.count] = at;
    if (s.decay) t.decays[t.count / 32] |= 1u << (t.count % 32);
    ++t.count;
  }
  return tables;
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
