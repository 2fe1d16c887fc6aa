#include "runtime/global_sampler.h"

#include <numeric>

#include "kernels/check.h"
#include "kernels/rng.h"

namespace dtrain {

GlobalSampler::GlobalSampler(int64_t dataset_size, uint64_t seed) : size_(dataset_size), seed_(seed) {
  DTRAIN_ASSERT(dataset_size > 0, "empty dataset");
}

const std::vector<int64_t>& GlobalSampler::epoch_order(int64_t epoch) {
  if (epoch != cached_epoch_) {
    order_.resize(static_cast<size_t>(size_));
    std::iota(order_.begin(), order_.end(), int64_t{0});
    Rng rng(Rng::mix(Rng::mix(seed_, 0x5a3b1e5ULL), static_cast<uint64_t>(epoch)));
    for (int64_t i = size_ - 1; i > 0; --i) {  // Fisher-Yates
      const int64_t j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
      std::swap(order_[static_cast<size_t>(i)], order_[static_cast<size_t>(j)]);
    }
    cached_epoch_ = epoch;
  }
  return order_;
}

std::span<const int64_t> GlobalSampler::slice(const BatchPlan& plan, int64_t epoch, int64_t batch,
                                              int64_t micro, int rank) {
  DTRAIN_ASSERT(batch < batches_per_epoch(plan.global_batch),
                "global batch " << batch << " is past the end of the epoch");
  const auto& order = epoch_order(epoch);
  const int64_t begin = batch * plan.global_batch + plan.slice_offset(micro, rank);
  return {order.data() + begin, static_cast<size_t>(plan.micro_batch[static_cast<size_t>(rank)])};
}

}  // namespace dtrain
