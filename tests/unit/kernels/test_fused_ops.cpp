// The fused ops of kernels/ops.h against the chains of unfused CPU ops they replace,
// in fp32 and in bf16 (Note [bf16 storage]), on the CPU and on cpu-async (which must
// give the CPU's bits, taking only the workspace it declared).
//   add_layernorm_forward   bit for bit add() then layernorm_forward() (Note [Fused
//                           residual LayerNorm]), also with the sum written over a or b.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu_async/cpu_async_backend.h"
#include "kernels/dtype.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

// Random values stored as T (bf16: rounded), with the given spread and offset.
template <class T>
std::vector<T> random_values(Rng& rng, int64_t n, double scale = 1.0, double shift = 0.0) {
  std::vector<T> v(static_cast<size_t>(n));
  for (T& x : v) {
    const auto f = static_cast<float>(shift + scale * rng.normal());
    if constexpr (std::is_same_v<T, float>) {
      x = f;
    } else {
      x = float_to_bf16(f);
    }
  }
  return v;
}

// Equal bytes: for fp32 and bf16 alike, the same bit patterns.
template <class T>
::testing::AssertionResult same_bits(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes " << got.size() << ", " << want.size();
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure() << "element " << i << " of " << got.size() << " differs";
    }
  }
  return ::testing::AssertionSuccess();
}

template <class T>
std::vector<T> nan_filled(int64_t n) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if constexpr (std::is_same_v<T, float>) {
    return std::vector<T>(static_cast<size_t>(n), nan);
  } else {
    return std::vector<T>(static_cast<size_t>(n), float_to_bf16(nan));
  }
}

template <class T>
class FusedOpsIn : public ::testing::Test {};
struct TypeNames {
  template <class T>
  static std::string GetName(int) {
    return std::is_same_v<T, float> ? "fp32" : "bf16";
  }
};
using StoredTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(FusedOpsIn, StoredTypes, TypeNames);

struct RowsCase {
  int64_t rows, channels;
};
// Widths below and above a simd vector, odd ones, and GPT-2's 768 over enough rows
// for the OpenMP team to split them.
const RowsCase kRowsCases[] = {{1, 1}, {5, 7}, {37, 48}, {301, 130}, {64, 768}};

// ------------------------------------------------------- add_layernorm_forward

TYPED_TEST(FusedOpsIn, AddLayerNormIsTheAddThenLayerNormChainBitForBit) {
  using T = TypeParam;
  auto ctx = Context::make_cpu(2);
  Rng rng(31);
  for (const RowsCase& c : kRowsCases) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels);
    const int64_t n = c.rows * c.channels;
    // A residual stream far from 0 and a branch of another scale, so that the bf16 sum
    // rounds (and a LayerNorm of the unrounded sum would differ).
    const auto a = random_values<T>(rng, n, 0.3), b = random_values<T>(rng, n, 2.0, 3.0);
    const auto w = random_values<T>(rng, c.channels, 0.5, 1.0), bias = random_values<T>(rng, c.channels, 0.5);

    std::vector<T> res_ref(static_cast<size_t>(n)), y_ref(res_ref.size());
    std::vector<float> mean_ref(static_cast<size_t>(c.rows)), rstd_ref(mean_ref.size());
    ops::add(*ctx, a.data(), b.data(), res_ref.data(), n);
    ops::layernorm_forward(*ctx, res_ref.data(), w.data(), bias.data(), y_ref.data(), mean_ref.data(),
                           rstd_ref.data(), c.rows, c.channels);

    auto res = nan_filled<T>(n), y = nan_filled<T>(n);
    std::vector<float> mean(mean_ref.size(), -1.0f), rstd(mean_ref.size(), -1.0f);
    ops::add_layernorm_forward(*ctx, a.data(), b.data(), res.data(), w.data(), bias.data(), y.data(), mean.data(),
                               rstd.data(), c.rows, c.channels);
    EXPECT_TRUE(same_bits(res, res_ref));
    EXPECT_TRUE(same_bits(y, y_ref));
    EXPECT_TRUE(same_bits(mean, mean_ref));
    EXPECT_TRUE(same_bits(rstd, rstd_ref));

    // The GPT writes the sum over the branch (a) or the residual (b).
    for (const bool over_a : {true, false}) {
      SCOPED_TRACE(over_a ? "sum over a" : "sum over b");
      std::vector<T> a2 = a, b2 = b, y2 = nan_filled<T>(n);
      T* out = over_a ? a2.data() : b2.data();
      ops::add_layernorm_forward(*ctx, a2.data(), b2.data(), out, w.data(), bias.data(), y2.data(), mean.data(),
                                 rstd.data(), c.rows, c.channels);
      EXPECT_TRUE(same_bits(over_a ? a2 : b2, res_ref));
      EXPECT_TRUE(same_bits(y2, y_ref));
    }
  }
}

TYPED_TEST(FusedOpsIn, AddLayerNormGivesTheSameBitsOnOneAndThreeThreads) {
  using T = TypeParam;
  const int64_t rows = 203, C = 320, n = rows * C;  // above the team threshold
  Rng rng(32);
  const auto a = random_values<T>(rng, n), b = random_values<T>(rng, n, 1.5, -1.0);
  const auto w = random_values<T>(rng, C), bias = random_values<T>(rng, C);
  auto run = [&](int threads) {
    auto ctx = Context::make_cpu(threads);
    std::vector<T> res(static_cast<size_t>(n)), y(res.size());
    std::vector<float> stats(2 * static_cast<size_t>(rows));
    ops::add_layernorm_forward(*ctx, a.data(), b.data(), res.data(), w.data(), bias.data(), y.data(), stats.data(),
                               stats.data() + rows, rows, C);
    return std::make_tuple(res, y, stats);
  };
  const auto [res1, y1, s1] = run(1);
  const auto [res3, y3, s3] = run(3);
  EXPECT_TRUE(same_bits(res1, res3));
  EXPECT_TRUE(same_bits(y1, y3));
  EXPECT_TRUE(same_bits(s1, s3));
}

template <class T>
Buffer upload(Context& ctx, const std::vector<T>& values) {
  Buffer buf(ctx.allocator(), values.size() * sizeof(T), MemoryCategory::Other);
  ops::copy_from_host(ctx, buf.data(), values.data(), values.size() * sizeof(T));
  return buf;
}

template <class T>
std::vector<T> download(Context& ctx, const Buffer& buf) {
  std::vector<T> out(buf.bytes() / sizeof(T));
  ops::copy_to_host(ctx, out.data(), buf.data(), buf.bytes());
  return out;
}

// Queued while the device is held, so nothing runs before the last op is queued.
TYPED_TEST(FusedOpsIn, CpuAsyncAddLayerNormGivesTheCpuBackendsBits) {
  using T = TypeParam;
  const int64_t rows = 96, C = 72, n = rows * C;
  Rng rng(33);
  const auto a = random_values<T>(rng, n), b = random_values<T>(rng, n, 2.0, 1.0);
  const auto w = random_values<T>(rng, C), bias = random_values<T>(rng, C);
  auto run = [&](Context& ctx, bool hold_device) {
    Buffer ga = upload(ctx, a), gb = upload(ctx, b), gw = upload(ctx, w), gbias = upload(ctx, bias);
    Buffer gy = upload(ctx, nan_filled<T>(n)), gstats = upload(ctx, std::vector<float>(2 * rows, -1.0f));
    {
      std::unique_ptr<CpuAsyncHold> hold = hold_device ? std::make_unique<CpuAsyncHold>(ctx) : nullptr;
      // The sum over a, as the GPT writes it over the branch's output.
      ops::add_layernorm_forward(ctx, ga.as<T>(), gb.as<T>(), ga.as<T>(), gw.as<T>(), gbias.as<T>(), gy.as<T>(),
                                 gstats.as<float>(), gstats.as<float>() + rows, rows, C);
    }
    return std::make_tuple(download<T>(ctx, ga), download<T>(ctx, gy), download<float>(ctx, gstats));
  };
  auto cpu = Context::make_cpu(2);
  auto async = Context::make_cpu_async(2);
  const auto [res_c, y_c, s_c] = run(*cpu, false);
  const auto [res_a, y_a, s_a] = run(*async, true);
  EXPECT_TRUE(same_bits(res_a, res_c));
  EXPECT_TRUE(same_bits(y_a, y_c));
  EXPECT_TRUE(same_bits(s_a, s_c));
}

}  // namespace
}  // namespace dtrain
