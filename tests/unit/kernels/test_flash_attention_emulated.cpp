// dtrain's own fused attention kernels (Note [Own fused attention],
// kernels/cuda/flash_attention.h), the very source the GPU runs, executed on the CPU
// by the SIMT emulator (simt_emulator.h), against the CPU's unfused attention, the
// oracle, in fp32 and bf16, within the bound of tests/gpu/attention_bounds.h. The
// shapes are the ones cuDNN declines: head sizes that are odd or over 128, and seq
// lengths that end inside a tile. On a GPU, tests/gpu/test_flash_attention.cpp runs
// the same checks through the CUDA backend.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/attention_bounds.h"
#include "tests/gpu/stored_types.h"
// Last: it defines the CUDA names (threadIdx, __global__, ...) as macros.
#include "tests/unit/kernels/simt_emulator.h"
#include "tests/unit/kernels/simt_storage.h"

// The kernels' dynamic shared memory (flash_attention.cu has the device's).
namespace dtrain::cuda::flash {
inline float* block_shared() { return simt::block_shared_memory(); }
}  // namespace dtrain::cuda::flash

#include "kernels/cuda/flash_attention_kernels.cuh"

namespace dtrain {
namespace {

using testing::AttentionShape;
using testing::random_normal;
using testing::stored;
using testing::values;
namespace flash = cuda::flash;

// Past each output's end: elements the kernels must not touch.
constexpr int64_t kGuard = 64;

// The host half of kernels/cuda/flash_attention.cu, launching on the emulator.
template <class T>
void emulated_forward(const AttentionShape& a, const T* qkv, T* out, float* stats) {
  const int64_t hs = a.channels / a.heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const simt::Dim3 grid{flash::grid_rows(a.seq), static_cast<unsigned>(a.batch * a.heads), 1};
  flash::head_dispatch(hs, [&](auto dpl) {
    simt::launch(grid, {flash::kThreads, 1, 1}, flash::forward_shared_bytes(hs), flash::forward<T, decltype(dpl)::value>,
                 qkv, out, stats, static_cast<int>(a.seq), static_cast<int>(a.channels), static_cast<int>(a.heads),
                 scale);
  });
}

template <class T>
void emulated_backward(const AttentionShape& a, const T* qkv, const T* out, const T* dout, const float* stats,
                       T* dqkv) {
  const int64_t hs = a.channels / a.heads, rows = a.batch * a.heads * a.seq;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const auto seq = static_cast<int>(a.seq), channels = static_cast<int>(a.channels), heads = static_cast<int>(a.heads);
  std::vector<float> d_rows(static_cast<size_t>(rows), std::nanf(""));
  simt::launch({flash::row_dot_blocks(rows), 1, 1}, {flash::kThreads, 1, 1}, 0, flash::row_dot<T>, dout, out,
               d_rows.data(), rows, seq, channels, heads);
  const simt::Dim3 grid{flash::grid_rows(a.seq), static_cast<unsigned>(a.batch * a.heads), 1};
  flash::head_dispatch(hs, [&](auto dpl) {
    constexpr int kDpl = decltype(dpl)::value;
    const size_t shared = flash::backward_shared_bytes(hs);
    simt::launch(grid, {flash::kThreads, 1, 1}, shared, flash::backward_dq<T, kDpl>, qkv, dout,
                 static_cast<const float*>(stats), static_cast<const float*>(d_rows.data()), dqkv, seq, channels,
                 heads, scale);
    simt::launch(grid, {flash::kThreads, 1, 1}, shared, flash::backward_dkv<T, kDpl>, qkv, dout,
                 static_cast<const float*>(stats), static_cast<const float*>(d_rows.data()), dqkv, seq, channels,
                 heads, scale);
  });
}

// How many of v's last kGuard elements are no longer NaN (written past the end).
template <class T>
int64_t guard_overwrites(const std::vector<T>& v) {
  int64_t n = 0;
  for (size_t i = v.size() - kGuard; i < v.size(); ++i) n += !std::isnan(values(std::vector<T>{v[i]})[0]);
  return n;
}

template <class T>
std::vector<T> head_of(const std::vector<T>& v, int64_t n) {
  return std::vector<T>(v.begin(), v.begin() + n);
}

template <class T>
class FlashAttentionEmulated : public ::testing::Test {};
using StoredTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(FlashAttentionEmulated, StoredTypes, testing::StoredTypeNames);

// Forward and backward against the CPU's forward and its backward on its own
// probabilities; the kernels' backward from their own forward (statistic and output).
TYPED_TEST(FlashAttentionEmulated, MatchesCpuWithinTheDerivedBound) {
  using T = TypeParam;
  const double u = std::is_same_v<T, float> ? std::ldexp(1.0, -24) : std::ldexp(1.0, -8);
  // Head sizes 15 (odd, one lane share), 40 (two), 96 (four), 160 (eight, over cuDNN's
  // 128), 32; seq 37 and 33 end just inside a second tile of 32, 20 inside the first,
  // and 130 runs through five tiles, where the online softmax's running max grows.
  const AttentionShape shapes[] = {{1, 37, 30, 2}, {2, 20, 80, 2}, {1, 33, 96, 1}, {1, 18, 320, 2}, {1, 130, 64, 2}};
  auto cpu = Context::make_cpu(1);
  Rng rng(31);
  for (const AttentionShape& a : shapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.batch << " T=" << a.seq << " C=" << a.channels << " H=" << a.heads);
    const int64_t T_ = a.seq, n_qkv = a.batch * T_ * 3 * a.channels, n_out = a.batch * T_ * a.channels;
    const int64_t rows = a.batch * a.heads * T_;
    const auto qkv = stored<T>(random_normal(rng, n_qkv));
    const auto dout = stored<T>(random_normal(rng, n_out));
    std::vector<T> out(static_cast<size_t>(n_out)), probs(static_cast<size_t>(rows * T_));
    std::vector<T> dqkv(static_cast<size_t>(n_qkv));
    ops::attention_forward(*cpu, qkv.data(), out.data(), probs.data(), a.batch, T_, a.channels, a.heads);
    ops::attention_backward(*cpu, dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), a.batch, T_,
                            a.channels, a.heads);

    auto got_out = testing::stored_nans<T>(n_out + kGuard);
    auto got_dqkv = testing::stored_nans<T>(n_qkv + kGuard);
    auto stats = testing::nans(rows + kGuard);
    emulated_forward(a, qkv.data(), got_out.data(), stats.data());
    emulated_backward(a, qkv.data(), got_out.data(), dout.data(), stats.data(), got_dqkv.data());
    EXPECT_EQ(guard_overwrites(got_out), 0);
    EXPECT_EQ(guard_overwrites(got_dqkv), 0);
    EXPECT_EQ(guard_overwrites(stats), 0);
    got_out.resize(static_cast<size_t>(n_out));
    got_dqkv.resize(static_cast<size_t>(n_qkv));

    const testing::Bounds bounds =
        testing::fused_attention_bounds(a, u, values(qkv), values(dout), values(probs), values(got_out));
    EXPECT_TRUE(testing::fused_close(got_out, out, bounds.out));
    EXPECT_TRUE(testing::stats_close(stats, bounds));
    EXPECT_TRUE(testing::fused_close(got_dqkv, dqkv, bounds.dqkv));
  }
}

// The bound has room: a kernel that got the causal mask off by one (row i also seeing
// key i + 1) must fail it. This is the check on the check: shift the keys of the CPU's
// inputs by one row and the kernels' output leaves the bound.
TEST(FlashAttentionEmulatedBound, RejectsAnOutputOffByOneKey) {
  const AttentionShape a{1, 37, 30, 2};
  auto cpu = Context::make_cpu(1);
  Rng rng(32);
  const int64_t n_qkv = a.batch * a.seq * 3 * a.channels, n_out = a.batch * a.seq * a.channels;
  const auto qkv = random_normal(rng, n_qkv);
  auto shifted = qkv;  // keys and values of row t + 1 at row t
  for (int64_t t = 0; t + 1 < a.seq; ++t) {
    for (int64_t c = a.channels; c < 3 * a.channels; ++c) shifted[t * 3 * a.channels + c] = qkv[(t + 1) * 3 * a.channels + c];
  }
  std::vector<float> out(static_cast<size_t>(n_out)), probs(static_cast<size_t>(a.heads * a.seq * a.seq));
  ops::attention_forward(*cpu, qkv.data(), out.data(), probs.data(), a.batch, a.seq, a.channels, a.heads);
  std::vector<float> got(static_cast<size_t>(n_out)), stats(static_cast<size_t>(a.heads * a.seq));
  emulated_forward(a, shifted.data(), got.data(), stats.data());
  const auto dout = random_normal(rng, n_out);
  const testing::Bounds bounds = testing::fused_attention_bounds(a, std::ldexp(1.0, -24), qkv, dout, probs, got);
  EXPECT_FALSE(testing::fused_close(got, out, bounds.out));
}

// The emulator itself: a block whose threads do not all reach a __syncthreads fails
// the launch (on a GPU: undefined, a hang or garbage), and so does a warp whose lanes
// do not all reach a shuffle.
void skips_a_barrier(int* hits) {
  if (threadIdx.x != 5) __syncthreads();
  ++*hits;
}
void skips_a_shuffle(float* sums) {
  float v = 1.0f;
  if (threadIdx.x % 32 != 3) v = flash::warp_sum(v);
  sums[threadIdx.x] = v;
}
void sums_a_warp(float* sums) { sums[threadIdx.x] = flash::warp_sum(static_cast<float>(threadIdx.x)); }

TEST(SimtEmulator, FailsABarrierOrShuffleThatNotAllReach) {
  int hits = 0;
  std::vector<float> sums(64);
  EXPECT_THROW(simt::launch({1, 1, 1}, {64, 1, 1}, 0, skips_a_barrier, &hits), std::runtime_error);
  EXPECT_THROW(simt::launch({1, 1, 1}, {64, 1, 1}, 0, skips_a_shuffle, sums.data()), std::runtime_error);
  simt::launch({1, 1, 1}, {64, 1, 1}, 0, sums_a_warp, sums.data());
  for (int t = 0; t < 64; ++t) {
    const int first = t / 32 * 32;
    EXPECT_EQ(sums[t], static_cast<float>(32 * first + 31 * 32 / 2)) << "thread " << t;
  }
}

}  // namespace
}  // namespace dtrain
