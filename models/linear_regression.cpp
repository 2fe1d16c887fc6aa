#include "models/linear_regression.h"

#include "kernels/errors.h"
#include "kernels/ops.h"

namespace dtrain {

LinearRegression::LinearRegression(Context& ctx, int64_t features)
    : Model(ctx, features), features_(features), ranges_{{0, features}},
      augmented_(ctx.allocator(), static_cast<size_t>(features + 1) * sizeof(float), MemoryCategory::Params),
      direction_(ctx.allocator(), static_cast<size_t>(features + 1) * sizeof(float), MemoryCategory::Grads) {}

std::string LinearRegression::describe() const {
  return "linear regression, " + std::to_string(features_) + " features, no bias, loss 1/2 (w.x - y)^2";
}

void LinearRegression::init(uint64_t) {
  ops::fill(ctx_, params(), features_, 0.0f);
  zero_grads();
}

void LinearRegression::forward(const Batch& batch, Pass pass, float grad_scale, double* stats) {
  const int64_t n = batch.size;
  DTRAIN_ASSERT(n > 0, "forward of an empty batch");
  if (n > capacity_) {
    residual_.reset();
    residual_ = Buffer(ctx_.allocator(), static_cast<size_t>(n) * sizeof(float), MemoryCategory::Activations);
    capacity_ = n;
  }
  float* v = augmented_.as<float>();
  ops::convert(ctx_, ConstTypedPtr(params()), TypedPtr(v), features_);
  ops::fill(ctx_, v + features_, 1, -1.0f);
  float* r = residual_.as<float>();
  // r (N, 1) = X_aug (N, d + 1) v (d + 1, 1)
  ops::gemm(ctx_, false, false, n, 1, features_ + 1, 1.0f, ConstTypedPtr(batch.float_inputs()), features_ + 1,
            ConstTypedPtr(v), 1, 0.0f, TypedPtr(r), 1);
  ops::sum_squares(ctx_, r, n, 0.5, stats + kModelLossSum);
  batch_ = n;
  inputs_ = pass == Pass::kTrain ? batch.float_inputs() : nullptr;
  grad_scale_ = grad_scale;
}

void LinearRegression::backward(const std::function<void(int)>& on_range_done) {
  DTRAIN_ASSERT(inputs_ != nullptr, "backward without a training forward");
  float* r = residual_.as<float>();
  ops::scale(ctx_, r, batch_, grad_scale_);  // dr = r / G (contract 2)
  float* dv = direction_.as<float>();
  // dv (d + 1, 1) = X_aug^T (d + 1, N) dr (N, 1)
  ops::gemm(ctx_, true, false, features_ + 1, 1, batch_, 1.0f, ConstTypedPtr(inputs_), features_ + 1,
            ConstTypedPtr(r), 1, 0.0f, TypedPtr(dv), 1);
  ops::add(ctx_, ConstTypedPtr(grads()), ConstTypedPtr(dv), TypedPtr(grads()), features_);
  inputs_ = nullptr;
  if (on_range_done) on_range_done(0);
}

void LinearRegression::release_activations() {
  residual_.reset();
  capacity_ = 0;
  batch_ = 0;
}

std::vector<float> LinearRegression::next_token_logits(const std::vector<int32_t>&) {
  throw ConfigError("model.name: linear is a regression; it cannot generate text (use a gpt)");
}

}  // namespace dtrain
