// Element-wise max(x, 0). Backward reads the output, not the input, so the Model
// could run it in place; it keeps no state.
#pragma once

#include <string>

#include "models/layer.h"

namespace dtrain {

class Relu final : public Layer {
 public:
  std::string name() const override { return "relu"; }
  Shape output_shape(const Shape& input) const override { return input; }
  int64_t forward_flops_per_sample(const Shape& input) const override { return input.numel(); }
  void forward(Context& ctx, ConstTensor x, Tensor y) override;
  void backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) override;
};

}  // namespace dtrain
