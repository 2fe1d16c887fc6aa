// Gradient clipping by global norm (optimizer.clip_grad_norm), as
// torch.nn.utils.clip_grad_norm_: with the reduced gradient's norm |G| (the trainer
// has |G|^2 already, for the non-finite check and the noise scale, so clipping costs
// no extra collective), every gradient is scaled by max_norm / (|G| + 1e-6) when
// that is below 1.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/context.h"
#include "kernels/ops.h"

namespace dtrain {

// The factor the gradients are scaled by; 1 when clipping is off (max_norm <= 0) or
// the norm is within it.
inline double clip_coefficient(double grad_norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  const double coef = max_norm / (grad_norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

// Scales the n gradients on ctx's device by clip_coefficient; returns the factor.
inline double clip_gradients(Context& ctx, float* grads, int64_t n, double grad_sq_norm, double max_norm) {
  const double coef = clip_coefficient(std::sqrt(grad_sq_norm), max_norm);
  if (coef < 1.0) ops::scale(ctx, grads, n, static_cast<float>(coef));
  return coef;
}

}  // namespace dtrain
