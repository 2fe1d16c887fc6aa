// The CPU convolutions. The im2col convolution (kernels/cpu/conv2d_im2col.h), the
// oracle, against the direct convolution by definition in double; the backend's oneDNN
// convolutions (the ops) against the oracle within a rounding bound, and against the
// definition; their determinism on 1, 2 and 3 threads; their plans and workspace.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu/conv2d_im2col.h"
#include "kernels/cpu/conv2d_plan.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/errors.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/unit/kernels/cpu_test_util.h"

namespace dtrain {

// Readable parameters in failure messages (found by argument-dependent lookup).
void PrintTo(const Conv2dShape& s, std::ostream* os) {
  *os << "N=" << s.batch << " Ci=" << s.in_channels << " H=" << s.height << " W=" << s.width
      << " Co=" << s.out_channels << " K=" << s.kernel << " stride=" << s.stride
      << " pad=" << s.padding;
}

namespace {

using cpu_test::all_close;
using cpu_test::kNaN;
using cpu_test::random_normal;
using cpu_test::same_bits;

std::unique_ptr<Context> make_context(int threads = 2) { return Context::make_cpu(threads); }

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

// Calls f(input index, output index, weight index) for every multiply of the direct
// convolution that reads a real (non-padding) input.
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
                  w_index(s, co, ci, kh, kw));
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

// Each output's sum by the definition, in double, with what error bounds need: the sum
// of its addends' magnitudes, their 2-norm, and how many there are.
struct RefSums {
  std::vector<double> value, magnitude, square;
  std::vector<int64_t> addends;

  explicit RefSums(size_t n) : value(n, 0.0), magnitude(n, 0.0), square(n, 0.0), addends(n, 0) {}
  void add(size_t i, double term) {
    value[i] += term;
    magnitude[i] += std::fabs(term);
    square[i] += term * term;
    ++addends[i];
  }
  std::vector<double> norm() const {
    std::vector<double> out(square.size());
    for (size_t i = 0; i < out.size(); ++i) out[i] = std::sqrt(square[i]);
    return out;
  }
};

RefSums forward_ref(const Conv2dShape& s, const ConvData& d, bool with_bias) {
  RefSums y(d.y_size());
  const int64_t plane = s.out_height() * s.out_width();
  if (with_bias) {
    for (size_t i = 0; i < y.value.size(); ++i) y.add(i, d.bias[(i / plane) % s.out_channels]);
  }
  for_each_tap(s, [&](int64_t xi, int64_t yi, int64_t wi) { y.add(yi, double{d.x[xi]} * d.w[wi]); });
  return y;
}

RefSums backward_data_ref(const Conv2dShape& s, const ConvData& d) {
  RefSums dx(d.x.size());
  for_each_tap(s, [&](int64_t xi, int64_t yi, int64_t wi) { dx.add(xi, double{d.dy[yi]} * d.w[wi]); });
  return dx;
}

// dw0 + `calls` times the weight gradient (each call adds it once).
RefSums backward_filter_ref(const Conv2dShape& s, const ConvData& d, const std::vector<float>& dw0,
                            int calls = 1) {
  RefSums dw(d.w.size());
  for (size_t i = 0; i < dw0.size(); ++i) dw.add(i, dw0[i]);
  for (int c = 0; c < calls; ++c) {
    for_each_tap(s, [&](int64_t xi, int64_t yi, int64_t wi) { dw.add(wi, double{d.dy[yi]} * d.x[xi]); });
  }
  return dw;
}

std::vector<double> bias_grad_ref(const Conv2dShape& s, const ConvData& d, const std::vector<float>& db0,
                                  int calls = 1) {
  std::vector<double> db(db0.begin(), db0.end());
  const int64_t plane = s.out_height() * s.out_width();
  for (int c = 0; c < calls; ++c) {
    for (size_t i = 0; i < d.dy.size(); ++i) db[(i / plane) % s.out_channels] += d.dy[i];
  }
  return db;
}

// Two float evaluations of the same sums, in any orders of addition: each lies within
// gamma_n * (sum of |addends|) of the exact sum, gamma_n = n*u / (1 - n*u), u = 2^-24,
// n the number of addends counting the products' own rounding (Higham, Accuracy and
// Stability of Numerical Algorithms, 2nd ed., section 3.1; a fused multiply-add only
// rounds less), so they differ by at most 2 * gamma_n * sum|a*b| ~ n * FLT_EPSILON *
// sum|a*b|. That bound holds for every summation order, so it can be tight enough to
// fail only where a term is lost or wrong, and wide enough never to fail on order.
::testing::AssertionResult within_rounding(const std::vector<float>& got, const std::vector<float>& oracle,
                                           const RefSums& sums) {
  if (got.size() != oracle.size() || got.size() != sums.value.size()) {
    return ::testing::AssertionFailure() << "sizes " << got.size() << ", " << oracle.size() << ", "
                                         << sums.value.size();
  }
  std::ostringstream bad;
  size_t failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double n = static_cast<double>(sums.addends[i] + 1);
    const double bound = n * FLT_EPSILON * sums.magnitude[i] / (1.0 - n * FLT_EPSILON / 2);
    const double err = std::fabs(static_cast<double>(got[i]) - oracle[i]);
    if (!(err <= bound)) {
      if (failures < 5) {
        bad << "\n  [" << i << "] got " << got[i] << ", oracle " << oracle[i] << ", bound " << bound;
      }
      ++failures;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << got.size()
                                       << " elements differ:" << bad.str();
}

// The tolerance against the definition, relative to the 2-norm of the addends: float
// rounding grows with them, not with the (possibly cancelled) sum; a lost or doubled
// group moves a result by orders of magnitude more.
constexpr double kNormTol = 1e-5;

// A oneDNN result against the oracle's (within_rounding) and against the definition.
void expect_oracle_and_definition(const std::vector<float>& got, const std::vector<float>& oracle,
                                  const RefSums& ref) {
  const std::vector<double> norm = ref.norm();
  EXPECT_TRUE(within_rounding(got, oracle, ref));
  EXPECT_TRUE(all_close(got, ref.value, kNormTol, &norm));
}

// ------------------------------------------------------------- The im2col oracle

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

class CpuConv2dIm2col : public ::testing::TestWithParam<std::tuple<Conv2dShape, Budget>> {};

TEST_P(CpuConv2dIm2col, ForwardMatchesDirectConvolution) {
  const auto [s, b] = GetParam();
  auto ctx = make_context();
  const ConvData d(s, 31);
  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "with bias" : "without bias");
    std::vector<float> y(d.y_size(), kNaN);
    cpu::conv2d_im2col_forward(*ctx, s, d.x.data(), d.w.data(), with_bias ? d.bias.data() : nullptr,
                               y.data(), budget_bytes(s, b));
    EXPECT_TRUE(all_close(y, forward_ref(s, d, with_bias).value));
  }
}

TEST_P(CpuConv2dIm2col, BackwardDataMatchesDirectAdjointAndOverwritesDx) {
  const auto [s, b] = GetParam();
  auto ctx = make_context();
  const ConvData d(s, 32);
  std::vector<float> dx(d.x.size(), kNaN);
  cpu::conv2d_im2col_backward_data(*ctx, s, d.dy.data(), d.w.data(), dx.data(), budget_bytes(s, b));
  EXPECT_TRUE(all_close(dx, backward_data_ref(s, d).value));
}

TEST_P(CpuConv2dIm2col, BackwardFilterAccumulatesDirectGradient) {
  const auto [s, b] = GetParam();
  auto ctx = make_context();
  const ConvData d(s, 33);
  Rng rng(34);
  auto dw = random_normal(rng, d.w.size());
  auto dbias = random_normal(rng, s.out_channels);
  const RefSums dw_ref = backward_filter_ref(s, d, dw, 2);
  const std::vector<double> dbias_ref = bias_grad_ref(s, d, dbias, 2);
  for (int call = 0; call < 2; ++call) {
    cpu::conv2d_im2col_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw.data(), dbias.data(),
                                       budget_bytes(s, b));
  }
  EXPECT_TRUE(all_close(dw, dw_ref.value));
  EXPECT_TRUE(all_close(dbias, dbias_ref));

  // A null dbias is allowed and leaves only dw updated.
  std::vector<float> dw_only(d.w.size(), 0.0f);
  cpu::conv2d_im2col_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw_only.data(), nullptr,
                                     budget_bytes(s, b));
  EXPECT_TRUE(all_close(dw_only, backward_filter_ref(s, d, std::vector<float>(d.w.size(), 0.0f)).value));
}

std::string im2col_case_name(const ::testing::TestParamInfo<CpuConv2dIm2col::ParamType>& info) {
  return conv_name(std::get<0>(info.param)) + "_" + budget_name(std::get<1>(info.param));
}

INSTANTIATE_TEST_SUITE_P(
    ShapesAndChunks, CpuConv2dIm2col,
    ::testing::Combine(::testing::ValuesIn(kConvShapes),
                       ::testing::Values(Budget::Default, Budget::OneSample, Budget::TwoSamples)),
    im2col_case_name);

TEST(CpuConv2dIm2colChunks, ChunkIsTheSamplesThatFitTheBudgetClampedToTheBatch) {
  const Conv2dShape s{10, 3, 9, 7, 4, 3, 1, 1};
  const size_t per = conv_bytes_per_sample(s);
  EXPECT_EQ(cpu::conv2d_im2col_chunk_samples(s, 1), 1);
  EXPECT_EQ(cpu::conv2d_im2col_chunk_samples(s, per - 1), 1);
  EXPECT_EQ(cpu::conv2d_im2col_chunk_samples(s, per), 1);
  EXPECT_EQ(cpu::conv2d_im2col_chunk_samples(s, 3 * per + per / 2), 3);
  EXPECT_EQ(cpu::conv2d_im2col_chunk_samples(s, 10 * per), 10);
  EXPECT_EQ(cpu::conv2d_im2col_chunk_samples(s, 100 * per), 10);
  EXPECT_EQ(cpu::conv2d_im2col_chunk_samples(Conv2dShape{0, 3, 9, 7, 4, 3, 1, 1}, per), 0);
}

// With the default budget: a batch too large for one chunk.
TEST(CpuConv2dIm2colChunks, DefaultBudgetSplitsALargeBatchAndStillMatches) {
  const Conv2dShape s{28, 16, 64, 64, 8, 3, 1, 1};
  const int64_t chunk = cpu::conv2d_im2col_chunk_samples(s, cpu::kConvWorkspaceBudget);
  ASSERT_GT(chunk, 1);
  ASSERT_LT(chunk, s.batch);
  ASSERT_NE(s.batch % chunk, 0) << "the last chunk should be a partial one";
  auto ctx = make_context();
  const ConvData d(s, 35);

  std::vector<float> y(d.y_size(), kNaN);
  cpu::conv2d_im2col_forward(*ctx, s, d.x.data(), d.w.data(), d.bias.data(), y.data(),
                             cpu::kConvWorkspaceBudget);
  EXPECT_TRUE(all_close(y, forward_ref(s, d, true).value));

  std::vector<float> dx(d.x.size(), kNaN);
  cpu::conv2d_im2col_backward_data(*ctx, s, d.dy.data(), d.w.data(), dx.data(), cpu::kConvWorkspaceBudget);
  EXPECT_TRUE(all_close(dx, backward_data_ref(s, d).value));

  std::vector<float> dw(d.w.size(), 0.0f), dbias(s.out_channels, 0.0f);
  cpu::conv2d_im2col_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw.data(), dbias.data(),
                                     cpu::kConvWorkspaceBudget);
  const RefSums dw_ref = backward_filter_ref(s, d, std::vector<float>(d.w.size(), 0.0f));
  const std::vector<double> dw_norm = dw_ref.norm();
  EXPECT_TRUE(all_close(dw, dw_ref.value, kNormTol, &dw_norm));
  EXPECT_TRUE(all_close(dbias, bias_grad_ref(s, d, std::vector<float>(s.out_channels, 0.0f))));
}

// ----------------------------------------------------------- The oneDNN ops

// The oracle's shapes (mostly too few channels for oneDNN's blocked layouts: Note
// [oneDNN layout choice]), the Fashion-MNIST CNN's two layers at batch 64 (its first
// layer's input gradient on the plain layouts, the rest blocked), a batch that splits
// into groups of 3 and 2 with stride 2 and odd sizes, batch 1 with padding past the
// kernel, a 1x1 kernel, and weights large enough that the backward-weights partials
// run in two waves.
const Conv2dShape kOnednnShapes[] = {
    {1, 2, 5, 7, 3, 3, 1, 1},      {3, 3, 8, 6, 4, 3, 2, 0},    {3, 2, 7, 9, 5, 5, 2, 2},
    {2, 4, 6, 5, 2, 1, 1, 0},      {3, 1, 4, 4, 2, 2, 1, 2},    {3, 3, 9, 11, 4, 3, 2, 1},
    {1, 3, 6, 4, 2, 3, 1, 0},      {64, 1, 28, 28, 16, 5, 1, 2}, {64, 16, 14, 14, 32, 5, 1, 2},
    {37, 20, 9, 11, 24, 3, 2, 1},  {1, 16, 7, 5, 16, 3, 1, 4},   {20, 32, 6, 6, 48, 1, 1, 0},
    {16, 128, 4, 4, 256, 3, 1, 1},
};

class CpuConv2dOnednn : public ::testing::TestWithParam<Conv2dShape> {};

TEST_P(CpuConv2dOnednn, ForwardMatchesTheIm2colOracleAndTheDefinition) {
  const Conv2dShape s = GetParam();
  auto ctx = make_context();
  const ConvData d(s, 41);
  for (bool with_bias : {true, false}) {
    SCOPED_TRACE(with_bias ? "with bias" : "without bias");
    const float* bias = with_bias ? d.bias.data() : nullptr;
    std::vector<float> y(d.y_size(), kNaN), oracle(d.y_size(), kNaN);
    ops::conv2d_forward(*ctx, s, d.x.data(), d.w.data(), bias, y.data());
    cpu::conv2d_im2col_forward(*ctx, s, d.x.data(), d.w.data(), bias, oracle.data());
    expect_oracle_and_definition(y, oracle, forward_ref(s, d, with_bias));
  }
}

TEST_P(CpuConv2dOnednn, BackwardDataMatchesTheIm2colOracleAndOverwritesDx) {
  const Conv2dShape s = GetParam();
  auto ctx = make_context();
  const ConvData d(s, 42);
  std::vector<float> dx(d.x.size(), kNaN), oracle(d.x.size(), kNaN);
  ops::conv2d_backward_data(*ctx, s, d.dy.data(), d.w.data(), dx.data());
  cpu::conv2d_im2col_backward_data(*ctx, s, d.dy.data(), d.w.data(), oracle.data());
  expect_oracle_and_definition(dx, oracle, backward_data_ref(s, d));
}

TEST_P(CpuConv2dOnednn, BackwardFilterAddsTheIm2colOraclesGradient) {
  const Conv2dShape s = GetParam();
  auto ctx = make_context();
  const ConvData d(s, 43);
  Rng rng(44);
  const auto dw0 = random_normal(rng, d.w.size());
  const auto db0 = random_normal(rng, s.out_channels);
  auto dw = dw0, oracle = dw0, dbias = db0, oracle_bias = db0;
  ops::conv2d_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw.data(), dbias.data());
  cpu::conv2d_im2col_backward_filter(*ctx, s, d.x.data(), d.dy.data(), oracle.data(), oracle_bias.data());
  expect_oracle_and_definition(dw, oracle, backward_filter_ref(s, d, dw0));
  EXPECT_TRUE(all_close(dbias, bias_grad_ref(s, d, db0)));

  // A second call adds again; a null dbias leaves only dw updated.
  ops::conv2d_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw.data(), nullptr);
  const RefSums twice = backward_filter_ref(s, d, dw0, 2);
  const std::vector<double> twice_norm = twice.norm();
  EXPECT_TRUE(all_close(dw, twice.value, kNormTol, &twice_norm));
}

INSTANTIATE_TEST_SUITE_P(Shapes, CpuConv2dOnednn, ::testing::ValuesIn(kOnednnShapes),
                         [](const ::testing::TestParamInfo<Conv2dShape>& info) {
                           return conv_name(info.param);
                         });

// Note [oneDNN convolutions]: every op gives the same bits on 1, 2 and 3 threads (3
// splits 16 groups unevenly) and on every run. Shapes large enough to run in parallel:
// the CNN's layers, uneven groups, and backward-weights partials in two waves.
TEST(CpuConv2dOnednnDeterminism, SameBitsOnOneTwoAndThreeThreadsAndOnEveryRun) {
  const Conv2dShape shapes[] = {{64, 1, 28, 28, 16, 5, 1, 2}, {64, 16, 14, 14, 32, 5, 1, 2},
                                {37, 20, 9, 11, 24, 3, 2, 1}, {16, 128, 4, 4, 256, 3, 1, 1}};
  for (const Conv2dShape& s : shapes) {
    SCOPED_TRACE(conv_name(s));
    const int64_t macs = s.batch * s.out_channels * s.out_height() * s.out_width() * s.in_channels *
                         s.kernel * s.kernel;
    ASSERT_GE(macs, cpu::kConvParallelMinMacs) << "too small to run on several threads";
    const ConvData d(s, 45);
    Rng rng(46);
    const auto dw0 = random_normal(rng, d.w.size());
    const auto db0 = random_normal(rng, s.out_channels);
    auto run = [&](int threads) {
      auto ctx = make_context(threads);
      std::vector<float> y(d.y_size()), dx(d.x.size()), dw = dw0, db = db0;
      ops::conv2d_forward(*ctx, s, d.x.data(), d.w.data(), d.bias.data(), y.data());
      ops::conv2d_backward_data(*ctx, s, d.dy.data(), d.w.data(), dx.data());
      ops::conv2d_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw.data(), db.data());
      return std::vector<std::vector<float>>{y, dx, dw, db};
    };
    const auto one = run(1), two = run(2), three = run(3), two_again = run(2);
    const char* names[] = {"forward", "backward data", "backward filter", "bias gradient"};
    for (size_t i = 0; i < one.size(); ++i) {
      EXPECT_TRUE(same_bits(one[i], two[i])) << names[i] << ", 1 and 2 threads";
      EXPECT_TRUE(same_bits(one[i], three[i])) << names[i] << ", 1 and 3 threads";
      EXPECT_TRUE(same_bits(two[i], two_again[i])) << names[i] << ", two runs on 2 threads";
    }
  }
}

TEST(CpuConv2dOnednnGroups, MinOfBatchAndSixteenGroupsOfSizesDifferingByAtMostOne) {
  for (int64_t batch : {0, 1, 5, 16, 17, 37, 64, 1000}) {
    SCOPED_TRACE("batch " + std::to_string(batch));
    const cpu::ConvSampleGroups g = cpu::conv2d_sample_groups(batch);
    EXPECT_EQ(g.count, std::min<int64_t>(batch, cpu::kConvMaxGroups));
    int64_t next = 0;
    for (int64_t i = 0; i < g.count; ++i) {
      EXPECT_EQ(g.first(i), next) << "group " << i;
      EXPECT_TRUE(g.samples(i) == batch / g.count || g.samples(i) == batch / g.count + 1) << "group " << i;
      EXPECT_GE(g.samples(i), g.samples(g.count - 1)) << "larger groups come first";
      next += g.samples(i);
    }
    EXPECT_EQ(next, batch);
  }
}

// Plans are per group shape: a batch of 64 (16 groups of 4) makes one, 37 (groups of
// 3 and 2) two more, 32 (groups of 2) none; release_plans() drops them all, and the ops
// make them again.
TEST(CpuConv2dOnednnPlans, OnePlanPerGroupSizeKeptUntilReleased) {
  auto ctx = make_context();
  OpsBackend& backend = ctx->backend();
  backend.release_plans();
  ASSERT_EQ(backend.plan_count(), 0u);
  auto shape = [](int64_t batch) { return Conv2dShape{batch, 4, 9, 9, 8, 3, 1, 1}; };
  const ConvData d(shape(64), 47);
  std::vector<float> y(d.y_size());
  ops::conv2d_workspace_bytes(*ctx, shape(64));
  EXPECT_EQ(backend.plan_count(), 1u);
  ops::conv2d_forward(*ctx, shape(64), d.x.data(), d.w.data(), d.bias.data(), y.data());
  ops::conv2d_forward(*ctx, shape(64), d.x.data(), d.w.data(), d.bias.data(), y.data());
  EXPECT_EQ(backend.plan_count(), 1u);
  ops::conv2d_forward(*ctx, shape(37), d.x.data(), d.w.data(), d.bias.data(), y.data());
  EXPECT_EQ(backend.plan_count(), 3u);
  ops::conv2d_forward(*ctx, shape(32), d.x.data(), d.w.data(), d.bias.data(), y.data());
  EXPECT_EQ(backend.plan_count(), 3u);
  backend.release_plans();
  EXPECT_EQ(backend.plan_count(), 0u);
  std::vector<float> again(d.y_size());
  ops::conv2d_forward(*ctx, shape(64), d.x.data(), d.w.data(), d.bias.data(), again.data());
  EXPECT_EQ(backend.plan_count(), 1u);
}

// conv2d_workspace_bytes is what the ops take (the memory model relies on it): each op
// takes at most that, and the largest of them exactly that.
TEST(CpuConv2dOnednnWorkspace, TheOpsTakeExactlyTheWorkspaceReported) {
  const Conv2dShape shapes[] = {{64, 1, 28, 28, 16, 5, 1, 2}, {64, 16, 14, 14, 32, 5, 1, 2},
                                {37, 20, 9, 11, 24, 3, 2, 1}, {3, 3, 9, 11, 4, 3, 2, 1},
                                {16, 128, 4, 4, 256, 3, 1, 1}};
  for (const Conv2dShape& s : shapes) {
    for (int threads : {1, 2}) {
      SCOPED_TRACE(conv_name(s) + ", " + std::to_string(threads) + " thread(s)");
      auto ctx = make_context(threads);
      const ConvData d(s, 48);
      std::vector<float> y(d.y_size()), dx(d.x.size()), dw(d.w.size()), db(s.out_channels);
      const size_t reported = ops::conv2d_workspace_bytes(*ctx, s);
      auto peak = [&] {
        return ctx->allocator().stats().peak_by[static_cast<size_t>(MemoryCategory::Workspace)];
      };
      ops::conv2d_forward(*ctx, s, d.x.data(), d.w.data(), d.bias.data(), y.data());
      EXPECT_LE(peak(), reported) << "forward";
      ops::conv2d_backward_data(*ctx, s, d.dy.data(), d.w.data(), dx.data());
      EXPECT_LE(peak(), reported) << "backward data";
      ops::conv2d_backward_filter(*ctx, s, d.x.data(), d.dy.data(), dw.data(), db.data());
      EXPECT_EQ(peak(), reported) << "the three ops";
    }
  }
}

// Note [oneDNN layout choice]: the CNN's first layer has one input channel, so its
// input gradient runs on the plain layouts (a blocked one would pad the channel to a
// whole block); a plain direction reorders nothing.
TEST(CpuConv2dOnednnLayouts, AOneChannelInputGradientRunsOnThePlainLayouts) {
  const cpu::ConvPlan plan(Conv2dShape{4, 1, 28, 28, 16, 5, 1, 2});
  EXPECT_EQ(plan.backward_data.layout, cpu::ConvLayout::Plain);
  EXPECT_FALSE(plan.backward_data.diff_src.reordered());
  EXPECT_FALSE(plan.backward_data.diff_dst.reordered());
  EXPECT_FALSE(plan.backward_data.weights.reordered());
}

TEST(CpuConv2dOnednnErrors, AKernelLargerThanThePaddedInputIsAnError) {
  auto ctx = make_context();
  const Conv2dShape s{1, 1, 3, 3, 1, 5, 1, 0};
  EXPECT_THROW(ops::conv2d_workspace_bytes(*ctx, s), Error);
  EXPECT_THROW(ops::conv2d_forward(*ctx, s, nullptr, nullptr, nullptr, nullptr), Error);
}

}  // namespace
}  // namespace dtrain
