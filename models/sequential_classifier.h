// A sequential model over flat buffers (DESIGN contract 1): all parameters in one
// device buffer, gradients in a mirror buffer; layers hold views into both. The model
// owns the activations of the last forward pass, sized for the largest batch seen.
// Layers that alias their input (flatten) get no output buffer and are skipped in
// both passes: their output is their input's memory, their dx is their dy.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/tensor.h"
#include "models/layer.h"
#include "models/model_spec.h"

namespace dtrain {

struct ParamRange {
  int64_t offset = 0;  // in floats, into the flat buffers
  int64_t count = 0;
};

class Model {
 public:
  // `input` is the per-sample input shape, e.g. (1, 28, 28).
  Model(Context& ctx, std::vector<std::unique_ptr<Layer>> layers, Shape input);

  int64_t param_count() const { return param_count_; }
  float* params() { return params_.as<float>(); }  // device memory
  float* grads() { return grads_.as<float>(); }    // device memory
  const float* params() const { return params_.as<float>(); }
  const float* grads() const { return grads_.as<float>(); }
  // Where each layer's parameters live in the flat buffers, in layer order.
  const std::vector<ParamRange>& layer_params() const { return layer_params_; }

  int num_layers() const { return static_cast<int>(layers_.size()); }
  const Layer& layer(int i) const { return *layers_[static_cast<size_t>(i)]; }
  const Shape& input_shape() const { return input_; }
  const Shape& output_shape() const { return shapes_.back(); }
  // Per-sample shapes: shapes()[0] is the input, shapes()[i+1] layer i's output.
  const std::vector<Shape>& shapes() const { return shapes_; }

  // Fills the parameters from the seed (the same on every rank) and zeroes the grads.
  // Layer i draws from Rng(Rng::mix(seed, i)), so appending a layer leaves the
  // values of the layers before it unchanged. Before init or load_params the
  // parameters and gradients are zero.
  void init(uint64_t seed);
  // Copies `count` host floats into the parameters (fixtures, checkpoints); throws
  // DataError when `count` is not param_count().
  void load_params(const float* host, int64_t count);

  // Forward of a batch x (N, input...) already on the device. Returns the output
  // (N, classes), valid until the next forward. Keeps what backward needs, x
  // included: x must stay valid until backward is done.
  ConstTensor forward(ConstTensor x);
  // Backward of the last forward from dy (N, classes). Adds into the gradients.
  // `on_layer_done(i)` runs as soon as layer i's parameter gradients are final, in
  // reverse layer order, so gradient buckets can be reduced while backward goes on.
  // It runs for every layer, also those without parameters. On a GPU, "final"
  // means enqueued on the context's stream.
  void backward(ConstTensor dy, const std::function<void(int)>& on_layer_done = {});
  void zero_grads();

  // Activation bytes one sample costs: every layer output (none for aliasing layers),
  // layer state (max-pool indices), and the two gradient buffers backward ping-pongs
  // between, each the largest input gradient a layer after the first writes. After a
  // forward of N samples the allocator holds exactly N times this as Activations.
  int64_t activation_bytes_per_sample() const;
  // FLOPs of one sample's forward pass (the layers' sum), and of a training step's
  // forward and backward: backward computes two products per forward one (the input
  // gradient and the weight gradient), so training is 3x forward, the usual count.
  int64_t forward_flops_per_sample() const;
  int64_t training_flops_per_sample() const { return 3 * forward_flops_per_sample(); }
  // The most workspace one forward and backward of `batch` samples takes: the largest
  // any layer asks for (the context keeps one workspace and grows it).
  size_t workspace_bytes(int64_t batch) const;
  // Each layer's determinism in a training step of `batch` samples. The first layer's
  // input gradient is never computed, so it counts as deterministic.
  std::vector<PassDeterminism> determinism(int64_t batch) const;
  // Frees the activations and the layers' per-batch state; the next forward allocates
  // them again. Used after an out-of-memory probe so that a smaller batch starts from
  // a clean slate.
  void release_activations();

 private:
  void ensure_batch(int64_t n);

  Context& ctx_;
  std::vector<std::unique_ptr<Layer>> layers_;
  Shape input_;
  std::vector<Shape> shapes_;
  std::vector<ParamRange> layer_params_;
  int64_t param_count_ = 0;
  int64_t grad_floats_per_sample_ = 0;  // the larger of the two ping-pong buffers' needs
  Buffer params_;
  Buffer grads_;
  int64_t batch_capacity_ = 0;
  int64_t batch_ = 0;                    // of the last forward; 0 before the first
  std::vector<Buffer> outputs_;          // outputs_[i]: layer i's output (N, shapes_[i+1]...);
                                         // empty for layers that alias their input
  std::vector<const float*> acts_;       // acts_[0]: the input, acts_[i+1]: layer i's output
  Buffer grad_a_, grad_b_;               // activation gradients, ping-pong in backward
};

// Builds the model a spec names for inputs of `input` shape and `classes` classes.
// Throws ConfigError naming the model key when the spec does not fit the input.
std::unique_ptr<Model> build_model(Context& ctx, const ModelSpec& spec, const Shape& input,
                                   int64_t classes);

}  // namespace dtrain
