// The GELU runs of kernels/cpu/gelu_rows.h, compiled for the widest vectors the CPU has
// (Note [Arithmetic clones]), against the same formulas evaluated one element at a time
// in this file, compiled for the baseline ISA (SSE2: no fused multiply-add to contract
// into): equal bits, in fp32 and bf16, for every run length around the vector widths
// (the clones' tails) and for inputs across GELU's range (large, tiny, signed zeros,
// infinities and NaN). On a CPU with AVX-512 (the suite's machines) the AVX-512 clone is
// the one tested; a contracted a * b + c in it shows here as a differing bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/gelu.h"
#include "kernels/cpu/gelu_rows.h"
#include "kernels/cpu/storage.h"
#include "kernels/dtype.h"
#include "kernels/rng.h"

namespace dtrain::cpu {
namespace {

// gelu_tanh'(v) as gelu_rows.cpp states it, one element at a time.
float slope(float v) {
  const float u = kSqrt2OverPi * (v + kGeluCubic * v * v * v);
  const float t = simd_tanh(u);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluCubic * v * v);
  return 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
}

// Values across GELU's range: normal at several scales, and the special cases.
std::vector<float> inputs(Rng& rng, int64_t n) {
  const float specials[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 3.0f, -3.0f, 12.0f, -12.0f, 100.0f, -100.0f,
                            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()};
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double scale = (i % 3 == 0) ? 0.1 : (i % 3 == 1) ? 1.0 : 6.0;
    v[static_cast<size_t>(i)] =
        (i % 17 == 5) ? specials[(i / 17) % std::size(specials)] : static_cast<float>(scale * rng.normal());
  }
  return v;
}

template <class T>
std::vector<T> stored(const std::vector<float>& v) {
  std::vector<T> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = narrow<T>(v[i]);
  return out;
}

template <class T>
::testing::AssertionResult same_bits(const std::vector<T>& got, const std::vector<T>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(T)) != 0) {
      return ::testing::AssertionFailure() << "element " << i << " of " << want.size() << ": " << widen(got[i])
                                           << " against " << widen(want[i]);
    }
  }
  return ::testing::AssertionSuccess();
}

// Lengths below, at and around 4, 8 and 16 floats, and long runs.
const int64_t kLengths[] = {1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 100, 4099};

template <class T>
class GeluRuns : public ::testing::Test {};
using StorageTypes = ::testing::Types<float, bf16>;
TYPED_TEST_SUITE(GeluRuns, StorageTypes);

TYPED_TEST(GeluRuns, ForwardBackwardAndEpiloguesAreTheScalarFormulasBitForBit) {
  using T = TypeParam;
  Rng rng(41);
  for (const int64_t n : kLengths) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    const std::vector<T> x = stored<T>(inputs(rng, n));
    const std::vector<T> dy = stored<T>(inputs(rng, n));
    const std::vector<float> product = inputs(rng, n);
    const std::vector<T> bias = stored<T>(inputs(rng, n));
    std::vector<T> y(x.size()), dx(x.size()), pre(x.size()), want(x.size()), want_pre(x.size());

    gelu_forward_run(x.data(), y.data(), n);
    for (size_t i = 0; i < x.size(); ++i) want[i] = narrow<T>(gelu_tanh(widen(x[i])));
    EXPECT_TRUE(same_bits(y, want)) << "forward";

    gelu_backward_run(x.data(), dy.data(), dx.data(), n);
    for (size_t i = 0; i < x.size(); ++i) want[i] = narrow<T>(slope(widen(x[i])) * widen(dy[i]));
    EXPECT_TRUE(same_bits(dx, want)) << "backward";

    bias_epilogue_run(product.data(), bias.data(), y.data(), n);
    for (size_t i = 0; i < x.size(); ++i) want[i] = narrow<T>(product[i] + widen(bias[i]));
    EXPECT_TRUE(same_bits(y, want)) << "bias epilogue";

    bias_gelu_epilogue_run(product.data(), bias.data(), pre.data(), y.data(), n);
    for (size_t i = 0; i < x.size(); ++i) {
      const float v = product[i] + widen(bias[i]);
      want_pre[i] = narrow<T>(v);
      want[i] = narrow<T>(gelu_tanh(v));
    }
    EXPECT_TRUE(same_bits(pre, want_pre)) << "bias + GELU epilogue, pre";
    EXPECT_TRUE(same_bits(y, want)) << "bias + GELU epilogue, y";
  }
}

// In place, as the ops use them: GELU over its input, and the fp32 linear's epilogue
// over the product it stored in pre (or y).
TEST(GeluRuns, InPlaceRunsGiveTheBitsOfSeparateBuffers) {
  Rng rng(42);
  const int64_t n = 1000;
  const std::vector<float> x = inputs(rng, n), bias = inputs(rng, n);
  std::vector<float> apart(x.size()), in_place = x;
  gelu_forward_run(x.data(), apart.data(), n);
  gelu_forward_run(in_place.data(), in_place.data(), n);
  EXPECT_TRUE(same_bits(in_place, apart));
  std::vector<float> pre(x.size()), y(x.size()), over = x, y_over(x.size());
  bias_gelu_epilogue_run(x.data(), bias.data(), pre.data(), y.data(), n);
  bias_gelu_epilogue_run(over.data(), bias.data(), over.data(), y_over.data(), n);
  EXPECT_TRUE(same_bits(over, pre));
  EXPECT_TRUE(same_bits(y_over, y));
}

}  // namespace
}  // namespace dtrain::cpu
