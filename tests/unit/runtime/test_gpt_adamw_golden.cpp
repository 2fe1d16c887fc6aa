// Five AdamW steps of a tiny GPT with gradient clipping against PyTorch
// (tests/golden/gpt.golden, written by tests/golden/make_gpt_golden.py): the
// optimizer's decay filter (weight decay on the tensors of rank >= 2 only, nanoGPT's
// two parameter groups) and clip_grad_norm_ as the trainer applies them.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/ops.h"
#include "models/gpt.h"
#include "runtime/config.h"
#include "runtime/gradient_clipping.h"
#include "runtime/optimizer.h"
#include "tests/unit/models/golden_fixture.h"

namespace dtrain {
namespace {

using testing_golden::Fixture;
using testing_golden::read_fixture;

std::vector<int32_t> tokens_of(const std::vector<float>& values) {
  std::vector<int32_t> out;
  for (float v : values) out.push_back(static_cast<int32_t>(v));
  return out;
}

// ||a - b|| / ||b|| over a tensor: the golden tests' criterion (test_gpt_golden.cpp).
double relative_error(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0.0, norm = 0.0;
  for (size_t i = 0; i < b.size(); ++i) {
    diff += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    norm += double(b[i]) * b[i];
  }
  return std::sqrt(diff / norm);
}

TEST(GptAdamWGolden, FiveClippedStepsWithMatrixDecayMatchPyTorch) {
  const Fixture f = read_fixture(std::string(DTRAIN_SOURCE_DIR) + "/tests/golden/gpt.golden");
  ModelSpec spec;
  spec.name = "gpt";
  spec.n_layer = f.integer("n_layer");
  spec.n_head = f.integer("n_head");
  spec.n_embd = f.integer("n_embd");
  spec.seq_len = f.integer("seq_len");
  spec.vocab = f.integer("vocab");
  const int64_t batch = f.integer("batch");
  const int64_t t = spec.seq_len;
  DataFacts data;
  data.layout = SampleLayout{Shape{t}, ElementType::kInt32, Shape{t}};
  data.classes = spec.vocab;
  auto ctx = Context::make_cpu(1);
  auto model = build_gpt(*ctx, spec, data);

  std::vector<float> initial;
  for (const auto& [name, values] : f.with_prefix("param:")) initial.insert(initial.end(), values->begin(), values->end());
  model->load_params(initial.data(), static_cast<int64_t>(initial.size()));

  OptimizerConfig oc;
  oc.name = "adamw";
  oc.beta1 = std::stod(f.key("adamw_beta1").at(0));
  oc.beta2 = std::stod(f.key("adamw_beta2").at(0));
  oc.eps = std::stod(f.key("adamw_eps").at(0));
  oc.weight_decay = std::stod(f.key("adamw_weight_decay").at(0));
  oc.decay_filter = "matrices";
  const double lr = std::stod(f.key("adamw_lr").at(0));
  const double clip = std::stod(f.key("clip_grad_norm").at(0));
  const int64_t n = model->param_count();
  auto optimizer = make_optimizer(oc, *ctx, n, decay_spans(model->param_tensors(), n, oc.decay_filter));

  Buffer inputs(ctx->allocator(), static_cast<size_t>(batch * t) * 4, MemoryCategory::Other);
  Buffer targets(ctx->allocator(), static_cast<size_t>(batch * t) * 4, MemoryCategory::Other);
  Buffer ids(ctx->allocator(), static_cast<size_t>(batch) * 8, MemoryCategory::Other);
  Buffer stats(ctx->allocator(), 3 * sizeof(double), MemoryCategory::Other);
  const int64_t steps = f.integer("adamw_steps");
  for (int64_t k = 1; k <= steps; ++k) {
    const std::string at = "step:" + std::to_string(k) + ":";
    const std::vector<int32_t> x = tokens_of(f.tensor(at + "input"));
    const std::vector<int32_t> y = tokens_of(f.tensor(at + "targets"));
    ASSERT_EQ(static_cast<int64_t>(x.size()), batch * t);
    std::vector<int64_t> sample_ids(static_cast<size_t>(batch));
    for (int64_t i = 0; i < batch; ++i) sample_ids[static_cast<size_t>(i)] = i;
    ops::copy_from_host(*ctx, inputs.data(), x.data(), x.size() * 4);
    ops::copy_from_host(*ctx, targets.data(), y.data(), y.size() * 4);
    ops::copy_from_host(*ctx, ids.data(), sample_ids.data(), sample_ids.size() * 8);
    ops::fill(*ctx, stats.as<float>(), 6, 0.0f);
    Batch b;
    b.size = batch;
    b.inputs = inputs.data();
    b.targets = targets.as<int32_t>();
    b.sample_ids = ids.as<int64_t>();
    b.step = k - 1;
    model->zero_grads();
    // The loss is the batch mean of the per-sample losses: grad_scale 1/B.
    model->forward(b, Pass::kTrain, 1.0f / static_cast<float>(batch), stats.as<double>());
    model->backward();
    ops::sum_squares(*ctx, model->grads(), n, 1.0, stats.as<double>() + 2);
    double sums[3];
    ops::copy_to_host(*ctx, sums, stats.data(), sizeof(sums));
    const double loss = sums[0] / static_cast<double>(batch);
    EXPECT_NEAR(loss, f.tensor(at + "loss").at(0), 1e-5 * std::abs(f.tensor(at + "loss").at(0))) << "step " << k;
    EXPECT_NEAR(std::sqrt(sums[2]), f.tensor(at + "grad_norm").at(0), 1e-5 * f.tensor(at + "grad_norm").at(0))
        << "step " << k;
    optimizer->step(*ctx, model->params(), model->grads(), lr,
                    static_cast<float>(clip_coefficient(std::sqrt(sums[2]), clip)));
  }
  std::vector<float> after(static_cast<size_t>(n));
  ops::copy_to_host(*ctx, after.data(), model->params(), after.size() * sizeof(float));
  ctx->synchronize();
  const auto finals = f.with_prefix("final:");
  const std::vector<ParamTensor> tensors = model->param_tensors();
  ASSERT_EQ(finals.size(), tensors.size());
  int decayed = 0;
  for (size_t i = 0; i < finals.size(); ++i) {
    const ParamTensor& p = tensors[i];
    ASSERT_EQ(finals[i].first, p.name);
    std::vector<float> ours(after.begin() + p.offset, after.begin() + p.offset + p.count());
    std::vector<float> torch = *finals[i].second;
    if (p.name.find("attn.c_attn.bias") != std::string::npos) {
      // The key bias's gradient is 0 in exact arithmetic: it adds q . b_k to every
      // score of a query's row, which the softmax ignores. Both implementations get
      // rounding noise there (~1e-9), which Adam's m / (sqrt(v) + eps) turns into
      // steps of about +-lr with the noise's sign. So that slice [C, 2C) can only be
      // held to the most Adam moves it: steps x lr (plus the decoupled decay, 0 here).
      const int64_t c = spec.n_embd;
      for (int64_t j = c; j < 2 * c; ++j) {
        EXPECT_LE(std::abs(ours[static_cast<size_t>(j)] - torch[static_cast<size_t>(j)]), 2.0 * steps * lr * 1.001)
            << p.name << "[" << j << "]";
      }
      ours.erase(ours.begin() + c, ours.begin() + 2 * c);
      torch.erase(torch.begin() + c, torch.begin() + 2 * c);
    }
    // 5 steps of lr 1e-3 move each parameter by up to 5e-3 from values of ~0.02 to 1;
    // float rounding in the gradients (1e-5 relative, above) changes the moves by far
    // less than 1e-4 of the tensor's norm.
    EXPECT_LT(relative_error(ours, torch), 1e-4) << p.name;
    decayed += p.shape.rank() >= 2 ? 1 : 0;
  }
  EXPECT_GT(decayed, 0);
}

TEST(GradientClipping, FollowsClipGradNorm) {
  EXPECT_EQ(clip_coefficient(10.0, 0.0), 1.0);   // off
  EXPECT_EQ(clip_coefficient(0.5, 1.0), 1.0);    // within the norm
  EXPECT_DOUBLE_EQ(clip_coefficient(4.0, 1.0), 1.0 / (4.0 + 1e-6));
}

TEST(DecaySpans, MatricesDecayAndNeighboursMerge) {
  const std::vector<ParamTensor> tensors = {{"a.weight", 0, Shape{2, 3}},
                                            {"b.weight", 6, Shape{3, 2}},
                                            {"b.bias", 12, Shape{3}},
                                            {"ln.weight", 15, Shape{3}},
                                            {"c.weight", 18, Shape{1, 2}}};
  const std::vector<DecaySpan> spans = decay_spans(tensors, 20, "matrices");
  ASSERT_EQ(spans.size(), 3u);
  EXPECT_EQ(spans[0].offset, 0);
  EXPECT_EQ(spans[0].count, 12);
  EXPECT_TRUE(spans[0].decay);
  EXPECT_EQ(spans[1].count, 6);
  EXPECT_FALSE(spans[1].decay);
  EXPECT_EQ(spans[2].offset, 18);
  EXPECT_TRUE(spans[2].decay);
  const std::vector<DecaySpan> all = decay_spans(tensors, 20, "all");
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].count, 20);
}

}  // namespace
}  // namespace dtrain
