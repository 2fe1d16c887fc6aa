#include "runtime/memory_model.h"

#include <algorithm>
#include <numeric>

namespace dtrain {

int64_t MemoryEstimate::total() const {
  return std::accumulate(by_category.begin(), by_category.end(), int64_t{0});
}

MemoryEstimate MemoryModel::predict(int64_t b) const {
  const int64_t e = std::min(b, eval_batch > 0 ? eval_batch : b);
  MemoryEstimate m;
  auto at = [&](MemoryCategory c) -> int64_t& { return m.by_category[static_cast<size_t>(c)]; };
  at(MemoryCategory::Params) = params_bytes;
  at(MemoryCategory::Grads) = grads_bytes + reduce_staging_bytes;
  at(MemoryCategory::Optimizer) = optimizer_bytes;
  at(MemoryCategory::Activations) =
      b * (activation_bytes_per_sample + batch_bytes_per_sample) + e * eval_bytes_per_sample;
  at(MemoryCategory::Workspace) =
      library_workspace_bytes + fixed_workspace_bytes + (workspace_bytes ? workspace_bytes(b) : 0);
  return m;
}

int64_t largest_fitting_micro_batch(const MemoryModel& model, int64_t budget_bytes,
                                    int64_t max_micro_batch) {
  if (max_micro_batch < 1 || model.predict(1).total() > budget_bytes) return 0;
  int64_t lo = 1, hi = max_micro_batch;  // predict(lo) fits; the answer is in [lo, hi]
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo + 1) / 2;
    if (model.predict(mid).total() <= budget_bytes) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

}  // namespace dtrain
