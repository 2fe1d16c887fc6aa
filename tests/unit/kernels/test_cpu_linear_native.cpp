// The bf16 linear forward on the native GEMM (Note [Native linear forward] in
// kernels/cpu/gemm_native.cpp) against the emulated linear, the oracle (gemm.cpp's
// linear_forward, itself the fp32 chain's bits on widened inputs).
//
// The bound, element by element. Both compute v = sum_p x_ip w_jp + bias_j in fp32 from
// the same exact products, in different orders; as test_cpu_gemm_native.cpp derives,
// the two fp32 products differ by at most (2k + 4) u S, S = sum_p |x_ip w_jp|, u = 2^-24
// (the bias adds one rounding on each side, which the 4 u S there already covers, as
// there is no alpha or beta here). pre = round(v): two values within d round to values
// within d + one bf16 ulp of the larger, at most 2^-7 of it. y = round(gelu_tanh(v)):
// gelu_tanh's slope lies in [-0.13, 1.13], so the fp32 GELUs are within 1.13 d (their
// own few-ulp evaluation error is the same function on both sides), then one rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gemm_native.h"
#include "kernels/dtype.h"
#include "kernels/errors.h"
#include "kernels/memory.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

#define SKIP_WITHOUT_NATIVE_BF16()                                                              \
  if (!cpu::cpu_has_native_bf16()) {                                                            \
    GTEST_SKIP() << "this CPU has no AVX512-BF16 or AMX: the native bf16 GEMM is not used here"; \
  }

std::vector<bf16> random_bf16(Rng& rng, int64_t n, double scale = 1.0) {
  std::vector<bf16> v(static_cast<size_t>(n));
  for (bf16& x : v) x = float_to_bf16(static_cast<float>(scale * rng.normal()));
  return v;
}

std::vector<bf16> rounded(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

::testing::AssertionResult same_bits(const std::vector<bf16>& got, const std::vector<bf16>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (std::memcmp(&got[i], &want[i], sizeof(bf16)) != 0) {
      return ::testing::AssertionFailure() << "element " << i << " of " << want.size() << " differs: "
                                           << bf16_to_float(got[i]) << " against " << bf16_to_float(want[i]);
    }
  }
  return ::testing::AssertionSuccess();
}

struct Linear {
  int64_t rows, in, out;
};
// Odd sizes, several slabs, and the GPT's of bench/gpt_shakespeare.yaml (12 x 64 rows,
// width 128: the attention's qkv and projection, the MLP's two linears, the head).
const Linear kShapes[] = {{1, 1, 1},     {7, 5, 3},       {33, 65, 17},    {768, 128, 384},
                          {768, 128, 128}, {768, 128, 512}, {768, 512, 128}, {100, 48, 700}};

struct Inputs {
  std::vector<bf16> x, w, bias;
};
Inputs inputs(Rng& rng, const Linear& s) {
  return {random_bf16(rng, s.rows * s.in), random_bf16(rng, s.out * s.in, 1.0 / std::sqrt(double(s.in))),
          random_bf16(rng, s.out, 0.5)};
}

struct Outputs {
  std::vector<bf16> pre, y;
};
Outputs nan_outputs(const Linear& s) {
  const bf16 nan = float_to_bf16(std::numeric_limits<float>::quiet_NaN());
  return {std::vector<bf16>(static_cast<size_t>(s.rows * s.out), nan),
          std::vector<bf16>(static_cast<size_t>(s.rows * s.out), nan)};
}

Outputs native(Context& ctx, cpu::GemmPlanCache& plans, const Inputs& in, const Linear& s, LinearEpilogue e,
               size_t budget = cpu::kGemmWorkspaceBudget) {
  Outputs o = nan_outputs(s);
  const bool gelu = e == LinearEpilogue::kBiasGelu;
  cpu::linear_forward_native(ctx, plans, in.x.data(), in.w.data(), in.bias.data(),
                             gelu ? TypedPtr(o.pre.data()) : TypedPtr(), o.y.data(), s.rows, s.in, s.out, e,
                             budget);
  return o;
}

// The bound of the file comment on v, element (i, j).
double product_bound(const Inputs& in, const Linear& s, int64_t i, int64_t j) {
  double sum = 0.0;
  for (int64_t p = 0; p < s.in; ++p) {
    sum += std::fabs(double(bf16_to_float(in.x[i * s.in + p])) * bf16_to_float(in.w[j * s.in + p]));
  }
  return (2.0 * double(s.in) + 4.0) * std::ldexp(1.0, -24) * sum;
}

// got within the file comment's bound of want, per element: slope * d plus a bf16 ulp.
void expect_close(const std::vector<bf16>& got, const std::vector<bf16>& want, const Inputs& in, const Linear& s,
                  double slope, const char* what) {
  int64_t failures = 0;
  for (int64_t i = 0; i < s.rows; ++i) {
    for (int64_t j = 0; j < s.out; ++j) {
      const size_t at = static_cast<size_t>(i * s.out + j);
      const double g = bf16_to_float(got[at]), w = bf16_to_float(want[at]);
      const double tol = slope * product_bound(in, s, i, j) + std::ldexp(std::max(std::fabs(g), std::fabs(w)), -7);
      if (!(std::fabs(g - w) <= tol) && ++failures <= 3) {
        ADD_FAILURE() << what << "(" << i << ", " << j << ") = " << g << ", the oracle's " << w << ", bound " << tol;
      }
    }
  }
  EXPECT_EQ(failures, 0) << what;
}

TEST(CpuLinearNative, IsWithinTheSumOrderBoundOfTheEmulatedLinear) {
  SKIP_WITHOUT_NATIVE_BF16();
  Rng rng(21);
  auto ctx = Context::make_cpu(2);
  cpu::GemmPlanCache plans;
  for (const Linear& s : kShapes) {
    SCOPED_TRACE(::testing::Message() << "rows=" << s.rows << " in=" << s.in << " out=" << s.out);
    const Inputs in = inputs(rng, s);
    for (const LinearEpilogue e : {LinearEpilogue::kBias, LinearEpilogue::kBiasGelu}) {
      const bool gelu = e == LinearEpilogue::kBiasGelu;
      SCOPED_TRACE(gelu ? "bias + GELU" : "bias");
      Outputs want = nan_outputs(s);
      cpu::linear_forward(*ctx, in.x.data(), in.w.data(), in.bias.data(),
                          gelu ? TypedPtr(want.pre.data()) : TypedPtr(), want.y.data(), s.rows, s.in, s.out, e);
      const Outputs got = native(*ctx, plans, in, s, e);
      expect_close(got.y, want.y, in, s, gelu ? 1.13 : 1.0, "y");
      if (gelu) expect_close(got.pre, want.pre, in, s, 1.0, "pre");

      // One rounding (Note [Fused linear epilogue]): with one band, the product is the
      // native GEMM's fp32 one (the same primitive), and the rest is the fp32 chain
      // add_bias, gelu_forward on it, each stored value rounded once.
      ASSERT_EQ(cpu::linear_native_band_rows(s.rows, s.out, cpu::kGemmWorkspaceBudget), s.rows);
      std::vector<float> v(static_cast<size_t>(s.rows * s.out)), g(v.size()), bias(in.bias.size());
      for (size_t j = 0; j < bias.size(); ++j) bias[j] = bf16_to_float(in.bias[j]);
      cpu::gemm_native(*ctx, plans, false, true, s.rows, s.out, s.in, 1.0f, in.x.data(), s.in, in.w.data(), s.in,
                       0.0f, v.data(), s.out);
      cpu::add_bias(*ctx, v.data(), bias.data(), s.rows, s.out, 1);
      cpu::gelu_forward(*ctx, v.data(), g.data(), s.rows * s.out);
      EXPECT_TRUE(same_bits(got.y, rounded(gelu ? g : v)));
      if (gelu) {
        EXPECT_TRUE(same_bits(got.pre, rounded(v)));
      }
    }
  }
}

// A budget of a few rows' fp32 block makes several bands and a shorter last one; each
// element is still one native product over all of `in`, within the same bound, and the
// result is the same bits on 1, 2 and 3 threads, and again.
TEST(CpuLinearNative, BandsStayWithinTheBoundAndGiveTheSameBitsOnAnyThreads) {
  SKIP_WITHOUT_NATIVE_BF16();
  Rng rng(22);
  const Linear s{200, 96, 130};
  const size_t budget = 48 * 130 * sizeof(float);  // bands of 48 rows: 4 and a last of 8
  ASSERT_EQ(cpu::linear_native_band_rows(s.rows, s.out, budget), 48);
  const Inputs in = inputs(rng, s);
  auto two = Context::make_cpu(2);
  Outputs want = nan_outputs(s);
  cpu::linear_forward(*two, in.x.data(), in.w.data(), in.bias.data(), want.pre.data(), want.y.data(), s.rows, s.in,
                      s.out, LinearEpilogue::kBiasGelu);
  std::vector<Outputs> runs;
  for (const int threads : {1, 2, 3, 2}) {
    auto ctx = Context::make_cpu(threads);
    cpu::GemmPlanCache plans;
    runs.push_back(native(*ctx, plans, in, s, LinearEpilogue::kBiasGelu, budget));
  }
  expect_close(runs[0].y, want.y, in, s, 1.13, "y");
  expect_close(runs[0].pre, want.pre, in, s, 1.0, "pre");
  for (size_t r = 1; r < runs.size(); ++r) {
    EXPECT_EQ(std::memcmp(runs[r].y.data(), runs[0].y.data(), runs[0].y.size() * sizeof(bf16)), 0) << "run " << r;
    EXPECT_EQ(std::memcmp(runs[r].pre.data(), runs[0].pre.data(), runs[0].pre.size() * sizeof(bf16)), 0)
        << "run " << r;
  }
}

TEST(CpuLinearNative, BandRowsAreWholeSlabUnitsWithinTheBudget) {
  constexpr int64_t kUnit = cpu::kGemmNativeSlabAlign;
  EXPECT_EQ(cpu::linear_native_band_rows(768, 512, cpu::kGemmWorkspaceBudget), 768);  // it all fits
  EXPECT_EQ(cpu::linear_native_band_rows(1000, 100, 40 * 100 * sizeof(float)), 32);  // 40 rows fit: 2 units
  EXPECT_EQ(cpu::linear_native_band_rows(1000, 100, 3 * 100 * sizeof(float)), kUnit);  // at least one unit
  EXPECT_EQ(cpu::linear_native_band_rows(5, 100, 3 * 100 * sizeof(float)), 5);        // never more than rows
}

// The memory model's figure (ops::linear_forward_workspace_bytes on the native backend)
// is what the op takes, with one band and with several.
TEST(CpuLinearNative, WorkspaceBytesAreWhatTheOpTakes) {
  SKIP_WITHOUT_NATIVE_BF16();
  Rng rng(23);
  for (const Linear& s : kShapes) {
    for (const size_t budget : {cpu::kGemmWorkspaceBudget, size_t{64} * 128 * sizeof(float)}) {
      SCOPED_TRACE(::testing::Message() << "rows=" << s.rows << " in=" << s.in << " out=" << s.out
                                        << " budget=" << budget);
      const Inputs in = inputs(rng, s);
      auto ctx = Context::make_cpu(2);
      cpu::GemmPlanCache plans;
      native(*ctx, plans, in, s, LinearEpilogue::kBiasGelu, budget);
      EXPECT_EQ(ctx->allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Workspace)],
                cpu::linear_forward_native_workspace_bytes(plans, s.rows, s.in, s.out, budget));
    }
  }
}

TEST(CpuLinearNative, GeluWithoutPreIsAnErrorAndFp32TakesTheChain) {
  auto ctx = Context::make_cpu(1);
  cpu::GemmPlanCache plans;
  const Linear s{4, 3, 2};
  Rng rng(24);
  const Inputs in = inputs(rng, s);
  Outputs o = nan_outputs(s);
  EXPECT_THROW(cpu::linear_forward_native(*ctx, plans, in.x.data(), in.w.data(), in.bias.data(), TypedPtr(),
                                          o.y.data(), s.rows, s.in, s.out, LinearEpilogue::kBiasGelu),
               Error);
  // fp32 operands run the emulated linear (the fp32 chain) and make no native plan.
  std::vector<float> x(12, 1.0f), w(6, 0.5f), bias(2, 0.25f), y(8, 0.0f);
  cpu::linear_forward_native(*ctx, plans, x.data(), w.data(), bias.data(), TypedPtr(), y.data(), s.rows, s.in, s.out,
                             LinearEpilogue::kBias);
  for (float v : y) EXPECT_EQ(v, 3 * 0.5f + 0.25f);
  EXPECT_EQ(plans.size(), 0u);
}

}  // namespace
}  // namespace dtrain
