// Evaluation sharded over ranks (DESIGN contract 3): rank r takes the contiguous
// shard [r*N/n, (r+1)*N/n) of the held-out set; the model's loss sums and statistic
// (correct predictions, for a classifier) are all-reduced in device memory, so the
// result does not depend on the number of ranks.
#pragma once

#include <string>
#include <vector>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "models/model.h"
#include "runtime/dataset.h"

namespace dtrain {

struct EvalResult {
  double loss = 0.0;            // mean per-sample loss (a language model's: nats per token)
  std::vector<Metric> metrics;  // what the model reports beside it (Model::eval_metrics)
  int64_t samples = 0;
  // The metric of that name, or 0 when the model does not report it.
  double metric(const std::string& name) const {
    for (const Metric& m : metrics) {
      if (m.name == name) return m.value;
    }
    return 0.0;
  }
};

// `batch`: samples per forward. The trainer passes min(eval.batch, its micro-batch),
// so evaluation never needs more activation memory than training (Note [Memory
// model], runtime/memory_model.h).
EvalResult evaluate(Model& model, const Dataset& data, Context& ctx, Communicator& comm, int64_t batch);

}  // namespace dtrain
