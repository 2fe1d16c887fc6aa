// Checkpoints in a run: what is saved, how a run resumes, and how every rank learns
// the outcome (the file format is runtime/checkpoint.h).
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "models/model.h"
#include "runtime/checkpoint.h"
#include "runtime/config.h"
#include "runtime/noise_scale.h"
#include "runtime/optimizer.h"

namespace dtrain {

// The checkpoint directory of a run: checkpoint.dir, else RUN_DIR/checkpoints.
std::string checkpoint_dir_of(const Config& config, const std::string& run_dir);

// The config lines a checkpoint must share with the run that resumes it: they decide
// the trajectory (model, data, seed, optimizer, the global batch).
std::vector<std::string> resume_compat_lines(const Config& config, int64_t global_batch);
// FNV-1a over those lines.
uint64_t hash_lines(const std::vector<std::string>& lines);

// The checkpoint a run resumes from, read by rank 0 and announced to every rank.
struct ResumePoint {
  bool found = false;
  std::string path;
  int64_t global_batch = 0;
  CheckpointState state;  // complete on rank 0 only
};

// Collective over `control`. `resume`: "" (none), "auto" (the newest valid checkpoint
// of `dir`; none is a fresh start) or a path. Rank 0 reports in `log` the newer
// checkpoints it skipped and why. A named file that does not read is an agreed
// DataError.
ResumePoint find_resume_point(const std::string& resume, const std::string& dir, Communicator& control,
                              std::ostream& log);

// Collective: rank 0 checks that the checkpoint fits this run (agreed ConfigError
// listing every line that differs), then broadcasts its parameters, optimizer state
// and noise-scale averages, which every rank loads (of the optimizer state, its own
// range: Optimizer::shard).
void restore_from(ResumePoint& point, const Config& config, int64_t global_batch, Model& model,
                  Optimizer& optimizer, NoiseScaleEstimator& noise, Context& ctx, Communicator& control);

// The parameters and the optimizer state whole, n floats each, on rank 0 (empty
// elsewhere), for a checkpoint: it holds the whole state in one file, so it resumes on
// any number of ranks, sharded or not.
struct GatheredState {
  std::vector<float> params;
  std::vector<std::vector<float>> optimizer_state;
};

// Collective over `control` when `shards` is not empty (optimizer-state sharding,
// Note [Shard ranges]; and, for a bf16 model, its master weights, Note [Sharded master
// weights]); local otherwise.
//
// Rank 0 gathers rather than each rank writing its range into the file at its offset:
// the file is written, checked (CRC) and renamed into place by one process, as
// unsharded, so a crash of any rank cannot leave a file with a hole, and no file
// system shared by every node is assumed. The ranges travel as broadcasts from each
// owner over the control communicator, in chunks, so the other ranks never hold more
// than their own range and one chunk; checkpoints are rare enough for the extra bytes.
GatheredState gather_training_state(const Model& model, Optimizer& optimizer, const std::vector<FlatRange>& shards,
                                    Context& ctx, Communicator& control);

// Rank 0's snapshot of the training state after `step` optimizer steps, with the
// parameters and the optimizer's state whole (gather_training_state).
CheckpointState capture_state(const Config& config, const BatchPlan& plan, int64_t step, int64_t samples,
                              int64_t steps_per_epoch, const Optimizer& optimizer, GatheredState whole,
                              const NoiseScaleEstimator& noise);

// Collective: rank 0 writes the checkpoint of `step` into `dir` and rotates; every rank
// learns the outcome. A failure is reported by rank 0; with checkpoint.on_error: stop
// every rank throws it (agreed), with continue training goes on. Returns the path
// written, or "" when it failed.
std::string save_checkpoint(const Config& config, const std::string& dir, const CheckpointState* state_on_rank0,
                            int64_t step, Communicator& control, std::ostream& log);

}  // namespace dtrain
