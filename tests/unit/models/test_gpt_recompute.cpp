// Activation recomputation of the GPT (memory.recompute: blocks, Note [Gpt recompute]
// in models/gpt.h): training steps with dropout give the same losses, gradients and
// parameters, bit for bit, as without it, on the CPU and on the asynchronous CPU
// device, in fp32 and in bf16; the layout it keeps is the size a count by hand says;
// and its extra FLOPs follow their formula.
#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <vector>

#include "gpt_training_steps.h"
#include "kernels/context.h"
#include "kernels/errors.h"
#include "models/gpt.h"

namespace dtrain {
namespace {

using testing_gpt::expect_same_training;
using testing_gpt::token_data;
using testing_gpt::TrainedGpt;

// Odd sizes (T = 7, C = 12, attention's saved state 3 * 7 * 7 per sample), so the
// tensors of the two layouts sit at differently aligned addresses: the CPU's results
// must not depend on that.
ModelSpec spec_of(const std::string& compute, const std::string& recompute) {
  return testing_gpt::gpt_spec({3, 3, 12, 7, 13}, compute, recompute);
}

struct DeviceAndType {
  DeviceKind kind;
  const char* compute;
  std::string name() const { return std::string(kind == DeviceKind::Cpu ? "Cpu" : "CpuAsync") + compute; }
};
void PrintTo(const DeviceAndType& c, std::ostream* out) { *out << c.name(); }

class GptRecompute : public ::testing::TestWithParam<DeviceAndType> {};

TEST_P(GptRecompute, TrainsBitForBitAsWithout) {
  const DeviceAndType c = GetParam();
  auto context = [&] { return c.kind == DeviceKind::Cpu ? Context::make_cpu(1) : Context::make_cpu_async(1); };
  TrainedGpt keep(context(), spec_of(c.compute, "none"));
  TrainedGpt recompute(context(), spec_of(c.compute, "blocks"));
  expect_same_training(keep, recompute, 4);
}

INSTANTIATE_TEST_SUITE_P(DevicesAndTypes, GptRecompute,
                         ::testing::Values(DeviceAndType{DeviceKind::Cpu, "fp32"},
                                           DeviceAndType{DeviceKind::Cpu, "bf16"},
                                           DeviceAndType{DeviceKind::CpuAsync, "fp32"},
                                           DeviceAndType{DeviceKind::CpuAsync, "bf16"}),
                         [](const auto& info) { return info.param.name(); });

TEST(GptRecomputeMemory, KeepsEachBlocksInputAndOneSharedSet) {
  for (const char* compute : {"fp32", "bf16"}) {
    SCOPED_TRACE(compute);
    const ModelSpec spec = spec_of(compute, "blocks");
    auto ctx = Context::make_cpu(1);
    auto model = build_gpt(*ctx, spec, token_data(spec.seq_len, spec.vocab));
    const int64_t L = spec.n_layer, C = spec.n_embd, T = spec.seq_len, V = spec.vocab, H = spec.n_head;
    const int64_t e = std::string(compute) == "bf16" ? 2 : 4;
    // Counted from the tensors: encoded, each block's res3; one shared ln1, qkv, atty,
    // res2, ln2, fch, fch_gelu and the CPU's saved probabilities (H T T); lnf, dres,
    // dtmp, dbig; logits. In fp32: the shared ln_1 and ln_2 mean and rstd, ln_f's.
    const int64_t shared = T * C * (1 + 3 + 1 + 1 + 1 + 4 + 4) + H * T * T;
    const int64_t big = T * C + L * T * C + shared + T * C * (1 + 1 + 1 + 4) + T * V;
    const int64_t expected = e * big + 4 * (4 * T + 2 * T);
    EXPECT_EQ(model->activation_bytes_per_sample(), expected);
    EXPECT_EQ(model->activation_bytes_per_sample_in(model->compute_type(), Recompute::kBlocks), expected);
    // Without: every block keeps its 16 T C, its probabilities and 4 T statistics.
    const int64_t kept = e * (T * C * (16 * L + 8) + T * V + L * H * T * T) + 4 * (4 * L + 2) * T;
    EXPECT_EQ(model->activation_bytes_per_sample_in(model->compute_type(), Recompute::kNone), kept);
    EXPECT_EQ(kept - expected, (L - 1) * (e * (T * C * 15 + H * T * T) + 4 * 4 * T));

    // The allocator holds exactly that after a training forward and its backward.
    const int64_t n = 3;
    std::vector<int32_t> tokens(static_cast<size_t>(n * T), 1);
    std::vector<int64_t> ids = {0, 1, 2};
    std::vector<double> stats(kModelStats, 0.0);
    Batch b;
    b.size = n;
    b.inputs = tokens.data();
    b.targets = tokens.data();
    b.sample_ids = ids.data();
    model->forward(b, Pass::kTrain, 1.0f, stats.data());
    model->backward();
    const MemoryStats after = ctx->allocator().stats();
    const auto activations = static_cast<int>(MemoryCategory::Activations);
    EXPECT_EQ(after.in_use_by[activations], static_cast<size_t>(n * expected));
    EXPECT_EQ(after.peak_by[activations], static_cast<size_t>(n * expected));
  }
}

TEST(GptRecomputeMemory, AddsTheForwardOfEveryBlockButTheLastUpToGelu) {
  const ModelSpec spec = spec_of("fp32", "blocks");
  auto ctx = Context::make_cpu(1);
  auto on = build_gpt(*ctx, spec, token_data(spec.seq_len, spec.vocab));
  auto off = build_gpt(*ctx, spec_of("fp32", "none"), token_data(spec.seq_len, spec.vocab));
  const int64_t L = spec.n_layer, C = spec.n_embd, T = spec.seq_len;
  // c_attn (3C x C), attn.c_proj (C x C) and c_fc (4C x C): 2 FLOPs a weight a token;
  // attention's QK^T and PV: 2 * T * T * C each.
  const int64_t per_block = 2 * (3 + 1 + 4) * C * C * T + 2 * 2 * T * T * C;
  EXPECT_EQ(on->recompute_flops_per_sample(), (L - 1) * per_block);
  EXPECT_EQ(off->recompute_flops_per_sample(), 0);
  EXPECT_EQ(off->recompute_flops_per_sample_in(Recompute::kBlocks), (L - 1) * per_block);
  // The model's FLOPs (throughput, MFU) do not count the recompute.
  EXPECT_EQ(on->training_flops_per_sample(), off->training_flops_per_sample());
  EXPECT_TRUE(on->can_recompute());
  EXPECT_EQ(on->recompute(), Recompute::kBlocks);
  EXPECT_EQ(off->recompute(), Recompute::kNone);
}

TEST(GptRecomputeMemory, BuilderRefusesRecomputeForAModelWithoutBlocks) {
  ModelSpec spec;
  spec.name = "mlp";
  spec.recompute = "blocks";
  DataFacts images;
  images.layout.input = Shape{1, 4, 4};
  images.layout.target = Shape{1};
  images.classes = 3;
  auto ctx = Context::make_cpu(1);
  try {
    build_model(*ctx, spec, images);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("memory.recompute"), std::string::npos) << e.what();
  }
  spec.recompute = "sometimes";
  try {
    build_model(*ctx, spec, images);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("key 'memory.recompute' = 'sometimes': accepted values: none, blocks"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dtrain
