#include "models/model.h"

#include <algorithm>
#include <sstream>
#include <utility>

#include "kernels/check.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {

Model::Model(Context& ctx, std::vector<std::unique_ptr<Layer>> layers, Shape input)
    : ctx_(ctx), layers_(std::move(layers)), input_(std::move(input)) {
  DTRAIN_ASSERT(!layers_.empty(), "a model needs at least one layer");
  shapes_.push_back(input_);
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
    layer_params_.push_back(ParamRange{param_count_, count});
    param_count_ += count;
    // Backward writes layer i's input gradient (shapes_[i]) into a ping-pong buffer,
    // except for layer 0 (not needed) and aliasing layers (they pass dy through).
    if (i > 0 && !layers_[i]->aliases_input()) {
      grad_floats_per_sample_ = std::max(grad_floats_per_sample_, shapes_[i].numel());
    }
  }

  const size_t bytes = static_cast<size_t>(param_count_) * sizeof(float);
  params_ = Buffer(ctx_.allocator(), bytes, MemoryCategory::Params);
  grads_ = Buffer(ctx_.allocator(), bytes, MemoryCategory::Grads);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const int64_t offset = layer_params_[i].offset;
    layers_[i]->bind(params() + offset, grads() + offset);
  }
  // Defined contents before init() or load_params(): a model is never built on garbage.
  ops::fill(ctx_, params(), param_count_, 0.0f);
  zero_grads();
  outputs_.resize(layers_.size());
  acts_.assign(layers_.size() + 1, nullptr);
}

void Model::init(uint64_t seed) {
  // Each layer draws from its own stream, so adding a layer does not change the
  // initial values of the layers before it.
  std::vector<float> host(static_cast<size_t>(param_count_));
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layer_params_[i].count == 0) continue;
    Rng rng(Rng::mix(seed, static_cast<uint64_t>(i)));
    layers_[i]->init(rng, host.data() + layer_params_[i].offset);
  }
  ops::copy_from_host(ctx_, params(), host.data(), host.size() * sizeof(float));
  zero_grads();
}

void Model::load_params(const float* host, int64_t count) {
  if (count != param_count_) {
    std::ostringstream msg;
    msg << "cannot load " << count << " parameters into a model of " << param_count_
        << "; the model config differs from the one that wrote them";
    throw DataError(msg.str());
  }
  ops::copy_from_host(ctx_, params(), host, static_cast<size_t>(count) * sizeof(float));
}

void Model::zero_grads() { ops::fill(ctx_, grads(), param_count_, 0.0f); }

void Model::ensure_batch(int64_t n) {
  if (n <= batch_capacity_) return;
  // Free everything first so the old and new activations never coexist at the peak.
  for (Buffer& b : outputs_) b.reset();
  grad_a_.reset();
  grad_b_.reset();
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (layers_[i]->aliases_input()) continue;
    const size_t bytes = static_cast<size_t>(n * shapes_[i + 1].numel()) * sizeof(float);
    outputs_[i] = Buffer(ctx_.allocator(), bytes, MemoryCategory::Activations);
  }
  const size_t grad_bytes = static_cast<size_t>(n * grad_floats_per_sample_) * sizeof(float);
  grad_a_ = Buffer(ctx_.allocator(), grad_bytes, MemoryCategory::Activations);
  grad_b_ = Buffer(ctx_.allocator(), grad_bytes, MemoryCategory::Activations);
  batch_capacity_ = n;
}

ConstTensor Model::forward(ConstTensor x) {
  DTRAIN_ASSERT(x.shape.rank() >= 1 && x.dim(0) > 0, "forward of an empty batch " << x.shape.str());
  const int64_t n = x.dim(0);
  DTRAIN_ASSERT(x.numel() == n * input_.numel(),
                "forward input " << x.shape.str() << " is not a batch of " << input_.str());
  ensure_batch(n);
  batch_ = n;
  acts_[0] = x.data;
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
  return ConstTensor(acts_.back(), shapes_.back().with_batch(n));
}

void Model::backward(ConstTensor dy, const std::function<void(int)>& on_layer_done) {
  DTRAIN_ASSERT(batch_ > 0, "backward before any forward");
  DTRAIN_ASSERT(dy.numel() == batch_ * output_shape().numel(),
                "backward gradient " << dy.shape.str() << " does not match the last forward's output "
                                     << output_shape().with_batch(batch_).str());
  const int64_t n = batch_;
  const float* cur = dy.data;  // the gradient of layer i's output
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

int64_t Model::activation_bytes_per_sample() const {
  int64_t bytes = 0;
  for (size_t i = 0; i < layers_.size(); ++i) bytes += layers_[i]->activation_bytes_per_sample(shapes_[i]);
  return bytes + 2 * grad_floats_per_sample_ * static_cast<int64_t>(sizeof(float));
}

int64_t Model::forward_flops_per_sample() const {
  int64_t flops = 0;
  for (size_t i = 0; i < layers_.size(); ++i) flops += layers_[i]->forward_flops_per_sample(shapes_[i]);
  return flops;
}

std::vector<PassDeterminism> Model::determinism(int64_t batch) const {
  std::vector<PassDeterminism> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    out.push_back(layers_[i]->determinism(ctx_, shapes_[i], batch));
    if (i == 0) out.back().input_gradient = true;  // backward passes no dx to layer 0
  }
  return out;
}

size_t Model::workspace_bytes(int64_t batch) const {
  size_t bytes = 0;
  for (size_t i = 0; i < layers_.size(); ++i) {
    bytes = std::max(bytes, layers_[i]->workspace_bytes(ctx_, shapes_[i], batch));
  }
  return bytes;
}

void Model::release_activations() {
  for (Buffer& b : outputs_) b.reset();
  for (auto& layer : layers_) layer->release_state();
  grad_a_.reset();
  grad_b_.reset();
  batch_capacity_ = 0;
  batch_ = 0;
}

}  // namespace dtrain
