#include "runtime/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace dtrain {

double lr_at(const ScheduleConfig& s, double base_lr, int64_t step, int64_t total_steps) {
  const int64_t w = s.warmup_steps;
  if (step < w) return base_lr * static_cast<double>(step + 1) / static_cast<double>(w);
  const int64_t since = step - w;
  if (s.decay == "cosine") {
    const double span = static_cast<double>(std::max<int64_t>(1, total_steps - w - 1));
    const double t = std::min(1.0, static_cast<double>(since) / span);
    return s.min_lr + (base_lr - s.min_lr) * 0.5 * (1.0 + std::cos(M_PI * t));
  }
  if (s.decay == "step") {
    return base_lr * std::pow(s.gamma, static_cast<double>(since / s.step_size));
  }
  return base_lr;
}

}  // namespace dtrain
