// The batch planner (the heart of dtrain): sizes each rank's micro-batch from its
// device memory and derives the global batch and the accumulation steps, so that the
// same global batch trains the same on any set of devices.
//
//  1. Each rank predicts its capacity: the largest micro-batch whose predicted peak
//     (Note [Memory model]) fits in memory.fraction of its free memory (the device's
//     free memory, or memory.limit, shared by the ranks on one device).
//  2. The capacities are gathered; every rank computes the same plan from them
//     (plan_from_capacities, or the fixed train.micro_batch).
//  3. Each rank runs a probe step at its planned micro-batch. The outcomes are
//     gathered; a rank that ran out of memory, or (micro-batch auto) whose probe
//     reserved more than its budget, lowers its capacity to 90% of what failed (or
//     less, in proportion to the excess), and all ranks plan and probe again,
//     together. So no rank is ever left waiting in a collective after another ran
//     out of memory. The backend's per-shape plans are released at the end.
//
// Note [Reserved memory in the budget]
// The memory model predicts the bytes the buffers ask for; a device allocator holds
// more (the CUDA one rounds each buffer up to 512 B or 2 MiB blocks: in use versus
// reserved, kernels/block_cache.h). The budget is a share of the device, so it is
// compared with what the device gives away: the held bytes at the start and the probe
// step's peak are reserved figures, with the allocator's cache emptied before each,
// so stale blocks of an earlier, larger probe are not counted. The prediction only
// picks the first candidate; the reserved peak of the probe decides. On the CPU the
// two figures are equal and nothing changes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "kernels/memory.h"
#include "models/model.h"
#include "runtime/batch_plan.h"
#include "runtime/config.h"
#include "runtime/dataset.h"
#include "runtime/memory_model.h"
#include "runtime/optimizer.h"

namespace dtrain {

// A layer with a pass that runs a non-deterministic algorithm at a rank's micro-batch
// (Note [Determinism report], runtime/plan_report.h).
struct NondeterministicLayer {
  int layer = 0;           // index in the model
  std::string name;        // Layer::name()
  PassDeterminism passes;  // false: that pass is not deterministic
};

// What one rank found, for the plan report and plan.json.
struct RankPlanReport {
  std::string device;
  MemoryCapacity memory;         // the device as it reported itself
  int64_t budget_bytes = 0;      // memory.fraction of this rank's free memory
  int64_t capacity = 0;          // the largest micro-batch predicted to fit (after probes)
  int64_t micro_batch = 0;       // planned
  MemoryEstimate predicted;      // at the planned micro-batch
  int64_t probe_peak_bytes = 0;  // the allocator's peak in use in the final probe step
  int64_t probe_peak_reserved_bytes = 0;  // and the peak it reserved from the device
  int64_t probes = 0;            // probe steps run, failed ones included
  // A bf16 model: the largest micro-batch the memory model predicts for the same
  // budget were it fp32 (what bf16 buys); -1 for an fp32 model.
  int64_t fp32_capacity = -1;
  std::vector<NondeterministicLayer> nondeterministic;  // at the planned micro-batch
};

struct PlanOutcome {
  BatchPlan plan;
  std::vector<RankPlanReport> ranks;  // every rank's, on every rank
  // The GEMMs' algorithms are chosen by timing them in each process (Note [GEMM
  // autotuning]: precision.gemm_autotune on a GPU, bf16), so a resumed run may take others.
  bool gemm_algorithms_timed = false;
  // precision.deterministic: false lets the libraries take non-deterministic algorithms
  // where faster (Note [Determinism report] names it as the cause).
  bool deterministic_preferred = true;
};

// The memory model of training `model` with `optimizer_bytes` of optimizer state (what
// the allocator holds for it now: Optimizer::state_bytes, or 0 before the optimizer is
// made, for a candidate's model to set) on ctx for data of this sample layout, with
// eval.batch `eval_batch` and comm.reduce_dtype `reduce_dtype`, whose staging buffer
// ctx's allocator must already hold (TrainingSetup allocates it with the model). Reads
// what the allocator holds beyond those as library workspace.
MemoryModel memory_model_of(Model& model, int64_t optimizer_bytes, Context& ctx, const SampleLayout& layout,
                            int64_t eval_batch, const std::string& reduce_dtype);
// The same memory model were `model` to compute in `compute`: its parameter copy,
// activations (with the model's recompute setting) and workspace in that type, the
// rest as measured.
MemoryModel memory_model_in(const MemoryModel& measured, const Model& model, DType compute);

struct PlannerInputs {
  MemoryCapacity device;         // ctx.allocator().capacity(), or a test's stand-in
  int ranks_sharing_device = 1;  // ranks whose allocations come out of the same memory
  // false: the memory model's plan alone, without step 3's probe step (probes 0, the
  // predicted peak reported as the probe's). For a caller that only wants to know how
  // much fits and will not train at that size: a sweep's preflight, whose points each
  // plan and probe their own batch. A probe at the largest micro-batch can take minutes
  // and most of the host's memory on a CPU.
  bool probe_step = true;
};

// What this rank may use for training: what it holds already plus its share of what
// is free, in reserved bytes (Note [Reserved memory in the budget]), and
// memory.fraction of that. Empties the allocator's cache. Local.
struct TrainingBudget {
  int64_t free_bytes = 0;
  int64_t budget = 0;
};
TrainingBudget training_budget(const Config& config, Context& ctx, const PlannerInputs& inputs);

// Collective over `control`: every rank calls it with the same config. Throws
// ConfigError or OutOfMemoryError (agreed: reported once) when no plan fits.
PlanOutcome plan_training(const Config& config, Model& model, const Optimizer& optimizer,
                          Context& ctx, const Dataset& train, Communicator& control,
                          const PlannerInputs& inputs);

}  // namespace dtrain
