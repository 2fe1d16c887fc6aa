// The CPU op set against naive references written here: plain loops by definition,
// accumulated in double, on seeded random inputs with odd shapes. Each expected value
// comes from the definition of the op (or a closed formula), never from the backend.
// The convolutions have their own file, test_cpu_conv2d.cpp.
#include <cblas.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/unit/kernels/cpu_test_util.h"

namespace dtrain {

// Readable parameters in failure messages (found by argument-dependent lookup).
void PrintTo(const Pool2dShape& s, std::ostream* os) {
  *os << "N=" << s.batch << " C=" << s.channels << " H=" << s.height << " W=" << s.width
      << " window=" << s.window << " stride=" << s.stride;
}

namespace {

using cpu_test::all_close;
using cpu_test::kNaN;
using cpu_test::kRelTol;
using cpu_test::random_normal;
using cpu_test::same_bits;
using cpu_test::to_double;

std::unique_ptr<Context> make_context() { return Context::make_cpu(2); }

// Small integers, so equal values (ties) are common.
std::vector<float> random_levels(Rng& rng, size_t n, uint64_t levels) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.below(levels));
  return v;
}

// ---------------------------------------------------------------------------- GEMM

struct GemmCase {
  int64_t m, n, k;
};

void check_gemm(const GemmCase& g, bool ta, bool tb, float alpha, float beta, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k
                                    << " trans_a=" << ta << " trans_b=" << tb
                                    << " alpha=" << alpha << " beta=" << beta);
  auto ctx = make_context();
  Rng rng(seed);
  // Leading dimensions larger than the rows, so strided access is exercised.
  const int64_t a_rows = ta ? g.k : g.m, a_cols = ta ? g.m : g.k;
  const int64_t b_rows = tb ? g.n : g.k, b_cols = tb ? g.k : g.n;
  const int64_t lda = a_cols + 3, ldb = b_cols + 2, ldc = g.n + 1;
  const auto a = random_normal(rng, static_cast<size_t>(a_rows * lda));
  const auto b = random_normal(rng, static_cast<size_t>(b_rows * ldb));
  auto c = random_normal(rng, static_cast<size_t>(g.m * ldc));
  std::vector<double> ref = to_double(c);
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double acc = 0.0;
      for (int64_t p = 0; p < g.k; ++p) {
        const double av = ta ? a[p * lda + i] : a[i * lda + p];
        const double bv = tb ? b[j * ldb + p] : b[p * ldb + j];
        acc += av * bv;
      }
      ref[i * ldc + j] = alpha * acc + beta * static_cast<double>(c[i * ldc + j]);
    }
  }
  ops::gemm(*ctx, ta, tb, g.m, g.n, g.k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(),
            ldc);
  EXPECT_TRUE(all_close(c, ref));
}

TEST(CpuGemm, AllTransposeCombinationsWithAlphaBetaMatchNaive) {
  uint64_t seed = 1;
  for (const GemmCase& g : {GemmCase{7, 5, 9}, GemmCase{67, 131, 45}, GemmCase{1, 17, 3}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        check_gemm(g, ta, tb, 0.7f, -0.3f, ++seed);
        check_gemm(g, ta, tb, 1.0f, 0.0f, ++seed);
        check_gemm(g, ta, tb, -1.5f, 1.0f, ++seed);
      }
    }
  }
}

// Note [Zeroing C] (kernels/cpu/gemm.cpp): with beta == 0 the backend zeroes C itself
// and calls OpenBLAS with beta == 1. The oracle is OpenBLAS's own beta == 0 call on the
// same operands: every element the same bits, NaN garbage in C overwritten, and the
// padding columns of a strided C (ldc > n) untouched. One call each (gemm_serial), so
// the extents match; shapes on both sides of OpenBLAS's small-product kernels, every
// transpose, alpha 1 and not. (On a CPU with AVX-512 the backend keeps OpenBLAS's own
// beta == 0 path, and this holds the padding and the garbage only.)
TEST(CpuGemm, BetaZeroGivesOpenBlasOwnBetaZeroBits) {
  Rng rng(29);
  for (const GemmCase& g : {GemmCase{64, 64, 32}, GemmCase{96, 520, 100}, GemmCase{700, 64, 128}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (float alpha : {1.0f, 0.125f}) {
          SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k << " trans_a=" << ta
                                            << " trans_b=" << tb << " alpha=" << alpha);
          const int64_t lda = ta ? g.m : g.k, ldb = tb ? g.k : g.n, ldc = g.n + 5;
          const auto a = random_normal(rng, g.m * g.k), b = random_normal(rng, g.k * g.n);
          std::vector<float> ours(g.m * ldc, kNaN);
          std::vector<float> theirs = random_normal(rng, g.m * ldc);
          for (int64_t i = 0; i < g.m; ++i) {
            for (int64_t j = g.n; j < ldc; ++j) ours[i * ldc + j] = theirs[i * ldc + j];  // the same padding
          }
          cpu::gemm_serial(ta, tb, g.m, g.n, g.k, alpha, a.data(), lda, b.data(), ldb, 0.0f, ours.data(), ldc);
          cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                      static_cast<blasint>(g.m), static_cast<blasint>(g.n), static_cast<blasint>(g.k), alpha,
                      a.data(), static_cast<blasint>(lda), b.data(), static_cast<blasint>(ldb), 0.0f,
                      theirs.data(), static_cast<blasint>(ldc));
          EXPECT_TRUE(same_bits(ours, theirs));
        }
      }
    }
  }
}

TEST(CpuGemm, BetaZeroOverwritesGarbageInC) {
  auto ctx = make_context();
  Rng rng(11);
  const int64_t m = 6, n = 4, k = 5;
  const auto a = random_normal(rng, m * k);
  const auto b = random_normal(rng, k * n);
  std::vector<float> c(m * n, kNaN);
  std::vector<double> ref(m * n, 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t p = 0; p < k; ++p) ref[i * n + j] += double{a[i * k + p]} * b[p * n + j];
  ops::gemm(*ctx, false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n);
  EXPECT_TRUE(all_close(c, ref));
}

TEST(CpuGemm, EmptyInnerDimensionOnlyScalesC) {
  auto ctx = make_context();
  std::vector<float> c = {1.0f, -2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  ops::gemm(*ctx, false, false, 2, 3, 0, 1.0f, nullptr, 0, nullptr, 3, 0.5f, c.data(), 3);
  EXPECT_TRUE(all_close(c, {0.5, -1.0, 1.5, 2.0, 2.5, 3.0}));
}

// Products large enough to be cut into slabs for the team (Note [One thread pool],
// kernels/cpu/gemm.cpp), cut across columns and across rows (and the MLP's 64 x 128 x 256,
// just large enough for two slabs), with every transpose: the
// same bits on 1, 2, 3 and 8 threads and on a repeat. On OpenBLAS's AVX2 kernels an
// element's sum order depends on the call's extents, so a cut that followed the
// threads fails here on such a CPU (it did on an AMD EPYC without AVX-512).
TEST(CpuGemm, GivesTheSameBitsOnOneTwoThreeAndEightThreads) {
  Rng rng(13);
  for (const GemmCase& g : {GemmCase{96, 520, 100}, GemmCase{700, 64, 128}, GemmCase{64, 128, 256}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k << " trans_a=" << ta
                                          << " trans_b=" << tb);
        const auto a = random_normal(rng, g.m * g.k), b = random_normal(rng, g.k * g.n);
        const auto c0 = random_normal(rng, g.m * g.n);
        auto product = [&](int threads) {
          auto ctx = Context::make_cpu(threads);
          std::vector<float> c = c0;
          ops::gemm(*ctx, ta, tb, g.m, g.n, g.k, 0.5f, a.data(), ta ? g.m : g.k, b.data(), tb ? g.k : g.n, 1.0f,
                    c.data(), g.n);
          return c;
        };
        const std::vector<float> one = product(1);
        for (int threads : {2, 3, 8, 1}) EXPECT_TRUE(same_bits(product(threads), one)) << threads << " threads";
      }
    }
  }
}

// --------------------------------------------------------------------- Elementwise

struct BiasCase {
  int64_t outer, channels, inner;
};
// inner == 1 is the linear-layer path; 300 x 130 x 1 and 8 x 64 x 100 cross the
// parallel threshold, and 130 channels span several column blocks.
const BiasCase kBiasCases[] = {{3, 5, 7}, {4, 9, 1}, {300, 130, 1}, {8, 64, 100}, {1, 1, 1}};

TEST(CpuElementwise, AddBiasMatchesNaive) {
  auto ctx = make_context();
  Rng rng(21);
  for (const BiasCase& bc : kBiasCases) {
    SCOPED_TRACE(::testing::Message()
                 << "outer=" << bc.outer << " channels=" << bc.channels << " inner=" << bc.inner);
    auto y = random_normal(rng, bc.outer * bc.channels * bc.inner);
    const auto bias = random_normal(rng, bc.channels);
    std::vector<double> ref = to_double(y);
    for (int64_t o = 0; o < bc.outer; ++o)
      for (int64_t c = 0; c < bc.channels; ++c)
        for (int64_t i = 0; i < bc.inner; ++i)
          ref[(o * bc.channels + c) * bc.inner + i] += bias[c];
    ops::add_bias(*ctx, y.data(), bias.data(), bc.outer, bc.channels, bc.inner);
    EXPECT_TRUE(all_close(y, ref));
  }
}

TEST(CpuElementwise, BiasBackwardAccumulatesIntoDbias) {
  auto ctx = make_context();
  Rng rng(22);
  for (const BiasCase& bc : kBiasCases) {
    SCOPED_TRACE(::testing::Message()
                 << "outer=" << bc.outer << " channels=" << bc.channels << " inner=" << bc.inner);
    const auto dy = random_normal(rng, bc.outer * bc.channels * bc.inner);
    auto dbias = random_normal(rng, bc.channels);
    std::vector<double> sums(bc.channels, 0.0);
    for (int64_t o = 0; o < bc.outer; ++o)
      for (int64_t c = 0; c < bc.channels; ++c)
        for (int64_t i = 0; i < bc.inner; ++i) sums[c] += dy[(o * bc.channels + c) * bc.inner + i];
    std::vector<double> ref(bc.channels);
    for (int64_t c = 0; c < bc.channels; ++c) ref[c] = dbias[c] + 2.0 * sums[c];
    ops::bias_backward(*ctx, dy.data(), dbias.data(), bc.outer, bc.channels, bc.inner);
    ops::bias_backward(*ctx, dy.data(), dbias.data(), bc.outer, bc.channels, bc.inner);
    EXPECT_TRUE(all_close(dbias, ref));
  }
}

TEST(CpuElementwise, ReluForwardAndBackwardMatchDefinition) {
  auto ctx = make_context();
  Rng rng(23);
  for (int64_t n : {int64_t{13}, (int64_t{1} << 16) + 3}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto x = random_normal(rng, n);
    x[0] = 0.0f;
    const auto dy = random_normal(rng, n);
    std::vector<float> y(n, kNaN), dx(n, kNaN);
    std::vector<double> y_ref(n), dx_ref(n);
    for (int64_t i = 0; i < n; ++i) {
      y_ref[i] = x[i] > 0.0f ? x[i] : 0.0;
      dx_ref[i] = x[i] > 0.0f ? dy[i] : 0.0;
    }
    ops::relu_forward(*ctx, x.data(), y.data(), n);
    EXPECT_TRUE(all_close(y, y_ref));
    ops::relu_backward(*ctx, y.data(), dy.data(), dx.data(), n);
    EXPECT_TRUE(all_close(dx, dx_ref));
    ops::relu_forward(*ctx, x.data(), x.data(), n);  // documented to allow aliasing
    EXPECT_TRUE(all_close(x, y_ref));
  }
}

TEST(CpuElementwise, ReluForwardPropagatesNaN) {
  auto ctx = make_context();
  std::vector<float> x = {kNaN, -1.0f, 2.0f};
  std::vector<float> y(3);
  ops::relu_forward(*ctx, x.data(), y.data(), 3);
  EXPECT_TRUE(std::isnan(y[0]));
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], 2.0f);
}

TEST(CpuElementwise, FillAndHostCopiesRoundTrip) {
  auto ctx = make_context();
  Rng rng(24);
  for (int64_t n : {int64_t{5}, (int64_t{1} << 16) + 1}) {
    std::vector<float> x(n, kNaN);
    ops::fill(*ctx, x.data(), n, 2.5f);
    EXPECT_TRUE(all_close(x, std::vector<double>(n, 2.5)));
    const auto src = random_normal(rng, n);
    std::vector<float> dev(n), back(n);
    ops::copy_from_host(*ctx, dev.data(), src.data(), n * sizeof(float));
    ops::copy_to_host(*ctx, back.data(), dev.data(), n * sizeof(float));
    EXPECT_EQ(back, src);
  }
}

// ------------------------------------------------------------------------- MaxPool

std::string pool_name(const Pool2dShape& s) {
  std::ostringstream o;
  o << "N" << s.batch << "_C" << s.channels << "_" << s.height << "x" << s.width << "_W"
    << s.window << "_S" << s.stride;
  return o.str();
}

// The first maximum in row-major order of each window.
void maxpool_ref(const Pool2dShape& s, const std::vector<float>& x, std::vector<double>& y,
                 std::vector<int32_t>& argmax) {
  const int64_t ho = s.out_height(), wo = s.out_width();
  y.assign(s.batch * s.channels * ho * wo, 0.0);
  argmax.assign(y.size(), -1);
  for (int64_t pl = 0; pl < s.batch * s.channels; ++pl) {
    for (int64_t oh = 0; oh < ho; ++oh) {
      for (int64_t ow = 0; ow < wo; ++ow) {
        const int64_t o = pl * ho * wo + oh * wo + ow;
        for (int64_t i = 0; i < s.window; ++i) {
          for (int64_t j = 0; j < s.window; ++j) {
            const int64_t at = (oh * s.stride + i) * s.width + ow * s.stride + j;
            const float v = x[pl * s.height * s.width + at];
            if (argmax[o] < 0 || v > y[o]) {
              y[o] = v;
              argmax[o] = static_cast<int32_t>(at);
            }
          }
        }
      }
    }
  }
}

class CpuMaxPool : public ::testing::TestWithParam<Pool2dShape> {};

// Half the inputs are small integers, so most windows hold ties.
TEST_P(CpuMaxPool, ForwardAndBackwardMatchNaiveWithFirstMaxTieRule) {
  const Pool2dShape s = GetParam();
  auto ctx = make_context();
  Rng rng(41);
  const size_t in_size = s.batch * s.channels * s.height * s.width;
  const size_t out_size = s.batch * s.channels * s.out_height() * s.out_width();
  for (bool ties : {false, true}) {
    SCOPED_TRACE(ties ? "many ties" : "distinct values");
    const auto x = ties ? random_levels(rng, in_size, 3) : random_normal(rng, in_size);
    std::vector<double> y_ref;
    std::vector<int32_t> arg_ref;
    maxpool_ref(s, x, y_ref, arg_ref);
    std::vector<float> y(out_size, kNaN);
    std::vector<int32_t> arg(out_size, -7);
    ops::maxpool2d_forward(*ctx, s, x.data(), y.data(), arg.data());
    EXPECT_TRUE(all_close(y, y_ref));
    EXPECT_EQ(arg, arg_ref);

    const auto dy = random_normal(rng, out_size);
    std::vector<double> dx_ref(in_size, 0.0);
    const int64_t in_plane = s.height * s.width, out_plane = s.out_height() * s.out_width();
    for (size_t o = 0; o < out_size; ++o) {
      dx_ref[(o / out_plane) * in_plane + arg_ref[o]] += dy[o];
    }
    std::vector<float> dx(in_size, kNaN);
    ops::maxpool2d_backward(*ctx, s, dy.data(), arg.data(), dx.data());
    EXPECT_TRUE(all_close(dx, dx_ref));
  }
}

// Odd sizes that floor, overlapping windows (stride < window), non-square planes,
// rows of 2x2 windows that are not a multiple of four long (7: the CNN's second pool),
// and one large enough to run in parallel.
INSTANTIATE_TEST_SUITE_P(Shapes, CpuMaxPool,
                         ::testing::Values(Pool2dShape{1, 1, 4, 4, 2, 2},
                                           Pool2dShape{3, 2, 7, 5, 2, 2},
                                           Pool2dShape{2, 3, 14, 15, 2, 2},
                                           Pool2dShape{2, 3, 7, 9, 3, 2},
                                           Pool2dShape{1, 2, 5, 6, 3, 1},
                                           Pool2dShape{3, 4, 6, 6, 3, 3},
                                           Pool2dShape{3, 8, 40, 36, 2, 2}),
                         [](const ::testing::TestParamInfo<Pool2dShape>& p) {
                           return pool_name(p.param);
                         });

TEST(CpuMaxPoolTies, EqualValuesPickTheFirstInRowMajorOrder) {
  auto ctx = make_context();
  const Pool2dShape s{1, 1, 4, 4, 2, 2};
  // Window (0,0): 5 at (0,1), (1,0), (1,1) -> (0,1). Window (0,1): all 7 -> (0,2).
  // Window (1,0): 3 at (3,0), (3,1) -> (3,0). Window (1,1): one max at (3,3).
  const std::vector<float> x = {1, 5, 7, 7,  //
                                5, 5, 7, 7,  //
                                0, 2, 1, 1,  //
                                3, 3, 1, 4};
  std::vector<float> y(4);
  std::vector<int32_t> arg(4);
  ops::maxpool2d_forward(*ctx, s, x.data(), y.data(), arg.data());
  EXPECT_EQ(y, (std::vector<float>{5, 7, 3, 4}));
  EXPECT_EQ(arg, (std::vector<int32_t>{1, 2, 12, 15}));
}

// ------------------------------------------------------------------- Cross-entropy

struct CeRef {
  double loss = 0.0, correct = 0.0;
  std::vector<double> dlogits;
};

CeRef cross_entropy_ref(const std::vector<float>& z, const std::vector<int32_t>& labels,
                        int64_t classes, double grad_scale) {
  CeRef r;
  const auto batch = static_cast<int64_t>(labels.size());
  r.dlogits.resize(z.size());
  for (int64_t i = 0; i < batch; ++i) {
    const float* row = z.data() + i * classes;
    double mx = row[0];
    int64_t first_max = 0;
    for (int64_t c = 1; c < classes; ++c) {
      if (row[c] > mx) {
        mx = row[c];
        first_max = c;
      }
    }
    double sum = 0.0;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(row[c] - mx);
    const double lse = mx + std::log(sum);
    r.loss += lse - row[labels[i]];
    r.correct += first_max == labels[i] ? 1.0 : 0.0;
    for (int64_t c = 0; c < classes; ++c) {
      r.dlogits[i * classes + c] =
          grad_scale * (std::exp(row[c] - lse) - (c == labels[i] ? 1.0 : 0.0));
    }
  }
  return r;
}

TEST(CpuCrossEntropy, MatchesLogSumExpFormulaAndAccumulatesStats) {
  auto ctx = make_context();
  Rng rng(51);
  // 300 x 113 runs the parallel path.
  for (auto [batch, classes] : {std::pair<int64_t, int64_t>{5, 7}, {1, 2}, {300, 113}}) {
    SCOPED_TRACE(::testing::Message() << "batch=" << batch << " classes=" << classes);
    const auto z = random_normal(rng, batch * classes, 3.0);
    std::vector<int32_t> labels(batch);
    for (auto& l : labels) l = static_cast<int32_t>(rng.below(classes));
    const float scale = 1.0f / static_cast<float>(batch);
    const CeRef ref = cross_entropy_ref(z, labels, classes, scale);

    double stats[2] = {1.5, 2.0};
    std::vector<float> dz(z.size(), kNaN);
    ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), batch, classes, scale, dz.data(),
                               stats);
    EXPECT_NEAR(stats[0], 1.5 + ref.loss, kRelTol * (1.0 + std::fabs(ref.loss)));
    EXPECT_EQ(stats[1], 2.0 + ref.correct);
    EXPECT_TRUE(all_close(dz, ref.dlogits));

    // Without dlogits only the statistics move.
    ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), batch, classes, scale, nullptr,
                               stats);
    EXPECT_NEAR(stats[0], 1.5 + 2.0 * ref.loss, kRelTol * (1.0 + 2.0 * std::fabs(ref.loss)));
    EXPECT_EQ(stats[1], 2.0 + 2.0 * ref.correct);
  }
}

TEST(CpuCrossEntropy, LargeLogitsDoNotOverflow) {
  auto ctx = make_context();
  const int64_t classes = 4;
  const std::vector<float> z = {1000, 999, 998, -1000,       // label 1
                                1000, 1000, 1000, 1000,      // label 3, all equal
                                -1000, -1000, -999, -1000};  // label 2
  const std::vector<int32_t> labels = {1, 3, 2};
  // By hand: softmax is shift-invariant, so each row's loss is that of the shifted row.
  const double row0 = std::log(1.0 + std::exp(-1.0) + std::exp(-2.0) + std::exp(-2000.0)) + 1.0;
  const double row1 = std::log(4.0);
  const double row2 = std::log(3.0 * std::exp(-1.0) + 1.0);
  double stats[2] = {0.0, 0.0};
  std::vector<float> dz(z.size());
  ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), 3, classes, 1.0f, dz.data(), stats);
  EXPECT_NEAR(stats[0], row0 + row1 + row2, 1e-4);
  EXPECT_EQ(stats[1], 1.0);  // row 2 only; row 1's first maximum is class 0
  for (float g : dz) EXPECT_TRUE(std::isfinite(g));
  EXPECT_TRUE(all_close(dz, cross_entropy_ref(z, labels, classes, 1.0).dlogits));
  EXPECT_NEAR(dz[4 + 3], 0.25 - 1.0, 1e-6);
}

TEST(CpuCrossEntropy, AccuracyCountsOnlyTheFirstOfTiedMaxima) {
  auto ctx = make_context();
  const std::vector<float> z = {2, 5, 5, 1,   // first max is class 1
                                2, 5, 5, 1};
  const std::vector<int32_t> labels = {2, 1};
  double stats[2] = {0.0, 0.0};
  ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), 2, 4, 1.0f, nullptr, stats);
  EXPECT_EQ(stats[1], 1.0);
}

TEST(CpuCrossEntropy, LabelOutOfRangeThrowsDataErrorNamingRowAndLabel) {
  auto ctx = make_context();
  Rng rng(52);
  const auto z = random_normal(rng, 3 * 10);
  for (auto [labels, row, label] :
       {std::tuple<std::vector<int32_t>, int, int>{{0, 3, 10}, 2, 10}, {{-1, 3, 4}, 0, -1}}) {
    double stats[2] = {0.5, 1.0};
    std::vector<float> dz(z.size(), 9.0f);
    try {
      ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), 3, 10, 1.0f, dz.data(), stats);
      ADD_FAILURE() << "no DataError for label " << label;
    } catch (const DataError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("row " + std::to_string(row)), std::string::npos) << msg;
      EXPECT_NE(msg.find("label " + std::to_string(label)), std::string::npos) << msg;
    }
    EXPECT_EQ(stats[0], 0.5);
    EXPECT_EQ(stats[1], 1.0);
    EXPECT_EQ(dz, std::vector<float>(z.size(), 9.0f));
  }
}

// ----------------------------------------------------------------------- Optimizers

struct SgdCase {
  const char* name;
  SgdHyper h;
  bool with_buffer;
};

void PrintTo(const SgdCase& c, std::ostream* os) { *os << c.name; }

class CpuSgd : public ::testing::TestWithParam<SgdCase> {};

TEST_P(CpuSgd, ThreeStepsMatchScalarReference) {
  const SgdCase& c = GetParam();
  auto ctx = make_context();
  for (int64_t n : {int64_t{37}, (int64_t{1} << 16) + 5}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    Rng rng(61);
    auto p = random_normal(rng, n);
    std::vector<float> buf(n, 0.0f);
    std::vector<double> p_ref = to_double(p), buf_ref(n, 0.0);
    const double lr = c.h.lr, mu = c.h.momentum, wd = c.h.weight_decay;
    for (int step = 0; step < 3; ++step) {
      const auto g = random_normal(rng, n);
      for (int64_t i = 0; i < n; ++i) {
        p_ref[i] -= lr * wd * p_ref[i];
        buf_ref[i] = mu * buf_ref[i] + g[i];
        p_ref[i] -= lr * (c.h.nesterov ? g[i] + mu * buf_ref[i] : buf_ref[i]);
      }
      ops::sgd_update(*ctx, p.data(), g.data(), c.with_buffer ? buf.data() : nullptr, n, c.h);
    }
    EXPECT_TRUE(all_close(p, p_ref));
    if (c.with_buffer) {
      EXPECT_TRUE(all_close(buf, buf_ref));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, CpuSgd,
    ::testing::Values(SgdCase{"plain", {0.1f, 0.0f, 0.0f, false}, true},
                      SgdCase{"plain_without_buffer", {0.1f, 0.0f, 0.0f, false}, false},
                      SgdCase{"momentum", {0.05f, 0.9f, 0.0f, false}, true},
                      SgdCase{"nesterov", {0.05f, 0.9f, 0.0f, true}, true},
                      SgdCase{"weight_decay", {0.1f, 0.0f, 0.01f, false}, true},
                      SgdCase{"momentum_weight_decay", {0.05f, 0.9f, 0.05f, false}, true},
                      SgdCase{"nesterov_weight_decay", {0.05f, 0.9f, 0.05f, true}, true}),
    [](const ::testing::TestParamInfo<SgdCase>& p) { return std::string(p.param.name); });

TEST(CpuAdamW, ThreeStepsMatchReferenceFormula) {
  auto ctx = make_context();
  for (int64_t n : {int64_t{37}, (int64_t{1} << 16) + 5}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    Rng rng(71);
    auto p = random_normal(rng, n);
    std::vector<float> m(n, 0.0f), v(n, 0.0f);
    std::vector<double> p_ref = to_double(p), m_ref(n, 0.0), v_ref(n, 0.0);
    AdamWHyper h{0.01f, 0.9f, 0.999f, 1e-8f, 0.05f, 0};
    for (int64_t t = 1; t <= 3; ++t) {
      h.step = t;
      const auto g = random_normal(rng, n);
      const double b1 = h.beta1, b2 = h.beta2, lr = h.lr;
      for (int64_t i = 0; i < n; ++i) {
        p_ref[i] *= 1.0 - lr * h.weight_decay;
        m_ref[i] = b1 * m_ref[i] + (1.0 - b1) * g[i];
        v_ref[i] = b2 * v_ref[i] + (1.0 - b2) * double{g[i]} * g[i];
        const double mhat = m_ref[i] / (1.0 - std::pow(b1, double(t)));
        const double vhat = v_ref[i] / (1.0 - std::pow(b2, double(t)));
        p_ref[i] -= lr * mhat / (std::sqrt(vhat) + h.eps);
      }
      ops::adamw_update(*ctx, p.data(), g.data(), m.data(), v.data(), n, h);
    }
    EXPECT_TRUE(all_close(p, p_ref));
    EXPECT_TRUE(all_close(m, m_ref));
    EXPECT_TRUE(all_close(v, v_ref));
  }
}

// grad_scale (gradient clipping's coefficient, folded into the update) is bit for bit
// scale() of the gradients followed by the update at scale 1, and leaves the gradients
// as they were.
TEST(CpuOptimizers, GradScaleIsScaleThenTheUnscaledUpdateBitForBit) {
  auto ctx = make_context();
  const int64_t n = (int64_t{1} << 16) + 5;  // threaded
  Rng rng(72);
  const auto p0 = random_normal(rng, n), g = random_normal(rng, n), m0 = random_normal(rng, n, 0.1);
  std::vector<float> v0(m0.size());
  for (size_t i = 0; i < v0.size(); ++i) v0[i] = m0[i] * m0[i];
  for (const float scale : {0.37f, 1.0f / 3.0f, 1e-3f}) {
    SCOPED_TRACE(::testing::Message() << "grad_scale " << scale);
    auto scaled = g;
    ops::scale(*ctx, scaled.data(), n, scale);
    for (const SgdHyper base : {SgdHyper{0.1f, 0.0f, 0.01f, false}, SgdHyper{0.05f, 0.9f, 0.0f, false},
                                SgdHyper{0.05f, 0.9f, 0.05f, true}}) {
      SgdHyper fused = base;
      fused.grad_scale = scale;
      auto p_ref = p0, buf_ref = m0, p = p0, buf = m0, grads = g;
      ops::sgd_update(*ctx, p_ref.data(), scaled.data(), buf_ref.data(), n, base);
      ops::sgd_update(*ctx, p.data(), grads.data(), buf.data(), n, fused);
      EXPECT_TRUE(same_bits(p, p_ref));
      EXPECT_TRUE(same_bits(buf, buf_ref));
      EXPECT_TRUE(same_bits(grads, g));
    }
    AdamWHyper base{0.01f, 0.9f, 0.999f, 1e-8f, 0.05f, 3};
    AdamWHyper fused = base;
    fused.grad_scale = scale;
    auto p_ref = p0, m_ref = m0, v_ref = v0, p = p0, m = m0, v = v0, grads = g;
    ops::adamw_update(*ctx, p_ref.data(), scaled.data(), m_ref.data(), v_ref.data(), n, base);
    ops::adamw_update(*ctx, p.data(), grads.data(), m.data(), v.data(), n, fused);
    EXPECT_TRUE(same_bits(p, p_ref));
    EXPECT_TRUE(same_bits(m, m_ref));
    EXPECT_TRUE(same_bits(v, v_ref));
    EXPECT_TRUE(same_bits(grads, g));
  }
}

// -------------------------------------------------------------------------- Backend

TEST(CpuBackend, ContextDispatchesToTheCpuBackend) {
  auto ctx = make_context();
  EXPECT_EQ(ctx->device_kind(), DeviceKind::Cpu);
  EXPECT_EQ(&ctx->backend(), &cpu::backend());
  EXPECT_STREQ(ctx->backend().name(), "cpu");
  EXPECT_EQ(ctx->num_threads(), 2);
}

}  // namespace
}  // namespace dtrain
