// The training loop (DESIGN "One optimizer step"):
//   for each optimizer step: for micro in 0..k-1: load this rank's slice of the
//   global batch, forward, loss = sum / G, backward ADDING into the flat gradients;
//   on the last micro-step only, the GradientReducer all-reduces (SUM) buckets as
//   backward finishes them; then one optimizer step, zero the gradients, next LR.
// Every rank runs the same steps and collectives; rank 0 alone prints and writes
// the run directory.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "runtime/config.h"

namespace dtrain {

struct TrainResult {
  int64_t steps = 0;
  double final_loss = 0.0;  // training loss of the last step
  double eval_loss = 0.0;
  double eval_accuracy = 0.0;
};

// Runs the whole training of `config` on this rank. `run_dir` must exist on rank 0.
// Progress goes to `log` on rank 0.
TrainResult train(const Config& config, Context& ctx, Communicator& comm, const std::string& run_dir,
                  std::ostream& log);

}  // namespace dtrain
