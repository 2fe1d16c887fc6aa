// dtrain's GPT in bf16 (precision.compute: bf16, Note [bf16 storage] in
// kernels/dtype.h) against PyTorch's bf16 autocast: tests/golden/gpt_bf16.golden
// (tests/golden/make_gpt_bf16_golden.py) holds the fp32 GPT of gpt.golden, its batch,
// and autocast's loss and every parameter gradient, with the fp32 ones beside them.
//
// Note [bf16 golden tolerance]
// bf16 keeps 8 significant bits: rounding to nearest moves a value by at most
// u = 2^-9 of itself. The two implementations round at different places (autocast
// keeps the residual stream and LayerNorm's outputs in fp32; dtrain stores them in
// bf16, as llm.c does), so neither can match the other to fp32 precision. Each is
// close to the exact (fp32) result instead: a value computed through n roundings
// carries n independent relative errors of at most u, which add like a random walk,
// about sqrt(n) u. Along the longest path of this GPT (L blocks) a forward value is
// rounded n_f = 13 L + 3 times (per block: ln_1, qkv, probs, the heads' output,
// c_proj's product and its bias, the residual, ln_2, c_fc's product and bias, GELU,
// c_proj's product and bias; then the embedding, ln_f and the logits), and a
// gradient n_f + n_b times more, with n_b = 8 L + 3 (the logits' gradient, ln_f's, and
// per block dfch_gelu, GELU's, dln_2, the residual's sum, the heads', dqkv, dln_1, the
// residual's again). Both implementations are within k sqrt(n) u of the exact value,
// so within 2 k sqrt(n) u of each other, with k = 2 for the conditioning of the
// network at this scale (weights of 0.2, renormalised by every LayerNorm). The fixture
// itself checks the model: autocast's distance to fp32 must be within k sqrt(n) u.
// For L = 2: 4.2% on the loss, 5.4% on a gradient (in norm); a wrong formula, a
// missed rounding site's type or a transposed operand is off by O(1).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "gpt_golden_run.h"

namespace dtrain {
namespace {

using namespace testing_golden;

constexpr double kUnitRoundoff = 1.0 / 512.0;  // 2^-9
constexpr double kConditioning = 2.0;

double one_side_bound(int64_t roundings) {
  return kConditioning * std::sqrt(static_cast<double>(roundings)) * kUnitRoundoff;
}

class GptBf16Golden : public ::testing::TestWithParam<DeviceKind> {
 protected:
  void SetUp() override {
    const std::string path = std::string(DTRAIN_SOURCE_DIR) + "/tests/golden/gpt_bf16.golden";
    try {
      f_ = read_fixture(path);
    } catch (const std::exception& e) {
      FAIL() << e.what() << "; regenerate with: /usr/bin/python3 tests/golden/make_gpt_bf16_golden.py";
    }
    const int64_t L = f_.integer("n_layer");
    forward_roundings_ = 13 * L + 3;
    gradient_roundings_ = forward_roundings_ + 8 * L + 3;
  }

  Fixture f_;
  int64_t forward_roundings_ = 0;
  int64_t gradient_roundings_ = 0;
};

TEST_P(GptBf16Golden, TheFixtureIsWithinTheRoundingModelOfFp32) {
  EXPECT_TRUE(close_in_norm(f_.tensor("loss"), f_.tensor("fp32_loss"), one_side_bound(forward_roundings_),
                            "autocast's loss against fp32"));
  for (const auto& [name, grad] : f_.with_prefix("grad:")) {
    EXPECT_TRUE(close_in_norm(*grad, f_.tensor("fp32_grad:" + name), one_side_bound(gradient_roundings_),
                              "autocast's gradient of " + name + " against fp32"));
  }
}

TEST_P(GptBf16Golden, LossAndEveryGradientMatchAutocastWithinBf16Rounding) {
  GoldenGpt run(f_, GetParam(), "bf16");
  ASSERT_EQ(run.model().compute_type(), DType::kBF16);
  const GoldenGpt::Losses losses = run.run_batch();
  const double loss_tolerance = 2.0 * one_side_bound(forward_roundings_);
  EXPECT_TRUE(close_in_norm({losses.eval}, f_.tensor("loss"), loss_tolerance, "eval loss"));
  EXPECT_TRUE(close_in_norm({losses.train}, f_.tensor("loss"), loss_tolerance, "training loss"));
  const std::vector<float> grads = run.grads();
  for (const ParamTensor& t : run.model().param_tensors()) {
    const std::vector<float> ours(grads.begin() + t.offset, grads.begin() + t.offset + t.count());
    EXPECT_TRUE(close_in_norm(ours, f_.tensor("grad:" + t.name), 2.0 * one_side_bound(gradient_roundings_),
                              "gradient of " + t.name));
  }
}

// The bf16 model really computes in bf16: its parameter copy is the fp32 parameters
// rounded, and its loss is not the fp32 model's bit for bit (but within the model).
TEST_P(GptBf16Golden, ComputesWithTheRoundedParametersAndNotInFp32) {
  GoldenGpt bf16_run(f_, GetParam(), "bf16");
  GoldenGpt fp32_run(f_, GetParam(), "fp32");
  const int64_t n = bf16_run.model().param_count();
  std::vector<bf16> copy(static_cast<size_t>(n));
  ops::copy_to_host(bf16_run.ctx(), copy.data(), bf16_run.model().param_copy(), copy.size() * sizeof(bf16));
  const std::vector<float> params = to_host(bf16_run.ctx(), bf16_run.model().params(), n);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(copy[static_cast<size_t>(i)].bits, float_to_bf16(params[static_cast<size_t>(i)]).bits) << "element " << i;
  }
  EXPECT_EQ(fp32_run.model().param_copy(), nullptr);

  const float bf16_loss = bf16_run.run_batch().train;
  const float fp32_loss = fp32_run.run_batch().train;
  EXPECT_NE(bf16_loss, fp32_loss);
  EXPECT_TRUE(close_in_norm({bf16_loss}, {fp32_loss}, one_side_bound(forward_roundings_), "bf16 loss against fp32"));
}

INSTANTIATE_TEST_SUITE_P(Gpt, GptBf16Golden, ::testing::Values(DeviceKind::Cpu, DeviceKind::CpuAsync),
                         [](const ::testing::TestParamInfo<DeviceKind>& info) { return device_name(info.param); });

}  // namespace
}  // namespace dtrain
