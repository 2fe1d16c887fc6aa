// 2-D convolution, stride 1, padding (K-1)/2 ("same" for odd K), laid out as
// PyTorch's nn.Conv2d so flat buffers match: weight (Co, Ci, K, K) then bias (Co).
#pragma once

#include <cstdint>
#include <string>

#include "kernels/ops.h"
#include "models/layer.h"

namespace dtrain {

class Conv2d final : public Layer {
 public:
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel);

  std::string name() const override;
  // Input (Ci, H, W) -> (Co, H', W'); H' = H for odd K.
  Shape output_shape(const Shape& input) const override;
  int64_t param_count() const override { return co_ * ci_ * k_ * k_ + co_; }
  std::vector<Shape> param_shapes() const override { return {Shape{co_, ci_, k_, k_}, Shape{co_}}; }
  // Per output element: Ci K K multiply-adds and the bias.
  int64_t forward_flops_per_sample(const Shape& input) const override {
    return output_shape(input).numel() * (2 * ci_ * k_ * k_ + 1);
  }
  void bind(float* params, float* grads) override;
  // PyTorch's default: weight and bias uniform in [-1/sqrt(fan_in), 1/sqrt(fan_in)],
  // fan_in = Ci*K*K.
  void init(Rng& rng, float* host_params) const override;
  size_t workspace_bytes(Context& ctx, const Shape& input, int64_t batch) const override;
  PassDeterminism determinism(Context& ctx, const Shape& input, int64_t batch) const override;

  void forward(Context& ctx, ConstTensor x, Tensor y) override;
  void backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) override;

 private:
  Conv2dShape shape_for(const ConstTensor& x) const;

  int64_t ci_, co_, k_;
  const float* weight_ = nullptr;  // (Co, Ci, K, K)
  const float* bias_ = nullptr;    // (Co)
  float* dweight_ = nullptr;       // (Co, Ci, K, K)
  float* dbias_ = nullptr;         // (Co)
};

}  // namespace dtrain
