// The training loop (DESIGN "One optimizer step"):
//   for each optimizer step: for micro in 0..k-1: load this rank's slice of the
//   global batch, forward, loss = sum / G, backward ADDING into the flat gradients;
//   on the last micro-step only, the GradientReducer all-reduces (SUM) buckets as
//   backward finishes them; then one optimizer step, zero the gradients, next LR.
// Every rank runs the same steps and collectives; rank 0 alone prints and writes
// the run directory.
#pragma once

#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "kernels/errors.h"
#include "models/model.h"
#include "runtime/config.h"
#include "runtime/eval_target.h"
#include "runtime/fault_injector.h"

namespace dtrain {

struct TrainOptions {
  // The ranks whose memory comes from the same device as this one's (ranks on one CPU
  // node, or sharing a GPU), among which the batch planner divides the free memory.
  int ranks_sharing_device = 1;
  std::string resume;  // "" | "auto" | a checkpoint path (--resume)
  // Set (by a signal handler) to ask every rank to stop after the current step, with
  // a checkpoint. Read once per step; null: no such request.
  const volatile int* stop_requested = nullptr;
  // Faults to inject (tests); null: none (runtime/fault_injector.h).
  FaultInjector* faults = nullptr;
  // Rank 0's output is a terminal: a progress bar instead of lines.
  bool terminal = false;
  // Called as each optimizer step begins (1-based), e.g. to tell the watchdog.
  std::function<void(int64_t)> on_step;
  // Stop at the first evaluation that reaches this target (dtrain sweep); null: none.
  // Evaluations follow Note [Target evaluation schedule] besides eval.every_steps; a
  // resumed run evaluates at its checkpoint's step first.
  const EvalTarget* target = nullptr;
};

struct TrainResult {
  int64_t first_step = 0;  // where this run started (a resumed run: the checkpoint's step)
  int64_t steps = 0;
  double final_loss = 0.0;  // training loss of the last step
  double eval_loss = 0.0;
  double eval_accuracy = 0.0;  // a classifier's; 0 for other models
  std::vector<Metric> eval_metrics;  // everything the final evaluation reported
  // B_simple at the end: measured at the final weights when the run reached its target
  // (Note [Noise scale at the end of a run]), else the moving average; 0: not estimated.
  double noise_scale = 0.0;
  bool stopped = false;      // a stop request ended the run early, after a checkpoint
  int64_t skipped_steps = 0; // steps whose update was skipped (train.on_nonfinite: skip)
  bool reached_target = false;  // TrainOptions::target was reached, at step `steps`
};

// Runs the whole training of `config` on this rank; rank 0 creates `run_dir` and
// prints progress to `log`. Two communicators over the same ranks: `comm` moves
// data in ctx's device memory (gradients, losses; NCCL on GPUs), `control` carries
// the start-up checks in host memory (MPI or self). On the CPU they may be one object.
// Throws (agreed) NonFiniteError when a loss or gradient is NaN or Inf and
// train.on_nonfinite is stop.
TrainResult train(const Config& config, Context& ctx, Communicator& comm, Communicator& control,
                  const std::string& run_dir, std::ostream& log, const TrainOptions& options = {});

// A NaN or Inf in the loss or the gradients (train.on_nonfinite: stop).
class NonFiniteError : public Error {
 public:
  using Error::Error;
  int exit_code() const override { return kExitRuntime; }
  const char* kind() const override { return "non-finite values"; }
};

}  // namespace dtrain
