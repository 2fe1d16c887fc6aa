// Fused SGD and AdamW passes over a flat range: the host half, which launches the
// kernels of optimizer_kernels.cuh (how they match the CPU op's bits is said there).
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"
// After storage.cuh, which provides what the kernels store with.
#include "kernels/cuda/optimizer_kernels.cuh"

namespace dtrain {

namespace {

using cuda::kBlockThreads;
using cuda::optim::adamw_kernel;
using cuda::optim::adamw_spans_kernel;
using cuda::optim::AdamWScalars;
using cuda::optim::SpanTable;
using cuda::optim::sgd_kernel;
using cuda::optim::sgd_spans_kernel;
using cuda::optim::SgdKind;

// Calls f(std::integral_constant<SgdKind, K>{}): Plain without a momentum buffer, else
// Nesterov or Momentum.
template <class F>
void with_sgd_kind(bool has_momentum, bool nesterov, F&& f) {
  if (!has_momentum) {
    f(std::integral_constant<SgdKind, SgdKind::Plain>{});
  } else if (nesterov) {
    f(std::integral_constant<SgdKind, SgdKind::Nesterov>{});
  } else {
    f(std::integral_constant<SgdKind, SgdKind::Momentum>{});
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
  with_sgd_kind(momentum != nullptr, h.nesterov, [&](auto kind) {
    sgd_kernel<decltype(kind)::value><<<blocks, kBlockThreads, 0, stream()>>>(
        params, grads, momentum, n, h.lr, lr_wd, momentum == nullptr ? 0.0f : h.momentum, h.grad_scale);
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

// Note [Optimizers over spans]: a launch per table of up to kMaxLaunchSpans spans.
void CudaBackend::sgd_update_spans(Context& ctx, float* params, const float* grads, float* momentum,
                                   const std::vector<DecaySpan>& spans, const SgdHyper& h) {
  DTRAIN_ASSERT(momentum != nullptr || h.momentum == 0.0f,
                "sgd_update_spans: momentum " << h.momentum << " needs a momentum buffer");
  // CudaFusions off: the default, an update launch per span.
  const std::vector<SpanTable> tables =
      fusions_.optimizer_spans ? cuda::optim::span_tables(spans) : std::vector<SpanTable>{};
  if (tables.empty()) {
    OpsBackend::sgd_update_spans(ctx, params, grads, momentum, spans, h);
    return;
  }
  const float lr_wd = h.lr * h.weight_decay, lr_wd_off = h.lr * 0.0f;
  for (const SpanTable& t : tables) {
    const unsigned blocks = blocks_for(t.end[t.count - 1] - t.first, kBlockThreads);
    with_sgd_kind(momentum != nullptr, h.nesterov, [&](auto kind) {
      sgd_spans_kernel<decltype(kind)::value><<<blocks, kBlockThreads, 0, stream()>>>(
          params, grads, momentum, h.lr, lr_wd, lr_wd_off, momentum == nullptr ? 0.0f : h.momentum, h.grad_scale,
          t);
    });
    DTRAIN_CUDA_LAUNCH_CHECK();
    ++optimizer_span_launches_;
  }
}

void CudaBackend::adamw_update(Context& /*ctx*/, float* params, const float* grads, float* m,
                               float* v, bf16* params_bf16, int64_t n, const AdamWHyper& h) {
  DTRAIN_ASSERT(h.step >= 1, "adamw_update: step " << h.step << " must count from 1");
  if (n == 0) return;
  const AdamWScalars k = cuda::optim::adamw_scalars(h);
  const unsigned blocks = blocks_for(n, kBlockThreads);
  auto* copy = reinterpret_cast<__nv_bfloat16*>(params_bf16);
  if (copy == nullptr) {
    adamw_kernel<false><<<blocks, kBlockThreads, 0, stream()>>>(params, grads, m, v, copy, n, k);
  } else {
    adamw_kernel<true><<<blocks, kBlockThreads, 0, stream()>>>(params, grads, m, v, copy, n, k);
  }
  DTRAIN_CUDA_LAUNCH_CHECK();
}

// Note [Optimizers over spans]: a launch per table of up to kMaxLaunchSpans spans.
void CudaBackend::adamw_update_spans(Context& ctx, float* params, const float* grads, float* m, float* v,
                                     bf16* params_bf16, const std::vector<DecaySpan>& spans, const AdamWHyper& h) {
  DTRAIN_ASSERT(h.step >= 1, "adamw_update_spans: step " << h.step << " must count from 1");
  // CudaFusions off: the default, an update launch per span.
  const std::vector<SpanTable> tables =
      fusions_.optimizer_spans ? cuda::optim::span_tables(spans) : std::vector<SpanTable>{};
  if (tables.empty()) {
    OpsBackend::adamw_update_spans(ctx, params, grads, m, v, params_bf16, spans, h);
    return;
  }
  const AdamWScalars k = cuda::optim::adamw_scalars(h);
  auto* copy = reinterpret_cast<__nv_bfloat16*>(params_bf16);
  for (const SpanTable& t : tables) {
    const unsigned blocks = blocks_for(t.end[t.count - 1] - t.first, kBlockThreads);
    if (copy == nullptr) {
      adamw_spans_kernel<false><<<blocks, kBlockThreads, 0, stream()>>>(params, grads, m, v, copy, k, t);
    } else {
      adamw_spans_kernel<true><<<blocks, kBlockThreads, 0, stream()>>>(params, grads, m, v, copy, k, t);
    }
    DTRAIN_CUDA_LAUNCH_CHECK();
    ++optimizer_span_launches_;
  }
}

}  // namespace dtrain
