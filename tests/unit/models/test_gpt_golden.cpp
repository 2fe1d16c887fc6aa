// dtrain's GPT against PyTorch, the independent implementation: tests/golden/gpt.golden
// holds a tiny GPT-2's parameters (nanoGPT's names and order), a batch, and PyTorch's
// logits, loss and every parameter gradient for it (tests/golden/make_gpt_golden.py
// writes it). Loading the parameters in that order and matching also proves that the
// flat layout is nanoGPT's. (The fixture's AdamW steps are the runtime's to check.)
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "golden_fixture.h"
#include "kernels/context.h"
#include "kernels/ops.h"
#include "models/gpt.h"

namespace dtrain {
namespace {

using testing_golden::Fixture;
using testing_golden::read_fixture;

const char* const kRegenerate = "regenerate with: /usr/bin/python3 tests/golden/make_gpt_golden.py";

// Per tensor, ||ours - torch||_2 <= 1e-5 ||torch||_2. Both compute in float32 with
// different summation orders (OpenBLAS and our loops against PyTorch's kernels),
// which moves each value by a few float ulps relative to the tensor's scale; an
// error in the math (a missed term, a transposed weight, a wrong scale) moves the
// norm by far more than 1e-5. A norm criterion, unlike a per-element one, does not
// fail on the elements whose true value is nearly 0 (a few gradient entries are).
::testing::AssertionResult close_to_torch(const std::vector<float>& ours, const std::vector<float>& torch,
                                          const std::string& what) {
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
  if (rel <= 1e-5) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": relative error " << rel << " (norm " << std::sqrt(norm)
                                       << "); worst [" << worst << "] dtrain " << ours[worst] << " torch "
                                       << torch[worst];
}

std::vector<float> to_host(Context& ctx, const float* device, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  ops::copy_to_host(ctx, out.data(), device, out.size() * sizeof(float));
  ctx.synchronize();
  return out;
}

std::vector<int32_t> tokens_of(const std::vector<float>& values) {
  std::vector<int32_t> out;
  for (float v : values) out.push_back(static_cast<int32_t>(v));
  return out;
}

// On the CPU, and on the CPU as an asynchronous device (kernels/cpu_async/): the
// model must read nothing of the device's memory before its work has run.
class GptGolden : public ::testing::TestWithParam<DeviceKind> {
 protected:
  void SetUp() override {
    const std::string path = std::string(DTRAIN_SOURCE_DIR) + "/tests/golden/gpt.golden";
    try {
      f_ = read_fixture(path);
    } catch (const std::exception& e) {
      FAIL() << e.what() << "; " << kRegenerate;
    }
    ASSERT_EQ(f_.key("model").at(0), "gpt");
    spec_.name = "gpt";
    spec_.n_layer = f_.integer("n_layer");
    spec_.n_head = f_.integer("n_head");
    spec_.n_embd = f_.integer("n_embd");
    spec_.seq_len = f_.integer("seq_len");
    spec_.vocab = f_.integer("vocab");
    spec_.dropout = 0.0;
    batch_ = f_.integer("batch");
    DataFacts data;
    data.layout.input = Shape{spec_.seq_len};
    data.layout.input_type = ElementType::kInt32;
    data.layout.target = Shape{spec_.seq_len};
    data.classes = spec_.vocab;
    ctx_ = GetParam() == DeviceKind::Cpu ? Context::make_cpu(1) : Context::make_cpu_async(1);
    model_ = build_gpt(*ctx_, spec_, data);
    gpt_ = dynamic_cast<Gpt*>(model_.get());
    ASSERT_NE(gpt_, nullptr);
  }

  Buffer upload(const void* host, size_t bytes) {
    Buffer b(ctx_->allocator(), bytes, MemoryCategory::Other);
    ops::copy_from_host(*ctx_, b.data(), host, bytes);
    return b;
  }

  Fixture f_;
  ModelSpec spec_;
  int64_t batch_ = 0;
  std::unique_ptr<Context> ctx_;
  std::unique_ptr<Model> model_;
  Gpt* gpt_ = nullptr;
};

TEST_P(GptGolden, ParameterNamesShapesAndOrderAreNanoGpts) {
  const auto params = f_.with_prefix("param:");
  const std::vector<ParamTensor> tensors = model_->param_tensors();
  ASSERT_EQ(tensors.size(), params.size());
  int64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(tensors[i].name, params[i].first);
    EXPECT_EQ(tensors[i].count(), static_cast<int64_t>(params[i].second->size())) << tensors[i].name;
    EXPECT_EQ(tensors[i].offset, offset) << tensors[i].name;
    offset += tensors[i].count();
  }
  EXPECT_EQ(offset, model_->param_count());
}

TEST_P(GptGolden, LogitsLossAndEveryGradientMatchPyTorch) {
  std::vector<float> params;
  for (const auto& [name, values] : f_.with_prefix("param:")) params.insert(params.end(), values->begin(), values->end());
  ASSERT_EQ(static_cast<int64_t>(params.size()), model_->param_count());
  model_->load_params(params.data(), model_->param_count());

  const std::vector<int32_t> input = tokens_of(f_.tensor("input"));
  const std::vector<int32_t> targets = tokens_of(f_.tensor("targets"));
  ASSERT_EQ(static_cast<int64_t>(input.size()), batch_ * spec_.seq_len);
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < batch_; ++i) ids.push_back(i);
  Buffer d_input = upload(input.data(), input.size() * sizeof(int32_t));
  Buffer d_targets = upload(targets.data(), targets.size() * sizeof(int32_t));
  Buffer d_ids = upload(ids.data(), ids.size() * sizeof(int64_t));
  Buffer d_stats = upload(std::vector<double>(2 * kModelStats, 0.0).data(), 2 * kModelStats * sizeof(double));
  Batch batch;
  batch.size = batch_;
  batch.inputs = d_input.data();
  batch.targets = d_targets.as<int32_t>();
  batch.sample_ids = d_ids.as<int64_t>();
  double* eval_stats_d = d_stats.as<double>();
  double* train_stats_d = eval_stats_d + kModelStats;

  model_->forward(batch, Pass::kEval, 0.0f, eval_stats_d);
  const int64_t logit_count = batch_ * spec_.seq_len * spec_.vocab;
  EXPECT_TRUE(close_to_torch(to_host(*ctx_, gpt_->logits().f32(), logit_count), f_.tensor("logits"), "logits"));

  model_->zero_grads();
  model_->forward(batch, Pass::kTrain, 1.0f / static_cast<float>(batch_), train_stats_d);
  model_->backward();
  double stats[2 * kModelStats];
  ops::copy_to_host(*ctx_, stats, d_stats.data(), sizeof(stats));
  ctx_->synchronize();
  const float eval_loss = static_cast<float>(stats[kModelLossSum] / static_cast<double>(batch_));
  EXPECT_TRUE(close_to_torch({eval_loss}, f_.tensor("loss"), "eval loss"));
  const float loss = static_cast<float>(stats[kModelStats + kModelLossSum] / static_cast<double>(batch_));
  EXPECT_TRUE(close_to_torch({loss}, f_.tensor("loss"), "training loss"));

  const std::vector<float> grads = to_host(*ctx_, model_->grads(), model_->param_count());
  for (const ParamTensor& t : model_->param_tensors()) {
    const std::vector<float> ours(grads.begin() + t.offset, grads.begin() + t.offset + t.count());
    EXPECT_TRUE(close_to_torch(ours, f_.tensor("grad:" + t.name), "gradient of " + t.name));
  }
}

INSTANTIATE_TEST_SUITE_P(Gpt, GptGolden, ::testing::Values(DeviceKind::Cpu, DeviceKind::CpuAsync),
                         [](const ::testing::TestParamInfo<DeviceKind>& info) {
                           return info.param == DeviceKind::Cpu ? std::string("Cpu") : std::string("CpuAsync");
                         });

}  // namespace
}  // namespace dtrain
