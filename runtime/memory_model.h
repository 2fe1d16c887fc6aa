// The memory model of training (Note [Memory model]): the bytes a rank holds at its
// peak, by category, as a function of its micro-batch.
//
// Note [Memory model]
// A rank's peak comes while an evaluation runs after a training step has prefetched
// its next batch: everything training holds is allocated then. With b the
// micro-batch and e <= b the evaluation chunk (eval.batch, capped at b):
//   fixed       parameters and gradients (4 bytes each), optimizer state, and with
//               comm.reduce_dtype bf16 the gradients' bf16 wire copy (2 bytes each,
//               counted with the gradients; Note [Narrow gradient reduction])
//   activations b * (the model's activations per sample, Model::activation_bytes_per_sample:
//               for a classifier every layer's output and state, the two input-gradient
//               buffers backward ping-pongs between and the loss gradient; for the GPT
//               its activation block, attention's saved state included, which
//               memory.recompute: blocks shrinks to each block's input and one set of
//               block tensors that all blocks share)
//               + b * 2 training input slots (inputs, targets, sample ids)
//               + e * 2 evaluation input slots
//   workspace   the largest any layer's ops or the loss take for b samples (im2col
//               chunks on the CPU, cuDNN's search and algorithm workspace on a GPU,
//               the loss's per-row sums), what the device libraries hold (cuBLAS's
//               workspace) and a few scalars
// Everything comes from the same allocator (DESIGN contract 5), whose peak the
// planner's probe step measures; tests hold the two within 10%.
#pragma once

#include <array>
#include <cstdint>
#include <functional>

#include "kernels/memory.h"

namespace dtrain {

struct MemoryEstimate {
  std::array<int64_t, kMemoryCategories> by_category{};  // indexed by MemoryCategory
  int64_t total() const;
};

struct MemoryModel {
  int64_t params_bytes = 0;
  int64_t grads_bytes = 0;
  int64_t reduce_staging_bytes = 0;             // comm.reduce_dtype's wire copy (runtime/gradient_wire.h)
  int64_t optimizer_bytes = 0;
  int64_t library_workspace_bytes = 0;          // held by device libraries (cuBLAS) at start
  int64_t activation_bytes_per_sample = 0;      // the model's (Model::activation_bytes_per_sample)
  int64_t batch_bytes_per_sample = 0;           // training input slots
  int64_t eval_bytes_per_sample = 0;            // evaluation input slots
  int64_t eval_batch = 0;                       // eval.batch; the chunk is min(this, b)
  int64_t fixed_workspace_bytes = 0;            // loss and metric scalars
  std::function<int64_t(int64_t)> workspace_bytes;  // of the layers' ops, for b samples

  MemoryEstimate predict(int64_t micro_batch) const;
};

// The largest b in [1, max_micro_batch] whose predicted total is at most budget_bytes;
// 0 when not even b = 1 fits. The prediction grows with b, so a bisection finds it.
int64_t largest_fitting_micro_batch(const MemoryModel& model, int64_t budget_bytes,
                                    int64_t max_micro_batch);

}  // namespace dtrain
