// Gradient clipping by global norm (optimizer.clip_grad_norm), as
// torch.nn.utils.clip_grad_norm_: with the reduced gradient's norm |G| (the trainer
// has |G|^2 already, for the non-finite check and the noise scale, so clipping costs
// no extra collective), every gradient is scaled by max_norm / (|G| + 1e-6) when
// that is below 1. The scaling rides in the optimizer's own pass over the gradients
// (Optimizer::step's grad_scale), which saves a read and a write of every gradient.
#pragma once

namespace dtrain {

// The factor the gradients are scaled by; 1 when clipping is off (max_norm <= 0) or
// the norm is within it.
inline double clip_coefficient(double grad_norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  const double coef = max_norm / (grad_norm + 1e-6);
  return coef < 1.0 ? coef : 1.0;
}

}  // namespace dtrain
