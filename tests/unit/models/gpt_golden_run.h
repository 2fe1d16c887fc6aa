// The golden GPT tests' shared part: build the fixture's GPT (tests/golden/
// make_gpt*_golden.py) on a device in a compute type, load the fixture's parameters,
// and run the fixture's batch through it; and the norm criterion they compare with.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "golden_fixture.h"
#include "kernels/context.h"
#include "kernels/ops.h"
#include "models/gpt.h"

namespace dtrain::testing_golden {

// ||ours - torch||_2 <= tolerance * ||torch||_2. A norm criterion, unlike a
// per-element one, does not fail on the elements whose true value is nearly 0.
inline ::testing::AssertionResult close_in_norm(const std::vector<float>& ours, const std::vector<float>& torch,
                                                double tolerance, const std::string& what) {
  if (ours.size() != torch.size()) {
    return ::testing::AssertionFailure() << what << ": " << ours.size() << " values, PyTorch has " << torch.size();
  }
  double diff = 0.0, norm = 0.0;
  size_t worst = 0;
  double worst_err = -1.0;
  for (size_t i = 0; i < torch.size(); ++i) {
    const double d = static_cast<double>(ours[i]) - torch[i];
    diff += d * d;
    norm += static_cast<double>(torch[i]) * torch[i];
    if (std::abs(d) > worst_err) worst_err = std::abs(d), worst = i;
  }
  const double rel = std::sqrt(diff) / std::sqrt(norm);
  if (rel <= tolerance) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << rel << " > " << tolerance << " (norm "
                                       << std::sqrt(norm) << "); worst [" << worst << "] dtrain " << ours[worst]
                                       << " torch " << torch[worst];
}

inline std::vector<float> to_host(Context& ctx, const float* device, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  ops::copy_to_host(ctx, out.data(), device, out.size() * sizeof(float));
  ctx.synchronize();
  return out;
}

inline std::vector<int32_t> tokens_of(const std::vector<float>& values) {
  std::vector<int32_t> out;
  for (float v : values) out.push_back(static_cast<int32_t>(v));
  return out;
}

inline const char* device_name(DeviceKind kind) { return kind == DeviceKind::Cpu ? "Cpu" : "CpuAsync"; }

// The fixture's GPT on a fresh context of `kind` (Cpu or CpuAsync: the model must
// read nothing of the device's memory before its work has run).
class GoldenGpt {
 public:
  GoldenGpt(const Fixture& f, DeviceKind kind, const std::string& compute) : f_(f) {
    spec_.name = "gpt";
    spec_.n_layer = f.integer("n_layer");
    spec_.n_head = f.integer("n_head");
    spec_.n_embd = f.integer("n_embd");
    spec_.seq_len = f.integer("seq_len");
    spec_.vocab = f.integer("vocab");
    spec_.dropout = 0.0;
    spec_.compute = compute;
    batch_ = f.integer("batch");
    DataFacts data;
    data.layout.input = Shape{spec_.seq_len};
    data.layout.input_type = ElementType::kInt32;
    data.layout.target = Shape{spec_.seq_len};
    data.classes = spec_.vocab;
    ctx_ = kind == DeviceKind::Cpu ? Context::make_cpu(1) : Context::make_cpu_async(1);
    model_ = build_gpt(*ctx_, spec_, data);
    gpt_ = dynamic_cast<Gpt*>(model_.get());
    std::vector<float> params;
    for (const auto& [name, values] : f.with_prefix("param:")) params.insert(params.end(), values->begin(), values->end());
    model_->load_params(params.data(), static_cast<int64_t>(params.size()));
  }

  struct Losses {
    float eval = 0.0f;   // an eval forward's mean sample loss
    float train = 0.0f;  // the training forward's
  };
  // An eval forward, then a training forward and backward of the fixture's tensors
  // `input` and `targets` (gradients zeroed first, scaled by 1/batch: the mean loss's).
  // after_eval runs between the two, while gpt().logits() holds the eval's logits.
  Losses run_batch(const std::function<void()>& after_eval = {}, const std::string& input = "input",
                   const std::string& targets = "targets") {
    const std::vector<int32_t> x = tokens_of(f_.tensor(input));
    const std::vector<int32_t> y = tokens_of(f_.tensor(targets));
    std::vector<int64_t> ids;
    for (int64_t i = 0; i < batch_; ++i) ids.push_back(i);
    Buffer d_input = upload(x.data(), x.size() * sizeof(int32_t));
    Buffer d_targets = upload(y.data(), y.size() * sizeof(int32_t));
    Buffer d_ids = upload(ids.data(), ids.size() * sizeof(int64_t));
    const std::vector<double> zeros(2 * kModelStats, 0.0);
    Buffer d_stats = upload(zeros.data(), zeros.size() * sizeof(double));
    Batch batch;
    batch.size = batch_;
    batch.inputs = d_input.data();
    batch.targets = d_targets.as<int32_t>();
    batch.sample_ids = d_ids.as<int64_t>();
    double* eval_stats = d_stats.as<double>();
    model_->forward(batch, Pass::kEval, 0.0f, eval_stats);
    if (after_eval) after_eval();
    model_->zero_grads();
    model_->forward(batch, Pass::kTrain, 1.0f / static_cast<float>(batch_), eval_stats + kModelStats);
    model_->backward();
    double stats[2 * kModelStats];
    ops::copy_to_host(*ctx_, stats, d_stats.data(), sizeof(stats));
    ctx_->synchronize();
    return {static_cast<float>(stats[kModelLossSum] / static_cast<double>(batch_)),
            static_cast<float>(stats[kModelStats + kModelLossSum] / static_cast<double>(batch_))};
  }
  std::vector<float> grads() { return to_host(*ctx_, model_->grads(), model_->param_count()); }

  Model& model() { return *model_; }
  Gpt& gpt() { return *gpt_; }
  Context& ctx() { return *ctx_; }
  const ModelSpec& spec() const { return spec_; }
  int64_t batch() const { return batch_; }

 private:
  Buffer upload(const void* host, size_t bytes) {
    Buffer b(ctx_->allocator(), bytes, MemoryCategory::Other);
    ops::copy_from_host(*ctx_, b.data(), host, bytes);
    return b;
  }

  const Fixture& f_;
  ModelSpec spec_;
  int64_t batch_ = 0;
  std::unique_ptr<Context> ctx_;
  std::unique_ptr<Model> model_;
  Gpt* gpt_ = nullptr;
};

}  // namespace dtrain::testing_golden
