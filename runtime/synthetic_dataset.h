// A synthetic 10-class image dataset for tests and benchmarks that need no files:
// each class has a random prototype image; a sample is its class prototype plus
// Gaussian noise. Samples are generated from (seed, split, index) on demand, so any
// rank can gather any index and get the same values.
#pragma once

#include <vector>

#include "runtime/dataset.h"

namespace dtrain {

class SyntheticDataset final : public Dataset {
 public:
  SyntheticDataset(int64_t size, uint64_t seed, bool train);
  std::string name() const override { return train_ ? "synthetic/train" : "synthetic/test"; }
  int64_t size() const override { return size_; }
  SampleLayout layout() const override { return SampleLayout{Shape{1, 28, 28}, ElementType::kFloat32, Shape{}}; }
  int64_t num_classes() const override { return 10; }
  void gather(int64_t epoch, std::span<const int64_t> indices, void* inputs, int32_t* labels) const override;

 private:
  int64_t size_;
  uint64_t seed_;
  bool train_;
  std::vector<float> prototypes_;  // (10, 784)
};

}  // namespace dtrain
