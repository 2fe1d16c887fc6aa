// A classifier built as a chain of layers (the MLP and the CNN) with a softmax
// cross-entropy over its output: one implementation of Model (models/model.h).
// Layers hold views into the flat buffers; the model owns the activations of the
// last forward pass, sized for the largest batch seen, and the loss gradient.
// Layers that alias their input (flatten) get no output buffer and are skipped in
// both passes: their output is their input's memory, their dx is their dy.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/tensor.h"
#include "models/layer.h"
#include "models/model.h"

namespace dtrain {

class SequentialClassifier final : public Model {
 public:
  // `input` is the per-sample input shape, e.g. (1, 28, 28); the last layer's output
  // is the classes' logits.
  SequentialClassifier(Context& ctx, std::string name, std::vector<std::unique_ptr<Layer>> layers,
                       Shape input);

  std::string describe() const override;
  SampleLayout sample_layout() const override;
  const std::vector<ParamRange>& param_ranges() const override { return layer_params_; }
  std::vector<ParamTensor> param_tensors() const override;

  int num_layers() const { return static_cast<int>(layers_.size()); }
  const Layer& layer(int i) const { return *layers_[static_cast<size_t>(i)]; }
  const Shape& input_shape() const { return input_; }
  const Shape& output_shape() const { return shapes_.back(); }
  int64_t classes() const { return shapes_.back().numel(); }
  // Per-sample shapes: shapes()[0] is the input, shapes()[i+1] layer i's output.
  const std::vector<Shape>& shapes() const { return shapes_; }

  // Layer i draws from Rng(Rng::mix(seed, i)), so appending a layer leaves the values
  // of the layers before it unchanged.
  void init(uint64_t seed) override;

  // The chain's forward, then softmax cross-entropy against the batch's labels:
  // stats[kModelLossSum] += the loss sum, stats[kModelMetric] += correct predictions.
  void forward(const Batch& batch, Pass pass, float grad_scale, double* stats) override;
  // Ranges are layers (with or without parameters): on_range_done(i) as soon as layer
  // i's parameter gradients are final, in reverse layer order.
  void backward(const std::function<void(int)>& on_range_done = {}) override;
  // The logits of the last forward (N, classes), until the next forward; a training
  // forward overwrites nothing of them (the loss gradient has its own buffer).
  ConstTensor logits() const;

  // Every layer output (none for aliasing layers), layer state (max-pool indices), the
  // two gradient buffers backward ping-pongs between (each the largest input gradient
  // a layer after the first writes), and the loss gradient (N, classes).
  // fp32 only (build_model refuses bf16 for a classifier): `compute` is not consulted;
  // nor is `recompute` (a chain of layers has no blocks; build_model refuses it too).
  int64_t activation_bytes_per_sample_in(DType compute, Recompute recompute) const override;
  int64_t forward_flops_per_sample() const override;
  // The largest any layer's ops or the loss take (the context keeps one workspace).
  size_t workspace_bytes_in(int64_t batch, DType compute) const override;
  // One part per layer. The first layer's input gradient is never computed, so it
  // counts as deterministic.
  std::vector<PartDeterminism> determinism(int64_t batch) const override;
  void release_activations() override;
  // {"accuracy", correct / samples}.
  std::vector<Metric> eval_metrics(double metric_sum, double loss_sum, int64_t samples) const override;
  // A classifier predicts a label, not a next token: it cannot generate.
  bool can_generate() const override { return false; }
  // Throws ConfigError naming the model.
  std::vector<float> next_token_logits(const std::vector<int32_t>& context) override;

 private:
  void ensure_batch(int64_t n);

  std::string name_;
  std::vector<std::unique_ptr<Layer>> layers_;
  Shape input_;
  std::vector<Shape> shapes_;
  std::vector<ParamRange> layer_params_;
  int64_t grad_floats_per_sample_ = 0;  // the larger of the two ping-pong buffers' needs
  int64_t batch_capacity_ = 0;
  int64_t batch_ = 0;                    // of the last forward; 0 before the first
  bool trained_ = false;                 // the last forward was Pass::kTrain
  std::vector<Buffer> outputs_;          // outputs_[i]: layer i's output (N, shapes_[i+1]...);
                                         // empty for layers that alias their input
  std::vector<const float*> acts_;       // acts_[0]: the input, acts_[i+1]: layer i's output
  Buffer grad_a_, grad_b_;               // activation gradients, ping-pong in backward
  Buffer dlogits_;                       // the loss gradient (N, classes)
};

// The parameter count of a chain of layers on inputs of `input` shape.
int64_t param_count_of(const std::vector<std::unique_ptr<Layer>>& layers);

}  // namespace dtrain
