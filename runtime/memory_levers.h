// The planner's two memory levers: optimizer-state sharding (optimizer.shard) and
// activation recomputation (memory.recompute). Set to auto, the planner turns each on
// when it pays, and says why.
//
// Note [Memory levers]
// Before the optimizer is made, every rank gathers the others' training budgets
// (runtime/batch_planner.h), and so the shard ranges (Note [Shard ranges]). Then each
// candidate setting (sharding off or on, recompute none or blocks; the settings a key
// fixes are not varied) gets, on every rank, the largest micro-batch its memory model
// predicts to fit: sharding cuts the optimizer bytes to the rank's range, recompute the
// activation bytes per sample. The capacities are gathered, and every rank plans every
// candidate as the planner would (plan_from_capacities) and chooses the same:
//   - train.global_batch auto: the largest global batch wins (the mission: memory sets
//     the global batch), and fewer levers among equals: none, then sharding (it adds
//     no FLOPs), then recompute, then both.
//   - a fixed global batch where every candidate that fits has the same accumulation
//     k: fewer levers wins, so a lever is taken only when nothing fits without it.
//   - a fixed global batch where sharding lowers k, on a communicator whose buckets
//     travel after backward (MPI): sharding, untimed. It is never slower there: the
//     micro-steps it saves are the step's fixed costs, and its reduce-scatters and
//     all-gather cost what the all-reduces do (fewer latencies, the same bytes).
//   - a fixed global batch where recompute lowers k, or where any lever lowers k and
//     the buckets overlap backward (NCCL, where the all-reduce hides behind backward
//     and sharding's all-gather does not): the fastest predicted step wins; a
//     candidate must be predicted at least 5% faster than one with fewer levers
//     (earlier in the order above) to win over it, so that the timings' own noise
//     does not flip the plan between runs of the same job. Without overlap only the
//     smallest k with and without recompute compete. Each rank times a forward and
//     backward at two micro-batches, t(b) = fixed + per_sample * b (the step's fixed
//     cost, launches and small kernels, is what a larger micro-batch saves), and the
//     ranks measure the link of the gradient communicator (Note [Link probe]). A
//     candidate's step is
//       k * micro  +  the communication it waits for,
//       micro = max over ranks of (fixed_r + per_sample_r * b_r * (1 + recompute's
//               extra FLOPs over the training FLOPs)),
//     the communication as the scaling model counts it on that link
//     (step_communication, Note [Scaling model]): the buckets against the last
//     backward, all-reduced or (sharded) reduce-scattered, the step's small
//     all-reduce, and, sharded, the all-gather of the updated parameters, which
//     nothing hides. So sharding that lowers k is taken when the micro-steps it saves
//     outweigh its all-gather, and recompute when they outweigh its FLOPs.
//     Left out: the optimizer step (sharding shortens it to the rank's range, so the
//     prediction is, if anything, against sharding).
//   Unmeasured (a rank ran out of memory timing), a fixed global batch keeps the
//   smallest k without recompute, and recompute only where nothing else fits.
// The probe steps of the batch planner then check the chosen setting as any other.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "comm/gradient_reducer.h"
#include "kernels/context.h"
#include "models/model.h"
#include "runtime/batch_plan.h"
#include "runtime/batch_planner.h"
#include "runtime/config.h"
#include "runtime/dataset.h"
#include "runtime/link_probe.h"
#include "runtime/scaling_model.h"

namespace dtrain {

struct LeverSetting {
  bool shard = false;
  Recompute recompute = Recompute::kNone;
};

// "none", "shard", "recompute", "shard + recompute".
std::string lever_name(const LeverSetting& s);

struct LeverCandidate {
  LeverSetting setting;
  std::vector<int64_t> capacity;  // per rank, from the memory model; 0: not even one sample
  bool fits = false;              // a plan exists
  BatchPlan plan;                 // when it fits
  double step_seconds = -1.0;     // predicted; negative when not measured
  double comm_seconds = 0.0;      // of step_seconds: the communication it waits for
};

// The measured cost of one forward and backward on each rank, and of the gradients'
// collectives (Note [Memory levers]).
struct StepTimes {
  std::vector<double> fixed_s;       // per rank
  std::vector<double> per_sample_s;  // per rank
  // The gradient communicator's link (Note [Link probe]) and what a step sends on it
  // (traffic.shard is set per candidate); ranks < 2: no communication counted.
  int ranks = 1;
  LinkProbe link;
  GradientTraffic traffic;
  bool empty() const { return fixed_s.empty(); }
};

struct LeverChoice {
  LeverSetting chosen;
  std::vector<LeverCandidate> candidates;
  std::vector<FlatRange> shards;  // every rank's range when chosen.shard; else empty
  std::string reason;             // why the chosen one, in a sentence
  std::vector<std::string> notes; // e.g. sharding asked for on one rank
  double recompute_extra = 0.0;   // recompute's FLOPs over the training FLOPs
  StepTimes times;                // when measured
  std::string shard_setting;      // optimizer.shard as configured
  std::string recompute_setting;  // memory.recompute as configured
};

// The candidates a config leaves open on `world_size` ranks, for a model that can
// recompute or not, in preference order (fewer levers first).
std::vector<LeverSetting> lever_candidates(const Config& config, int world_size, bool can_recompute);

// Plans each candidate from its capacities: `micro_batch` kAuto plans from the
// capacities for `global_batch` (a number or kAuto); a fixed one fits where every
// capacity holds it. Pure.
void plan_candidates(std::vector<LeverCandidate>& candidates, int64_t global_batch, int64_t micro_batch);

// True when the choice needs measured step times (Note [Memory levers]), for a fixed
// global batch: recompute lowers k below the best setting without it, or, where the
// gradient buckets overlap backward (`overlap`), any lever lowers k. Pure.
bool needs_step_times(const std::vector<LeverCandidate>& candidates, int64_t global_batch, bool overlap);

// Chooses among planned candidates (Note [Memory levers]); fills step_seconds where
// `times` is given. When none fits, the last candidate (the most levers) is chosen, and
// the planner reports that it does not fit. Pure.
LeverChoice choose_levers(std::vector<LeverCandidate> candidates, int64_t global_batch, const StepTimes& times,
                          double recompute_extra);

// Collective over `control` (and `gradients`, when given and the choice is timed): the
// choice for this config, model and devices. The model is as built (before
// set_recompute); no optimizer state is allocated yet. `gradients`: the communicator
// the trainer will reduce the gradients on, whose link is measured (Note [Link
// probe]); null leaves communication out of the prediction.
LeverChoice choose_memory_levers(const Config& config, Model& model, int64_t optimizer_bytes_per_param,
                                 Context& ctx, const Dataset& train, Communicator& control,
                                 const PlannerInputs& inputs, Communicator* gradients = nullptr);

}  // namespace dtrain
