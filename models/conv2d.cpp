#include "models/conv2d.h"

#include <cmath>

#include "kernels/check.h"
#include "kernels/errors.h"
#include "kernels/rng.h"

namespace dtrain {

Conv2d::Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel)
    : ci_(in_channels), co_(out_channels), k_(kernel) {
  DTRAIN_ASSERT(ci_ > 0 && co_ > 0 && k_ > 0,
                "conv2d(" << ci_ << "->" << co_ << ", " << k_ << "x" << k_
                          << "): sizes must be positive");
}

std::string Conv2d::name() const {
  const std::string k = std::to_string(k_);
  return "conv2d(" + std::to_string(ci_) + "->" + std::to_string(co_) + ", " + k + "x" + k + ")";
}

Shape Conv2d::output_shape(const Shape& input) const {
  if (input.rank() != 3 || input[0] != ci_) {
    throw ConfigError(name() + ": expects an image of " + std::to_string(ci_) +
                      " channels (channels, height, width), got shape " + input.str());
  }
  const Conv2dShape s{1, ci_, input[1], input[2], co_, k_, 1, (k_ - 1) / 2};
  if (s.out_height() < 1 || s.out_width() < 1) {
    throw ConfigError(name() + ": the " + std::to_string(input[1]) + "x" +
                      std::to_string(input[2]) + " image is too small for the kernel");
  }
  return Shape{co_, s.out_height(), s.out_width()};
}

void Conv2d::bind(float* params, float* grads) {
  weight_ = params;
  bias_ = params + co_ * ci_ * k_ * k_;
  dweight_ = grads;
  dbias_ = grads + co_ * ci_ * k_ * k_;
}

void Conv2d::init(Rng& rng, float* host_params) const {
  const double bound = 1.0 / std::sqrt(static_cast<double>(ci_ * k_ * k_));
  for (int64_t i = 0; i < param_count(); ++i) {
    host_params[i] = static_cast<float>(rng.uniform(-bound, bound));
  }
}

size_t Conv2d::workspace_bytes(Context& ctx, const Shape& input, int64_t batch) const {
  const Conv2dShape s{batch, ci_, input[1], input[2], co_, k_, 1, (k_ - 1) / 2};
  return ops::conv2d_workspace_bytes(ctx, s);
}

PassDeterminism Conv2d::determinism(Context& ctx, const Shape& input, int64_t batch) const {
  const Conv2dShape s{batch, ci_, input[1], input[2], co_, k_, 1, (k_ - 1) / 2};
  const Conv2dDeterminism d = ops::conv2d_determinism(ctx, s);
  return {d.forward, d.backward_data, d.backward_filter};
}

Conv2dShape Conv2d::shape_for(const ConstTensor& x) const {
  return Conv2dShape{x.dim(0), ci_, x.dim(2), x.dim(3), co_, k_, 1, (k_ - 1) / 2};
}

void Conv2d::forward(Context& ctx, ConstTensor x, Tensor y) {
  ops::conv2d_forward(ctx, shape_for(x), x.data, weight_, bias_, y.data);
}

void Conv2d::backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) {
  const Conv2dShape s = shape_for(x);
  ops::conv2d_backward_filter(ctx, s, x.data, dy.data, dweight_, dbias_);
  if (dx != nullptr) ops::conv2d_backward_data(ctx, s, dy.data, weight_, dx);
}

}  // namespace dtrain
