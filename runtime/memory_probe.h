// The planner's probe step: what training holds at its peak (Note [Memory model]),
// allocated and run once on this rank at a given micro-batch, to confirm that it fits.
#pragma once

#include <cstdint>

#include "kernels/context.h"
#include "models/model.h"
#include "runtime/optimizer.h"
#include "runtime/dataset.h"

namespace dtrain {

// Allocates the step's buffers for `micro_batch` samples, runs a forward, the loss and
// a backward on the first samples of `data`, then, with those buffers still held, an
// evaluation forward of `eval_chunk` samples. Returns the allocator's peak during it
// (from the bytes in use when called). The parameters are left as they were and the
// gradients zero. Throws OutOfMemoryError when it does not fit, after freeing what it
// allocated, the model's activations and the context's workspace, so a smaller
// micro-batch can be tried from a clean slate. Local: no collectives.
int64_t probe_micro_batch(Model& model, Context& ctx, const Dataset& data, int64_t micro_batch,
                          int64_t eval_chunk);

// The seconds one training forward and backward of `micro_batch` samples takes on
// this rank: one untimed warm-up, then the mean of `reps` (each waited for on the
// device). The gradients are left zero. Local: no collectives.
double time_micro_step(Model& model, Context& ctx, const Dataset& data, int64_t micro_batch, int reps);

// One micro-step's time as a line in the micro-batch, t(b) = fixed_s + per_sample_s * b,
// from time_micro_step at `largest` and a quarter of it (where the fixed cost of a
// step, launches and small kernels, shows); both clamped at zero against timing
// noise. With `largest` 1, the whole time is per sample. `reps` <= 0: as many as
// fill about a quarter of a second at `largest` (3 to 100), so that short steps are
// timed over many, in 5 rounds of the two micro-batches in turn, each time the median
// of its rounds. Local: no collectives.
struct StepTimeLine {
  double fixed_s = 0.0;
  double per_sample_s = 0.0;
  int64_t small = 1, large = 1;  // the micro-batches timed
};
StepTimeLine time_step_line(Model& model, Context& ctx, const Dataset& data, int64_t largest, int reps);

// What a training step does besides forward, backward and the optimizer, timed on this
// rank (Note [Scaling model]): gathering and uploading a micro-batch (`micro_batch`
// samples, per sample), one pass over the whole gradient buffer (the squared norm;
// the noise scale's probes are two more), and zeroing the gradients. Each the mean of
// `reps` after a warm-up. The gradients are left zero. Local: no collectives.
struct StepOverheads {
  double data_per_sample_s = 0.0;
  double gradient_pass_s = 0.0;
  double zero_s = 0.0;
};
StepOverheads time_step_overheads(Model& model, Context& ctx, const Dataset& data, int64_t micro_batch, int reps);

// The seconds one unsharded optimizer step over the whole flat buffer takes on this
// rank (the one the trainer takes without sharding), the mean of `reps` after a
// warm-up. It changes the parameters: for a plan that never trains on them. Local.
double time_optimizer_step(Model& model, Optimizer& optimizer, Context& ctx, int reps);

}  // namespace dtrain
