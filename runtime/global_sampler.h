// The global sampler (DESIGN contract 3). The sample order of an epoch is a
// permutation that depends on (seed, epoch) only, never on the number of ranks; the
// batch plan decides which rank and micro-step takes which slice of each global batch.
//
// Note [Epoch remainder]: an epoch has floor(N / G) global batches; the last N mod G
// samples of each epoch's permutation are dropped. The next epoch draws a fresh
// permutation, so every sample is still seen in expectation, and every layout drops
// the same samples.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/batch_plan.h"

namespace dtrain {

class GlobalSampler {
 public:
  GlobalSampler(int64_t dataset_size, uint64_t seed);

  int64_t dataset_size() const { return size_; }
  int64_t batches_per_epoch(int64_t global_batch) const { return size_ / global_batch; }
  // The permutation of [0, N) for `epoch` (computed once per epoch and cached).
  const std::vector<int64_t>& epoch_order(int64_t epoch);
  // Rank `rank`'s samples for micro-step `micro` of global batch `batch` in `epoch`.
  std::span<const int64_t> slice(const BatchPlan& plan, int64_t epoch, int64_t batch,
                                 int64_t micro, int rank);

 private:
  int64_t size_;
  uint64_t seed_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> order_;
};

}  // namespace dtrain
