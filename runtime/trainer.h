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
  double noise_scale = 0.0;  // B_simple at the end; 0 when not estimated
};

// Runs the whole training of `config` on this rank; rank 0 creates `run_dir` and
// prints progress to `log`. Two communicators over the same ranks: `comm` moves
// data in ctx's device memory (gradients, losses; NCCL on GPUs), `control` carries
// the start-up checks in host memory (MPI or self). On the CPU they may be one object.
// `ranks_sharing_device`: the ranks whose memory comes from the same device as this
// one's (ranks on one CPU node, or sharing a GPU), among which the batch planner
// divides the free memory.
TrainResult train(const Config& config, Context& ctx, Communicator& comm, Communicator& control,
                  const std::string& run_dir, std::ostream& log, int ranks_sharing_device = 1);

}  // namespace dtrain
