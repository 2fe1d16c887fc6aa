// Activation recomputation on a GPU (Note [Gpt recompute], models/gpt.h): the GPT with
// dropout trains bit for bit as without it on CUDA: in fp32 (dtrain's own fused
// attention, Note [Own fused attention]) and in bf16 (cuDNN's fused attention where it
// takes the shape), both of which keep each row's log-sum-exp; and in both types on the
// unfused path, which keeps the probabilities. C and T are multiples of 8, so every
// tensor of both layouts is 16-byte aligned and the kernels take the same paths.
#include <gtest/gtest.h>

#include <string>

#include "gpu_test.h"
#include "tests/unit/models/gpt_training_steps.h"

namespace dtrain {
namespace {

using testing_gpt::expect_same_training;
using testing_gpt::TrainedGpt;

ModelSpec spec_of(const std::string& compute, const std::string& recompute) {
  return testing_gpt::gpt_spec({3, 4, 64, 64, 96}, compute, recompute);
}

class GptRecomputeOnCuda : public testing::GpuTest {};

TEST_F(GptRecomputeOnCuda, Fp32TrainsBitForBitAsWithout) {
  TrainedGpt keep(Context::make_cuda(CudaOptions{}), spec_of("fp32", "none"));
  TrainedGpt recompute(Context::make_cuda(CudaOptions{}), spec_of("fp32", "blocks"));
  expect_same_training(keep, recompute, 4);
}

TEST_F(GptRecomputeOnCuda, Fp32WithUnfusedAttentionTrainsBitForBitAsWithout) {
  TrainedGpt keep(testing::make_cuda_unfused_attention(), spec_of("fp32", "none"));
  TrainedGpt recompute(testing::make_cuda_unfused_attention(), spec_of("fp32", "blocks"));
  expect_same_training(keep, recompute, 4);
}

TEST_F(GptRecomputeOnCuda, Bf16TrainsBitForBitAsWithout) {
  TrainedGpt keep(Context::make_cuda(CudaOptions{}), spec_of("bf16", "none"));
  TrainedGpt recompute(Context::make_cuda(CudaOptions{}), spec_of("bf16", "blocks"));
  expect_same_training(keep, recompute, 4);
}

TEST_F(GptRecomputeOnCuda, Bf16WithUnfusedAttentionTrainsBitForBitAsWithout) {
  TrainedGpt keep(testing::make_cuda_unfused_attention(), spec_of("bf16", "none"));
  TrainedGpt recompute(testing::make_cuda_unfused_attention(), spec_of("bf16", "blocks"));
  expect_same_training(keep, recompute, 4);
}

}  // namespace
}  // namespace dtrain
