// Every op of kernels/ops.h on the CUDA context against the CPU op (DESIGN contract 6:
// the CPU op is the oracle), on fresh seeded random inputs, several shapes including
// odd ones. The tests of CudaOpsIn run in fp32 and in bf16 (tests/gpu/stored_types.h:
// a bf16 result may differ by one rounding more than the fp32 bound below). The
// tolerance per op:
//   GEMM, convolution (TF32 off)   1e-4 of the result's magnitude (sum order differs)
//   bf16 GEMM                      the bound of two fp32 sums of the same exact products
//                                  in other orders (gemm_slack), and a bf16 C's rounding
//   bias, relu, fill, max-pool     equal bits (the same float operations in the same order)
//   bias gradient                  1e-4 (the CPU sums each plane in float first); its
//                                  packed and scalar forms equal bits (Note [Column sum
//                                  partition]), and equal bits across runs
//   cross-entropy                  dlogits 1e-6, loss sum 1e-6 relative, hits exact
//   convert                        equal bits to float_to_bf16, and to the exact widening
//   SGD, AdamW                     1e-6 (the kernels mirror the CPU's rounding); AdamW's
//                                  bf16 copy equal bits to float_to_bf16 of its result
//   sum of squares                 1e-12 relative (both sum in double, in other orders)
// Outputs that an op must overwrite start as NaN on the device, so a missed element
// shows; gradients that an op must add into start random, so += is checked.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <iterator>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/errors.h"
#include "kernels/host_buffer.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/stored_types.h"

namespace dtrain {

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

using testing::all_close;
using testing::close_to_norm;
using testing::DeviceArray;
using testing::exactly;
using testing::gamma_n;
using testing::nans;
using testing::norm_close;
using testing::random_normal;
using testing::same_bits;
using testing::stored;
using testing::stored_nans;
using testing::to_bf16;
using testing::widen;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Small integers, so equal values (ties) are common.
std::vector<float> random_levels(Rng& rng, int64_t n, uint64_t levels) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.below(levels));
  return v;
}

class CudaOps : public testing::CudaAgainstCpuTest {};

// The tests run for each stored type T (float, bf16) of the typed tensors.
template <class T>
class CudaOpsIn : public testing::CudaAgainstCpuTest {};
TYPED_TEST_SUITE(CudaOpsIn, testing::StoredTypes, testing::StoredTypeNames);

// ---------------------------------------------------------------------------- GEMM

struct GemmCase {
  int64_t m, n, k;
};

// The operands of a GEMM case, row-major with leading dimensions wider than the rows,
// so strided operands are exercised; A and B of type AB, C of type C.
template <class AB, class C>
struct GemmOperands {
  int64_t lda, ldb, ldc;
  std::vector<AB> a, b;
  std::vector<C> c;
};

// Padded, the leading dimensions exceed the widths (3, 2 and 1 more), which leaves
// most rows under any vector alignment; unpadded, they are the widths.
template <class AB, class C>
GemmOperands<AB, C> gemm_operands(const GemmCase& g, bool ta, bool tb, Rng& rng, bool padded = true) {
  const int64_t a_rows = ta ? g.k : g.m, a_cols = ta ? g.m : g.k;
  const int64_t b_rows = tb ? g.n : g.k, b_cols = tb ? g.k : g.n;
  const int64_t pad = padded ? 1 : 0;
  GemmOperands<AB, C> o{a_cols + 3 * pad, b_cols + 2 * pad, g.n + pad, {}, {}, {}};
  o.a = stored<AB>(random_normal(rng, a_rows * o.lda));
  o.b = stored<AB>(random_normal(rng, b_rows * o.ldb));
  o.c = stored<C>(random_normal(rng, g.m * o.ldc));
  return o;
}

// The m x n part of C (its padding columns are not part of the product).
template <class T>
std::vector<T> product_part(const std::vector<T>& c, const GemmCase& g, int64_t ldc) {
  std::vector<T> out;
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) out.push_back(c[i * ldc + j]);
  }
  return out;
}

// Runs the case on both backends (C starts as NaN on the device when beta is 0, so it
// must be overwritten); returns the m x n parts of the GPU's C and the CPU's.
template <class AB, class C>
std::pair<std::vector<C>, std::vector<C>> run_gemm(Context& gpu, Context& cpu, const GemmCase& g, bool ta, bool tb,
                                                   float alpha, float beta, GemmOperands<AB, C> o) {
  DeviceArray<AB> da(gpu, o.a), db(gpu, o.b);
  DeviceArray<C> dc(gpu, beta == 0.0f ? stored_nans<C>(g.m * o.ldc) : o.c);
  ops::gemm(cpu, ta, tb, g.m, g.n, g.k, alpha, o.a.data(), o.lda, o.b.data(), o.ldb, beta, o.c.data(), o.ldc);
  ops::gemm(gpu, ta, tb, g.m, g.n, g.k, alpha, da.get(), o.lda, db.get(), o.ldb, beta, dc.get(), o.ldc);
  return {product_part(dc.to_host(), g, o.ldc), product_part(o.c, g, o.ldc)};
}

void check_gemm(Context& gpu, Context& cpu, const GemmCase& g, bool ta, bool tb, float alpha,
                float beta, uint64_t seed, double tol) {
  SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k
                                    << " trans_a=" << ta << " trans_b=" << tb
                                    << " alpha=" << alpha << " beta=" << beta);
  Rng rng(seed);
  const auto [got, want] = run_gemm(gpu, cpu, g, ta, tb, alpha, beta, gemm_operands<float, float>(g, ta, tb, rng));
  EXPECT_TRUE(norm_close(got, want, tol));
}

TEST_F(CudaOps, GemmMatchesCpuForAllTransposesAndScalings) {
  uint64_t seed = 100;
  for (const GemmCase& g : {GemmCase{1, 1, 1}, GemmCase{7, 5, 9}, GemmCase{67, 131, 45},
                            GemmCase{1, 17, 3}, GemmCase{129, 65, 257}, GemmCase{256, 512, 128}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        check_gemm(gpu(), cpu(), g, ta, tb, 0.7f, -0.3f, ++seed, 1e-4);
        check_gemm(gpu(), cpu(), g, ta, tb, 1.0f, 0.0f, ++seed, 1e-4);
        check_gemm(gpu(), cpu(), g, ta, tb, -1.5f, 1.0f, ++seed, 1e-4);
      }
    }
  }
}

TEST_F(CudaOps, GemmWithEmptyInnerDimensionOnlyScalesC) {
  const std::vector<float> c = {1.0f, -2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
  DeviceArray<float> dc(gpu(), c);
  ops::gemm(gpu(), false, false, 2, 3, 0, 1.0f, nullptr, 0, nullptr, 3, 0.5f, dc.get(), 3);
  EXPECT_TRUE(all_close(dc.to_host(), {0.5f, -1.0f, 1.5f, 2.0f, 2.5f, 3.0f}, 0.0));
  // beta = 0 overwrites, so garbage in C does not survive.
  DeviceArray<float> garbage(gpu(), nans(6));
  // Transposed operands: A^T is stored (k, m), so lda = m is the least legal; B^T is (n, k).
  ops::gemm(gpu(), true, true, 2, 3, 0, 1.0f, nullptr, 2, nullptr, 0, 0.0f, garbage.get(), 3);
  EXPECT_TRUE(all_close(garbage.to_host(), std::vector<float>(6, 0.0f), 0.0));
}

// The bound on |C_gpu - C_cpu| before C is rounded. Both compute
//   X = alpha * sum_l a_il b_lj + beta * c_ij
// from the same bf16 values, whose products are exact in fp32; each sums them in
// fp32 in its own order, with alpha's and beta's operations k + 2 roundings at most, so
// each is within gamma_{k+2} * S of X (Higham, Accuracy and Stability, 3.1), with
//   S = |alpha| sum_l |a_il| |b_lj| + |beta| |c_ij|,
// and they are within 2 gamma_{k+2} S of each other. A bf16 C adds bf16_close's ulp.
template <class C>
std::vector<double> gemm_slack(const GemmCase& g, bool ta, bool tb, float alpha, float beta,
                               const GemmOperands<bf16, C>& o) {
  const auto a = testing::values(o.a), b = testing::values(o.b), c_old = testing::values(o.c);
  const int64_t lda = o.lda, ldb = o.ldb, ldc = o.ldc;
  std::vector<double> slack(static_cast<size_t>(g.m * g.n));
  const double factor = 2.0 * gamma_n(g.k + 2);
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double s = 0.0;
      for (int64_t l = 0; l < g.k; ++l) {
        const double av = ta ? a[l * lda + i] : a[i * lda + l];
        const double bv = tb ? b[j * ldb + l] : b[l * ldb + j];
        s += std::fabs(av * bv);
      }
      s = std::fabs(alpha) * s + (beta == 0.0f ? 0.0 : std::fabs(beta) * std::fabs(c_old[i * ldc + j]));
      slack[i * g.n + j] = factor * s;
    }
  }
  return slack;
}

template <class C>
void check_gemm_bf16(Context& gpu, Context& cpu, const GemmCase& g, bool ta, bool tb, float alpha, float beta,
                     uint64_t seed, bool padded = true) {
  SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k << " trans_a=" << ta
                                    << " trans_b=" << tb << " alpha=" << alpha << " beta=" << beta << " C "
                                    << dtype_name(testing::dtype_of<C>) << (padded ? " padded" : ""));
  Rng rng(seed);
  const auto operands = gemm_operands<bf16, C>(g, ta, tb, rng, padded);
  const auto slack = gemm_slack(g, ta, tb, alpha, beta, operands);  // m x n
  const auto [got, want] = run_gemm(gpu, cpu, g, ta, tb, alpha, beta, operands);
  if constexpr (std::is_same_v<C, bf16>) {
    EXPECT_TRUE(testing::bf16_close(got, want, slack));
  } else {
    size_t failures = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      if (!(std::fabs(static_cast<double>(got[i]) - want[i]) <= slack[i]) && ++failures <= 5) {
        ADD_FAILURE() << "[" << i << "] got " << got[i] << ", want " << want[i] << ", allowed " << slack[i];
      }
    }
    EXPECT_EQ(failures, 0u);
  }
}

TEST_F(CudaOps, Bf16GemmMatchesCpuWithinTheSumOrderBound) {
  uint64_t seed = 300;
  for (const GemmCase& g : {GemmCase{1, 1, 1}, GemmCase{7, 5, 9}, GemmCase{67, 131, 45}, GemmCase{129, 65, 257},
                            GemmCase{256, 512, 128}, GemmCase{8, 16, 3000}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (const auto& [alpha, beta] : {std::pair{0.7f, -0.3f}, std::pair{1.0f, 0.0f}, std::pair{-1.5f, 1.0f}}) {
          check_gemm_bf16<bf16>(gpu(), cpu(), g, ta, tb, alpha, beta, ++seed);
          check_gemm_bf16<float>(gpu(), cpu(), g, ta, tb, alpha, beta, ++seed);
        }
      }
    }
  }
}

// With autotune (Note [GEMM autotuning]) the bf16 GEMMs run on cuBLASLt, whose timed
// algorithm sums in its own order: the same bound. Unpadded widths that are multiples
// of 8 take that path; the padded rows and the odd widths may be declined and fall
// back to cuBLAS. Each shape is new to the context, so its first call is the one timed,
// and with beta != 0 the timing's own additions into C must not show.
TEST_F(CudaOps, Bf16GemmAutotunedMatchesCpuWithinTheSumOrderBound) {
  const auto autotuned = testing::make_cuda_autotuned();
  const LinearLt& lt = dynamic_cast<CudaBackend&>(autotuned->backend()).linear_lt();
  uint64_t seed = 500;
  for (const GemmCase& g : {GemmCase{7, 5, 9}, GemmCase{64, 128, 256}, GemmCase{256, 512, 128},
                            GemmCase{8, 16, 3000}}) {
    for (bool padded : {false, true}) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          for (const auto& [alpha, beta] : {std::pair{0.7f, -0.3f}, std::pair{1.0f, 0.0f}, std::pair{1.0f, 1.0f}}) {
            check_gemm_bf16<bf16>(*autotuned, cpu(), g, ta, tb, alpha, beta, ++seed, padded);
            check_gemm_bf16<float>(*autotuned, cpu(), g, ta, tb, alpha, beta, ++seed, padded);
          }
        }
      }
    }
  }
  // The unpadded shapes whose widths are multiples of 8 went to cuBLASLt, and were timed.
  EXPECT_GT(lt.plain_calls(), 0);
  EXPECT_GT(lt.tuned_plans(), 0);
  EXPECT_GE(lt.timed_candidates(), lt.tuned_plans());
}

TEST_F(CudaOps, Bf16GemmWithEmptyInnerDimensionOnlyScalesABf16C) {
  const auto c = to_bf16({1.0f, -2.0f, 3.0f, 4.0f, 5.0f, 6.0f});
  DeviceArray<bf16> dc(gpu(), c);
  // No operands at all: their type is C's.
  ops::gemm(gpu(), false, false, 2, 3, 0, 1.0f, nullptr, 0, nullptr, 3, 0.5f, dc.get(), 3);
  EXPECT_TRUE(same_bits(dc.to_host(), to_bf16({0.5f, -1.0f, 1.5f, 2.0f, 2.5f, 3.0f})));
  DeviceArray<bf16> garbage(gpu(), stored_nans<bf16>(6));
  ops::gemm(gpu(), true, true, 2, 3, 0, 1.0f, nullptr, 2, nullptr, 0, 0.0f, garbage.get(), 3);
  EXPECT_TRUE(same_bits(garbage.to_host(), to_bf16(std::vector<float>(6, 0.0f))));
}

TEST_F(CudaOps, Bf16GemmRejectsOperandsOfTwoTypesAndFp32OperandsWithABf16C) {
  DeviceArray<float> f(gpu(), std::vector<float>(4, 1.0f));
  DeviceArray<bf16> h(gpu(), to_bf16(std::vector<float>(4, 1.0f)));
  EXPECT_THROW(ops::gemm(gpu(), false, false, 2, 2, 2, 1.0f, f.get(), 2, h.get(), 2, 0.0f, f.get(), 2), Error);
  EXPECT_THROW(ops::gemm(gpu(), false, false, 2, 2, 2, 1.0f, f.get(), 2, f.get(), 2, 0.0f, h.get(), 2), Error);
}

class CudaOpsTf32 : public testing::GpuTest {};

TEST_F(CudaOpsTf32, GemmAndConvolutionStayWithinTf32Precision) {
  CudaOptions options;
  options.tf32 = true;
  auto gpu = Context::make_cuda(options);
  auto cpu = Context::make_cpu(2);
  // TF32 keeps 10 mantissa bits: errors near 1e-3 of the result are expected.
  check_gemm(*gpu, *cpu, GemmCase{128, 96, 200}, false, true, 1.0f, 0.0f, 7, 5e-3);
  check_gemm(*gpu, *cpu, GemmCase{33, 17, 65}, true, false, 0.5f, 1.0f, 8, 5e-3);

  const Conv2dShape s{4, 8, 12, 12, 16, 3, 1, 1};
  Rng rng(9);
  const auto x = random_normal(rng, s.batch * s.in_channels * s.height * s.width);
  const auto w = random_normal(rng, s.out_channels * s.in_channels * 9, 1.0 / std::sqrt(72.0));
  std::vector<float> y(static_cast<size_t>(s.batch * s.out_channels * 144));
  DeviceArray<float> dx(*gpu, x), dw(*gpu, w), dy(*gpu, nans(static_cast<int64_t>(y.size())));
  ops::conv2d_forward(*cpu, s, x.data(), w.data(), nullptr, y.data());
  ops::conv2d_forward(*gpu, s, dx.get(), dw.get(), nullptr, dy.get());
  EXPECT_TRUE(norm_close(dy.to_host(), y, 5e-3));
}

// --------------------------------------------------------------------- Elementwise

struct BiasCase {
  int64_t outer, channels, inner;
};
// inner > 1 is a convolution's bias (a block per channel; 2000 channels take more
// channels than the grid has blocks). inner == 1 is a linear layer's, the column sums
// (Note [Column sum partition], kernels/cuda/column_sums.cuh): 130, 9 and 10 channels
// (not multiples of 8) take the scalar form, 768, 64 and 8 the packed one.
const BiasCase kBiasCases[] = {{3, 5, 7},     {4, 9, 1},    {300, 130, 1}, {8, 64, 100}, {1, 1, 1},
                               {10000, 10, 1}, {2, 2000, 3}, {64, 32, 784}, {33, 768, 1}, {5, 8, 1}};
// Linear-layer gradients at GPT-2's size (16384 rows of 768, 4096 of 3072: many chunks
// and tiles), a partial last chunk and tile (5003 x 520), and widths that are not
// multiples of 8 over many chunks (3001 x 130, 2049 x 1001).
const BiasCase kBiasRowsCases[] = {
    {16384, 768, 1}, {4096, 3072, 1}, {5003, 520, 1}, {3001, 130, 1}, {2049, 1001, 1}};

TYPED_TEST(CudaOpsIn, AddBiasMatchesCpuExactly) {
  using T = TypeParam;
  Rng rng(21);
  for (const BiasCase& bc : kBiasCases) {
    SCOPED_TRACE(::testing::Message()
                 << "outer=" << bc.outer << " channels=" << bc.channels << " inner=" << bc.inner);
    auto y = stored<T>(random_normal(rng, bc.outer * bc.channels * bc.inner));
    const auto bias = stored<T>(random_normal(rng, bc.channels));
    DeviceArray<T> dy(this->gpu(), y), dbias(this->gpu(), bias);
    ops::add_bias(this->cpu(), y.data(), bias.data(), bc.outer, bc.channels, bc.inner);
    ops::add_bias(this->gpu(), dy.get(), dbias.get(), bc.outer, bc.channels, bc.inner);
    EXPECT_TRUE(exactly(dy.to_host(), y));
  }
}

TYPED_TEST(CudaOpsIn, BiasBackwardAccumulatesLikeCpu) {
  using T = TypeParam;
  Rng rng(22);
  for (const BiasCase& bc : kBiasCases) {
    SCOPED_TRACE(::testing::Message()
                 << "outer=" << bc.outer << " channels=" << bc.channels << " inner=" << bc.inner);
    const auto dy = stored<T>(random_normal(rng, bc.outer * bc.channels * bc.inner));
    auto dbias = random_normal(rng, bc.channels);
    DeviceArray<T> ddy(this->gpu(), dy);
    DeviceArray<float> ddbias(this->gpu(), dbias);
    for (int call = 0; call < 2; ++call) {  // += twice
      ops::bias_backward(this->cpu(), dy.data(), dbias.data(), bc.outer, bc.channels, bc.inner);
      ops::bias_backward(this->gpu(), ddy.get(), ddbias.get(), bc.outer, bc.channels, bc.inner);
    }
    EXPECT_TRUE(all_close(ddbias.to_host(), dbias, 1e-4));
  }
}

// dy aligned (the packed form where channels % 8 == 0) and one element off (the scalar
// form): both match the CPU, and they agree bit for bit, as each channel's terms are
// added in the same order in either form (Note [Column sum partition]).
TYPED_TEST(CudaOpsIn, BiasBackwardOfRowsMatchesCpuAndItsFormsAgreeBitForBit) {
  using T = TypeParam;
  Rng rng(24);
  for (const BiasCase& bc : kBiasRowsCases) {
    SCOPED_TRACE(::testing::Message() << "outer=" << bc.outer << " channels=" << bc.channels);
    const auto dy = stored<T>(random_normal(rng, bc.outer * bc.channels));
    const auto start = random_normal(rng, bc.channels);
    auto want = start;
    ops::bias_backward(this->cpu(), dy.data(), want.data(), bc.outer, bc.channels, 1);
    std::vector<float> aligned;
    for (const size_t offset : {size_t{0}, size_t{1}}) {
      SCOPED_TRACE(::testing::Message() << "dy at element offset " << offset);
      DeviceArray<T> ddy(this->gpu(), dy, offset);
      DeviceArray<float> ddbias(this->gpu(), start);
      ops::bias_backward(this->gpu(), ddy.get(), ddbias.get(), bc.outer, bc.channels, 1);
      const auto got = ddbias.to_host();
      EXPECT_TRUE(all_close(got, want, 1e-4));
      if (offset == 0) {
        aligned = got;
      } else {
        EXPECT_TRUE(same_bits(got, aligned));
      }
    }
  }
}

TYPED_TEST(CudaOpsIn, BiasBackwardIsBitIdenticalAcrossRuns) {
  using T = TypeParam;
  Rng rng(23);
  for (const BiasCase& bc : {BiasCase{64, 32, 784}, BiasCase{16384, 768, 1}, BiasCase{4096, 3072, 1},
                             BiasCase{3001, 130, 1}}) {
    SCOPED_TRACE(::testing::Message()
                 << "outer=" << bc.outer << " channels=" << bc.channels << " inner=" << bc.inner);
    const auto dy = stored<T>(random_normal(rng, bc.outer * bc.channels * bc.inner));
    const auto start = random_normal(rng, bc.channels);
    DeviceArray<T> ddy(this->gpu(), dy);
    std::vector<float> first;
    for (int run = 0; run < 3; ++run) {
      DeviceArray<float> db(this->gpu(), start);
      ops::bias_backward(this->gpu(), ddy.get(), db.get(), bc.outer, bc.channels, bc.inner);
      if (run == 0) {
        first = db.to_host();
      } else {
        EXPECT_TRUE(same_bits(db.to_host(), first));
      }
    }
  }
}

// The memory model's figure (ops::bias_backward_workspace_bytes) is what the op takes:
// the column sums' partials, a few MiB at most whatever the rows (Note [Column sum
// partition]), and nothing for a convolution's planes.
TEST_F(CudaOps, BiasBackwardTakesTheWorkspaceItDeclares) {
  Rng rng(25);
  for (const BiasCase& bc : {BiasCase{16384, 768, 1}, BiasCase{16384, 3072, 1}, BiasCase{3001, 130, 1},
                             BiasCase{8, 64, 100}}) {
    SCOPED_TRACE(::testing::Message()
                 << "outer=" << bc.outer << " channels=" << bc.channels << " inner=" << bc.inner);
    auto fresh = Context::make_cuda(CudaOptions{});
    const size_t declared = ops::bias_backward_workspace_bytes(*fresh, bc.outer, bc.channels, bc.inner);
    if (bc.inner == 1) {
      EXPECT_GT(declared, 0u);
      EXPECT_LE(declared, size_t{5} << 19);  // 2.5 MiB
    } else {
      EXPECT_EQ(declared, 0u);
    }
    DeviceArray<float> dy(*fresh, random_normal(rng, bc.outer * bc.channels * bc.inner));
    DeviceArray<float> db(*fresh, std::vector<float>(static_cast<size_t>(bc.channels), 0.0f));
    const auto workspace = static_cast<int>(MemoryCategory::Workspace);
    const size_t before = fresh->allocator().stats().in_use_by[workspace];
    ops::bias_backward(*fresh, dy.get(), db.get(), bc.outer, bc.channels, bc.inner);
    fresh->synchronize();
    EXPECT_EQ(fresh->allocator().stats().in_use_by[workspace] - before, declared);
  }
}

TEST_F(CudaOps, ReluForwardAndBackwardMatchCpuExactly) {
  Rng rng(31);
  // 5'000'003 elements need many grid-stride passes; NaN and -0 must pass as on the CPU.
  for (const int64_t n : {int64_t{1}, int64_t{1000}, int64_t{5'000'003}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto x = random_normal(rng, n);
    x[0] = kNaN;
    if (n > 2) x[1] = -0.0f;
    const auto dy = random_normal(rng, n);
    std::vector<float> y(x.size()), dx(x.size());
    DeviceArray<float> gx(gpu(), x), gy(gpu(), nans(n)), gdy(gpu(), dy), gdx(gpu(), nans(n));
    ops::relu_forward(cpu(), x.data(), y.data(), n);
    ops::relu_forward(gpu(), gx.get(), gy.get(), n);
    EXPECT_TRUE(all_close(gy.to_host(), y, 0.0));
    ops::relu_backward(cpu(), y.data(), dy.data(), dx.data(), n);
    ops::relu_backward(gpu(), gy.get(), gdy.get(), gdx.get(), n);
    EXPECT_TRUE(all_close(gdx.to_host(), dx, 0.0));
    // In place (x and y alias), as ops.h allows.
    ops::relu_forward(gpu(), gx.get(), gx.get(), n);
    EXPECT_TRUE(all_close(gx.to_host(), y, 0.0));
  }
}

// Zero takes the driver's memset, any other value (negative zero included) the kernel:
// each writes every element and its own bits.
TEST_F(CudaOps, FillWritesEveryElement) {
  for (const float value : {-2.5f, 0.0f, -0.0f}) {
    for (const int64_t n : {int64_t{1}, int64_t{777}, int64_t{3'000'001}}) {
      SCOPED_TRACE(::testing::Message() << "value " << value << (std::signbit(value) ? " (signed)" : "") << ", n " << n);
      DeviceArray<float> x(gpu(), nans(n));
      ops::fill(gpu(), x.get(), n, value);
      const std::vector<float> got = x.to_host();
      size_t wrong = 0;
      for (const float v : got) wrong += std::memcmp(&v, &value, sizeof v) != 0 ? 1 : 0;
      EXPECT_EQ(wrong, 0u);
    }
  }
}

// --------------------------------------------------------------------- Convolution

const Conv2dShape kConvCases[] = {
    {2, 3, 8, 8, 4, 3, 1, 1},     {3, 1, 28, 28, 8, 5, 1, 0},   {2, 5, 11, 7, 6, 3, 2, 1},
    {1, 2, 9, 9, 3, 1, 1, 0},     {4, 16, 14, 14, 32, 3, 1, 1}, {2, 3, 10, 13, 5, 4, 3, 2},
    {5, 32, 7, 7, 64, 3, 2, 0},   {1, 1, 1, 1, 1, 1, 1, 0},     {8, 32, 16, 16, 32, 5, 1, 2},
};

struct ConvData {
  std::vector<float> x, w, bias, dy;
};

ConvData conv_data(const Conv2dShape& s, uint64_t seed) {
  Rng rng(seed);
  const int64_t fan_in = s.in_channels * s.kernel * s.kernel;
  ConvData d;
  d.x = random_normal(rng, s.batch * s.in_channels * s.height * s.width);
  d.w = random_normal(rng, s.out_channels * fan_in, 1.0 / std::sqrt(static_cast<double>(fan_in)));
  d.bias = random_normal(rng, s.out_channels);
  d.dy = random_normal(rng, s.batch * s.out_channels * s.out_height() * s.out_width());
  return d;
}

TEST_F(CudaOps, Conv2dForwardMatchesCpuWithAndWithoutBias) {
  uint64_t seed = 40;
  for (const Conv2dShape& s : kConvCases) {
    SCOPED_TRACE(::testing::PrintToString(s));
    const ConvData d = conv_data(s, ++seed);
    const int64_t ny = s.batch * s.out_channels * s.out_height() * s.out_width();
    DeviceArray<float> x(gpu(), d.x), w(gpu(), d.w), bias(gpu(), d.bias);
    for (const bool with_bias : {true, false}) {
      std::vector<float> y(static_cast<size_t>(ny));
      ops::conv2d_forward(cpu(), s, d.x.data(), d.w.data(), with_bias ? d.bias.data() : nullptr,
                          y.data());
      // Twice: the first call measures the algorithms, the second uses the cached choice.
      for (int call = 0; call < 2; ++call) {
        DeviceArray<float> gy(gpu(), nans(ny));
        ops::conv2d_forward(gpu(), s, x.get(), w.get(), with_bias ? bias.get() : nullptr,
                            gy.get());
        EXPECT_TRUE(norm_close(gy.to_host(), y, 1e-4)) << "bias=" << with_bias << " call=" << call;
      }
    }
  }
}

TEST_F(CudaOps, Conv2dBackwardDataOverwritesLikeCpu) {
  uint64_t seed = 50;
  for (const Conv2dShape& s : kConvCases) {
    SCOPED_TRACE(::testing::PrintToString(s));
    const ConvData d = conv_data(s, ++seed);
    const int64_t nx = s.batch * s.in_channels * s.height * s.width;
    std::vector<float> dx(static_cast<size_t>(nx));
    ops::conv2d_backward_data(cpu(), s, d.dy.data(), d.w.data(), dx.data());
    DeviceArray<float> dy(gpu(), d.dy), w(gpu(), d.w);
    for (int call = 0; call < 2; ++call) {
      DeviceArray<float> gdx(gpu(), nans(nx));
      ops::conv2d_backward_data(gpu(), s, dy.get(), w.get(), gdx.get());
      EXPECT_TRUE(norm_close(gdx.to_host(), dx, 1e-4)) << "call=" << call;
    }
  }
}

TEST_F(CudaOps, Conv2dBackwardFilterAccumulatesLikeCpu) {
  uint64_t seed = 60;
  for (const Conv2dShape& s : kConvCases) {
    SCOPED_TRACE(::testing::PrintToString(s));
    const ConvData d = conv_data(s, ++seed);
    Rng rng(seed * 7);
    auto dw = random_normal(rng, static_cast<int64_t>(d.w.size()));
    auto db = random_normal(rng, s.out_channels);
    DeviceArray<float> x(gpu(), d.x), dy(gpu(), d.dy), gdw(gpu(), dw), gdb(gpu(), db);
    // Twice, so the second call adds to the first (and uses the cached algorithm).
    for (int call = 0; call < 2; ++call) {
      ops::conv2d_backward_filter(cpu(), s, d.x.data(), d.dy.data(), dw.data(), db.data());
      ops::conv2d_backward_filter(gpu(), s, x.get(), dy.get(), gdw.get(), gdb.get());
    }
    EXPECT_TRUE(norm_close(gdw.to_host(), dw, 1e-4));
    EXPECT_TRUE(all_close(gdb.to_host(), db, 1e-4));
    // Without a bias gradient only dw moves.
    ops::conv2d_backward_filter(cpu(), s, d.x.data(), d.dy.data(), dw.data(), nullptr);
    ops::conv2d_backward_filter(gpu(), s, x.get(), dy.get(), gdw.get(), nullptr);
    EXPECT_TRUE(norm_close(gdw.to_host(), dw, 1e-4));
  }
}

// CudaOptions::deterministic off: each direction takes cuDNN's fastest algorithm
// (conv_select_fastest), deterministic or not; the same 1e-4 of the result's norm holds,
// as it does for the deterministic choice, whose algorithms include FFT and Winograd
// forms too.
TEST_F(CudaOps, Conv2dFastestAlgorithmsMatchCpu) {
  const auto fastest = testing::make_cuda_nondeterministic();
  uint64_t seed = 70;
  for (const Conv2dShape& s : kConvCases) {
    SCOPED_TRACE(::testing::PrintToString(s));
    const ConvData d = conv_data(s, ++seed);
    const int64_t nx = s.batch * s.in_channels * s.height * s.width;
    const int64_t ny = s.batch * s.out_channels * s.out_height() * s.out_width();
    std::vector<float> y(static_cast<size_t>(ny)), dx(static_cast<size_t>(nx)), dw(d.w.size(), 0.0f);
    ops::conv2d_forward(cpu(), s, d.x.data(), d.w.data(), d.bias.data(), y.data());
    ops::conv2d_backward_data(cpu(), s, d.dy.data(), d.w.data(), dx.data());
    ops::conv2d_backward_filter(cpu(), s, d.x.data(), d.dy.data(), dw.data(), nullptr);
    DeviceArray<float> x(*fastest, d.x), w(*fastest, d.w), bias(*fastest, d.bias), dy(*fastest, d.dy);
    DeviceArray<float> gy(*fastest, nans(ny)), gdx(*fastest, nans(nx)), gdw(*fastest, std::vector<float>(dw.size()));
    ops::conv2d_forward(*fastest, s, x.get(), w.get(), bias.get(), gy.get());
    ops::conv2d_backward_data(*fastest, s, dy.get(), w.get(), gdx.get());
    ops::conv2d_backward_filter(*fastest, s, x.get(), dy.get(), gdw.get(), nullptr);
    EXPECT_TRUE(norm_close(gy.to_host(), y, 1e-4));
    EXPECT_TRUE(norm_close(gdx.to_host(), dx, 1e-4));
    EXPECT_TRUE(norm_close(gdw.to_host(), dw, 1e-4));
  }
}

TEST_F(CudaOps, Conv2dWithEmptyBatchTouchesNothing) {
  const Conv2dShape s{0, 3, 8, 8, 4, 3, 1, 1};
  DeviceArray<float> w(gpu(), std::vector<float>(4 * 3 * 9, 1.0f));
  DeviceArray<float> dw(gpu(), std::vector<float>(4 * 3 * 9, 2.0f));
  ops::conv2d_forward(gpu(), s, nullptr, w.get(), nullptr, nullptr);
  ops::conv2d_backward_data(gpu(), s, nullptr, w.get(), nullptr);
  ops::conv2d_backward_filter(gpu(), s, nullptr, nullptr, dw.get(), nullptr);
  EXPECT_TRUE(all_close(dw.to_host(), std::vector<float>(4 * 3 * 9, 2.0f), 0.0));
}

// ------------------------------------------------------------------------ Max-pool

const Pool2dShape kPoolCases[] = {
    {2, 3, 8, 8, 2, 2},  // the usual 2x2/2
    {1, 2, 7, 9, 3, 2},  // overlapping windows, odd sizes, an unused last row
    {2, 2, 6, 6, 3, 1},  // heavy overlap: one input wins up to nine windows
    {1, 1, 5, 5, 5, 1},  // one window over the whole plane
    {3, 4, 9, 7, 2, 3},  // stride > window: some inputs belong to no window
    {64, 16, 28, 28, 2, 2},
};

TEST_F(CudaOps, MaxPoolMatchesCpuExactlyIncludingTies) {
  uint64_t seed = 70;
  for (const Pool2dShape& s : kPoolCases) {
    for (const bool ties : {false, true}) {
      SCOPED_TRACE(::testing::PrintToString(s) + (ties ? " with ties" : ""));
      Rng rng(++seed);
      const int64_t nx = s.batch * s.channels * s.height * s.width;
      const int64_t ny = s.batch * s.channels * s.out_height() * s.out_width();
      const auto x = ties ? random_levels(rng, nx, 3) : random_normal(rng, nx);
      const auto dy = random_normal(rng, ny);
      std::vector<float> y(static_cast<size_t>(ny)), dx(static_cast<size_t>(nx));
      std::vector<int32_t> arg(static_cast<size_t>(ny));
      ops::maxpool2d_forward(cpu(), s, x.data(), y.data(), arg.data());
      ops::maxpool2d_backward(cpu(), s, dy.data(), arg.data(), dx.data());

      DeviceArray<float> gx(gpu(), x), gy(gpu(), nans(ny)), gdy(gpu(), dy), gdx(gpu(), nans(nx));
      DeviceArray<int32_t> garg(gpu(), std::vector<int32_t>(static_cast<size_t>(ny), -1));
      ops::maxpool2d_forward(gpu(), s, gx.get(), gy.get(), garg.get());
      ops::maxpool2d_backward(gpu(), s, gdy.get(), garg.get(), gdx.get());
      EXPECT_TRUE(all_close(gy.to_host(), y, 0.0));
      EXPECT_EQ(garg.to_host(), arg);
      EXPECT_TRUE(all_close(gdx.to_host(), dx, 0.0));
    }
  }
}

TEST_F(CudaOps, MaxPoolPropagatesNaNLikeCpu) {
  const Pool2dShape s{1, 1, 4, 4, 2, 2};
  std::vector<float> x(16, 1.0f);
  x[5] = kNaN;  // in the first window, after a larger-or-equal number
  std::vector<float> y(4);
  std::vector<int32_t> arg(4);
  ops::maxpool2d_forward(cpu(), s, x.data(), y.data(), arg.data());
  DeviceArray<float> gx(gpu(), x), gy(gpu(), nans(4));
  DeviceArray<int32_t> garg(gpu(), std::vector<int32_t>(4, -1));
  ops::maxpool2d_forward(gpu(), s, gx.get(), gy.get(), garg.get());
  EXPECT_TRUE(all_close(gy.to_host(), y, 0.0));
  EXPECT_EQ(garg.to_host(), arg);
}

// ------------------------------------------------------------------ Cross-entropy

struct XentCase {
  int64_t batch, classes;
  double logit_scale;
};

// dlogits in a separate array, and over the logits themselves (as ops.h allows).
TYPED_TEST(CudaOpsIn, SoftmaxCrossEntropyMatchesCpu) {
  using T = TypeParam;
  // From 4096 classes a block takes a row (cross_entropy.cu): 4095 and 4096 on either
  // side; 50304 (GPT-2's padded vocabulary) in 16-byte packs, 50257 and 8191 one by one.
  const XentCase cases[] = {{1, 1, 1.0},      {7, 10, 1.0},    {64, 10, 3.0},    {33, 1000, 1.0},
                            {5, 50257, 2.0},  {1000, 3, 1.0},  {16, 10, 1e4},    {40, 37, 50.0},
                            {7, 4095, 1.0},   {9, 4096, 1.0},  {3, 8191, 30.0},  {64, 50304, 2.0}};
  uint64_t seed = 80;
  for (const XentCase& xc : cases) {
    for (const bool in_place : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "batch=" << xc.batch << " classes=" << xc.classes
                                        << " logit scale=" << xc.logit_scale << " in place=" << in_place);
      Rng rng(++seed);
      auto logits = stored<T>(random_normal(rng, xc.batch * xc.classes, xc.logit_scale));
      std::vector<int32_t> labels(static_cast<size_t>(xc.batch));
      for (int32_t& l : labels) {
        l = static_cast<int32_t>(rng.below(static_cast<uint64_t>(xc.classes)));
      }
      const float grad_scale = 1.0f / 48.0f;
      const int64_t n = xc.batch * xc.classes;

      DeviceArray<T> glogits(this->gpu(), logits), gdl(this->gpu(), stored_nans<T>(n));
      DeviceArray<int32_t> glabels(this->gpu(), labels);
      DeviceArray<double> gstats(this->gpu(), std::vector<double>{1.5, 2.0});
      // Without dlogits only the statistics move (the evaluation path).
      double stats[2] = {1.5, 2.0};  // += is part of the contract
      ops::softmax_cross_entropy(this->cpu(), logits.data(), labels.data(), xc.batch, xc.classes, grad_scale,
                                 nullptr, stats);
      ops::softmax_cross_entropy(this->gpu(), glogits.get(), glabels.get(), xc.batch, xc.classes, grad_scale,
                                 nullptr, gstats.get());
      const auto without = gstats.to_host();
      EXPECT_NEAR(without[0], stats[0], 1e-6 * std::fabs(stats[0]));
      EXPECT_EQ(without[1], stats[1]);

      std::vector<T> dl(static_cast<size_t>(n));
      T* cpu_out = in_place ? logits.data() : dl.data();
      T* gpu_out = in_place ? glogits.get() : gdl.get();
      ops::softmax_cross_entropy(this->cpu(), logits.data(), labels.data(), xc.batch, xc.classes, grad_scale,
                                 cpu_out, stats);
      ops::softmax_cross_entropy(this->gpu(), glogits.get(), glabels.get(), xc.batch, xc.classes, grad_scale,
                                 gpu_out, gstats.get());
      const auto got_stats = gstats.to_host();
      EXPECT_NEAR(got_stats[0], stats[0], 1e-6 * std::fabs(stats[0]));
      EXPECT_EQ(got_stats[1], stats[1]);
      EXPECT_TRUE(close_to_norm(in_place ? glogits.to_host() : gdl.to_host(), in_place ? logits : dl, 1e-6));
    }
  }
}

// NaN logits: the correct-prediction count follows the CPU's argmax rule (z[0] seeds
// the search even when NaN; a later NaN is passed over), wherever the NaN falls among
// the GPU's lanes. Rows: NaN inside, NaN first, all NaN but one, no NaN.
TEST_F(CudaOps, SoftmaxCrossEntropyCountsHitsLikeCpuWithNanLogits) {
  // A warp per row, and a block per row in packs and one by one (cross_entropy.cu).
  for (const int64_t classes : {int64_t{64}, int64_t{8192}, int64_t{8191}}) {
    SCOPED_TRACE(::testing::Message() << "classes " << classes);
    const int64_t batch = 4;
    std::vector<float> logits(static_cast<size_t>(batch * classes), 0.0f);
    auto at = [&](int64_t r, int64_t c) -> float& { return logits[static_cast<size_t>(r * classes + c)]; };
    at(0, 5) = kNaN;
    at(0, 37) = 100.0f;
    at(1, 0) = kNaN;
    at(1, 37) = 100.0f;
    for (int64_t c = 0; c < classes; ++c) at(2, c) = c == 40 ? 3.0f : kNaN;
    at(3, 37) = 100.0f;
    const std::vector<int32_t> labels{37, 37, 40, 37};
    double stats[2] = {0.0, 0.0};
    ops::softmax_cross_entropy(cpu(), logits.data(), labels.data(), batch, classes, 1.0f, nullptr, stats);
    DeviceArray<float> glogits(gpu(), logits);
    DeviceArray<int32_t> glabels(gpu(), labels);
    DeviceArray<double> gstats(gpu(), std::vector<double>{0.0, 0.0});
    ops::softmax_cross_entropy(gpu(), glogits.get(), glabels.get(), batch, classes, 1.0f, nullptr, gstats.get());
    EXPECT_EQ(gstats.to_host()[1], stats[1]);
    EXPECT_EQ(stats[1], 2.0);  // rows 0 and 3: row 1 has its NaN first, row 2 too
  }
}

TEST_F(CudaOps, SoftmaxCrossEntropyWithoutClassesIsADataErrorAsOnTheCpu) {
  std::vector<float> logits(4, 0.0f);
  std::vector<int32_t> labels{0, 0};
  double stats[2] = {0.0, 0.0};
  EXPECT_THROW(ops::softmax_cross_entropy(cpu(), logits.data(), labels.data(), 2, 0, 1.0f, nullptr, stats),
               DataError);
  DeviceArray<float> glogits(gpu(), logits);
  DeviceArray<int32_t> glabels(gpu(), labels);
  DeviceArray<double> gstats(gpu(), std::vector<double>{0.0, 0.0});
  EXPECT_THROW(ops::softmax_cross_entropy(gpu(), glogits.get(), glabels.get(), 2, 0, 1.0f, nullptr, gstats.get()),
               DataError);
}

TEST_F(CudaOps, SoftmaxCrossEntropyLossSumIsDeterministic) {
  // A warp per row, and a block per row (a language model's vocabulary).
  for (const auto& [batch, classes] : {std::pair<int64_t, int64_t>{4096, 10}, std::pair<int64_t, int64_t>{96, 50304}}) {
    SCOPED_TRACE(::testing::Message() << "classes " << classes);
    Rng rng(90);
    const auto logits = random_normal(rng, batch * classes, 4.0);
    std::vector<int32_t> labels(static_cast<size_t>(batch));
    for (int32_t& l : labels) l = static_cast<int32_t>(rng.below(classes));
    DeviceArray<float> glogits(gpu(), logits);
    DeviceArray<int32_t> glabels(gpu(), labels);
    std::vector<double> first;
    for (int run = 0; run < 3; ++run) {
      DeviceArray<double> gstats(gpu(), std::vector<double>{0.0, 0.0});
      ops::softmax_cross_entropy(gpu(), glogits.get(), glabels.get(), batch, classes, 1.0f,
                                 nullptr, gstats.get());
      if (run == 0) {
        first = gstats.to_host();
      } else {
        EXPECT_EQ(gstats.to_host(), first);
      }
    }
  }
}

TEST_F(CudaOps, SoftmaxCrossEntropyReportsBadLabelAtTheNextSynchronization) {
  const int64_t batch = 6, classes = 10;
  std::vector<float> logits(static_cast<size_t>(batch * classes), 0.5f);
  DeviceArray<float> glogits(gpu(), logits), gdl(gpu(), nans(batch * classes));
  DeviceArray<double> gstats(gpu(), std::vector<double>{0.0, 0.0});
  for (const int32_t bad : {10, -1}) {
    SCOPED_TRACE(::testing::Message() << "bad label " << bad);
    std::vector<int32_t> labels = {1, 2, 3, bad, 4, bad};
    DeviceArray<int32_t> glabels(gpu(), labels);
    ops::softmax_cross_entropy(gpu(), glogits.get(), glabels.get(), batch, classes, 1.0f,
                               gdl.get(), gstats.get());
    try {
      gpu().synchronize();
      FAIL() << "expected DataError for label " << bad;
    } catch (const DataError& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("label " + std::to_string(bad) + " at row 3 "), std::string::npos)
          << what;
      EXPECT_NE(what.find("[0, 10)"), std::string::npos) << what;
    }
    // The flag is re-armed: good labels then synchronize cleanly.
    DeviceArray<int32_t> good(gpu(), std::vector<int32_t>{1, 2, 3, 4, 5, 6});
    ops::softmax_cross_entropy(gpu(), glogits.get(), good.get(), batch, classes, 1.0f,
                               gdl.get(), gstats.get());
    EXPECT_NO_THROW(gpu().synchronize());
  }
}

// Micro-batches queue several cross-entropy launches before one synchronization; the
// report must name the first batch that had a bad label, not the lowest bad row of any.
TEST_F(CudaOps, SoftmaxCrossEntropyReportsTheFirstBadBatchOfSeveral) {
  const int64_t batch = 6, classes = 10;
  std::vector<float> logits(static_cast<size_t>(batch * classes), 0.5f);
  DeviceArray<float> glogits(gpu(), logits), gdl(gpu(), nans(batch * classes));
  DeviceArray<double> gstats(gpu(), std::vector<double>{0.0, 0.0});
  DeviceArray<int32_t> good(gpu(), std::vector<int32_t>{1, 2, 3, 4, 5, 6});
  DeviceArray<int32_t> late_row(gpu(), std::vector<int32_t>{1, 2, 3, 4, 77, 6});
  DeviceArray<int32_t> early_row(gpu(), std::vector<int32_t>{-5, 2, 3, 4, 5, 6});
  for (const int32_t* labels : {good.get(), late_row.get(), early_row.get()}) {
    ops::softmax_cross_entropy(gpu(), glogits.get(), labels, batch, classes, 1.0f, gdl.get(),
                               gstats.get());
  }
  try {
    gpu().synchronize();
    FAIL() << "expected DataError";
  } catch (const DataError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("label 77 at row 4 "), std::string::npos) << what;
    EXPECT_NE(what.find("batch 2 of the 3"), std::string::npos) << what;
  }
  ops::softmax_cross_entropy(gpu(), glogits.get(), good.get(), batch, classes, 1.0f, gdl.get(),
                             gstats.get());
  EXPECT_NO_THROW(gpu().synchronize());
}

// ------------------------------------------------------------------------- Convert

// fp32 values with every rounding case of float_to_bf16: random magnitudes from tiny
// to huge, signed zeros, infinities, a value beyond bf16's largest (rounds to
// infinity), bf16's largest itself, ties to even in both directions, and subnormals.
std::vector<float> conversion_inputs(Rng& rng, int64_t n) {
  std::vector<float> v = random_normal(rng, n);
  for (size_t i = 0; i < v.size(); i += 3) v[i] *= std::ldexp(1.0f, static_cast<int>(rng.below(200)) - 100);
  const float special[] = {0.0f,
                           -0.0f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::max(),
                           3.3895314e38f,                  // bf16's largest, 0x7f7f
                           1.0f + std::ldexp(1.0f, -8),    // tie: rounds down to even 1.0
                           1.0f + 3 * std::ldexp(1.0f, -8),  // tie: rounds up to even
                           -(1.0f + 3 * std::ldexp(1.0f, -8)),
                           1e-40f,
                           -3e-39f,
                           std::numeric_limits<float>::denorm_min(),
                           std::numeric_limits<float>::min()};
  for (size_t i = 0; i < std::size(special) && i < v.size(); ++i) v[i] = special[i];
  return v;
}

// ops::convert of elements [offset, offset + n) of x into a fresh array of Out, read
// back; element 0 (not converted when offset is 1) reads as `first`.
template <class Out, class In>
std::vector<Out> converted(Context& gpu, In* x, int64_t offset, int64_t n, Out first) {
  DeviceArray<Out> y(gpu, testing::stored_nans<Out>(n + offset));
  ops::convert(gpu, x + offset, y.get() + offset, n);
  auto got = y.to_host();
  if (offset == 1) got[0] = first;
  return got;
}

TEST_F(CudaOps, ConvertRoundsLikeFloatToBf16AndWidensExactly) {
  Rng rng(320);
  for (const int64_t n : {int64_t{13}, int64_t{4096}, int64_t{1'000'003}}) {
    for (const int64_t offset : {int64_t{0}, int64_t{1}}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " offset=" << offset);
      const auto x = conversion_inputs(rng, n + offset);
      std::vector<bf16> want(x.size());
      for (size_t i = 0; i < x.size(); ++i) want[i] = float_to_bf16(x[i]);
      DeviceArray<float> gx(gpu(), x);
      DeviceArray<bf16> gy(gpu(), want);
      EXPECT_TRUE(same_bits(converted<bf16>(gpu(), gx.get(), offset, n, want[0]), want));
      // bf16 to fp32 is exact; the same type copies.
      EXPECT_TRUE(same_bits(converted<float>(gpu(), gy.get(), offset, n, bf16_to_float(want[0])), widen(want)));
      EXPECT_TRUE(same_bits(converted<bf16>(gpu(), gy.get(), offset, n, want[0]), want));
      EXPECT_TRUE(same_bits(converted<float>(gpu(), gx.get(), offset, n, x[0]), x));
    }
  }
}

TEST_F(CudaOps, ConvertKeepsNaNANaN) {
  DeviceArray<float> x(gpu(), std::vector<float>{kNaN, -kNaN, 1.0f});
  DeviceArray<bf16> y(gpu(), to_bf16({0.0f, 0.0f, 0.0f}));
  ops::convert(gpu(), x.get(), y.get(), 3);
  const auto got = widen(y.to_host());
  EXPECT_TRUE(std::isnan(got[0]));
  EXPECT_TRUE(std::isnan(got[1]));
  EXPECT_EQ(got[2], 1.0f);
}

// ---------------------------------------------------------------------- Optimizers

TEST_F(CudaOps, SgdMatchesCpuOverSeveralSteps) {
  const int64_t n = 1'000'003;
  // The last with gradient clipping's coefficient folded in (grad_scale).
  const SgdHyper variants[] = {{0.1f, 0.9f, 0.01f, false}, {0.05f, 0.9f, 0.0f, true},
                               {0.2f, 0.0f, 0.001f, false}, {0.1f, 0.9f, 0.01f, true, 0.37f}};
  uint64_t seed = 110;
  for (const SgdHyper& h : variants) {
    SCOPED_TRACE(::testing::Message() << "lr=" << h.lr << " momentum=" << h.momentum
                                      << " wd=" << h.weight_decay << " nesterov=" << h.nesterov
                                      << " grad_scale=" << h.grad_scale);
    Rng rng(++seed);
    auto p = random_normal(rng, n);
    auto buf = random_normal(rng, n, 0.1);
    const bool with_buffer = h.momentum != 0.0f;
    DeviceArray<float> gp(gpu(), p), gbuf(gpu(), buf);
    for (int step = 0; step < 3; ++step) {
      const auto g = random_normal(rng, n);
      DeviceArray<float> gg(gpu(), g);
      ops::sgd_update(cpu(), p.data(), g.data(), with_buffer ? buf.data() : nullptr, n, h);
      ops::sgd_update(gpu(), gp.get(), gg.get(), with_buffer ? gbuf.get() : nullptr, n, h);
    }
    EXPECT_TRUE(all_close(gp.to_host(), p, 1e-6));
    if (with_buffer) {
      EXPECT_TRUE(all_close(gbuf.to_host(), buf, 1e-6));
    }
  }
}

TEST_F(CudaOps, AdamWMatchesCpuOverSeveralSteps) {
  const int64_t n = 100'003;
  Rng rng(120);
  auto p = random_normal(rng, n);
  std::vector<float> m(static_cast<size_t>(n), 0.0f), v(static_cast<size_t>(n), 0.0f);
  DeviceArray<float> gp(gpu(), p), gm(gpu(), m), gv(gpu(), v);
  for (int64_t step = 1; step <= 4; ++step) {
    // Gradient clipping's coefficient folded in on the even steps.
    const AdamWHyper h{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step, step % 2 == 0 ? 0.37f : 1.0f};
    const auto g = random_normal(rng, n, 0.5);
    DeviceArray<float> gg(gpu(), g);
    ops::adamw_update(cpu(), p.data(), g.data(), m.data(), v.data(), n, h);
    ops::adamw_update(gpu(), gp.get(), gg.get(), gm.get(), gv.get(), n, h);
  }
  EXPECT_TRUE(all_close(gp.to_host(), p, 1e-6));
  EXPECT_TRUE(all_close(gm.to_host(), m, 1e-6));
  EXPECT_TRUE(all_close(gv.to_host(), v, 1e-6));
}

TEST_F(CudaOps, AdamWWritesTheRoundedParametersInTheSamePass) {
  const int64_t n = 100'003;
  Rng rng(321);
  auto p = random_normal(rng, n);
  std::vector<float> m(static_cast<size_t>(n), 0.0f), v(static_cast<size_t>(n), 0.0f);
  DeviceArray<float> gp(gpu(), p), gm(gpu(), m), gv(gpu(), v);
  DeviceArray<bf16> gcopy(gpu(), stored_nans<bf16>(n));
  for (int64_t step = 1; step <= 4; ++step) {
    const AdamWHyper h{1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, step};
    const auto g = random_normal(rng, n, 0.5);
    DeviceArray<float> gg(gpu(), g);
    ops::adamw_update(cpu(), p.data(), g.data(), m.data(), v.data(), n, h);
    ops::adamw_update(gpu(), gp.get(), gg.get(), gm.get(), gv.get(), n, h, gcopy.get());
  }
  // The fp32 update is the one without a copy (test_cuda_ops.cpp's bound) ...
  const auto params = gp.to_host();
  EXPECT_TRUE(all_close(params, p, 1e-6));
  EXPECT_TRUE(all_close(gm.to_host(), m, 1e-6));
  EXPECT_TRUE(all_close(gv.to_host(), v, 1e-6));
  // ... and the copy is exactly its rounding.
  EXPECT_TRUE(same_bits(gcopy.to_host(), to_bf16(params)));
}

// Note [Optimizers over spans]: 300 alternating spans (three launches' tables,
// one-element spans among them) from an offset: the same bits as the CUDA update span
// by span (AdamW with its bf16 copy), and within the single-range tests' bound of the
// CPU's.
std::vector<DecaySpan> many_spans() {
  std::vector<DecaySpan> spans;
  int64_t at = 5;
  for (int i = 0; i < 300; ++i) {
    const int64_t count = i % 7 == 0 ? 1 : 1 + (i * 53) % 997;
    spans.push_back(DecaySpan{at, count, i % 2 == 0});
    at += count;
  }
  return spans;
}

TEST_F(CudaOps, SgdOverSpansIsTheUpdateSpanBySpan) {
  const std::vector<DecaySpan> spans = many_spans();
  const int64_t n = spans.back().offset + spans.back().count;
  Rng rng(123);
  auto p = random_normal(rng, n);
  std::vector<float> buf(static_cast<size_t>(n), 0.0f);
  DeviceArray<float> gp(gpu(), p), gbuf(gpu(), buf), sp(gpu(), p), sbuf(gpu(), buf);
  for (int step = 1; step <= 3; ++step) {
    const SgdHyper h{0.05f, 0.9f, 0.01f, true, step == 2 ? 0.37f : 1.0f};
    const auto g = random_normal(rng, n, 0.5);
    DeviceArray<float> gg(gpu(), g);
    ops::sgd_update_spans(cpu(), p.data(), g.data(), buf.data(), spans, h);
    ops::sgd_update_spans(gpu(), gp.get(), gg.get(), gbuf.get(), spans, h);
    for (const DecaySpan& s : spans) {
      SgdHyper span_h = h;
      if (!s.decay) span_h.weight_decay = 0.0f;
      ops::sgd_update(gpu(), sp.get() + s.offset, gg.get() + s.offset, sbuf.get() + s.offset, s.count, span_h);
    }
  }
  EXPECT_TRUE(same_bits(gp.to_host(), sp.to_host()));
  EXPECT_TRUE(same_bits(gbuf.to_host(), sbuf.to_host()));
  EXPECT_TRUE(all_close(gp.to_host(), p, 1e-6));
  EXPECT_TRUE(all_close(gbuf.to_host(), buf, 1e-6));
}

TEST_F(CudaOps, AdamWOverSpansIsTheUpdateSpanBySpan) {
  const std::vector<DecaySpan> spans = many_spans();
  const int64_t n = spans.back().offset + spans.back().count;
  Rng rng(122);
  auto p = random_normal(rng, n);
  std::vector<float> m(static_cast<size_t>(n), 0.0f), v(static_cast<size_t>(n), 0.0f);
  DeviceArray<float> gp(gpu(), p), gm(gpu(), m), gv(gpu(), v), sp(gpu(), p), sm(gpu(), m), sv(gpu(), v);
  DeviceArray<bf16> gcopy(gpu(), stored_nans<bf16>(n)), scopy(gpu(), stored_nans<bf16>(n));
  for (int64_t step = 1; step <= 3; ++step) {
    const AdamWHyper h{1e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, step, step == 2 ? 0.37f : 1.0f};
    const auto g = random_normal(rng, n, 0.5);
    DeviceArray<float> gg(gpu(), g);
    ops::adamw_update_spans(cpu(), p.data(), g.data(), m.data(), v.data(), spans, h);
    ops::adamw_update_spans(gpu(), gp.get(), gg.get(), gm.get(), gv.get(), spans, h, gcopy.get());
    for (const DecaySpan& s : spans) {
      AdamWHyper span_h = h;
      if (!s.decay) span_h.weight_decay = 0.0f;
      ops::adamw_update(gpu(), sp.get() + s.offset, gg.get() + s.offset, sm.get() + s.offset, sv.get() + s.offset,
                        s.count, span_h, scopy.get() + s.offset);
    }
  }
  EXPECT_TRUE(same_bits(gp.to_host(), sp.to_host()));
  EXPECT_TRUE(same_bits(gm.to_host(), sm.to_host()));
  EXPECT_TRUE(same_bits(gv.to_host(), sv.to_host()));
  EXPECT_TRUE(same_bits(gcopy.to_host(), scopy.to_host()));
  EXPECT_TRUE(all_close(gp.to_host(), p, 1e-6));
  EXPECT_TRUE(all_close(gm.to_host(), m, 1e-6));
  EXPECT_TRUE(all_close(gv.to_host(), v, 1e-6));
}

// ----------------------------------------------------------------------- Transfers

TEST_F(CudaOps, SumSquaresMatchesCpuAndAddsScaled) {
  Rng rng(140);
  for (const int64_t n : {int64_t{1}, int64_t{255}, int64_t{4097}, int64_t{1} << 20, int64_t{3000001}}) {
    SCOPED_TRACE(n);
    const auto x = random_normal(rng, n);
    double want[2] = {1.5, 0.0};
    ops::sum_squares(cpu(), x.data(), n, 2.0, want);
    DeviceArray<float> gx(gpu(), x);
    const std::vector<double> start = {1.5, 0.0};
    Buffer out(gpu().allocator(), 2 * sizeof(double), MemoryCategory::Other);
    ops::copy_from_host(gpu(), out.data(), start.data(), 2 * sizeof(double));
    ops::sum_squares(gpu(), gx.get(), n, 2.0, out.as<double>());
    double got[2];
    ops::copy_to_host(gpu(), got, out.data(), sizeof(got));
    EXPECT_NEAR(got[0], want[0], 1e-12 * want[0]);
    EXPECT_EQ(got[1], 0.0);  // only out[0] is written
    // The same input gives the same bits (no atomics).
    ops::copy_from_host(gpu(), out.data(), start.data(), 2 * sizeof(double));
    ops::sum_squares(gpu(), gx.get(), n, 2.0, out.as<double>());
    double again[2];
    ops::copy_to_host(gpu(), again, out.data(), sizeof(again));
    EXPECT_EQ(again[0], got[0]);
  }
}

// The memory model's workspace figure is known before the first step (the algorithms
// are chosen from the heuristics, Note [cuDNN algorithm choice]) and is what the three
// ops then take, backward-filter with its bias gradient (whose column sums take a
// workspace where the output is 1 x 1): the context keeps one workspace, the largest
// any op asked for.
TEST_F(CudaOps, Conv2dWorkspaceBytesAreWhatTheOpsTake) {
  uint64_t seed = 150;
  for (const Conv2dShape& s : kConvCases) {
    SCOPED_TRACE(::testing::PrintToString(s));
    if (s.batch == 0) continue;
    auto fresh = Context::make_cuda(CudaOptions{});
    const size_t predicted = ops::conv2d_workspace_bytes(*fresh, s);
    const ConvData d = conv_data(s, ++seed);
    const int64_t ny = s.batch * s.out_channels * s.out_height() * s.out_width();
    Rng rng(seed);
    DeviceArray<float> x(*fresh, d.x), w(*fresh, d.w), dy(*fresh, random_normal(rng, ny));
    DeviceArray<float> y(*fresh, nans(ny)), dx(*fresh, nans(static_cast<int64_t>(d.x.size())));
    DeviceArray<float> dw(*fresh, std::vector<float>(d.w.size(), 0.0f));
    DeviceArray<float> dbias(*fresh, std::vector<float>(static_cast<size_t>(s.out_channels), 0.0f));
    const auto workspace = static_cast<int>(MemoryCategory::Workspace);
    const size_t before = fresh->allocator().stats().in_use_by[workspace];
    fresh->allocator().reset_peak();
    ops::conv2d_forward(*fresh, s, x.get(), w.get(), nullptr, y.get());
    ops::conv2d_backward_data(*fresh, s, dy.get(), w.get(), dx.get());
    ops::conv2d_backward_filter(*fresh, s, x.get(), dy.get(), dw.get(), dbias.get());
    fresh->synchronize();
    const size_t taken = fresh->allocator().stats().peak_by[workspace] - before;
    EXPECT_LE(taken, predicted) << "the ops took more workspace than predicted";
    EXPECT_EQ(fresh->allocator().stats().in_use_by[workspace] - before, predicted);
    EXPECT_EQ(ops::conv2d_workspace_bytes(*fresh, s), predicted);
  }
}

// The same inputs on two fresh contexts give the same bits in every direction that
// conv2d_determinism calls deterministic: the algorithm choice does not depend on
// timings, so a resumed run or another rank on the same kind of card computes exactly
// what the first did. (A direction without a deterministic algorithm is the plan's
// Note [Determinism report], not a failure of this test.)
TEST_F(CudaOps, Conv2dIsBitIdenticalAcrossFreshContexts) {
  uint64_t seed = 170;
  for (const Conv2dShape& s : kConvCases) {
    SCOPED_TRACE(::testing::PrintToString(s));
    if (s.batch == 0) continue;
    const ConvData d = conv_data(s, ++seed);
    const int64_t ny = s.batch * s.out_channels * s.out_height() * s.out_width();
    std::vector<float> results[2][3];
    for (auto& result : results) {
      auto fresh = Context::make_cuda(CudaOptions{});
      DeviceArray<float> x(*fresh, d.x), w(*fresh, d.w), b(*fresh, d.bias), dy(*fresh, d.dy);
      DeviceArray<float> y(*fresh, nans(ny)), dx(*fresh, nans(static_cast<int64_t>(d.x.size())));
      DeviceArray<float> dw(*fresh, std::vector<float>(d.w.size(), 0.0f));
      ops::conv2d_forward(*fresh, s, x.get(), w.get(), b.get(), y.get());
      ops::conv2d_backward_data(*fresh, s, dy.get(), w.get(), dx.get());
      ops::conv2d_backward_filter(*fresh, s, x.get(), dy.get(), dw.get(), nullptr);
      result[0] = y.to_host();
      result[1] = dx.to_host();
      result[2] = dw.to_host();
    }
    const Conv2dDeterminism det = ops::conv2d_determinism(gpu(), s);
    // Every forward algorithm of cuDNN is deterministic (its documentation says so; the
    // backward ones differ): a forward reported otherwise means the flag is read wrongly,
    // and then this test would compare nothing.
    EXPECT_TRUE(det.forward) << "the forward convolution is reported non-deterministic";
    const bool deterministic[3] = {true, det.backward_data, det.backward_filter};
    for (int k = 0; k < 3; ++k) {
      if (!deterministic[k]) {
        std::cout << "note: direction " << k << " of " << ::testing::PrintToString(s)
                  << " has no deterministic cuDNN algorithm; not compared\n";
        continue;
      }
      ASSERT_EQ(results[0][k].size(), results[1][k].size());
      EXPECT_EQ(std::memcmp(results[0][k].data(), results[1][k].data(), results[0][k].size() * sizeof(float)), 0)
          << "direction " << k << " (0 forward, 1 backward-data, 2 backward-filter) differs between contexts";
    }
  }
}

// A batch whose tensors exceed cuDNN's int sizes: the memory model hears "does not
// fit" (a figure no device holds) instead of an error, and the op says what to change.
TEST_F(CudaOps, Conv2dBatchBeyondCudnnLimitsIsOutOfMemoryNotAnInternalError) {
  const Conv2dShape huge{40000, 128, 28, 28, 128, 3, 1, 1};  // 4.0e9 elements per tensor
  EXPECT_GE(ops::conv2d_workspace_bytes(gpu(), huge), size_t{1} << 50);
  try {
    ops::conv2d_forward(gpu(), huge, nullptr, nullptr, nullptr, nullptr);
    ADD_FAILURE() << "no error";
  } catch (const OutOfMemoryError& e) {
    EXPECT_NE(std::string(e.what()).find("use a smaller train.micro_batch"), std::string::npos) << e.what();
  }
}

TEST_F(CudaOps, CopiesRoundTripFromPageableAndPinnedMemory) {
  Rng rng(130);
  const auto host = random_normal(rng, 1 << 20);
  const size_t bytes = host.size() * sizeof(float);
  Buffer device(gpu().allocator(), bytes, MemoryCategory::Other);

  ops::copy_from_host(gpu(), device.data(), host.data(), bytes);
  std::vector<float> back(host.size(), kNaN);
  ops::copy_to_host(gpu(), back.data(), device.data(), bytes);
  EXPECT_TRUE(all_close(back, host, 0.0));

  HostBuffer pinned(gpu(), bytes);
  std::copy(host.begin(), host.end(), pinned.as<float>());
  Buffer second(gpu().allocator(), bytes, MemoryCategory::Other);
  ops::copy_from_host(gpu(), second.data(), pinned.data(), bytes);
  gpu().synchronize();  // a pinned source is read asynchronously (cuda_backend.h)
  HostBuffer pinned_back(gpu(), bytes);
  ops::copy_to_host(gpu(), pinned_back.data(), second.data(), bytes);
  EXPECT_TRUE(all_close(std::vector<float>(pinned_back.as<float>(),
                                           pinned_back.as<float>() + host.size()),
                        host, 0.0));

  ops::copy_from_host(gpu(), device.data(), host.data(), 0);  // empty copies are no-ops
  ops::copy_to_host(gpu(), back.data(), device.data(), 0);
}

}  // namespace
}  // namespace dtrain
