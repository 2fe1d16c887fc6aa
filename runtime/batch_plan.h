// The batch plan: how many samples each rank takes per micro-step, how many
// micro-steps make an optimizer step, and the global batch that results.
//   G = k * sum_r micro_batch[r]
// The sampler slices each global batch by the plan: micro-step m, rank r takes
//   [m * sum(micro) + sum_{q<r} micro[q], ... + micro[r])
// so ranks with different micro-batches are already expressible (DESIGN contract 2
// keeps the gradient exact whatever the split).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrain {

struct BatchPlan {
  std::vector<int64_t> micro_batch;  // per rank
  int64_t accumulation_steps = 1;    // k
  int64_t global_batch = 0;          // G

  int world_size() const { return static_cast<int>(micro_batch.size()); }
  int64_t samples_per_micro_step() const;
  // Offset within the global batch of rank `rank`'s slice in micro-step `micro`.
  int64_t slice_offset(int64_t micro, int rank) const;
};

// The plan for one micro-batch size on every rank. Throws ConfigError when the global
// batch does not divide, naming `where` (the global_batch key's origin) and listing
// the micro-batch sizes and rank counts that would work.
BatchPlan make_uniform_plan(int64_t global_batch, int64_t micro_batch, int world_size,
                            const std::string& where);

// The plan from what each rank can hold (`capacity[r]` >= 1 samples per micro-step).
// global_batch kAuto: every rank takes its capacity, k = 1, G = the sum. A number G:
// the smallest k >= ceil(G / sum(capacity)) that divides G into k micro-steps of at
// least one sample per rank; each micro-step's G / k samples are split in proportion
// to the capacities (largest remainders), each within its capacity, so that
// k * sum(micro) == G exactly. Throws ConfigError naming `where` when G is smaller
// than the ranks or no such k exists, with the nearest global batches that work.
BatchPlan plan_from_capacities(const std::vector<int64_t>& capacity, int64_t global_batch,
                               const std::string& where);

}  // namespace dtrain
