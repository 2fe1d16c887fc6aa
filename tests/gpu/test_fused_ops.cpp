// The fused ops of kernels/ops.h on the CUDA context, in fp32 and bf16
// (tests/gpu/stored_types.h), against the CPU's fused op (the oracle, itself tested
// bit for bit against the unfused chain in tests/unit/kernels/test_fused_ops.cpp), and
// against the CUDA chain they replace:
//   add_layernorm_forward   the sum: equal bits (one float operation per element);
//                           y and the row statistics: LayerNorm forward's 2e-5
//                           (test_transformer_ops.cpp); and against the CUDA add then
//                           layernorm_forward: equal bits (the contract, Note [Fused
//                           residual LayerNorm]).
//   linear_forward          (Note [Fused linear epilogue]) per element, with S the sum
//                           of |x||w| over k plus |bias|: pre within 2 gamma_{k+2} S
//                           (two fp32 sums of the same exact products in other orders,
//                           test_cuda_ops.cpp's GEMM bound), y within 1.13 times that
//                           (max |gelu'| < 1.13) plus GELU's 1e-6; bf16 adds an ulp.
//                           The bf16 bias form is one cuBLASLt GEMM with the bias in
//                           its epilogue (linear_lt.h): the same bound holds. The bf16
//                           GELU form is one too, whose GELU is cuBLASLt's: y gets Note
//                           [cuBLASLt GELU]'s 2^-11 |v| + 2^-24 more.
//   linear_backward_input_gelu  (Note [Fused GELU backward]) against the CPU chain,
//                           with P = dy W, S = sum |dy||w| and v = pre: the GEMM bound
//                           2 gamma_{out+2} S times |g'|, the two backends' fp32
//                           derivatives within 2^-20 (1/2 + k|v|(1 + 3a v^2)) of the
//                           exact one each; bf16 adds the chain's rounding of P (2^-8
//                           |P| |g'|: bf16 keeps 8 significant bits), cuBLASLt's
//                           derivative (Note [cuBLASLt GELU]: 2^-10 for 2^-20) and an
//                           ulp. bf16 at GPT-2's c_proj shape
//                           runs as one cuBLASLt GEMM; both types repeat bit for bit.
//   linear_parameter_gradients  (Note [Fused bias gradient]) against the CPU chain,
//                           both added onto nonzero gradients dw0 and db0: dw within
//                           2 gamma_{rows+2} (sum over rows |dy||x| + |dw0|) (two fp32
//                           sums in other orders, then the add), db within 2
//                           gamma_{rows+2} (sum |dy| + |db0|) (the CPU's double sums
//                           rounded once, cuBLASLt's fp32 sums). bf16 at GPT-2's
//                           shapes runs as one cuBLASLt GEMM; both repeat bit for bit.
//   softmax_cross_entropy   already llm.c's fused classifier (Note [Fused classifier],
//                           kernels/cuda/cross_entropy.cu): test_cuda_ops.cpp checks
//                           its values in place; here, that a GPT-sized call in place
//                           takes no device memory beyond its per-row workspace, so
//                           no probabilities are materialised.
// The linears' bounds hold for any order of the sums, so they hold too on a context
// with every fusion off (the chains) and on one that times cuBLASLt's candidate
// algorithms (Note [GEMM autotuning]), where each case's shape is new, so its first
// call is the one timed.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/stored_types.h"
#include "tests/unit/kernels/gelu_reference.h"

namespace dtrain {
namespace {

using testing::all_close;
using testing::close_relative;
using testing::DeviceArray;
using testing::exactly;
using testing::gamma_n;
using testing::nans;
using testing::random_normal;
using testing::stored;
using testing::stored_nans;

template <class T>
class FusedOpsIn : public testing::CudaAgainstCpuTest {};
TYPED_TEST_SUITE(FusedOpsIn, testing::StoredTypes, testing::StoredTypeNames);

struct RowsCase {
  int64_t rows, channels;
};
// One channel, widths below, at and above a warp, GPT-2's 768, and many rows.
const RowsCase kRowsCases[] = {{1, 1}, {3, 5}, {17, 32}, {40, 33}, {64, 768}, {5003, 40}, {4096, 768}};

TYPED_TEST(FusedOpsIn, AddLayerNormMatchesCpuAndIsTheCudaChainBitForBit) {
  using T = TypeParam;
  Rng rng(41);
  for (const RowsCase& c : kRowsCases) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels);
    const int64_t n = c.rows * c.channels;
    const auto a = stored<T>(random_normal(rng, n, 0.3));
    const auto b = stored<T>(random_normal(rng, n, 2.0, 3.0));
    const auto w = stored<T>(random_normal(rng, c.channels, 0.5, 1.0));
    const auto bias = stored<T>(random_normal(rng, c.channels, 0.5));

    std::vector<T> res(static_cast<size_t>(n)), y(res.size());
    std::vector<float> mean(static_cast<size_t>(c.rows)), rstd(mean.size());
    ops::add_layernorm_forward(this->cpu(), a.data(), b.data(), res.data(), w.data(), bias.data(), y.data(),
                               mean.data(), rstd.data(), c.rows, c.channels);

    // The fused op, with the sum written over a (as the GPT does).
    DeviceArray<T> ga(this->gpu(), a), gb(this->gpu(), b), gw(this->gpu(), w), gbias(this->gpu(), bias);
    DeviceArray<T> gy(this->gpu(), stored_nans<T>(n));
    DeviceArray<float> gmean(this->gpu(), nans(c.rows)), grstd(this->gpu(), nans(c.rows));
    ops::add_layernorm_forward(this->gpu(), ga.get(), gb.get(), ga.get(), gw.get(), gbias.get(), gy.get(),
                               gmean.get(), grstd.get(), c.rows, c.channels);
    EXPECT_TRUE(exactly(ga.to_host(), res));
    EXPECT_TRUE(close_relative(gy.to_host(), y, 2e-5));
    EXPECT_TRUE(all_close(gmean.to_host(), mean, 2e-5));
    EXPECT_TRUE(all_close(grstd.to_host(), rstd, 2e-5));

    // The CUDA chain it replaces.
    DeviceArray<T> ca(this->gpu(), a), cb(this->gpu(), b), cy(this->gpu(), stored_nans<T>(n));
    DeviceArray<float> cmean(this->gpu(), nans(c.rows)), crstd(this->gpu(), nans(c.rows));
    ops::add(this->gpu(), ca.get(), cb.get(), ca.get(), n);
    ops::layernorm_forward(this->gpu(), ca.get(), gw.get(), gbias.get(), cy.get(), cmean.get(), crstd.get(), c.rows,
                           c.channels);
    EXPECT_TRUE(exactly(gy.to_host(), cy.to_host()));
    EXPECT_TRUE(exactly(gmean.to_host(), cmean.to_host()));
    EXPECT_TRUE(exactly(grstd.to_host(), crstd.to_host()));

    // a and b one element off their packs, the sum into an aligned buffer: the rows keep
    // the packed form of the chain's layernorm_forward (which reads the aligned sum),
    // and a and b are read one element at a time.
    DeviceArray<T> ma(this->gpu(), a, 1), mb(this->gpu(), b, 1), mres(this->gpu(), stored_nans<T>(n)),
        my(this->gpu(), stored_nans<T>(n));
    DeviceArray<float> mmean(this->gpu(), nans(c.rows)), mrstd(this->gpu(), nans(c.rows));
    ops::add_layernorm_forward(this->gpu(), ma.get(), mb.get(), mres.get(), gw.get(), gbias.get(), my.get(),
                               mmean.get(), mrstd.get(), c.rows, c.channels);
    EXPECT_TRUE(exactly(mres.to_host(), res));
    EXPECT_TRUE(exactly(my.to_host(), cy.to_host()));
    EXPECT_TRUE(exactly(mmean.to_host(), cmean.to_host()));
    EXPECT_TRUE(exactly(mrstd.to_host(), crstd.to_host()));
  }
}

// got within slack of want per element: fp32 directly, bf16 with an ulp more.
template <class T>
::testing::AssertionResult within(const std::vector<T>& got, const std::vector<T>& want,
                                  const std::vector<double>& slack) {
  if constexpr (std::is_same_v<T, float>) {
    size_t failures = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= slack[i])) ++failures;
    }
    if (failures == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << failures << " of " << want.size() << " elements beyond the bound";
  } else {
    return testing::bf16_close(got, want, slack);
  }
}

TYPED_TEST(FusedOpsIn, LinearForwardMatchesCpuWithinTheGemmBound) {
  using T = TypeParam;
  struct Case {
    int64_t rows, in, out;
  };
  Rng rng(43);
  const auto chains = testing::make_cuda_chains();  // the unfused chains' bits meet the bound too
  const auto autotuned = testing::make_cuda_autotuned();  // and the GEMMs' timed algorithms
  // The last: a bf16 product (4100 x 4099 floats) over linear.cu's 64 MiB band, so the
  // fallback takes it in two bands; its outputs start one element into their buffers,
  // under cuBLASLt's 16-byte alignment, so that both forms fall back (GELU's width, not
  // a multiple of 8, is declined anyway).
  for (const Case& c : {Case{1, 1, 1}, Case{7, 5, 3}, Case{64, 48, 192}, Case{130, 768, 3072}, Case{96, 3072, 768},
                        Case{4100, 16, 4099}}) {
    for (const LinearEpilogue e : {LinearEpilogue::kBias, LinearEpilogue::kBiasGelu}) {
      const bool gelu = e == LinearEpilogue::kBiasGelu;
      SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.in << "->" << c.out << (gelu ? " gelu" : " bias"));
      const int64_t n = c.rows * c.out;
      const auto x = stored<T>(random_normal(rng, c.rows * c.in));
      const auto w = stored<T>(random_normal(rng, c.out * c.in, 0.05));
      const auto bias = stored<T>(random_normal(rng, c.out, 0.5));
      std::vector<T> pre(static_cast<size_t>(n)), y(pre.size());
      ops::linear_forward(this->cpu(), x.data(), w.data(), bias.data(), pre.data(), y.data(), c.rows, c.in, c.out,
                          e);
      const auto xv = testing::values(x), wv = testing::values(w), bv = testing::values(bias);
      std::vector<double> pre_slack(static_cast<size_t>(n)), y_slack(pre_slack.size());
      const double factor = 2.0 * gamma_n(c.in + 2);
      const auto yv = testing::values(y), pv = testing::values(pre);
      for (int64_t r = 0; r < c.rows; ++r) {
        for (int64_t o = 0; o < c.out; ++o) {
          double sum = std::fabs(bv[o]);
          for (int64_t k = 0; k < c.in; ++k) sum += std::fabs(static_cast<double>(xv[r * c.in + k]) * wv[o * c.in + k]);
          const size_t i = static_cast<size_t>(r * c.out + o);
          pre_slack[i] = factor * sum;
          y_slack[i] = gelu ? 1.13 * factor * sum + 1e-6 * (1.0 + std::fabs(yv[i])) : factor * sum;
          if (gelu && !std::is_same_v<T, float>) {
            const double v = std::fabs(static_cast<double>(pv[i])) * (1.0 + std::ldexp(1.0, -8)) + pre_slack[i];
            y_slack[i] += std::ldexp(v, -11) + std::ldexp(1.0, -24);
          }
        }
      }
      for (Context* gpu : {&this->gpu(), chains.get(), autotuned.get()}) {
        SCOPED_TRACE(gpu == chains.get()      ? "CudaFusions off"
                     : gpu == autotuned.get() ? "fused, GEMMs autotuned"
                                              : "fused");
        DeviceArray<T> gx(*gpu, x), gw(*gpu, w), gb(*gpu, bias);
        const size_t offset = c.rows == 4100 ? 1 : 0;
        DeviceArray<T> gpre(*gpu, stored_nans<T>(n), offset), gy(*gpu, stored_nans<T>(n), offset);
        ops::linear_forward(*gpu, gx.get(), gw.get(), gb.get(), gpre.get(), gy.get(), c.rows, c.in, c.out, e);
        EXPECT_TRUE(within(gy.to_host(), y, y_slack));
        if (gelu) {
          EXPECT_TRUE(within(gpre.to_host(), pre, pre_slack));
        }
      }
    }
  }
}

// The bf16 linears run as one cuBLASLt GEMM each (kernels/cuda/linear_lt.h), the
// fp32 ones as cuBLAS and a pass: each repeats bit for bit (a GPT-2 124M linear's shape).
TYPED_TEST(FusedOpsIn, LinearForwardRepeatsBitForBit) {
  using T = TypeParam;
  const int64_t rows = 512, in = 768, out = 2304;
  Rng rng(44);
  DeviceArray<T> x(this->gpu(), stored<T>(random_normal(rng, rows * in)));
  DeviceArray<T> w(this->gpu(), stored<T>(random_normal(rng, out * in, 0.05)));
  DeviceArray<T> bias(this->gpu(), stored<T>(random_normal(rng, out, 0.5)));
  for (const LinearEpilogue e : {LinearEpilogue::kBias, LinearEpilogue::kBiasGelu}) {
    SCOPED_TRACE(e == LinearEpilogue::kBias ? "bias" : "bias and GELU");
    std::vector<std::vector<T>> ys;
    for (int run = 0; run < 3; ++run) {
      DeviceArray<T> pre(this->gpu(), stored_nans<T>(rows * out)), y(this->gpu(), stored_nans<T>(rows * out));
      ops::linear_forward(this->gpu(), x.get(), w.get(), bias.get(), pre.get(), y.get(), rows, in, out, e);
      ys.push_back(y.to_host());
    }
    EXPECT_TRUE(exactly(ys[1], ys[0]));
    EXPECT_TRUE(exactly(ys[2], ys[0]));
  }
}

// The GPT's bf16 bias linears (GPT-2 124M's shapes) take the cuBLASLt path, not its
// fallback, which would pass every value test too.
class FusedOps : public testing::CudaAgainstCpuTest {};

TEST_F(FusedOps, Bf16BiasLinearsOfGpt2ShapesRunAsOneCublasLtGemm) {
  const LinearLt& lt = dynamic_cast<CudaBackend&>(gpu().backend()).linear_lt();
  const int64_t rows = 256;
  Rng rng(45);
  struct Shape {
    int64_t in, out;
  };
  for (const Shape s : {Shape{768, 2304}, Shape{768, 768}, Shape{3072, 768}}) {
    SCOPED_TRACE(::testing::Message() << s.in << " -> " << s.out);
    DeviceArray<bf16> x(gpu(), stored<bf16>(random_normal(rng, rows * s.in)));
    DeviceArray<bf16> w(gpu(), stored<bf16>(random_normal(rng, s.out * s.in, 0.05)));
    DeviceArray<bf16> bias(gpu(), stored<bf16>(random_normal(rng, s.out, 0.5)));
    DeviceArray<bf16> y(gpu(), stored_nans<bf16>(rows * s.out));
    const int64_t before = lt.calls();
    ops::linear_forward(gpu(), x.get(), w.get(), bias.get(), nullptr, y.get(), rows, s.in, s.out,
                        LinearEpilogue::kBias);
    gpu().synchronize();
    EXPECT_EQ(lt.calls(), before + 1);
  }
}

// The bf16 fallback's workspace is its fp32 product, in bands of at most 64 MiB: bounded
// however many rows (the memory model's largest workspace otherwise), exact when small.
TEST_F(FusedOps, Bf16LinearWorkspaceIsBoundedByOneBand) {
  const size_t band = size_t{64} << 20;
  EXPECT_EQ(ops::linear_forward_workspace_bytes(gpu(), 100, 768, 3072, DType::kBF16), size_t{100} * 3072 * 4);
  EXPECT_LE(ops::linear_forward_workspace_bytes(gpu(), 398 * 1024, 768, 3072, DType::kBF16), band);
  EXPECT_GT(ops::linear_forward_workspace_bytes(gpu(), 398 * 1024, 768, 3072, DType::kBF16), band - 3072 * 4);
  EXPECT_EQ(ops::linear_forward_workspace_bytes(gpu(), 398 * 1024, 768, 3072, DType::kF32), 0u);
}

// So does the MLP's GELU linear (c_fc, 768 -> 3072), with GELU in the epilogue.
TEST_F(FusedOps, Bf16GeluLinearOfGpt2ShapeRunsAsOneCublasLtGemm) {
  const LinearLt& lt = dynamic_cast<CudaBackend&>(gpu().backend()).linear_lt();
  const int64_t rows = 256, in = 768, out = 3072;
  Rng rng(46);
  DeviceArray<bf16> x(gpu(), stored<bf16>(random_normal(rng, rows * in)));
  DeviceArray<bf16> w(gpu(), stored<bf16>(random_normal(rng, out * in, 0.05)));
  DeviceArray<bf16> bias(gpu(), stored<bf16>(random_normal(rng, out, 0.5)));
  DeviceArray<bf16> pre(gpu(), stored_nans<bf16>(rows * out)), y(gpu(), stored_nans<bf16>(rows * out));
  const int64_t before = lt.gelu_calls();
  ops::linear_forward(gpu(), x.get(), w.get(), bias.get(), pre.get(), y.get(), rows, in, out,
                      LinearEpilogue::kBiasGelu);
  gpu().synchronize();
  EXPECT_EQ(lt.gelu_calls(), before + 1);
}

TYPED_TEST(FusedOpsIn, LinearBackwardInputGeluMatchesTheCpuChainWithinTheDerivedBound) {
  using T = TypeParam;
  constexpr bool kBf16 = !std::is_same_v<T, float>;
  struct Case {
    int64_t rows, in, out;
  };
  Rng rng(47);
  const auto chains = testing::make_cuda_chains();  // the chain (cuBLAS, then GELU's backward pass) too
  const auto autotuned = testing::make_cuda_autotuned();  // the GEMM's timed algorithm too
  for (const Case& c : {Case{1, 1, 1}, Case{7, 5, 3}, Case{64, 192, 48}, Case{96, 768, 192}, Case{130, 3072, 768}}) {
    SCOPED_TRACE(::testing::Message() << c.rows << "x" << c.out << "->" << c.in);
    const int64_t n = c.rows * c.in;
    const auto dy = stored<T>(random_normal(rng, c.rows * c.out));
    const auto w = stored<T>(random_normal(rng, c.out * c.in, 0.05));
    const auto pre = stored<T>(random_normal(rng, n, 1.5));
    std::vector<T> want(static_cast<size_t>(n));
    ops::linear_backward_input_gelu(this->cpu(), dy.data(), w.data(), pre.data(), want.data(), c.rows, c.in, c.out);
    const auto dv = testing::values(dy), wv = testing::values(w), pv = testing::values(pre);
    const double factor = 2.0 * gamma_n(c.out + 2);
    std::vector<double> slack(static_cast<size_t>(n));
    for (int64_t r = 0; r < c.rows; ++r) {
      for (int64_t i = 0; i < c.in; ++i) {
        const auto [product, magnitude] = testing::input_gradient_element(dv, wv, r, i, c.in, c.out);
        const size_t at = static_cast<size_t>(r * c.in + i);
        const double v = pv[at], g = std::fabs(testing::gelu_derivative(v));
        const double p = std::fabs(product) + factor * magnitude;
        const double shape = testing::gelu_derivative_sensitivity(v);
        slack[at] = g * factor * magnitude + 2.0 * std::ldexp(shape, -20) * p;
        if (kBf16) slack[at] += g * std::ldexp(p, -8) + std::ldexp(shape, -10) * (1.0 + std::ldexp(1.0, -11)) * p;
      }
    }
    for (Context* gpu : {&this->gpu(), chains.get(), autotuned.get()}) {
      SCOPED_TRACE(gpu == chains.get()      ? "CudaFusions off"
                   : gpu == autotuned.get() ? "fused, GEMMs autotuned"
                                            : "fused");
      DeviceArray<T> gdy(*gpu, dy), gw(*gpu, w), gpre(*gpu, pre);
      std::vector<std::vector<T>> runs;
      for (int run = 0; run < 2; ++run) {
        DeviceArray<T> gdpre(*gpu, stored_nans<T>(n));
        ops::linear_backward_input_gelu(*gpu, gdy.get(), gw.get(), gpre.get(), gdpre.get(), c.rows, c.in, c.out);
        runs.push_back(gdpre.to_host());
      }
      EXPECT_TRUE(exactly(runs[1], runs[0]));
      EXPECT_TRUE(within(runs[0], want, slack));
    }
  }
}

TEST_F(FusedOps, Bf16GeluBackwardOfGpt2ShapeRunsAsOneCublasLtGemm) {
  const LinearLt& lt = dynamic_cast<CudaBackend&>(gpu().backend()).linear_lt();
  const int64_t rows = 256, in = 3072, out = 768;
  Rng rng(48);
  DeviceArray<bf16> dy(gpu(), stored<bf16>(random_normal(rng, rows * out)));
  DeviceArray<bf16> w(gpu(), stored<bf16>(random_normal(rng, out * in, 0.05)));
  DeviceArray<bf16> pre(gpu(), stored<bf16>(random_normal(rng, rows * in)));
  DeviceArray<bf16> dpre(gpu(), stored_nans<bf16>(rows * in));
  const int64_t before = lt.gelu_backward_calls();
  ops::linear_backward_input_gelu(gpu(), dy.get(), w.get(), pre.get(), dpre.get(), rows, in, out);
  gpu().synchronize();
  EXPECT_EQ(lt.gelu_backward_calls(), before + 1);
}

TYPED_TEST(FusedOpsIn, LinearParameterGradientsAddWithinTheGemmBoundOfTheCpuChain) {
  using T = TypeParam;
  struct Case {
    int64_t rows, in, out;
  };
  Rng rng(49);
  const auto chains = testing::make_cuda_chains();  // the chain (cuBLAS, then bias_backward) too
  // The GEMM's timed algorithm too: the timing adds into dW too, so the first call's
  // result shows that dW was put back before the call itself (Note [GEMM autotuning]).
  const auto autotuned = testing::make_cuda_autotuned();
  for (const Case& c :
       {Case{1, 1, 1}, Case{7, 5, 3}, Case{64, 192, 48}, Case{300, 768, 2304}, Case{1030, 3072, 768}}) {
    SCOPED_TRACE(::testing::Message() << c.rows << " rows, " << c.in << "->" << c.out);
    const auto dy = stored<T>(random_normal(rng, c.rows * c.out));
    const auto x = stored<T>(random_normal(rng, c.rows * c.in, 1.0, 0.5));
    const auto dw0 = random_normal(rng, c.out * c.in, 0.1), db0 = random_normal(rng, c.out, 0.1);
    std::vector<float> want_dw = dw0, want_db = db0;
    ops::linear_parameter_gradients(this->cpu(), dy.data(), x.data(), want_dw.data(), want_db.data(), c.rows, c.in,
                                    c.out);
    const auto dv = testing::values(dy), xv = testing::values(x);
    const double factor = 2.0 * gamma_n(c.rows + 2);
    std::vector<double> dw_slack(dw0.size()), db_slack(db0.size());
    for (int64_t o = 0; o < c.out; ++o) {
      double column = 0.0;
      for (int64_t r = 0; r < c.rows; ++r) column += std::fabs(dv[static_cast<size_t>(r * c.out + o)]);
      db_slack[static_cast<size_t>(o)] = factor * (column + std::fabs(db0[static_cast<size_t>(o)]));
      for (int64_t i = 0; i < c.in; ++i) {
        double magnitude = 0.0;
        for (int64_t r = 0; r < c.rows; ++r) {
          magnitude += std::fabs(static_cast<double>(dv[static_cast<size_t>(r * c.out + o)]) *
                                 xv[static_cast<size_t>(r * c.in + i)]);
        }
        const size_t at = static_cast<size_t>(o * c.in + i);
        dw_slack[at] = factor * (magnitude + std::fabs(dw0[at]));
      }
    }
    for (Context* gpu : {&this->gpu(), chains.get(), autotuned.get()}) {
      SCOPED_TRACE(gpu == chains.get()      ? "CudaFusions off"
                   : gpu == autotuned.get() ? "fused, GEMMs autotuned"
                                            : "fused");
      DeviceArray<T> gdy(*gpu, dy), gx(*gpu, x);
      std::vector<std::vector<float>> dws, dbs;
      for (int run = 0; run < 2; ++run) {
        DeviceArray<float> gdw(*gpu, dw0), gdb(*gpu, db0);
        ops::linear_parameter_gradients(*gpu, gdy.get(), gx.get(), gdw.get(), gdb.get(), c.rows, c.in, c.out);
        dws.push_back(gdw.to_host());
        dbs.push_back(gdb.to_host());
      }
      EXPECT_TRUE(exactly(dws[1], dws[0]));
      EXPECT_TRUE(exactly(dbs[1], dbs[0]));
      EXPECT_TRUE(within(dws[0], want_dw, dw_slack));
      EXPECT_TRUE(within(dbs[0], want_db, db_slack));
    }
  }
}

TEST_F(FusedOps, Bf16ParameterGradientsOfGpt2ShapesRunAsOneCublasLtGemmEach) {
  const LinearLt& lt = dynamic_cast<CudaBackend&>(gpu().backend()).linear_lt();
  const int64_t rows = 256, C = 768;
  Rng rng(50);
  struct Shape {
    int64_t in, out;
  };
  // c_attn, attn.c_proj, c_fc, mlp.c_proj.
  for (const Shape& s : {Shape{C, 3 * C}, Shape{C, C}, Shape{C, 4 * C}, Shape{4 * C, C}}) {
    SCOPED_TRACE(::testing::Message() << s.in << "->" << s.out);
    DeviceArray<bf16> dy(gpu(), stored<bf16>(random_normal(rng, rows * s.out)));
    DeviceArray<bf16> x(gpu(), stored<bf16>(random_normal(rng, rows * s.in)));
    DeviceArray<float> dw(gpu(), std::vector<float>(static_cast<size_t>(s.out * s.in), 0.0f));
    DeviceArray<float> db(gpu(), std::vector<float>(static_cast<size_t>(s.out), 0.0f));
    const int64_t before = lt.parameter_gradient_calls();
    ops::linear_parameter_gradients(gpu(), dy.get(), x.get(), dw.get(), db.get(), rows, s.in, s.out);
    gpu().synchronize();
    EXPECT_EQ(lt.parameter_gradient_calls(), before + 1);
  }
}

TYPED_TEST(FusedOpsIn, ClassifierInPlaceTakesOnlyItsPerRowWorkspace) {
  using T = TypeParam;
  const int64_t rows = 256, vocab = 50257;  // GPT-2's vocabulary
  Rng rng(42);
  DeviceArray<T> glogits(this->gpu(), stored<T>(random_normal(rng, rows * vocab, 2.0)));
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (int32_t& l : labels) l = static_cast<int32_t>(rng.below(vocab));
  DeviceArray<int32_t> glabels(this->gpu(), labels);
  DeviceArray<double> gstats(this->gpu(), std::vector<double>{0.0, 0.0});
  const size_t declared = ops::softmax_cross_entropy_workspace_bytes(this->gpu(), rows);
  // A row of probabilities alone would take more than the whole declared workspace.
  ASSERT_LT(declared, static_cast<size_t>(vocab) * sizeof(T));
  this->gpu().release_workspace();
  this->gpu().synchronize();
  Allocator& alloc = this->gpu().allocator();
  const size_t before = alloc.stats().in_use;
  alloc.reset_peak();
  ops::softmax_cross_entropy(this->gpu(), glogits.get(), glabels.get(), rows, vocab, 1.0f / rows, glogits.get(),
                             gstats.get(), 1.0);
  this->gpu().synchronize();
  EXPECT_LE(alloc.stats().peak - before, declared);
  const auto stats = gstats.to_host();
  EXPECT_TRUE(std::isfinite(stats[0]) && stats[0] > 0.0);
}

}  // namespace
}  // namespace dtrain
