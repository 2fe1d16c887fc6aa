#include "models/flatten.h"

#include "kernels/check.h"

namespace dtrain {

void Flatten::forward(Context& ctx, ConstTensor x, Tensor y) {
  DTRAIN_ASSERT(x.data == y.data, "flatten aliases its input; the output must be the input's memory");
}

void Flatten::backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) {
  DTRAIN_ASSERT(dx == nullptr || dx == dy.data,
                "flatten aliases its input; the input gradient must be the output gradient's memory");
}

}  // namespace dtrain
