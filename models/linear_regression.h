// Linear regression without a bias, y_hat = w . x, with the loss 1/2 (y_hat - y)^2 per
// sample: the model of the regression dataset (runtime/regression_dataset.h), whose
// samples hold x (d floats) and then the target y. A problem whose gradient noise is
// known in closed form (tests/e2e/sweep_checks.sh derives it).
//
// The residual r = x . w - y is one GEMM of the samples (N, d + 1) with the vector
// v = (w, -1), kept beside the parameters; backward is dv = X^T (r / G), of which the
// first d entries are added into the gradient. The loss is 1/2 sum r^2.
#pragma once

#include "models/model.h"

namespace dtrain {

class LinearRegression final : public Model {
 public:
  LinearRegression(Context& ctx, int64_t features);

  std::string describe() const override;
  SampleLayout sample_layout() const override {
    return SampleLayout{Shape{features_ + 1}, ElementType::kFloat32, Shape{}};
  }
  const std::vector<ParamRange>& param_ranges() const override { return ranges_; }
  std::vector<ParamTensor> param_tensors() const override { return {{"weight", 0, Shape{features_}}}; }
  // w = 0: the excess loss starts at 1/2 |w*|^2.
  void init(uint64_t seed) override;
  void forward(const Batch& batch, Pass pass, float grad_scale, double* stats) override;
  void backward(const std::function<void(int)>& on_range_done = {}) override;
  int64_t activation_bytes_per_sample_in(DType, Recompute) const override { return sizeof(float); }
  int64_t forward_flops_per_sample() const override { return 2 * (features_ + 1); }
  size_t workspace_bytes_in(int64_t, DType) const override { return 0; }
  std::vector<PartDeterminism> determinism(int64_t) const override { return {{"linear", {}}}; }
  void release_activations() override;
  std::vector<Metric> eval_metrics(double, double, int64_t) const override { return {}; }
  bool can_generate() const override { return false; }
  std::vector<float> next_token_logits(const std::vector<int32_t>& context) override;

 private:
  int64_t features_;
  std::vector<ParamRange> ranges_;
  Buffer augmented_;  // v = (w, -1), (d + 1)
  Buffer direction_;  // dv = X^T dr, (d + 1)
  Buffer residual_;   // r, (N)
  int64_t capacity_ = 0, batch_ = 0;
  const float* inputs_ = nullptr;  // the training batch, valid until backward
  float grad_scale_ = 0.0f;
};

}  // namespace dtrain
