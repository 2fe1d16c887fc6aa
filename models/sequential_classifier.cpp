#include "models/sequential_classifier.h"

#include <algorithm>
#include <sstream>
#include <utility>

#include "kernels/check.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {

int64_t param_count_of(const std::vector<std::unique_ptr<Layer>>& layers) {
  int64_t count = 0;
  for (const auto& layer : layers) count += layer->param_count();
  return count;
}

SequentialClassifier::SequentialClassifier(Context& ctx, std::string name,
                                           std::vector<std::unique_ptr<Layer>> layers, Shape input)
    : Model(ctx, param_count_of(layers)), name_(std::move(name)), layers_(std::move(layers)),
      input_(std::move(input)) {
  DTRAIN_ASSERT(!layers_.empty(), "a model needs at least one layer");
  shapes_.push_back(input_);
  int64_t offset = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    try {
      shapes_.push_back(layers_[i]->output_shape(shapes_.back()));
    } catch (const ConfigError& e) {
      std::ostringstream msg;
      msg << "model layer " << i << " of " << layers_.size() << " (" << layers_[i]->name()
          << ") does not fit its input " << shapes_.back().str() << ": " << e.what();
      throw ConfigError(msg.str());
    }
    const int64_t count = layers_[i]->param_count();
    layer_params_.push_back(ParamRange{offset, count});
    layers_[i]->bind(params() + offset, grads() + offset);
    offset += count;
    // Backward writes layer i's input gradient (shapes_[i]) into a ping-pong buffer,
    // except for layer 0 (not needed) and aliasing layers (they pass dy through).
    if (i > 0 && !layers_[i]->aliases_input()) {
      grad_floats_per_sample_ = std::max(grad_floats_per_sample_, shapes_[i].numel());
    }
  }
  outputs_.resize(layers_.size());
  acts_.assign(layers_.size() + 1, nullptr);
}

std::string SequentialClassifier::describe() const {
  std::ostringstream s;
  s << name_ << " (";
  for (size_t i = 0; i < layers_.size(); ++i) s << (i ? ", " : "") << layers_[i]->name();
  s << ")";
  return s.str();
}

SampleLayout SequentialClassifier::sample_layout() const {
  return SampleLayout{input_, ElementType::kFloat32, Shape{}};
}

std::vector<ParamTensor> SequentialClassifier::param_tensors() const {
  // Each layer's parameters in PyTorch's order: the weight, then the bias.
  std::vector<ParamTensor> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    const ParamRange& r = layer_params_[i];
    if (r.count == 0) continue;
    const std::vector<Shape> shapes = layers_[i]->param_shapes();
    int64_t at = r.offset;
    const char* names[] = {"weight", "bias"};
    for (size_t j = 0; j < shapes.size(); ++j) {
      out.push_back(ParamTensor{"layers." + std::to_string(i) + "." + names[j < 2 ? j : 1], at, shapes[j]});
      at += shapes[j].numel();
    }
  }
  return out;
}

void SequentialClassifier::init(uint64_t seed) {
  // Each layer draws from its own stream, so adding a layer does not change the
  // initial values of the layers before it.
  std::vector<float> host(static_cast<size_t>(param_count()));
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layer_params_[i].count == 0) continue;
    Rng rng(Rng::mix(seed, static_cast<uint64_t>(i)));
    layers_[i]->init(rng, host.data() + layer_params_[i].offset);
  }
  ops::copy_from_host(ctx_, params(), host.data(), host.size() * sizeof(float));
  zero_grads();
}

void SequentialClassifier::ensure_batch(int64_t n) {
  if (n <= batch_capacity_) return;
  // Free everything first so the old and new activations never coexist at the peak.
  for (Buffer& b : outputs_) b.reset();
  grad_a_.reset();
  grad_b_.reset();
  dlogits_.reset();
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i]->aliases_input()) continue;
    const size_t bytes = static_cast<size_t>(n * shapes_[i + 1].numel()) * sizeof(float);
    outputs_[i] = Buffer(ctx_.allocator(), bytes, MemoryCategory::Activations);
  }
  const size_t grad_bytes = static_cast<size_t>(n * grad_floats_per_sample_) * sizeof(float);
  grad_a_ = Buffer(ctx_.allocator(), grad_bytes, MemoryCategory::Activations);
  grad_b_ = Buffer(ctx_.allocator(), grad_bytes, MemoryCategory::Activations);
  dlogits_ = Buffer(ctx_.allocator(), static_cast<size_t>(n * classes()) * sizeof(float),
                    MemoryCategory::Activations);
  batch_capacity_ = n;
}

void SequentialClassifier::forward(const Batch& batch, Pass pass, float grad_scale, double* stats) {
  const int64_t n = batch.size;
  DTRAIN_ASSERT(n > 0, "forward of an empty batch");
  ensure_batch(n);
  batch_ = n;
  trained_ = pass == Pass::kTrain;
  acts_[0] = batch.float_inputs();
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i]->aliases_input()) {
      acts_[i + 1] = acts_[i];
      continue;
    }
    float* y = outputs_[i].as<float>();
    layers_[i]->forward(ctx_, ConstTensor(acts_[i], shapes_[i].with_batch(n)),
                        Tensor(y, shapes_[i + 1].with_batch(n)));
    acts_[i + 1] = y;
  }
  ops::softmax_cross_entropy(ctx_, acts_.back(), batch.targets, n, classes(), grad_scale,
                             trained_ ? dlogits_.as<float>() : nullptr, stats + kModelLossSum);
}

ConstTensor SequentialClassifier::logits() const {
  DTRAIN_ASSERT(batch_ > 0, "logits before any forward");
  return ConstTensor(acts_.back(), shapes_.back().with_batch(batch_));
}

void SequentialClassifier::backward(const std::function<void(int)>& on_layer_done) {
  DTRAIN_ASSERT(batch_ > 0 && trained_, "backward without a training forward");
  const int64_t n = batch_;
  const float* cur = dlogits_.as<float>();  // the gradient of layer i's output
  for (size_t i = layers_.size(); i-- > 0;) {
    Layer& layer = *layers_[i];
    if (!layer.aliases_input()) {
      float* dx = nullptr;
      if (i > 0) dx = cur == grad_a_.as<float>() ? grad_b_.as<float>() : grad_a_.as<float>();
      layer.backward(ctx_, ConstTensor(acts_[i], shapes_[i].with_batch(n)),
                     ConstTensor(acts_[i + 1], shapes_[i + 1].with_batch(n)),
                     ConstTensor(cur, shapes_[i + 1].with_batch(n)), dx);
      cur = dx;
    }
    // On a GPU the layer's kernels are only enqueued here: a callback that reads the
    // gradients orders its work after them (same stream, or an event), not by time.
    if (on_layer_done) on_layer_done(static_cast<int>(i));
  }
}

int64_t SequentialClassifier::activation_bytes_per_sample_in(DType, Recompute) const {
  int64_t bytes = 0;
  for (size_t i = 0; i < layers_.size(); ++i) bytes += layers_[i]->activation_bytes_per_sample(shapes_[i]);
  return bytes + (2 * grad_floats_per_sample_ + classes()) * static_cast<int64_t>(sizeof(float));
}

int64_t SequentialClassifier::forward_flops_per_sample() const {
  int64_t flops = 0;
  for (size_t i = 0; i < layers_.size(); ++i) flops += layers_[i]->forward_flops_per_sample(shapes_[i]);
  return flops;
}

std::vector<PartDeterminism> SequentialClassifier::determinism(int64_t batch) const {
  std::vector<PartDeterminism> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    out.push_back({layers_[i]->name(), layers_[i]->determinism(ctx_, shapes_[i], batch)});
    if (i == 0) out.back().passes.input_gradient = true;  // backward passes no dx to layer 0
  }
  return out;
}

size_t SequentialClassifier::workspace_bytes_in(int64_t batch, DType) const {
  size_t bytes = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    bytes = std::max(bytes, layers_[i]->workspace_bytes(ctx_, shapes_[i], batch));
  }
  return std::max(bytes, ops::softmax_cross_entropy_workspace_bytes(ctx_, batch));
}

void SequentialClassifier::release_activations() {
  for (Buffer& b : outputs_) b.reset();
  for (auto& layer : layers_) layer->release_state();
  grad_a_.reset();
  grad_b_.reset();
  dlogits_.reset();
  batch_capacity_ = 0;
  batch_ = 0;
}

std::vector<Metric> SequentialClassifier::eval_metrics(double metric_sum, double, int64_t samples) const {
  return {Metric{"accuracy", metric_sum / static_cast<double>(samples)}};
}

std::vector<float> SequentialClassifier::next_token_logits(const std::vector<int32_t>&) {
  throw ConfigError("model '" + name_ + "' is a classifier: it predicts a label per sample, not the next token, so "
                    "it cannot generate text; train a model.name: gpt on text to sample from it");
}

}  // namespace dtrain
