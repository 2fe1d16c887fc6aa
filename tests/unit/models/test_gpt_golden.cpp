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

#include "gpt_golden_run.h"

namespace dtrain {
namespace {

using namespace testing_golden;

const char* const kRegenerate = "regenerate with: /usr/bin/python3 tests/golden/make_gpt_golden.py";

// Per tensor, ||ours - torch||_2 <= 1e-5 ||torch||_2. Both compute in float32 with
// different summation orders (OpenBLAS and our loops against PyTorch's kernels),
// which moves each value by a few float ulps relative to the tensor's scale; an
// error in the math (a missed term, a transposed weight, a wrong scale) moves the
// norm by far more than 1e-5.
::testing::AssertionResult close_to_torch(const std::vector<float>& ours, const std::vector<float>& torch,
                                          const std::string& what) {
  return close_in_norm(ours, torch, 1e-5, what);
}

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
    run_ = std::make_unique<GoldenGpt>(f_, GetParam(), "fp32");
  }

  Fixture f_;
  std::unique_ptr<GoldenGpt> run_;
};

TEST_P(GptGolden, ParameterNamesShapesAndOrderAreNanoGpts) {
  const auto params = f_.with_prefix("param:");
  const std::vector<ParamTensor> tensors = run_->model().param_tensors();
  ASSERT_EQ(tensors.size(), params.size());
  int64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(tensors[i].name, params[i].first);
    EXPECT_EQ(tensors[i].count(), static_cast<int64_t>(params[i].second->size())) << tensors[i].name;
    EXPECT_EQ(tensors[i].offset, offset) << tensors[i].name;
    offset += tensors[i].count();
  }
  EXPECT_EQ(offset, run_->model().param_count());
}

TEST_P(GptGolden, LogitsLossAndEveryGradientMatchPyTorch) {
  const ModelSpec& spec = run_->spec();
  const int64_t logit_count = run_->batch() * spec.seq_len * spec.vocab;
  const GoldenGpt::Losses losses = run_->run_batch([&] {
    EXPECT_TRUE(close_to_torch(to_host(run_->ctx(), run_->gpt().logits().f32(), logit_count), f_.tensor("logits"),
                               "logits"));
  });
  EXPECT_TRUE(close_to_torch({losses.eval}, f_.tensor("loss"), "eval loss"));
  EXPECT_TRUE(close_to_torch({losses.train}, f_.tensor("loss"), "training loss"));

  const std::vector<float> grads = run_->grads();
  for (const ParamTensor& t : run_->model().param_tensors()) {
    const std::vector<float> ours(grads.begin() + t.offset, grads.begin() + t.offset + t.count());
    EXPECT_TRUE(close_to_torch(ours, f_.tensor("grad:" + t.name), "gradient of " + t.name));
  }
}

INSTANTIATE_TEST_SUITE_P(Gpt, GptGolden, ::testing::Values(DeviceKind::Cpu, DeviceKind::CpuAsync),
                         [](const ::testing::TestParamInfo<DeviceKind>& info) { return device_name(info.param); });

}  // namespace
}  // namespace dtrain
