#include "runtime/regression_dataset.h"

#include "kernels/rng.h"

namespace dtrain {

RegressionDataset::RegressionDataset(int64_t size, int64_t features, double noise, uint64_t seed, bool train)
    : size_(size), features_(features), noise_(noise), seed_(seed), train_(train),
      weights_(static_cast<size_t>(features)) {
  Rng rng(Rng::mix(seed, 0x1ea5e7ULL));  // the same w* for both splits
  for (double& w : weights_) w = rng.normal();
}

void RegressionDataset::gather(int64_t, std::span<const int64_t> indices, void* inputs, int32_t* labels) const {
  auto* out = static_cast<float*>(inputs);
  const uint64_t split = Rng::mix(seed_, train_ ? 1 : 2);
  for (size_t i = 0; i < indices.size(); ++i) {
    Rng rng(Rng::mix(split, static_cast<uint64_t>(indices[i])));
    float* dst = out + static_cast<int64_t>(i) * (features_ + 1);
    double y = 0.0;
    for (int64_t j = 0; j < features_; ++j) {
      const double x = rng.normal();
      dst[j] = static_cast<float>(x);
      y += weights_[static_cast<size_t>(j)] * x;
    }
    if (train_) y += noise_ * rng.normal();
    dst[features_] = static_cast<float>(y);
    labels[i] = 0;
  }
}

}  // namespace dtrain
