// The learning-rate schedule: linear warmup, then constant, cosine or step decay.
// A pure function of the optimizer step, so every rank and every layout agrees.
#pragma once

#include <cstdint>

#include "runtime/config.h"

namespace dtrain {

// LR for optimizer step `step` (0-based) of `total_steps`:
//  warmup  (step < W):  lr * (step + 1) / W
//  cosine:              min_lr + (lr - min_lr) * (1 + cos(pi * t)) / 2, t = (step - W) / max(1, total - W - 1)
//  step:                lr * gamma ^ floor((step - W) / step_size)
double lr_at(const ScheduleConfig& schedule, double base_lr, int64_t step, int64_t total_steps);

// optimizer.lr scaled to the global batch G: none: lr; linear: lr * G / base_batch;
// sqrt: lr * sqrt(G / base_batch) (Goyal et al. 2017; Krizhevsky 2014); then capped at
// optimizer.max_lr when it is set. Linear scaling with a cap is the shape of McCandlish
// et al.'s optimal step, eps_max / (1 + B_noise / B): proportional to B well below the
// noise scale, flat at the largest stable step above it. Without the cap a large batch
// is given a step that diverges.
double scaled_lr(const OptimizerConfig& optimizer, int64_t global_batch);

// The schedule with schedule.warmup_epochs turned into warmup_steps for this plan
// (rounded to the nearest step); unchanged when warmup is given in steps.
ScheduleConfig schedule_for_plan(const ScheduleConfig& schedule, int64_t steps_per_epoch);

}  // namespace dtrain
