// Fully connected layer, laid out as PyTorch's nn.Linear so flat buffers match:
// weight (out, in) then bias (out). y = x W^T + b.
#pragma once

#include <cstdint>
#include <string>

#include "models/layer.h"

namespace dtrain {

class Linear final : public Layer {
 public:
  Linear(int64_t in_features, int64_t out_features);

  std::string name() const override;
  Shape output_shape(const Shape& input) const override;
  int64_t param_count() const override { return out_ * in_ + out_; }
  std::vector<Shape> param_shapes() const override { return {Shape{out_, in_}, Shape{out_}}; }
  // The GEMM (2 in out) and the bias (out).
  int64_t forward_flops_per_sample(const Shape&) const override { return 2 * in_ * out_ + out_; }
  void bind(float* params, float* grads) override;
  // The bias gradient's (its fp32 GEMMs take none: gemm_workspace_bytes is 0 for fp32).
  size_t workspace_bytes(Context& ctx, const Shape& input, int64_t batch) const override;
  // PyTorch's default: weight and bias uniform in [-1/sqrt(in), 1/sqrt(in)].
  void init(Rng& rng, float* host_params) const override;

  void forward(Context& ctx, ConstTensor x, Tensor y) override;
  void backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) override;

 private:
  int64_t in_, out_;
  const float* weight_ = nullptr;  // (out, in)
  const float* bias_ = nullptr;    // (out)
  float* dweight_ = nullptr;       // (out, in)
  float* dbias_ = nullptr;         // (out)
};

}  // namespace dtrain
