#include "runtime/synthetic_dataset.h"

#include "kernels/rng.h"

namespace dtrain {

namespace {
constexpr int64_t kPixels = 28 * 28;
constexpr double kPrototypeScale = 0.1;  // small against the unit noise, so the task is not trivial
}  // namespace

SyntheticDataset::SyntheticDataset(int64_t size, uint64_t seed, bool train)
    : size_(size), seed_(seed), train_(train), prototypes_(10 * kPixels) {
  Rng rng(Rng::mix(seed, 0x9e0707e5ULL));  // the same prototypes for both splits
  for (float& p : prototypes_) p = static_cast<float>(kPrototypeScale * rng.normal());
}

void SyntheticDataset::gather(int64_t, std::span<const int64_t> indices, void* inputs, int32_t* labels) const {
  auto* images = static_cast<float*>(inputs);
  const uint64_t split = Rng::mix(seed_, train_ ? 1 : 2);
  for (size_t i = 0; i < indices.size(); ++i) {
    Rng rng(Rng::mix(split, static_cast<uint64_t>(indices[i])));
    const int32_t label = static_cast<int32_t>(rng.below(10));
    const float* proto = prototypes_.data() + label * kPixels;
    float* dst = images + static_cast<int64_t>(i) * kPixels;
    for (int64_t j = 0; j < kPixels; ++j) dst[j] = proto[j] + static_cast<float>(rng.normal());
    labels[i] = label;
  }
}

}  // namespace dtrain
