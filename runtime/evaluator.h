// Evaluation sharded over ranks (DESIGN contract 3): rank r takes the contiguous
// shard [r*N/n, (r+1)*N/n) of the test set; the loss sums and correct counts are
// all-reduced in device memory, so the result does not depend on the number of ranks.
#pragma once

#include "comm/communicator.h"
#include "kernels/context.h"
#include "models/model.h"
#include "runtime/dataset.h"

namespace dtrain {

struct EvalResult {
  double loss = 0.0;      // mean cross-entropy over the test set
  double accuracy = 0.0;  // fraction of samples whose top class is the label
  int64_t samples = 0;
};

// `batch`: samples per forward. The trainer passes min(eval.batch, its micro-batch),
// so evaluation never needs more activation memory than training (Note [Memory
// model], runtime/memory_model.h).
EvalResult evaluate(Model& model, const Dataset& data, Context& ctx, Communicator& comm, int64_t batch);

}  // namespace dtrain
