// The CPU op set against naive references written here: plain loops by definition,
// accumulated in double, on seeded random inputs with odd shapes. Each expected value
// comes from the definition of the op (or a closed formula), never from the backend.
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

namespace dtrain {

// Readable parameters in failure messages (found by argument-dependent lookup).
void PrintTo(const Conv2dShape& s, std::ostream* os) {
  *os << "N=" << s.batch << " Ci=" << s.in_channels << " H=" << s.height << " W=" << s.width
      << " Co=" << s.out_channels << " K=" << s.kernel << " stride=" << s.stride
      << " pad=" << s.padding;
}
void PrintTo(const Pool2dShape& s, std::ostream* os) {
  *os << "N=" << s.batch << " C=" << s.channels << " H=" << s.height << " W=" << s.width
      << " window=" << s.window << " stride=" << s.stride;
}

namespace {

constexpr double kRelTol = 1e-4;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::unique_ptr<Context> make_context() { return Context::make_cpu(2); }

std::vector<float> random_normal(Rng& rng, size_t n, double scale = 1.0) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(scale * rng.normal());
  return v;
}

// Small integers, so equal values (ties) are common.
std::vector<float> random_levels(Rng& rng, size_t n, uint64_t levels) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.below(levels));
  return v;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// |got - ref| <= tol * (1 + |ref| + scale) everywhere; reports the first few offenders.
// `scale` (optional, per element) is the size of the terms a long reduction cancelled
// down to ref: float accumulation error grows with it, not with the result.
::testing::AssertionResult all_close(const std::vector<float>& got, const std::vector<double>& ref,
                                     double tol = kRelTol,
                                     const std::vector<double>* scale = nullptr) {
  if (got.size() != ref.size()) {
    return ::testing::AssertionFailure()
           << "size " << got.size() << " != reference size " << ref.size();
  }
  std::ostringstream bad;
  size_t failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    const double extra = scale != nullptr ? (*scale)[i] : 0.0;
    if (!(err <= tol * (1.0 + std::fabs(ref[i]) + extra))) {
      if (failures < 5) bad << "\n  [" << i << "] got " << got[i] << ", want " << ref[i];
      ++failures;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << got.size()
                                       << " elements differ:" << bad.str();
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

// -------------------------------------------------------------------------- Conv2d

std::string conv_name(const Conv2dShape& s) {
  std::ostringstream o;
  o << "N" << s.batch << "_Ci" << s.in_channels << "_" << s.height << "x" << s.width << "_Co"
    << s.out_channels << "_K" << s.kernel << "_S" << s.stride << "_P" << s.padding;
  return o.str();
}

int64_t in_index(const Conv2dShape& s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return ((n * s.in_channels + c) * s.height + h) * s.width + w;
}
int64_t out_index(const Conv2dShape& s, int64_t n, int64_t c, int64_t h, int64_t w) {
  return ((n * s.out_channels + c) * s.out_height() + h) * s.out_width() + w;
}
int64_t w_index(const Conv2dShape& s, int64_t co, int64_t ci, int64_t kh, int64_t kw) {
  return ((co * s.in_channels + ci) * s.kernel + kh) * s.kernel + kw;
}

// Calls f(n, co, oh, ow, ci, kh, kw, input index, output index, weight index) for every
// multiply of the direct convolution that reads a real (non-padding) input.
template <class F>
void for_each_tap(const Conv2dShape& s, F f) {
  for (int64_t n = 0; n < s.batch; ++n)
    for (int64_t co = 0; co < s.out_channels; ++co)
      for (int64_t oh = 0; oh < s.out_height(); ++oh)
        for (int64_t ow = 0; ow < s.out_width(); ++ow)
          for (int64_t ci = 0; ci < s.in_channels; ++ci)
            for (int64_t kh = 0; kh < s.kernel; ++kh)
              for (int64_t kw = 0; kw < s.kernel; ++kw) {
                const int64_t ih = oh * s.stride - s.padding + kh;
                const int64_t iw = ow * s.stride - s.padding + kw;
                if (ih < 0 || ih >= s.height || iw < 0 || iw >= s.width) continue;
                f(in_index(s, n, ci, ih, iw), out_index(s, n, co, oh, ow),
                  w_index(s, co, ci, kh, kw), co);
              }
}

struct ConvData {
  std::vector<float> x, w, bias, dy;
  ConvData(const Conv2dShape& s, uint64_t seed) {
    Rng rng(seed);
    x = random_normal(rng, s.batch * s.in_channels * s.height * s.width);
    w = random_normal(rng, s.out_channels * s.in_channels * s.kernel * s.kernel, 0.5);
    bias = random_normal(rng, s.out_channels);
    dy = random_normal(rng, s.batch * s.out_channels * s.out_height() * s.out_width());
  }
  size_t y_size() const { return dy.size(); }
};

std::vector<double> conv_forward_ref(const Conv2dShape& s, const ConvData& d, bool with_bias) {
  std::vector<double> y(d.dy.size(), 0.0);
  const int64_t plane = s.out_height() * s.out_width();
  if (with_bias) {
    for (size_t i = 0; i < y.size(); ++i) y[i] = d.bias[(i / plane) % s.out_channels];
  }
  for_each_tap(s, [&](int64_t xi, int64_t yi, int64_t wi, int64_t) {
    y[yi] += double{d.x[xi]} * d.w[wi];
  });
  return y;
}

std::vector<double> conv_backward_data_ref(const Conv2dShape& s, const ConvData& d) {
  std::vector<double> dx(d.x.size(), 0.0);
  for_each_tap(s, [&](int64_t xi, int64_t yi, int64_t wi, int64_t) {
    dx[xi] += double{d.dy[yi]} * d.w[wi];
  });
  return dx;
}

// dw_norm, when given, receives the 2-norm of the products summed into each dw element.
void conv_backward_filter_ref(const Conv2dShape& s, const ConvData& d, std::vector<double>& dw,
                              std::vector<double>& dbias, std::vector<double>* dw_norm = nullptr) {
  dw.assign(d.w.size(), 0.0);
  dbias.assign(s.out_channels, 0.0);
  std::vector<double> sq(d.w.size(), 0.0);
  for_each_tap(s, [&](int64_t xi, int64_t yi, int64_t wi, int64_t) {
    const double term = double{d.dy[yi]} * d.x[xi];
    dw[wi] += term;
    sq[wi] += term * term;
  });
  if (dw_norm != nullptr) {
    dw_norm->resize(sq.size());
    for (size_t i = 0; i < sq.size(); ++i) (*dw_norm)[i] = std::sqrt(sq[i]);
  }
  const int64_t plane = s.out_height() * s.out_width();
  for (size_t i = 0; i < d.dy.size(); ++i) dbias[(i / plane) % s.out_channels] += d.dy[i];
}

// Bytes of workspace one sample needs, by the layout in Note [conv2d column layout].
size_t conv_bytes_per_sample(const Conv2dShape& s) {
  const int64_t p = s.out_height() * s.out_width();
  return static_cast<size_t>((s.in_channels * s.kernel * s.kernel + s.out_channels) * p) *
         sizeof(float);
}

enum class Budget { Default, OneSample, TwoSamples };

size_t budget_bytes(const Conv2dShape& s, Budget b) {
  switch (b) {
    case Budget::Default: return cpu::kConvWorkspaceBudget;
    case Budget::OneSample: return 1;
    case Budget::TwoSamples: return 2 * conv_bytes_per_sample(s) + 7;
  }
  return 0;
}

// Non-square inputs, padding 0/1/2 (also padding >= kernel), stride 1 and 2,
// batches of 1 and 3, a 1x1 kernel.
const Conv2dShape kConvShapes[] = {
    {1, 2, 5, 7, 3, 3, 1, 1}, {3, 3, 8, 6, 4, 3, 2, 0}, {3, 2, 7, 9, 5, 5, 2, 2},
    {2, 4, 6, 5, 2, 1, 1, 0}, {3, 1, 4, 4, 2, 2, 1, 2}, {3, 3, 9, 11, 4, 3, 2, 1},
    {1, 3, 6, 4, 2, 3, 1, 0},
};

const char* budget_name(Budget b) {
  switch (b) {
    case Budget::Default: return "whole_batch";
    case Budget::OneSample: return "chunk1";
    case Budget::TwoSamples: return "chunk2";
  }
  return "unknown";
}

void PrintTo(Budget b, std::ostream* os) { *os << budget_name(b); }

class CpuConv2d : public ::testing::TestWithParam<std::tuple<Conv2dShape, Budget>> {};

TEST_P(CpuConv2d, ForwardMatchesDirectConvolution) {
  const auto [s, b] = GetParam();
  auto ctx = make_context();
  const ConvData d(s, 31);
  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "with bias" : "without bias");
    std::vector<float> y(d.y_size(), kNaN);
    cpu::conv2d_forward(*ctx, s, d.x.data(), d.w.data(), with_bias ? d.bias.data() : nullptr,
                        y.data(), budget_bytes(s, b));
    EXPECT_TRUE(all_close(y, conv_forward_ref(s, d, with_bias)));
  }
}

TEST_P(CpuConv2d, BackwardDataMatchesDirectAdjointAndOverwritesDx) {
  const auto [s, b] = GetParam();
  auto ctx = make_context();
  const ConvData d(s, 32);
  std::vector<float> dx(d.x.size(), kNaN);
  cpu::conv2d_backward_data(*ctx, s, d.dy.data(), d.w.data(), dx.data(), budget_bytes(s, b));
  EXPECT_TRUE(all_close(dx, conv_backward_data_ref(s, d)));
}

TEST_P(CpuConv2d, BackwardFilterAccumulatesDirectGradient) {
  const auto [s, b] = GetParam();
  auto ctx = make_context();
  const ConvData d(s, 33);
  std::vector<double> dw_ref, dbias_ref;
  conv_backward_filter_ref(s, d, dw_ref, dbias_ref);
  Rng rng(34);
  auto dw = random_normal(rng, d.w.size());
  auto dbias = random_normal(rng, s.out_channels);
  for (size_t i = 0; i < dw.size(); ++i) dw_ref[i] = dw[i] + 2.0 * dw_ref[i];
  for (size_t i = 0; i < dbias.size(); ++i) dbias_ref[i] = dbias[i] + 2.0 * dbias_ref[i];
  for (int call = 0; call < 2; ++call) {
    cpu::conv2d_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw.data(), dbias.data(),
                                budget_bytes(s, b));
  }
  EXPECT_TRUE(all_close(dw, dw_ref));
  EXPECT_TRUE(all_close(dbias, dbias_ref));

  // A null dbias is allowed and leaves only dw updated.
  auto dw_only = std::vector<float>(d.w.size(), 0.0f);
  cpu::conv2d_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw_only.data(), nullptr,
                              budget_bytes(s, b));
  std::vector<double> once;
  conv_backward_filter_ref(s, d, once, dbias_ref);
  EXPECT_TRUE(all_close(dw_only, once));
}

std::string conv_case_name(const ::testing::TestParamInfo<CpuConv2d::ParamType>& info) {
  return conv_name(std::get<0>(info.param)) + "_" + budget_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    ShapesAndChunks, CpuConv2d,
    ::testing::Combine(::testing::ValuesIn(kConvShapes),
                       ::testing::Values(Budget::Default, Budget::OneSample, Budget::TwoSamples)),
    conv_case_name);

TEST(CpuConv2dChunks, ChunkIsTheSamplesThatFitTheBudgetClampedToTheBatch) {
  const Conv2dShape s{10, 3, 9, 7, 4, 3, 1, 1};
  const size_t per = conv_bytes_per_sample(s);
  EXPECT_EQ(cpu::conv2d_chunk_samples(s, 1), 1);
  EXPECT_EQ(cpu::conv2d_chunk_samples(s, per - 1), 1);
  EXPECT_EQ(cpu::conv2d_chunk_samples(s, per), 1);
  EXPECT_EQ(cpu::conv2d_chunk_samples(s, 3 * per + per / 2), 3);
  EXPECT_EQ(cpu::conv2d_chunk_samples(s, 10 * per), 10);
  EXPECT_EQ(cpu::conv2d_chunk_samples(s, 100 * per), 10);
  EXPECT_EQ(cpu::conv2d_chunk_samples(Conv2dShape{0, 3, 9, 7, 4, 3, 1, 1}, per), 0);
}

// Through the public ops with the real budget: a batch too large for one chunk.
TEST(CpuConv2dChunks, DefaultBudgetSplitsALargeBatchAndStillMatches) {
  const Conv2dShape s{28, 16, 64, 64, 8, 3, 1, 1};
  const int64_t chunk = cpu::conv2d_chunk_samples(s, cpu::kConvWorkspaceBudget);
  ASSERT_GT(chunk, 1);
  ASSERT_LT(chunk, s.batch);
  ASSERT_NE(s.batch % chunk, 0) << "the last chunk should be a partial one";
  auto ctx = make_context();
  const ConvData d(s, 35);

  std::vector<float> y(d.y_size(), kNaN);
  ops::conv2d_forward(*ctx, s, d.x.data(), d.w.data(), d.bias.data(), y.data());
  EXPECT_TRUE(all_close(y, conv_forward_ref(s, d, true)));

  std::vector<float> dx(d.x.size(), kNaN);
  ops::conv2d_backward_data(*ctx, s, d.dy.data(), d.w.data(), dx.data());
  EXPECT_TRUE(all_close(dx, conv_backward_data_ref(s, d)));

  std::vector<float> dw(d.w.size(), 0.0f), dbias(s.out_channels, 0.0f);
  ops::conv2d_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw.data(), dbias.data());
  std::vector<double> dw_ref, dbias_ref, dw_norm;
  conv_backward_filter_ref(s, d, dw_ref, dbias_ref, &dw_norm);
  // Each dw element sums 28*64*64 products in float inside GEMM, so its error is
  // relative to the size of those products; a lost or doubled chunk would still
  // move it by orders of magnitude more than this bound.
  EXPECT_TRUE(all_close(dw, dw_ref, 1e-5, &dw_norm));
  EXPECT_TRUE(all_close(dbias, dbias_ref));
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
// and one large enough to run in parallel.
INSTANTIATE_TEST_SUITE_P(Shapes, CpuMaxPool,
                         ::testing::Values(Pool2dShape{1, 1, 4, 4, 2, 2},
                                           Pool2dShape{3, 2, 7, 5, 2, 2},
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
