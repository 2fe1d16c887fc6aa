// A linear-regression dataset with a known answer, for tests of what training measures
// (the gradient noise scale, the sweep's critical batch): x ~ N(0, I_d), the target
// y = w* . x + noise * eps with eps ~ N(0, 1) in the training split, and y = w* . x
// without noise in the held-out split, so that a model's held-out loss 1/2 (w.x - y)^2
// is its excess loss 1/2 |w - w*|^2 (in expectation over x). w* ~ N(0, I_d) is drawn
// from the seed. A sample's input holds x and then y (d + 1 floats; the label, which
// the op set keeps as int32, is unused and 0): the model (models/linear_regression.h)
// reads the target from the input. Samples come from (seed, split, index), so any rank
// can gather any index.
#pragma once

#include <vector>

#include "runtime/dataset.h"

namespace dtrain {

class RegressionDataset final : public Dataset {
 public:
  RegressionDataset(int64_t size, int64_t features, double noise, uint64_t seed, bool train);
  std::string name() const override { return train_ ? "regression/train" : "regression/test"; }
  int64_t size() const override { return size_; }
  SampleLayout layout() const override {
    return SampleLayout{Shape{features_ + 1}, ElementType::kFloat32, Shape{}};
  }
  int64_t num_classes() const override { return 0; }
  void gather(int64_t epoch, std::span<const int64_t> indices, void* inputs, int32_t* labels) const override;
  const std::vector<double>& true_weights() const { return weights_; }

 private:
  int64_t size_, features_;
  double noise_;
  uint64_t seed_;
  bool train_;
  std::vector<double> weights_;  // w*, (features)
};

}  // namespace dtrain
