// dtrain's own fused causal attention (Note [Own fused attention],
// kernels/cuda/flash_attention.h) on a GPU: against the CPU's attention, the oracle,
// in fp32 and bf16, within the bound tests/gpu/attention_bounds.h derives (CI runs the
// same kernels under the SIMT emulator against the same bound); that the CUDA backend
// takes it for the shapes cuDNN declines, keeping the statistic instead of the
// probabilities; and that it repeats bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
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

using testing::AttentionShape;
using testing::DeviceArray;
using testing::random_normal;
using testing::stored;
using testing::values;

CudaBackend& backend_of(Context& ctx) { return dynamic_cast<CudaBackend&>(ctx.backend()); }

// The shapes of the emulated test and larger ones: head sizes 15 to 160, seq lengths
// that end inside a tile, many tiles, many heads.
const AttentionShape kShapes[] = {{1, 37, 30, 2},  {2, 20, 80, 2},   {1, 33, 96, 1},   {1, 18, 320, 2},
                                  {1, 130, 64, 2}, {2, 256, 256, 4}, {3, 200, 384, 6}, {1, 512, 768, 12}};

template <class T>
class FlashAttentionGpu : public testing::CudaAgainstCpuTest {};
TYPED_TEST_SUITE(FlashAttentionGpu, testing::StoredTypes, testing::StoredTypeNames);

// Forward against the CPU's; backward against the CPU's backward on the CPU's
// probabilities, the kernels' from their own forward (statistic and output). Called on
// FlashAttention directly, so that bf16 shapes cuDNN would take run here too.
TYPED_TEST(FlashAttentionGpu, MatchesCpuWithinTheDerivedBound) {
  using T = TypeParam;
  const DType type = testing::dtype_of<T>;
  const double u = std::is_same_v<T, float> ? std::ldexp(1.0, -24) : std::ldexp(1.0, -8);
  Context& gpu = this->gpu();
  const FlashAttention& flash = backend_of(gpu).flash_attention();
  Rng rng(41);
  for (const AttentionShape& a : kShapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.batch << " T=" << a.seq << " C=" << a.channels << " H=" << a.heads);
    const FusedAttentionShape shape{a.batch, a.seq, a.channels, a.heads};
    ASSERT_EQ(flash.declined(shape), "");
    const int64_t T_ = a.seq, n_qkv = a.batch * T_ * 3 * a.channels, n_out = a.batch * T_ * a.channels;
    const int64_t rows = a.batch * a.heads * T_;
    const auto qkv = stored<T>(random_normal(rng, n_qkv));
    const auto dout = stored<T>(random_normal(rng, n_out));
    std::vector<T> out(static_cast<size_t>(n_out)), probs(static_cast<size_t>(rows * T_));
    std::vector<T> dqkv(static_cast<size_t>(n_qkv));
    ops::attention_forward(this->cpu(), qkv.data(), out.data(), probs.data(), a.batch, T_, a.channels, a.heads);
    ops::attention_backward(this->cpu(), dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), a.batch,
                            T_, a.channels, a.heads);

    DeviceArray<T> gqkv(gpu, qkv), gdout(gpu, dout), gout(gpu, testing::stored_nans<T>(n_out));
    DeviceArray<T> gdqkv(gpu, testing::stored_nans<T>(n_qkv));
    DeviceArray<float> gstats(gpu, testing::nans(rows)), workspace(gpu, testing::nans(rows));
    const cudaStream_t stream = backend_of(gpu).stream();
    flash.forward(stream, type, shape, gqkv.get(), gout.get(), gstats.get());
    flash.backward(stream, type, shape, gqkv.get(), gout.get(), gdout.get(), gstats.get(), gdqkv.get(),
                   workspace.get());
    const auto got_out = gout.to_host();
    const auto got_stats = gstats.to_host();
    const testing::Bounds bounds =
        testing::fused_attention_bounds(a, u, values(qkv), values(dout), values(probs), values(got_out));
    EXPECT_TRUE(testing::fused_close(got_out, out, bounds.out));
    EXPECT_TRUE(testing::stats_close(got_stats, bounds));
    EXPECT_TRUE(testing::fused_close(gdqkv.to_host(), dqkv, bounds.dqkv));
  }
}

// Through the ops: what cuDNN declines (fp32; bf16 head sizes 15 and 160, seq 33) runs
// here and keeps each row's statistic; with fused attention off, the probabilities.
TYPED_TEST(FlashAttentionGpu, TakesWhatCudnnDeclines) {
  using T = TypeParam;
  const DType type = testing::dtype_of<T>;
  Context& gpu = this->gpu();
  const auto unfused = testing::make_cuda_unfused_attention();
  const AttentionShape declined_bf16[] = {{1, 37, 30, 2}, {1, 18, 320, 2}, {2, 33, 128, 2}};
  const AttentionShape any[] = {{2, 64, 128, 2}};
  for (const AttentionShape& a : std::is_same_v<T, float> ? std::vector<AttentionShape>(std::begin(any), std::end(any))
                                                          : std::vector<AttentionShape>(std::begin(declined_bf16),
                                                                                        std::end(declined_bf16))) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.batch << " T=" << a.seq << " C=" << a.channels << " H=" << a.heads);
    const FusedAttentionShape shape{a.batch, a.seq, a.channels, a.heads};
    EXPECT_NE(backend_of(gpu).fused_attention().declined(shape, type), "");
    EXPECT_EQ(backend_of(gpu).flash_attention().declined(shape), "");
    EXPECT_EQ(ops::attention_saved_bytes(gpu, a.batch, a.seq, a.channels, a.heads, type),
              static_cast<size_t>(a.batch * a.heads * a.seq) * sizeof(float));
    EXPECT_EQ(ops::attention_workspace_bytes(gpu, a.batch, a.seq, a.channels, a.heads, type),
              static_cast<size_t>(a.batch * a.heads * a.seq) * sizeof(float));
    EXPECT_NE(backend_of(*unfused).flash_attention().declined(shape), "");
    EXPECT_EQ(ops::attention_saved_bytes(*unfused, a.batch, a.seq, a.channels, a.heads, type),
              static_cast<size_t>(a.batch * a.heads * a.seq * a.seq) * sizeof(T));
  }
  // Over 256, no lane share fits: unfused.
  EXPECT_NE(backend_of(gpu).flash_attention().declined({1, 16, 520, 2}), "");
}

// No atomics, a fixed order of every sum: the same bits every run, as recompute needs.
TYPED_TEST(FlashAttentionGpu, RepeatsBitForBit) {
  using T = TypeParam;
  const DType type = testing::dtype_of<T>;
  Context& gpu = this->gpu();
  const FlashAttention& flash = backend_of(gpu).flash_attention();
  const FusedAttentionShape shape{4, 300, 256, 4};
  Rng rng(42);
  const int64_t n_qkv = shape.batch * shape.seq * 3 * shape.channels, n_out = shape.batch * shape.seq * shape.channels;
  const int64_t rows = shape.batch * shape.heads * shape.seq;
  DeviceArray<T> qkv(gpu, stored<T>(random_normal(rng, n_qkv))), dout(gpu, stored<T>(random_normal(rng, n_out)));
  std::vector<std::vector<T>> outs, grads;
  for (int run = 0; run < 3; ++run) {
    DeviceArray<T> out(gpu, testing::stored_nans<T>(n_out)), dqkv(gpu, testing::stored_nans<T>(n_qkv));
    DeviceArray<float> stats(gpu, testing::nans(rows)), workspace(gpu, testing::nans(rows));
    const cudaStream_t stream = backend_of(gpu).stream();
    flash.forward(stream, type, shape, qkv.get(), out.get(), stats.get());
    flash.backward(stream, type, shape, qkv.get(), out.get(), dout.get(), stats.get(), dqkv.get(), workspace.get());
    outs.push_back(out.to_host());
    grads.push_back(dqkv.to_host());
  }
  for (int run = 1; run < 3; ++run) {
    EXPECT_EQ(std::memcmp(outs[run].data(), outs[0].data(), outs[0].size() * sizeof(T)), 0) << "run " << run;
    EXPECT_EQ(std::memcmp(grads[run].data(), grads[0].data(), grads[0].size() * sizeof(T)), 0) << "run " << run;
  }
}

}  // namespace
}  // namespace dtrain
