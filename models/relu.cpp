#include "models/relu.h"

#include "kernels/ops.h"

namespace dtrain {

void Relu::forward(Context& ctx, ConstTensor x, Tensor y) {
  ops::relu_forward(ctx, x.data, y.data, x.numel());
}

void Relu::backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) {
  if (dx == nullptr) return;  // no parameters: nothing else to do
  ops::relu_backward(ctx, y.data, dy.data, dx, y.numel());
}

}  // namespace dtrain
