// Everything a run needs before its first step, built the same way by `dtrain train`
// and `dtrain plan`: the data, the model with its initial parameters, the optimizer,
// the batch plan (runtime/batch_planner.h) and what follows from it (steps, LR).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "models/model.h"
#include "runtime/batch_planner.h"
#include "runtime/config.h"
#include "runtime/dataset.h"
#include "runtime/global_sampler.h"
#include "runtime/memory_levers.h"
#include "runtime/optimizer.h"
#include "runtime/plan_report.h"

namespace dtrain {

struct TrainingSetup {
  DataSplits data;
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
  // comm.reduce_dtype bf16: the gradients' bf16 copy that buckets travel in (empty
  // for fp32), allocated before planning so the plan counts it (runtime/gradient_wire.h).
  Buffer reduce_staging;
  // The planner's sharding and recompute settings (Note [Memory levers]); its shards
  // are every rank's range of the flat buffers when the optimizer state is sharded.
  LeverChoice levers;
  PlanOutcome planned;
  std::unique_ptr<GlobalSampler> sampler;
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  ScheduleConfig schedule;  // warmup in steps for this plan
  double lr = 0.0;          // optimizer.lr after optimizer.lr_scaling

  const BatchPlan& plan() const { return planned.plan; }
  PlanSummary summary(const Config& config) const;
};

// Collective over `control`: every rank calls it. A failure on any rank (a data file,
// the model, memory) ends every rank with one report (Note [Setup agreement]). When
// `run_dir` is not empty, rank 0 creates it. `probe_step` false plans from the memory
// model alone (PlannerInputs::probe_step): for a caller that will not train this setup.
// `gradients`: the communicator the gradients will be reduced on, whose link the lever
// choice measures when it weighs the levers' communication (Note [Memory levers]);
// null leaves communication out.
TrainingSetup setup_training(const Config& config, Context& ctx, Communicator& control,
                             int ranks_sharing_device, const std::string& run_dir, bool probe_step = true,
                             Communicator* gradients = nullptr);

}  // namespace dtrain
