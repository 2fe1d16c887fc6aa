// (C, H, W) -> (C*H*W): the same bytes under another shape. It aliases its input
// (see Layer::aliases_input), so the Model passes memory through and never calls
// forward or backward; called directly they only accept aliased pointers.
#pragma once

#include <string>

#include "models/layer.h"

namespace dtrain {

class Flatten final : public Layer {
 public:
  std::string name() const override { return "flatten"; }
  Shape output_shape(const Shape& input) const override { return Shape{input.numel()}; }
  bool aliases_input() const override { return true; }
  void forward(Context& ctx, ConstTensor x, Tensor y) override;
  void backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) override;
};

}  // namespace dtrain
