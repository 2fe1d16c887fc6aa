// 2x2 max pooling, stride 2 (odd trailing rows and columns are dropped, as in
// PyTorch). Forward keeps the int32 argmax of every window for backward, in a buffer
// from the context's allocator accounted as Activations and grown to the largest
// batch seen; state_bytes_per_sample reports it so the planner counts it.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/memory.h"
#include "kernels/ops.h"
#include "models/layer.h"

namespace dtrain {

class MaxPool2d final : public Layer {
 public:
  std::string name() const override { return "maxpool2d(2x2)"; }
  // Input (C, H, W) -> (C, H/2, W/2).
  Shape output_shape(const Shape& input) const override;
  int64_t state_bytes_per_sample(const Shape& input) const override;
  // A comparison per input element.
  int64_t forward_flops_per_sample(const Shape& input) const override { return input.numel(); }
  void release_state() override {
    argmax_.reset();
    argmax_count_ = 0;
  }

  void forward(Context& ctx, ConstTensor x, Tensor y) override;
  void backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) override;

 private:
  static constexpr int64_t kWindow = 2;
  static Pool2dShape shape_for(const ConstTensor& x);

  Buffer argmax_;  // int32 (N, C, H/2, W/2) of the last forward
  int64_t argmax_count_ = 0;  // entries written by the last forward
};

}  // namespace dtrain
