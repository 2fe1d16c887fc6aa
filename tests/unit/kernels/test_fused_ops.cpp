// The fused ops of kernels/ops.h against the chains of unfused CPU ops they replace,
// in fp32 and in bf16 (Note [bf16 storage]), on the CPU and on cpu-async (which must
// give the CPU's bits, taking only the workspace it declared).
//   add_layernorm_forward   bit for bit add() then layernorm_forward() (Note [Fused
//                           residual LayerNorm]), also with the sum written over a or b.
//   linear_forward          (Note [Fused linear epilogue]) fp32: bit for bit gemm,
//                           add_bias, gelu_forward; bf16: on the emulated GEMM, bit for
//                           bit the fp32 op of the widened inputs, rounded once per
//                           stored value, and on the backend's GEMM (native or emulated)
//                           within the bound derived below of the bf16 chain.
//   linear_backward_input_gelu  (Note [Fused GELU backward]) the chain gemm then
//                           gelu_backward bit for bit, fp32 and bf16, on the CPU and
//                           cpu-async; in fp32 within the derived bound of the tanh
//                           form's derivative evaluated in double.
//   linear_parameter_gradients  (Note [Fused bias gradient]) on the CPU and cpu-async,
//                           the CPU's chain gemm then bias_backward bit for bit, fp32
//                           and bf16, added onto nonzero gradients; and within the
//                           fp32 sums' bound of the gradients summed in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu_async/cpu_async_backend.h"
#include "kernels/dtype.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/unit/kernels/gelu_reference.h"

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

// ------------------------------------------------------------- linear_forward

template <class T>
std::vector<float> widened_values(const std::vector<T>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same_v<T, float>) {
      out[i] = v[i];
    } else {
      out[i] = bf16_to_float(v[i]);
    }
  }
  return out;
}

std::vector<bf16> rounded(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

struct LinearCase {
  int64_t rows, in, out;
};
// Small and odd shapes, GPT-like ones, and one whose bf16 product exceeds the GEMM's
// workspace budget, so it is computed in two bands of rows (gemm_bf16_block).
const LinearCase kLinearCases[] = {{1, 1, 1}, {7, 5, 3}, {64, 48, 192}, {96, 192, 48}, {4000, 64, 4200}};

// The chain the fused op replaces, on ctx's backend: y = x W^T, y += bias, and for
// GELU pre = that, y = gelu(pre).
template <class T>
void linear_chain(Context& ctx, const std::vector<T>& x, const std::vector<T>& w, const std::vector<T>& bias,
                  std::vector<T>& pre, std::vector<T>& y, const LinearCase& c, LinearEpilogue e) {
  T* product = e == LinearEpilogue::kBiasGelu ? pre.data() : y.data();
  ops::gemm(ctx, false, true, c.rows, c.out, c.in, 1.0f, x.data(), c.in, w.data(), c.in, 0.0f, product, c.out);
  ops::add_bias(ctx, product, bias.data(), c.rows, c.out, 1);
  if (e == LinearEpilogue::kBiasGelu) ops::gelu_forward(ctx, pre.data(), y.data(), c.rows * c.out);
}

TEST(FusedLinear, Fp32IsTheGemmBiasGeluChainBitForBit) {
  auto ctx = Context::make_cpu(2);
  Rng rng(34);
  for (const LinearCase& c : kLinearCases) {
    for (const LinearEpilogue e : {LinearEpilogue::kBias, LinearEpilogue::kBiasGelu}) {
      SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.in << "->" << c.out
                                        << (e == LinearEpilogue::kBiasGelu ? " gelu" : " bias"));
      const auto x = random_values<float>(rng, c.rows * c.in), w = random_values<float>(rng, c.out * c.in, 0.1);
      const auto bias = random_values<float>(rng, c.out);
      std::vector<float> pre_ref(static_cast<size_t>(c.rows * c.out)), y_ref(pre_ref.size());
      linear_chain(*ctx, x, w, bias, pre_ref, y_ref, c, e);
      auto pre = nan_filled<float>(c.rows * c.out), y = nan_filled<float>(c.rows * c.out);
      ops::linear_forward(*ctx, x.data(), w.data(), bias.data(), pre.data(), y.data(), c.rows, c.in, c.out, e);
      EXPECT_TRUE(same_bits(y, y_ref));
      if (e == LinearEpilogue::kBiasGelu) {
        EXPECT_TRUE(same_bits(pre, pre_ref));
      }
    }
  }
}

// The spacing of bf16 values at |v| (8 significant bits).
double bf16_spacing(double v) {
  v = std::fabs(v);
  if (v < std::ldexp(1.0, -126)) return std::ldexp(1.0, -133);
  int e = 0;
  std::frexp(v, &e);  // v = f 2^e, f in [0.5, 1)
  return std::ldexp(1.0, e - 8);
}

// In bf16 the op is the fp32 op of the widened inputs (its product summed in the order
// of the backend's GEMM, whose fp32 product p is below), each stored value rounded once;
// against the bf16 chain (which rounds the product, then the sum, and takes GELU of
// the rounded pre) it differs, per element with p the fp32 product, by at most
//   pre: |round(round(p) + b) - round(p + b)| <= ulp(p)/2 + ulp(pre)
//        (the product's rounding, then half an ulp for each side's last rounding);
//   y:   L (ulp(p)/2 + ulp(pre)/2) + ulp(y), with L = max |gelu'| < 1.13, since the
//        chain takes GELU of its rounded pre, within ulp(p)/2 + ulp(pre)/2 of p + b,
//        plus a float's evaluation error of GELU (1e-6 relative is ample).
TEST(FusedLinear, Bf16RoundsOnceAndStaysWithinTheDerivedBoundOfTheChain) {
  auto ctx = Context::make_cpu(2);
  Rng rng(35);
  for (const LinearCase& c : kLinearCases) {
    for (const LinearEpilogue e : {LinearEpilogue::kBias, LinearEpilogue::kBiasGelu}) {
      const bool gelu = e == LinearEpilogue::kBiasGelu;
      SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.in << "->" << c.out << (gelu ? " gelu" : " bias"));
      const int64_t n = c.rows * c.out;
      const auto x = random_values<bf16>(rng, c.rows * c.in), w = random_values<bf16>(rng, c.out * c.in, 0.1);
      const auto bias = random_values<bf16>(rng, c.out);
      auto pre = nan_filled<bf16>(n), y = nan_filled<bf16>(n);
      ops::linear_forward(*ctx, x.data(), w.data(), bias.data(), pre.data(), y.data(), c.rows, c.in, c.out, e);

      // The contract, on the emulated GEMM (the oracle; the backend may run the native
      // one, whose product sums in another order: test_cpu_linear_native.cpp): the fp32
      // op (itself the fp32 chain, above) of the widened inputs, rounded once.
      std::vector<float> pre32(static_cast<size_t>(n)), y32(pre32.size());
      ops::linear_forward(*ctx, widened_values(x).data(), widened_values(w).data(), widened_values(bias).data(),
                          pre32.data(), y32.data(), c.rows, c.in, c.out, e);
      auto pre_emulated = nan_filled<bf16>(n), y_emulated = nan_filled<bf16>(n);
      cpu::linear_forward(*ctx, x.data(), w.data(), bias.data(), pre_emulated.data(), y_emulated.data(), c.rows, c.in,
                          c.out, e);
      EXPECT_TRUE(same_bits(y_emulated, rounded(y32)));
      if (gelu) {
        EXPECT_TRUE(same_bits(pre_emulated, rounded(pre32)));
      }

      // Against the bf16 chain, within the bound above.
      std::vector<bf16> pre_chain(static_cast<size_t>(n)), y_chain(pre_chain.size());
      linear_chain(*ctx, x, w, bias, pre_chain, y_chain, c, e);
      std::vector<float> p(static_cast<size_t>(n));  // the fp32 product
      ops::gemm(*ctx, false, true, c.rows, c.out, c.in, 1.0f, x.data(), c.in, w.data(), c.in, 0.0f, p.data(), c.out);
      const std::vector<bf16>& pre_fused = gelu ? pre : y;
      const std::vector<bf16>& pre_ref = gelu ? pre_chain : y_chain;
      int64_t differ = 0, bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double f = bf16_to_float(pre_fused[i]), ch = bf16_to_float(pre_ref[i]);
        const double pre_bound = bf16_spacing(p[i]) / 2 + bf16_spacing(std::max(std::fabs(f), std::fabs(ch)));
        differ += f != ch;
        bad += !(std::fabs(f - ch) <= pre_bound);
        if (gelu) {
          const double yf = bf16_to_float(y[i]), yc = bf16_to_float(y_chain[i]);
          const double y_bound = 1.13 * (bf16_spacing(p[i]) / 2 + bf16_spacing(ch) / 2) +
                                 bf16_spacing(std::max(std::fabs(yf), std::fabs(yc))) +
                                 1e-6 * (1.0 + std::fabs(yc));
          bad += !(std::fabs(yf - yc) <= y_bound);
        }
      }
      EXPECT_EQ(bad, 0) << "elements beyond the bound, of " << n;
      // Not vacuous: rounding once does differ from rounding twice somewhere.
      if (n >= 1000) {
        EXPECT_GT(differ, 0);
      }
    }
  }
}

TEST(FusedLinear, CpuAsyncGivesTheCpuBackendsBitsWithinItsDeclaredWorkspace) {
  const LinearCase c{96, 64, 256};
  Rng rng(36);
  const auto x = random_values<bf16>(rng, c.rows * c.in), w = random_values<bf16>(rng, c.out * c.in, 0.1);
  const auto bias = random_values<bf16>(rng, c.out);
  auto run = [&](Context& ctx, bool hold_device) {
    Buffer gx = upload(ctx, x), gw = upload(ctx, w), gb = upload(ctx, bias);
    Buffer gpre = upload(ctx, nan_filled<bf16>(c.rows * c.out)), gy = upload(ctx, nan_filled<bf16>(c.rows * c.out));
    ctx.release_workspace();
    {
      std::unique_ptr<CpuAsyncHold> hold = hold_device ? std::make_unique<CpuAsyncHold>(ctx) : nullptr;
      ops::linear_forward(ctx, gx.as<bf16>(), gw.as<bf16>(), gb.as<bf16>(), gpre.as<bf16>(), gy.as<bf16>(), c.rows,
                          c.in, c.out, LinearEpilogue::kBiasGelu);
    }
    return std::make_pair(download<bf16>(ctx, gpre), download<bf16>(ctx, gy));
  };
  auto cpu = Context::make_cpu(2);
  auto async = Context::make_cpu_async(2);
  EXPECT_GT(ops::linear_forward_workspace_bytes(*async, c.rows, c.in, c.out, DType::kBF16), 0u);
  EXPECT_EQ(ops::linear_forward_workspace_bytes(*async, c.rows, c.in, c.out, DType::kBF16),
            ops::linear_forward_workspace_bytes(*cpu, c.rows, c.in, c.out, DType::kBF16));
  const auto [pre_c, y_c] = run(*cpu, false);
  const auto [pre_a, y_a] = run(*async, true);
  EXPECT_TRUE(same_bits(pre_a, pre_c));
  EXPECT_TRUE(same_bits(y_a, y_c));
}

// ------------------------------------------------- linear_backward_input_gelu

struct GeluBackwardCase {
  int64_t rows, in, out;
};
// Odd shapes, one of a GPT's MLP (c_proj: in = 4C), and one over the OpenMP split.
const GeluBackwardCase kGeluBackwardCases[] = {{1, 1, 1}, {7, 5, 3}, {48, 256, 64}, {301, 96, 40}};

TYPED_TEST(FusedOpsIn, LinearBackwardInputGeluIsTheGemmThenGeluBackwardChainBitForBit) {
  using T = TypeParam;
  Rng rng(37);
  for (const bool async : {false, true}) {
    auto ctx = async ? Context::make_cpu_async(2) : Context::make_cpu(2);
    for (const GeluBackwardCase& c : kGeluBackwardCases) {
      SCOPED_TRACE(::testing::Message() << (async ? "cpu-async " : "cpu ") << c.rows << "x" << c.out << "->" << c.in);
      const auto dy = random_values<T>(rng, c.rows * c.out), w = random_values<T>(rng, c.out * c.in, 0.1);
      const auto pre = random_values<T>(rng, c.rows * c.in, 1.5);
      Buffer gdy = upload(*ctx, dy), gw = upload(*ctx, w), gpre = upload(*ctx, pre);
      Buffer chain = upload(*ctx, nan_filled<T>(c.rows * c.in)), fused = upload(*ctx, nan_filled<T>(c.rows * c.in));
      ops::gemm(*ctx, false, false, c.rows, c.in, c.out, 1.0f, gdy.as<T>(), c.out, gw.as<T>(), c.in, 0.0f,
                chain.as<T>(), c.in);
      ops::gelu_backward(*ctx, gpre.as<T>(), chain.as<T>(), chain.as<T>(), c.rows * c.in);
      ops::linear_backward_input_gelu(*ctx, gdy.as<T>(), gw.as<T>(), gpre.as<T>(), fused.as<T>(), c.rows, c.in, c.out);
      EXPECT_TRUE(same_bits(download<T>(*ctx, fused), download<T>(*ctx, chain)));
    }
  }
}

// With P = dy W and S = sum over k of |dy||w|: the fp32 product is within gamma_out S of
// P (Higham's bound for a sum of `out` products), and the derivative's fp32 evaluation
// within e(v) = 2^-20 (1/2 + k |v| (1 + 3a v^2)) of the exact one: as Note [cuBLASLt
// GELU]'s derivation with tanh's error 2^-20 (a few fp32 ulps) in place of 2^-11. So
// |dpre - g'(v) P| <= |g'| gamma_out S + e(v) (|P| + gamma_out S) + an ulp of dpre.
TEST(FusedGeluBackward, Fp32IsWithinTheDerivedBoundOfTheTanhFormsDerivativeInDouble) {
  auto ctx = Context::make_cpu(2);
  Rng rng(38);
  for (const GeluBackwardCase& c : kGeluBackwardCases) {
    SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.out << "->" << c.in);
    const auto dy = random_values<float>(rng, c.rows * c.out), w = random_values<float>(rng, c.out * c.in, 0.1);
    const auto pre = random_values<float>(rng, c.rows * c.in, 2.0);
    auto dpre = nan_filled<float>(c.rows * c.in);
    ops::linear_backward_input_gelu(*ctx, dy.data(), w.data(), pre.data(), dpre.data(), c.rows, c.in, c.out);
    const double gamma = c.out * std::ldexp(1.0, -24) / (1.0 - c.out * std::ldexp(1.0, -24));
    int failures = 0;
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t i = 0; i < c.in; ++i) {
        const auto [product, magnitude] = testing::input_gradient_element(dy, w, r, i, c.in, c.out);
        const double v = pre[r * c.in + i], g = testing::gelu_derivative(v);
        const double e = std::ldexp(testing::gelu_derivative_sensitivity(v), -20);
        const double want = g * product, got = dpre[r * c.in + i];
        const double bound = std::fabs(g) * gamma * magnitude + e * (std::fabs(product) + gamma * magnitude) +
                             std::ldexp(std::fabs(want), -23) + 1e-30;
        if (!(std::fabs(got - want) <= bound) && ++failures <= 3) {
          ADD_FAILURE() << "[" << r << ", " << i << "] got " << got << ", want " << want << ", bound " << bound;
        }
      }
    }
    EXPECT_EQ(failures, 0);
  }
}

// ------------------------------------------------- linear_parameter_gradients

struct ParameterGradientCase {
  int64_t rows, in, out;
};
// Odd shapes, one of a GPT's attention (c_attn: out = 3C), one over the OpenMP split.
const ParameterGradientCase kParameterGradientCases[] = {{1, 1, 1}, {7, 5, 3}, {48, 64, 192}, {301, 40, 96}};

// The op on the CPU and on cpu-async (queued, on its declared workspace) against the
// chain run apart on the CPU.
TYPED_TEST(FusedOpsIn, LinearParameterGradientsAreTheCpuGemmThenBiasBackwardChainBitForBit) {
  using T = TypeParam;
  Rng rng(39);
  auto cpu = Context::make_cpu(2);
  for (const bool async : {false, true}) {
    auto ctx = async ? Context::make_cpu_async(2) : Context::make_cpu(2);
    for (const ParameterGradientCase& c : kParameterGradientCases) {
      SCOPED_TRACE(::testing::Message() << (async ? "cpu-async " : "cpu ") << c.rows << " rows, " << c.in << "->"
                                        << c.out);
      const auto dy = random_values<T>(rng, c.rows * c.out), x = random_values<T>(rng, c.rows * c.in, 1.0, 0.5);
      const auto dw0 = random_values<float>(rng, c.out * c.in, 0.1), db0 = random_values<float>(rng, c.out, 0.1);
      auto chain_dw = dw0, chain_db = db0;
      ops::gemm(*cpu, true, false, c.out, c.in, c.rows, 1.0f, dy.data(), c.out, x.data(), c.in, 1.0f,
                chain_dw.data(), c.in);
      ops::bias_backward(*cpu, dy.data(), chain_db.data(), c.rows, c.out, 1);
      Buffer gdy = upload(*ctx, dy), gx = upload(*ctx, x), fused_dw = upload(*ctx, dw0), fused_db = upload(*ctx, db0);
      ops::linear_parameter_gradients(*ctx, gdy.as<T>(), gx.as<T>(), fused_dw.as<float>(), fused_db.as<float>(),
                                      c.rows, c.in, c.out);
      EXPECT_TRUE(same_bits(download<float>(*ctx, fused_dw), chain_dw));
      EXPECT_TRUE(same_bits(download<float>(*ctx, fused_db), chain_db));
    }
  }
}

// Against the sums in double: each of dw's fp32 sums (rows products and dw0) within
// gamma_{rows+1} of its magnitude (Higham's bound) plus the rounding of the result,
// with u = 2^-23 rather than 2^-24: the native bf16 GEMMs' dot-product instructions
// (VDPBF16PS, AMX) flush denormals and may round inside a pair; db is summed in double
// and rounded twice (to float, then added to db0): within 2^-23 of its magnitude.
TYPED_TEST(FusedOpsIn, LinearParameterGradientsAreWithinTheFp32SumsBoundOfDouble) {
  using T = TypeParam;
  auto ctx = Context::make_cpu(2);
  Rng rng(40);
  for (const ParameterGradientCase& c : kParameterGradientCases) {
    SCOPED_TRACE(::testing::Message() << c.rows << " rows, " << c.in << "->" << c.out);
    const auto dy = random_values<T>(rng, c.rows * c.out), x = random_values<T>(rng, c.rows * c.in, 1.0, 0.5);
    auto dw = random_values<float>(rng, c.out * c.in, 0.1), db = random_values<float>(rng, c.out, 0.1);
    const auto dw0 = dw, db0 = db;
    ops::linear_parameter_gradients(*ctx, dy.data(), x.data(), dw.data(), db.data(), c.rows, c.in, c.out);
    const auto value = [](auto v) {
      if constexpr (std::is_same_v<decltype(v), float>) {
        return static_cast<double>(v);
      } else {
        return static_cast<double>(bf16_to_float(v));
      }
    };
    const double u = std::ldexp(1.0, -23);
    const double gamma = (c.rows + 1) * u / (1.0 - (c.rows + 1) * u);
    int failures = 0;
    for (int64_t o = 0; o < c.out; ++o) {
      double column = db0[o], column_magnitude = std::fabs(db0[o]);
      for (int64_t r = 0; r < c.rows; ++r) {
        column += value(dy[r * c.out + o]);
        column_magnitude += std::fabs(value(dy[r * c.out + o]));
      }
      if (!(std::fabs(db[o] - column) <= std::ldexp(column_magnitude, -23)) && ++failures <= 3) {
        ADD_FAILURE() << "db[" << o << "] got " << db[o] << ", want " << column;
      }
      for (int64_t i = 0; i < c.in; ++i) {
        const size_t at = static_cast<size_t>(o * c.in + i);
        double sum = dw0[at], magnitude = std::fabs(dw0[at]);
        for (int64_t r = 0; r < c.rows; ++r) {
          const double term = value(dy[r * c.out + o]) * value(x[r * c.in + i]);
          sum += term;
          magnitude += std::fabs(term);
        }
        const double bound = gamma * magnitude + u * std::fabs(sum) + 1e-30;
        if (!(std::fabs(dw[at] - sum) <= bound) && ++failures <= 3) {
          ADD_FAILURE() << "dw[" << o << ", " << i << "] got " << dw[at] << ", want " << sum << ", bound " << bound;
        }
      }
    }
    EXPECT_EQ(failures, 0);
  }
}

}  // namespace
}  // namespace dtrain
