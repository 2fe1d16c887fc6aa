#include "models/maxpool2d.h"

#include "kernels/check.h"
#include "kernels/errors.h"

namespace dtrain {

Shape MaxPool2d::output_shape(const Shape& input) const {
  if (input.rank() != 3) {
    throw ConfigError(name() + ": expects an image (channels, height, width), got shape " +
                      input.str());
  }
  if (input[1] < kWindow || input[2] < kWindow) {
    throw ConfigError(name() + ": the " + std::to_string(input[1]) + "x" +
                      std::to_string(input[2]) + " image is smaller than the 2x2 window");
  }
  return Shape{input[0], input[1] / kWindow, input[2] / kWindow};
}

int64_t MaxPool2d::state_bytes_per_sample(const Shape& input) const {
  return output_shape(input).numel() * static_cast<int64_t>(sizeof(int32_t));
}

Pool2dShape MaxPool2d::shape_for(const ConstTensor& x) {
  return Pool2dShape{x.dim(0), x.dim(1), x.dim(2), x.dim(3), kWindow, kWindow};
}

void MaxPool2d::forward(Context& ctx, ConstTensor x, Tensor y) {
  const Pool2dShape s = shape_for(x);
  const int64_t count = s.batch * s.channels * s.out_height() * s.out_width();
  const size_t bytes = static_cast<size_t>(count) * sizeof(int32_t);
  if (argmax_.bytes() < bytes) {
    argmax_.reset();  // free first so the old and new buffers never coexist
    argmax_ = Buffer(ctx.allocator(), bytes, MemoryCategory::Activations);
  }
  ops::maxpool2d_forward(ctx, s, x.data, y.data, argmax_.as<int32_t>());
  argmax_count_ = count;
}

void MaxPool2d::backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) {
  if (dx == nullptr) return;  // no parameters: nothing else to do
  const Pool2dShape s = shape_for(x);
  DTRAIN_ASSERT(argmax_count_ == s.batch * s.channels * s.out_height() * s.out_width(),
                name() << ": backward of a batch that is not the last forward's");
  ops::maxpool2d_backward(ctx, s, dy.data, argmax_.as<int32_t>(), dx);
}

}  // namespace dtrain
