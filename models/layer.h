// A layer of a sequential model. Layers own no parameters: they hold views into the
// model's flat parameter and gradient buffers (DESIGN contract 1), bound once by the
// Model. Activations are owned by the Model, which passes each layer its input and
// output; a layer may keep its own per-batch state (max-pool indices) allocated from
// the context's allocator as Activations.
//
// Invariant (as everywhere in dtrain): backward ADDS parameter gradients into the
// gradient views and OVERWRITES the input gradient.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/tensor.h"

namespace dtrain {

class Rng;

// Whether each pass of a layer repeats bit for bit: the same inputs give the same
// output, input gradient and parameter gradient on every run.
struct PassDeterminism {
  bool forward = true;
  bool input_gradient = true;
  bool param_gradient = true;
  bool all() const { return forward && input_gradient && param_gradient; }
};

class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string name() const = 0;  // e.g. "linear(784->256)"
  // Per-sample output shape for a per-sample input shape; throws ConfigError when the
  // input does not fit (for example a kernel larger than the image).
  virtual Shape output_shape(const Shape& input) const = 0;
  virtual int64_t param_count() const { return 0; }
  // The shapes of its parameter tensors in buffer order (PyTorch's: weight, bias).
  virtual std::vector<Shape> param_shapes() const { return {}; }
  // Floating-point operations of one sample's forward pass, counting a multiply-add as
  // two (the convention of FLOP/s figures); elementwise work counts one per element.
  virtual int64_t forward_flops_per_sample(const Shape& input) const { return 0; }
  // `params` and `grads` point at this layer's param_count() floats in the flat buffers.
  virtual void bind(float* params, float* grads) {}
  // Fills this layer's parameters from `rng` (host memory of param_count() floats).
  virtual void init(Rng& rng, float* host_params) const {}
  // Bytes of per-batch state this layer keeps beyond its output, per sample.
  virtual int64_t state_bytes_per_sample(const Shape& input) const { return 0; }
  // What one sample costs this layer from forward until backward is done: its output
  // (none when it aliases its input) and its state. The memory model sums these.
  int64_t activation_bytes_per_sample(const Shape& input) const {
    const int64_t output = aliases_input() ? 0 : output_shape(input).numel() * 4;  // fp32
    return output + state_bytes_per_sample(input);
  }
  // Frees the per-batch state (the next forward allocates it again).
  virtual void release_state() {}
  // The most workspace its ops take for a batch of `batch` samples (convolutions).
  virtual size_t workspace_bytes(Context& ctx, const Shape& input, int64_t batch) const {
    return 0;
  }
  // Which of its passes are deterministic for a batch of `batch` samples on ctx: all,
  // unless a backend has no deterministic algorithm for an op (cuDNN convolutions).
  virtual PassDeterminism determinism(Context& ctx, const Shape& input, int64_t batch) const {
    return {};
  }
  // True when the output is the input's memory under another shape (flatten). The
  // Model then passes the input through, in both directions, and never calls
  // forward or backward: the op set has no device-to-device copy, and none is needed.
  virtual bool aliases_input() const { return false; }

  // x: (N, input...), y: (N, output...).
  virtual void forward(Context& ctx, ConstTensor x, Tensor y) = 0;
  // dx is null when the input gradient is not needed (the first layer).
  virtual void backward(Context& ctx, ConstTensor x, ConstTensor y, ConstTensor dy, float* dx) = 0;
};

}  // namespace dtrain
