// The native bf16 GEMM (oneDNN's matmul; Note [Native bf16 GEMM] in
// kernels/cpu/gemm_native.cpp) against the emulated one, the oracle (Note [bf16 GEMM]
// in gemm.cpp, itself held to the fp32 GEMM bit for bit by test_bf16_ops.cpp).
//
// The tolerance. Both compute the same exact products a_ip * b_pj (bf16 x bf16 fits
// fp32's 24-bit significand) and add them in fp32, in different orders (OpenBLAS's,
// oneDNN's brgemm with VDPBF16PS pairs). A sum of k terms in any order, each addition
// rounded, is within (k - 1) u S of the exact sum, u = 2^-24, S = sum_p |a_ip||b_pj|
// (Higham, Accuracy and Stability, 4.2). So the two accumulators differ by at most
// 2 (k - 1) u S. Scaling by alpha and adding beta * c each round once more, on both
// sides: at most 2 u (|alpha| S + |beta||c|) each, 4 u in all. So with
// T = |alpha| S + |beta||c|, the fp32 results differ by at most (2k + 4) u T. A bf16 C
// rounds both to bf16: two values within d of each other round to values within
// d + one bf16 ulp of the larger, and a bf16 ulp of x is at most 2^-7 |x|. The data
// are normal(0, 1), so no product is a denormal that VDPBF16PS would flush.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
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

std::vector<bf16> random_bf16(Rng& rng, size_t n) {
  std::vector<bf16> v(n);
  for (bf16& x : v) x = float_to_bf16(static_cast<float>(rng.normal()));
  return v;
}

size_t workspace_in_use(Context& ctx) {
  return ctx.allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Workspace)];
}

#define SKIP_WITHOUT_NATIVE_BF16()                                                              \
  if (!cpu::cpu_has_native_bf16()) {                                                            \
    GTEST_SKIP() << "this CPU has no AVX512-BF16 or AMX: the native bf16 GEMM is not used here"; \
  }

struct Shape {
  int64_t m, n, k;
};

// Odd sizes, sizes with several slabs, and the GPT's of bench/gpt_shakespeare.yaml
// (12 x 64 rows, width 128, 4x MLP, vocabulary 65; the weight gradients' k is the rows).
const Shape kShapes[] = {{1, 1, 1},     {7, 5, 3},       {33, 17, 65},    {48, 300, 48},
                         {256, 192, 96}, {768, 384, 128}, {768, 128, 512}, {768, 65, 128},
                         {384, 128, 768}, {128, 512, 768}};

struct Operands {
  int64_t lda, ldb, ldc;
  std::vector<bf16> a, b, c0;
};

Operands make_operands(const Shape& g, bool ta, bool tb, int64_t pad, Rng& rng) {
  Operands o;
  const int64_t a_rows = ta ? g.k : g.m, a_cols = ta ? g.m : g.k;
  const int64_t b_rows = tb ? g.n : g.k, b_cols = tb ? g.k : g.n;
  o.lda = a_cols + pad;
  o.ldb = b_cols + pad;
  o.ldc = g.n + pad;
  o.a = random_bf16(rng, a_rows * o.lda);
  o.b = random_bf16(rng, b_rows * o.ldb);
  o.c0 = random_bf16(rng, g.m * o.ldc);
  return o;
}

// The bound of the header for element (i, j): (2k + 4) u T (+ a bf16 ulp).
std::vector<double> bounds(const Shape& g, bool ta, bool tb, float alpha, float beta, const Operands& o) {
  std::vector<double> out(g.m * o.ldc, 0.0);
  const double u = std::ldexp(1.0, -24);
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < g.n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < g.k; ++p) {
        const double a = bf16_to_float(ta ? o.a[p * o.lda + i] : o.a[i * o.lda + p]);
        const double b = bf16_to_float(tb ? o.b[j * o.ldb + p] : o.b[p * o.ldb + j]);
        s += std::fabs(a * b);
      }
      const double t = std::fabs(alpha) * s + std::fabs(beta) * std::fabs(bf16_to_float(o.c0[i * o.ldc + j]));
      out[i * o.ldc + j] = (2.0 * g.k + 4.0) * u * t;
    }
  }
  return out;
}

template <class T>
double value(T v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return bf16_to_float(v);
  } else {
    return v;
  }
}

template <class T>
std::vector<T> initial_c(const Operands& o) {
  if constexpr (std::is_same_v<T, bf16>) {
    return o.c0;
  } else {
    std::vector<float> c(o.c0.size());
    for (size_t i = 0; i < c.size(); ++i) c[i] = bf16_to_float(o.c0[i]);
    return c;
  }
}

template <class T>
void check_against_oracle(const Shape& g, bool ta, bool tb, float alpha, float beta, int64_t pad, Rng& rng) {
  constexpr bool c_bf16 = std::is_same_v<T, bf16>;
  SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k << " trans_a=" << ta
                                    << " trans_b=" << tb << " alpha=" << alpha << " beta=" << beta
                                    << " C=" << (c_bf16 ? "bf16" : "fp32") << " pad=" << pad);
  const Operands o = make_operands(g, ta, tb, pad, rng);
  auto ctx = Context::make_cpu(2);
  cpu::GemmPlanCache plans;
  std::vector<T> want = initial_c<T>(o), got = initial_c<T>(o);
  cpu::gemm(*ctx, ta, tb, g.m, g.n, g.k, alpha, o.a.data(), o.lda, o.b.data(), o.ldb, beta, want.data(), o.ldc);
  cpu::gemm_native(*ctx, plans, ta, tb, g.m, g.n, g.k, alpha, o.a.data(), o.lda, o.b.data(), o.ldb, beta,
                   got.data(), o.ldc);
  const std::vector<double> bound = bounds(g, ta, tb, alpha, beta, o);
  int64_t failures = 0;
  for (int64_t i = 0; i < g.m; ++i) {
    for (int64_t j = 0; j < o.ldc; ++j) {
      const size_t at = static_cast<size_t>(i * o.ldc + j);
      const double w = value(want[at]), v = value(got[at]);
      if (j >= g.n) {  // the padding is not C's
        if (std::memcmp(&want[at], &got[at], sizeof(T)) != 0 && ++failures <= 3) {
          ADD_FAILURE() << "padding (" << i << ", " << j << ") changed";
        }
        continue;
      }
      double tol = bound[at];
      if (c_bf16) tol += std::ldexp(std::fabs(w) + tol, -7);
      if (!(std::fabs(w - v) <= tol) && ++failures <= 3) {
        ADD_FAILURE() << "C(" << i << ", " << j << ") = " << v << ", the oracle's " << w << ", bound " << tol;
      }
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST(CpuGemmNative, IsWithinTheSumOrderBoundOfTheEmulatedOracle) {
  SKIP_WITHOUT_NATIVE_BF16();
  Rng rng(11);
  for (const Shape& g : kShapes) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        check_against_oracle<bf16>(g, ta, tb, 1.0f, 0.0f, 0, rng);
        check_against_oracle<bf16>(g, ta, tb, 0.75f, 0.5f, 3, rng);
        check_against_oracle<float>(g, ta, tb, 1.0f, 1.0f, 0, rng);  // dW +=
        check_against_oracle<float>(g, ta, tb, -1.5f, 0.0f, 2, rng);
        check_against_oracle<bf16>(g, ta, tb, 1.0f, 1.0f, 1, rng);
      }
    }
  }
}

TEST(CpuGemmNative, NanGarbageInCDoesNotSurviveBetaZero) {
  SKIP_WITHOUT_NATIVE_BF16();
  Rng rng(12);
  const Shape g{40, 24, 16};
  const Operands o = make_operands(g, false, false, 0, rng);
  auto ctx = Context::make_cpu(2);
  cpu::GemmPlanCache plans;
  std::vector<float> c(g.m * g.n, std::numeric_limits<float>::quiet_NaN());
  cpu::gemm_native(*ctx, plans, false, false, g.m, g.n, g.k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb, 0.0f,
                   c.data(), o.ldc);
  for (float v : c) ASSERT_FALSE(std::isnan(v));
}

// The same bits on 1 and 2 (and 3) threads, and on a second run with a fresh cache.
TEST(CpuGemmNative, GivesTheSameBitsOnAnyNumberOfThreadsAndEveryRun) {
  SKIP_WITHOUT_NATIVE_BF16();
  Rng rng(13);
  for (const Shape& g : {Shape{768, 384, 128}, Shape{384, 128, 768}, Shape{100, 700, 64}, Shape{768, 65, 128}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k << " ta=" << ta
                                          << " tb=" << tb);
        ASSERT_GT(cpu::gemm_native_slabs(g.m, g.n, g.k).count, 1);  // so the team has slabs to share
        const Operands o = make_operands(g, ta, tb, 0, rng);
        std::vector<std::vector<bf16>> cb;
        std::vector<std::vector<float>> cf;
        for (int threads : {1, 2, 3, 2}) {
          auto ctx = Context::make_cpu(threads);
          cpu::GemmPlanCache plans;
          cb.push_back(o.c0);
          cpu::gemm_native(*ctx, plans, ta, tb, g.m, g.n, g.k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb, 0.5f,
                           cb.back().data(), o.ldc);
          cf.push_back(initial_c<float>(o));
          cpu::gemm_native(*ctx, plans, ta, tb, g.m, g.n, g.k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb, 1.0f,
                           cf.back().data(), o.ldc);
        }
        for (size_t r = 1; r < cb.size(); ++r) {
          EXPECT_EQ(std::memcmp(cb[r].data(), cb[0].data(), cb[0].size() * sizeof(bf16)), 0) << "run " << r;
          EXPECT_EQ(std::memcmp(cf[r].data(), cf[0].data(), cf[0].size() * sizeof(float)), 0) << "run " << r;
        }
      }
    }
  }
}

TEST(CpuGemmNative, WorkspaceBytesAreWhatTheOpTakesForEveryTranspose) {
  SKIP_WITHOUT_NATIVE_BF16();
  Rng rng(14);
  for (const Shape& g : kShapes) {
    for (bool c_bf16 : {true, false}) {
      for (bool ta : {false, true}) {
        for (bool tb : {false, true}) {
          for (float beta : {0.0f, 1.0f}) {
            SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k << " ta=" << ta
                                              << " tb=" << tb << " beta=" << beta << " C bf16=" << c_bf16);
            const Operands o = make_operands(g, ta, tb, 0, rng);
            auto ctx = Context::make_cpu(2);
            cpu::GemmPlanCache plans;
            std::vector<bf16> cb = o.c0;
            std::vector<float> cf = initial_c<float>(o);
            const TypedPtr c = c_bf16 ? TypedPtr(cb.data()) : TypedPtr(cf.data());
            cpu::gemm_native(*ctx, plans, ta, tb, g.m, g.n, g.k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb, beta,
                             c, o.ldc);
            EXPECT_EQ(workspace_in_use(*ctx),
                      cpu::gemm_native_workspace_bytes(plans, g.m, g.n, g.k, c_bf16 ? DType::kBF16 : DType::kF32));
          }
        }
      }
    }
  }
}

TEST(CpuGemmNative, MakesNoPrimitiveOnceItsShapesArePlanned) {
  SKIP_WITHOUT_NATIVE_BF16();
  Rng rng(15);
  const Shape g{768, 384, 128};
  const Operands o = make_operands(g, false, true, 0, rng);
  auto ctx = Context::make_cpu(2);
  cpu::GemmPlanCache plans;
  std::vector<bf16> c = o.c0;
  cpu::gemm_native(*ctx, plans, false, true, g.m, g.n, g.k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb, 0.0f,
                   c.data(), o.ldc);
  const size_t planned = plans.size();
  EXPECT_GE(planned, 1u);
  for (int i = 0; i < 3; ++i) {
    cpu::gemm_native(*ctx, plans, false, true, g.m, g.n, g.k, 1.0f, o.a.data(), o.lda, o.b.data(), o.ldb, 0.0f,
                     c.data(), o.ldc);
  }
  EXPECT_EQ(plans.size(), planned);
  plans.clear();
  EXPECT_EQ(plans.size(), 0u);
}

TEST(CpuGemmNative, SlabsArePowersOfTwoThatCoverCInAlignedPieces) {
  struct Case {
    Shape g;
    bool columns;
    int64_t count;
  };
  // count: the largest power of two <= min(16, m n k / 2^21, extent / 16).
  for (const Case& c : {Case{{7, 5, 3}, false, 1}, Case{{768, 384, 128}, false, 16}, Case{{768, 65, 128}, false, 2},
                        Case{{384, 128, 768}, false, 16}, Case{{128, 512, 48}, true, 1},
                        Case{{128, 512, 96}, true, 2}, Case{{40, 4096, 4096}, true, 16}, Case{{20, 20, 100000}, false, 1}}) {
    SCOPED_TRACE(::testing::Message() << "m=" << c.g.m << " n=" << c.g.n << " k=" << c.g.k);
    const cpu::GemmSlabs s = cpu::gemm_native_slabs(c.g.m, c.g.n, c.g.k);
    EXPECT_EQ(s.columns, c.columns);
    EXPECT_EQ(s.count, c.count);
    EXPECT_EQ(s.lo(0), 0);
    EXPECT_EQ(s.hi(s.count - 1), s.extent);
    for (int64_t i = 0; i < s.count; ++i) {
      EXPECT_LT(s.lo(i), s.hi(i));
      EXPECT_EQ(s.lo(i) % cpu::kGemmNativeSlabAlign, 0);
      if (i > 0) {
        EXPECT_EQ(s.lo(i), s.hi(i - 1));
      }
    }
  }
}

TEST(CpuGemmNative, Dtrain_cpu_bf16SelectsTheGemmAndRejectsWhatItCannotDo) {
  EXPECT_EQ(cpu::bf16_gemm_choice(nullptr, true), cpu::Bf16Gemm::kNative);
  EXPECT_EQ(cpu::bf16_gemm_choice(nullptr, false), cpu::Bf16Gemm::kEmulated);
  EXPECT_EQ(cpu::bf16_gemm_choice("", true), cpu::Bf16Gemm::kNative);
  EXPECT_EQ(cpu::bf16_gemm_choice("emulated", true), cpu::Bf16Gemm::kEmulated);
  EXPECT_EQ(cpu::bf16_gemm_choice("emulated", false), cpu::Bf16Gemm::kEmulated);
  EXPECT_EQ(cpu::bf16_gemm_choice("native", true), cpu::Bf16Gemm::kNative);
  EXPECT_THROW(cpu::bf16_gemm_choice("native", false), Error);
  EXPECT_THROW(cpu::bf16_gemm_choice("fast", true), Error);
}

}  // namespace
}  // namespace dtrain
