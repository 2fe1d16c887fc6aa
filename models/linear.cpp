#include "models/linear.h"

#include <cmath>

#include "kernels/check.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {

Linear::Linear(int64_t in_features, int64_t out_features) : in_(in_features), out_(out_features) {
  DTRAIN_ASSERT(in_ > 0 && out_ > 0, "linear(" << in_ << "->" << out_ << "): sizes must be positive");
}

std::string Linear::name() const {
  return "linear(" + std::to_string(in_) + "->" + std::to_string(out_) + ")";
}

Shape Linear::output_shape(const Shape& input) const {
  if (input.rank() != 1 || input[0] != in_) {
    throw ConfigError(name() + ": expects " + std::to_string(in_) +
                      " input features per sample, got shape " + input.str());
  }
  return Shape{out_};
}

void Linear::bind(float* params, float* grads) {
  weight_ = params;
  bias_ = params + out_ * in_;
  dweight_ = grads;
  dbias_ = grads + out_ * in_;
}

size_t Linear::workspace_bytes(Context& ctx, const Shape& /*input*/, int64_t batch) const {
  return ops::bias_backward_workspace_bytes(ctx, batch, out_, 1);
}

void Linear::init(Rng& rng, float* host_params) const {
  const double bound = 1.0 / std::sqrt(static_cast<double>(in_));
  for (int64_t i = 0; i < param_count(); ++i) {
    host_params[i] = static_cast<float>(rng.uniform(-bound, bound));
  }
}

void Linear::forward(Context& ctx, ConstTensor x, Tensor y) {
  const int64_t n = x.dim(0);
  // y (n, out) = x (n, in) * W^T
  ops::gemm(ctx, false, true, n, out_, in_, 1.0f, x.data, in_, weight_, in_, 0.0f, y.data, out_);
  ops::add_bias(ctx, y.data, bias_, n, out_, 1);
}

void Linear::backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) {
  const int64_t n = x.dim(0);
  // dW (out, in) += dy^T (out, n) * x (n, in)
  ops::gemm(ctx, true, false, out_, in_, n, 1.0f, dy.data, out_, x.data, in_, 1.0f, dweight_, in_);
  ops::bias_backward(ctx, dy.data, dbias_, n, out_, 1);
  if (dx != nullptr) {
    // dx (n, in) = dy (n, out) * W (out, in)
    ops::gemm(ctx, false, false, n, in_, out_, 1.0f, dy.data, out_, weight_, in_, 0.0f, dx, in_);
  }
}

}  // namespace dtrain
