// The planner's probe step: what training holds at its peak (Note [Memory model]),
// allocated and run once on this rank at a given micro-batch, to confirm that it fits.
#pragma once

#include <cstdint>

#include "kernels/context.h"
#include "models/model.h"
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

}  // namespace dtrain
