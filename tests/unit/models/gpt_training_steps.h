// A GPT trained by hand for tests that compare two ways of running the same steps bit
// for bit (recompute against none: tests/unit/models/test_gpt_recompute.cpp on the
// CPUs, tests/gpu/test_gpt_recompute.cpp on CUDA). Each step is two micro-batches of
// three windows whose gradients backward ADDS, then plain SGD on the host, so nothing
// but the model runs on the device.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/gpt.h"

namespace dtrain::testing_gpt {

inline DataFacts token_data(int64_t seq_len, int64_t vocab) {
  DataFacts data;
  data.layout.input = Shape{seq_len};
  data.layout.input_type = ElementType::kInt32;
  data.layout.target = Shape{seq_len};
  data.classes = vocab;
  return data;
}

// A GPT's spec with dropout on (0.1, the masks keyed by seed 31).
struct GptShape {
  int64_t n_layer, n_head, n_embd, seq_len, vocab;
};
inline ModelSpec gpt_spec(const GptShape& shape, const std::string& compute, const std::string& recompute) {
  ModelSpec spec;
  spec.name = "gpt";
  spec.n_layer = shape.n_layer;
  spec.n_head = shape.n_head;
  spec.n_embd = shape.n_embd;
  spec.seq_len = shape.seq_len;
  spec.vocab = shape.vocab;
  spec.dropout = 0.1;
  spec.seed = 31;
  spec.compute = compute;
  spec.recompute = recompute;
  return spec;
}

template <class T>
std::vector<T> download(Context& ctx, const void* device, int64_t n) {
  std::vector<T> out(static_cast<size_t>(n));
  ops::copy_to_host(ctx, out.data(), device, out.size() * sizeof(T));
  ctx.synchronize();
  return out;
}

// Bit for bit, so that -0.0 against 0.0 or two NaNs' payloads count too.
template <class T>
bool same_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

class TrainedGpt {
 public:
  // The spec's GPT on `ctx`, initialised from seed 7.
  TrainedGpt(std::unique_ptr<Context> ctx, const ModelSpec& spec)
      : spec_(spec), ctx_(std::move(ctx)), model_(build_gpt(*ctx_, spec, token_data(spec.seq_len, spec.vocab))) {
    model_->init(7);
  }

  struct Step {
    std::vector<double> loss_sums;  // each micro-batch's
    std::vector<float> grads;
    std::vector<float> params;      // after the update
  };

  // Optimizer step `step` (0-based: the dropout masks' step).
  Step step(int64_t step) {
    Step out;
    model_->zero_grads();
    for (int64_t micro = 0; micro < 2; ++micro) {
      const int64_t first = 6 * step + 3 * micro;  // distinct windows, so distinct masks
      std::vector<int64_t> ids = {first, first + 1, first + 2};
      std::vector<int32_t> input, targets;
      for (int64_t id : ids) {
        Rng rng(Rng::mix(99, static_cast<uint64_t>(id)));
        for (int64_t t = 0; t < spec_.seq_len; ++t) {
          input.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(spec_.vocab))));
          targets.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(spec_.vocab))));
        }
      }
      const double zeros[kModelStats] = {0.0, 0.0};
      // The device's copies live until backward is done (Model::forward's contract).
      Buffer d_input = upload(input.data(), input.size() * sizeof(int32_t));
      Buffer d_targets = upload(targets.data(), targets.size() * sizeof(int32_t));
      Buffer d_ids = upload(ids.data(), ids.size() * sizeof(int64_t));
      Buffer d_stats = upload(zeros, sizeof(zeros));
      Batch batch;
      batch.size = static_cast<int64_t>(ids.size());
      batch.inputs = d_input.data();
      batch.targets = d_targets.as<int32_t>();
      batch.sample_ids = d_ids.as<int64_t>();
      batch.step = step;
      model_->forward(batch, Pass::kTrain, 1.0f / 6.0f, d_stats.as<double>());
      model_->backward();
      out.loss_sums.push_back(download<double>(*ctx_, d_stats.data(), kModelStats)[kModelLossSum]);
    }
    const int64_t n = model_->param_count();
    out.grads = download<float>(*ctx_, model_->grads(), n);
    std::vector<float> p = download<float>(*ctx_, model_->params(), n);
    for (int64_t i = 0; i < n; ++i) p[static_cast<size_t>(i)] -= 0.5f * out.grads[static_cast<size_t>(i)];
    model_->load_params(p.data(), n);
    out.params = download<float>(*ctx_, model_->params(), n);
    return out;
  }

  size_t activations_in_use() {
    return ctx_->allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Activations)];
  }

 private:
  Buffer upload(const void* host, size_t bytes) {
    Buffer b(ctx_->allocator(), bytes, MemoryCategory::Other);
    ops::copy_from_host(*ctx_, b.data(), host, bytes);
    return b;
  }

  ModelSpec spec_;
  std::unique_ptr<Context> ctx_;
  std::unique_ptr<Model> model_;
};

// Trains `keep` and `recompute` (the same spec but memory.recompute) `steps` steps
// side by side and expects the same bits of every micro-batch's loss, the gradients
// and the updated parameters at each; also that the model trained (its loss moved) and
// that recompute held less.
inline void expect_same_training(TrainedGpt& keep, TrainedGpt& recompute, int64_t steps) {
  std::vector<double> losses;
  for (int64_t step = 0; step < steps; ++step) {
    SCOPED_TRACE(::testing::Message() << "step " << step);
    const TrainedGpt::Step a = keep.step(step);
    const TrainedGpt::Step b = recompute.step(step);
    EXPECT_TRUE(same_bits(a.loss_sums, b.loss_sums)) << a.loss_sums[0] << " against " << b.loss_sums[0];
    EXPECT_TRUE(same_bits(a.grads, b.grads));
    EXPECT_TRUE(same_bits(a.params, b.params));
    losses.push_back(a.loss_sums[0] + a.loss_sums[1]);
  }
  // Equal bits of a model that stood still would prove little.
  EXPECT_NE(losses.front(), losses.back());
  EXPECT_LT(recompute.activations_in_use(), keep.activations_in_use());
}

}  // namespace dtrain::testing_gpt
