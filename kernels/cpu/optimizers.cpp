#include <cmath>

#include "kernels/check.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/storage.h"

namespace dtrain::cpu {

void sgd_update(Context& ctx, float* params, const float* grads, float* momentum, int64_t n,
                const SgdHyper& h) {
  const float lr_wd = h.lr * h.weight_decay;
  const float lr = h.lr, mu = h.momentum, scale = h.grad_scale;
  const bool threaded = n >= kParallelMinWork;
  if (momentum == nullptr) {
    // Without a buffer the update is plain SGD, which is only right when momentum is 0.
    DTRAIN_ASSERT(mu == 0.0f, "sgd_update: momentum " << mu << " needs a momentum buffer");
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : threaded)
    for (int64_t i = 0; i < n; ++i) {
      float p = params[i];
      p -= lr_wd * p;
      params[i] = p - lr * (grads[i] * scale);
    }
    return;
  }
  if (h.nesterov) {
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : threaded)
    for (int64_t i = 0; i < n; ++i) {
      float p = params[i];
      p -= lr_wd * p;
      const float g = grads[i] * scale;
      const float buf = mu * momentum[i] + g;
      momentum[i] = buf;
      params[i] = p - lr * (g + mu * buf);
    }
  } else {
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : threaded)
    for (int64_t i = 0; i < n; ++i) {
      float p = params[i];
      p -= lr_wd * p;
      const float buf = mu * momentum[i] + grads[i] * scale;
      momentum[i] = buf;
      params[i] = p - lr * buf;
    }
  }
}

void adamw_update(Context& ctx, float* params, const float* grads, float* m, float* v, bf16* params_bf16,
                  int64_t n, const AdamWHyper& h) {
  DTRAIN_ASSERT(h.step >= 1, "adamw_update: step " << h.step << " must count from 1");
  // Bias corrections in double: 1 - beta^t loses most of its digits in float when
  // beta is close to 1 and t is small.
  const double t = static_cast<double>(h.step);
  const double bc1 = 1.0 - std::pow(static_cast<double>(h.beta1), t);
  const double bc2 = 1.0 - std::pow(static_cast<double>(h.beta2), t);
  // p -= lr * (m / bc1) / (sqrt(v / bc2) + eps), arranged as PyTorch does:
  // step_size * m / (sqrt(v) / sqrt(bc2) + eps).
  const auto step_size = static_cast<float>(h.lr / bc1);
  const auto inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float decay = 1.0f - h.lr * h.weight_decay;
  const float b1 = h.beta1, b2 = h.beta2, eps = h.eps;
  const float one_minus_b1 = 1.0f - b1, one_minus_b2 = 1.0f - b2, scale = h.grad_scale;
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grads[i] * scale;
    const float mi = b1 * m[i] + one_minus_b1 * g;
    const float vi = b2 * v[i] + one_minus_b2 * g * g;
    m[i] = mi;
    v[i] = vi;
    params[i] = params[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + eps);
  }
  // The bf16 copy: a second pass over the (cache-warm) parameters, in the widest
  // vectors the CPU has (Note [Conversion clones] in storage.cpp).
  if (params_bf16 == nullptr) return;
  narrow_team(ctx, params, n, params_bf16);
}

}  // namespace dtrain::cpu
