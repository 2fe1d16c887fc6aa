// The fused attention of the CUDA backend (Note [Fused attention],
// kernels/cuda/fused_attention.h: cuDNN's SDPA in bf16) against the CPU's attention,
// the oracle, within the bound tests/gpu/attention_bounds.h derives; that it takes
// GPT-2's shape on a GPU that can; that it repeats bit for bit; and that it declines
// what it should. The bound holds for any order of dQ's sums, so it holds too for the
// non-deterministic backward (CudaOptions::deterministic off), which takes GPT-2's
// shape with less workspace on Hopper.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/attention_bounds.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/stored_types.h"

namespace dtrain {
namespace {

using testing::DeviceArray;
using testing::gamma_n;
using testing::random_normal;
using testing::stored;
using testing::values;

using Shape = testing::AttentionShape;

// Head sizes 32, 64 and 128; one head and many; seq a multiple of 8 from 8 to 256.
const Shape kShapes[] = {{2, 64, 128, 2}, {1, 8, 64, 1}, {3, 72, 96, 3}, {2, 256, 256, 4}, {1, 128, 512, 4}};

const FusedAttention& fused_of(Context& ctx) { return dynamic_cast<CudaBackend&>(ctx.backend()).fused_attention(); }

// Skips unless fused attention can run here at all: a build with the cuDNN frontend
// and a GPU of compute capability 8.0 or more (cuDNN's SDPA needs Ampere or later).
class FusedAttentionTest : public testing::CudaAgainstCpuTest {
 protected:
  void SetUp() override {
    CudaAgainstCpuTest::SetUp();
    if (IsSkipped()) return;
    const std::string why = fused_of(gpu()).declined({1, 64, 128, 2}, DType::kBF16);
    if (why.find("no cuDNN frontend") != std::string::npos) GTEST_SKIP() << why;
    int major = 0;
    ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
    if (major < 8) GTEST_SKIP() << "cuDNN's fused attention needs compute capability 8.0 or more; this GPU has " << major;
  }
  // MatchesCpuWithinTheDerivedBound's cases on `ctx`.
  void expect_within_bound(Context& ctx);
};

TEST_F(FusedAttentionTest, TakesGpt2ShapesInBf16) {
  // GPT-2 124M's attention (12 heads of 64, T = 1024) at two micro-batches.
  for (const int64_t batch : {int64_t{1}, int64_t{16}}) {
    const FusedAttentionShape shape{batch, 1024, 768, 12};
    EXPECT_EQ(fused_of(gpu()).declined(shape, DType::kBF16), "") << "batch " << batch;
    EXPECT_EQ(ops::attention_saved_bytes(gpu(), batch, 1024, 768, 12, DType::kBF16),
              static_cast<size_t>(batch * 12 * 1024) * sizeof(float));
  }
}

TEST_F(FusedAttentionTest, DeclinesFp32OddShapesAndWhenOff) {
  const FusedAttention& fused = fused_of(gpu());
  EXPECT_NE(fused.declined({2, 64, 128, 2}, DType::kF32), "");
  EXPECT_NE(fused.declined({2, 64, 12, 3}, DType::kBF16), "");   // head size 4
  EXPECT_NE(fused.declined({2, 33, 128, 2}, DType::kBF16), "");  // seq not a multiple of 8
  EXPECT_NE(fused.declined({2, 64, 512, 2}, DType::kBF16), "");  // head size 256
  // Shapes it declines take dtrain's own fused kernels (test_flash_attention.cpp), which
  // keep the same statistic; with fused attention off, the probabilities are kept.
  EXPECT_EQ(ops::attention_saved_bytes(gpu(), 2, 64, 128, 2, DType::kF32), size_t{2 * 2 * 64 * 4});
  const auto unfused = testing::make_cuda_unfused_attention();
  EXPECT_NE(fused_of(*unfused).declined({2, 64, 128, 2}, DType::kBF16), "");
  EXPECT_EQ(ops::attention_saved_bytes(*unfused, 2, 64, 128, 2, DType::kBF16), size_t{2 * 2 * 64 * 64 * 2});
}

// Forward against the CPU's; backward against the CPU's backward on the CPU's
// probabilities, the fused one from its own forward (its saved statistics and output).
TEST_F(FusedAttentionTest, MatchesCpuWithinTheDerivedBound) {
  const auto nondeterministic = testing::make_cuda_nondeterministic();
  for (Context* ctx : {&gpu(), nondeterministic.get()}) {
    SCOPED_TRACE(ctx == &gpu() ? "deterministic backward" : "non-deterministic backward");
    expect_within_bound(*ctx);
  }
}

// On Hopper the deterministic backward reduces dQ through a B x H x T x T bf16 dP
// workspace (384 MiB here), the other through a B x H x T x head-size fp32 accumulator
// (48 MiB): a strictly smaller workspace shows that the switch reached the graph. Other
// architectures' engines differ, so there the sizes are only recorded.
TEST_F(FusedAttentionTest, NonDeterministicBackwardTakesGpt2ShapeWithLessWorkspaceOnHopper) {
  const auto nondeterministic = testing::make_cuda_nondeterministic();
  const FusedAttentionShape shape{16, 1024, 768, 12};
  ASSERT_EQ(fused_of(gpu()).declined(shape, DType::kBF16), "");
  ASSERT_EQ(fused_of(*nondeterministic).declined(shape, DType::kBF16), "");
  const size_t deterministic_bytes = fused_of(gpu()).workspace_bytes(shape);
  const size_t nondeterministic_bytes = fused_of(*nondeterministic).workspace_bytes(shape);
  RecordProperty("deterministic_workspace_bytes", std::to_string(deterministic_bytes));
  RecordProperty("nondeterministic_workspace_bytes", std::to_string(nondeterministic_bytes));
  int major = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
  if (major == 9) EXPECT_LT(nondeterministic_bytes, deterministic_bytes);
}

void FusedAttentionTest::expect_within_bound(Context& ctx) {
  Rng rng(21);
  for (const Shape& a : kShapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.batch << " T=" << a.seq << " C=" << a.channels << " H=" << a.heads);
    ASSERT_EQ(fused_of(ctx).declined({a.batch, a.seq, a.channels, a.heads}, DType::kBF16), "");
    const int64_t T = a.seq, n_qkv = a.batch * T * 3 * a.channels, n_out = a.batch * T * a.channels;
    const int64_t rows = a.batch * a.heads * T;
    const auto qkv = stored<bf16>(random_normal(rng, n_qkv));
    const auto dout = stored<bf16>(random_normal(rng, n_out));
    std::vector<bf16> out(static_cast<size_t>(n_out)), probs(static_cast<size_t>(rows * T));
    std::vector<bf16> dqkv(static_cast<size_t>(n_qkv));
    ops::attention_forward(cpu(), qkv.data(), out.data(), probs.data(), a.batch, T, a.channels, a.heads);
    ops::attention_backward(cpu(), dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), a.batch, T,
                            a.channels, a.heads);

    ASSERT_EQ(ops::attention_saved_bytes(ctx, a.batch, T, a.channels, a.heads, DType::kBF16),
              static_cast<size_t>(rows) * sizeof(float));
    DeviceArray<bf16> gqkv(ctx, qkv), gdout(ctx, dout), gout(ctx, testing::stored_nans<bf16>(n_out));
    DeviceArray<bf16> gdqkv(ctx, testing::stored_nans<bf16>(n_qkv));
    DeviceArray<float> gstats(ctx, testing::nans(rows));
    ops::attention_forward(ctx, gqkv.get(), gout.get(), TypedPtr(gstats.get(), DType::kBF16), a.batch, T,
                           a.channels, a.heads);
    ops::attention_backward(ctx, gdout.get(), gqkv.get(), gout.get(), ConstTypedPtr(gstats.get(), DType::kBF16),
                            gdqkv.get(), a.batch, T, a.channels, a.heads);
    const auto got_out = gout.to_host();
    const auto got_stats = gstats.to_host();
    const testing::Bounds bounds = testing::fused_attention_bounds(a, std::ldexp(1.0, -8), values(qkv), values(dout),
                                                                   values(probs), values(got_out));
    EXPECT_TRUE(testing::bf16_close(got_out, out, bounds.out));
    EXPECT_TRUE(testing::stats_close(got_stats, bounds));
    EXPECT_TRUE(testing::bf16_close(gdqkv.to_host(), dqkv, bounds.dqkv));
  }
}

// Note [Fused attention]: backward asks for cuDNN's deterministic algorithm.
TEST_F(FusedAttentionTest, RepeatsBitForBit) {
  const Shape a{4, 256, 256, 4};
  Rng rng(22);
  const int64_t T = a.seq, n_qkv = a.batch * T * 3 * a.channels, n_out = a.batch * T * a.channels;
  DeviceArray<bf16> qkv(gpu(), stored<bf16>(random_normal(rng, n_qkv)));
  DeviceArray<bf16> dout(gpu(), stored<bf16>(random_normal(rng, n_out)));
  std::vector<std::vector<bf16>> outs, grads;
  for (int run = 0; run < 3; ++run) {
    DeviceArray<bf16> out(gpu(), testing::stored_nans<bf16>(n_out)), dqkv(gpu(), testing::stored_nans<bf16>(n_qkv));
    DeviceArray<float> stats(gpu(), testing::nans(a.batch * a.heads * T));
    ops::attention_forward(gpu(), qkv.get(), out.get(), TypedPtr(stats.get(), DType::kBF16), a.batch, T, a.channels,
                           a.heads);
    ops::attention_backward(gpu(), dout.get(), qkv.get(), out.get(), ConstTypedPtr(stats.get(), DType::kBF16),
                            dqkv.get(), a.batch, T, a.channels, a.heads);
    outs.push_back(out.to_host());
    grads.push_back(dqkv.to_host());
  }
  for (int run = 1; run < 3; ++run) {
    EXPECT_EQ(std::memcmp(outs[run].data(), outs[0].data(), outs[0].size() * sizeof(bf16)), 0) << "run " << run;
    EXPECT_EQ(std::memcmp(grads[run].data(), grads[0].data(), grads[0].size() * sizeof(bf16)), 0) << "run " << run;
  }
}

}  // namespace
}  // namespace dtrain
