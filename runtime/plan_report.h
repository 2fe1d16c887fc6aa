// The batch plan for people (printed by `dtrain plan` and at the start of training)
// and for scripts (`dtrain plan --json`, RUN_DIR/plan.json).
#pragma once

#include <string>

#include "runtime/batch_planner.h"
#include "runtime/config.h"

namespace dtrain {

struct PlanSummary {
  const PlanOutcome& outcome;
  double base_lr = 0.0;       // optimizer.lr
  double effective_lr = 0.0;  // after optimizer.lr_scaling
  std::string lr_scaling;
  int64_t base_batch = 0;
  int64_t steps_per_epoch = 0;
  int64_t warmup_steps = 0;
};

std::string plan_text(const PlanSummary& summary);
std::string plan_json(const PlanSummary& summary);

}  // namespace dtrain
