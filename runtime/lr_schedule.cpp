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

double scaled_lr(const OptimizerConfig& o, int64_t global_batch) {
  double lr = o.lr;
  if (o.lr_scaling != "none" && o.base_batch > 0) {
    const double ratio = static_cast<double>(global_batch) / static_cast<double>(o.base_batch);
    lr *= o.lr_scaling == "linear" ? ratio : std::sqrt(ratio);
  }
  return o.max_lr > 0.0 ? std::min(lr, o.max_lr) : lr;
}

ScheduleConfig schedule_for_plan(const ScheduleConfig& schedule, int64_t steps_per_epoch) {
  ScheduleConfig s = schedule;
  if (s.warmup_epochs > 0.0) {
    s.warmup_steps = std::llround(s.warmup_epochs * static_cast<double>(steps_per_epoch));
  }
  return s;
}

}  // namespace dtrain
