// The batch plan for people (printed by `dtrain plan` and at the start of training)
// and for scripts (`dtrain plan --json`, RUN_DIR/plan.json).
//
// Note [Determinism report]
// dtrain promises that a run resumed at the same world size repeats bit for bit. That
// holds only where every op of a training step is deterministic, and cuDNN may have no
// deterministic algorithm for a convolution's shape (Note [cuDNN algorithm choice],
// kernels/cuda/conv2d_plan.h), or the user may have traded determinism for speed
// (precision.deterministic: false lets cuDNN's attention backward and convolutions take
// non-deterministic algorithms; precision.gemm_autotune times the GEMMs' algorithms in
// each process). The planner asks each rank's model which passes are not deterministic
// at its planned micro-batch (Model::determinism) and gathers the answers into every
// rank's RankPlanReport; determinism_notes turns them into one sentence per layer (after
// one for timed GEMMs, which touch every layer), which rank 0 says once at start-up (in
// the plan it prints), which plan.json carries, and which the run's summary repeats at
// the end. Only the training step's shapes are asked: evaluation chunks do not feed the
// trajectory.
#pragma once

#include <string>
#include <vector>

#include "runtime/batch_planner.h"
#include "runtime/config.h"
#include "runtime/memory_levers.h"

namespace dtrain {

// What memory.recompute does to a training step, by this rank's model's own counts
// (attention's saved state, and so the bytes, depend on the backend). Empty
// (available false) for a model without blocks.
struct RecomputeReport {
  bool available = false;                // Model::can_recompute
  std::string setting = "none";          // memory.recompute
  int64_t bytes_per_sample_none = 0;     // activation bytes per sample without recompute
  int64_t bytes_per_sample_blocks = 0;   // ... with recompute: blocks
  int64_t flops_per_sample_blocks = 0;   // the FLOPs recompute: blocks adds per sample
  int64_t training_flops_per_sample = 0; // the model's (3x forward), which throughput counts
};

struct PlanSummary {
  const PlanOutcome& outcome;
  double base_lr = 0.0;       // optimizer.lr
  double effective_lr = 0.0;  // after optimizer.lr_scaling
  std::string lr_scaling;
  int64_t base_batch = 0;
  int64_t steps_per_epoch = 0;
  int64_t warmup_steps = 0;
  std::string compute = "fp32";       // precision.compute
  std::string reduce_dtype = "fp32";  // comm.reduce_dtype
  RecomputeReport recompute{};
  const LeverChoice* levers = nullptr;  // the planner's sharding and recompute (Note [Memory levers])
  int64_t optimizer_state_bytes_per_param = 0;
  double max_lr = 0.0;  // optimizer.max_lr; 0: no cap
};

// One sentence per layer that some rank runs with a non-deterministic algorithm, e.g.
// "layer 2 conv2d(8->16, 3x3): a non-deterministic algorithm for the parameter gradient
// on ranks 0, 1; resume matches within float rounding, not bit for bit" (consecutive
// layers alike in one: "layers 0 to 11 (transformer.h.0 to transformer.h.11): ...";
// with precision.deterministic false, the algorithm is said to be its doing), after one
// for GEMM algorithms timed in each process; none when the whole step is deterministic
// (Note [Determinism report]).
std::vector<std::string> determinism_notes(const PlanOutcome& outcome);

std::string plan_text(const PlanSummary& summary);
std::string plan_json(const PlanSummary& summary);

}  // namespace dtrain
