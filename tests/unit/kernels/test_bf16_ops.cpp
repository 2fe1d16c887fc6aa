// The CPU ops on bf16 tensors against their contract (Note [bf16 storage] in
// kernels/dtype.h): a bf16 op computes in fp32 exactly as the fp32 op does on the
// widened inputs and rounds each stored value once, to nearest even. So each expected
// value here is round_bf16 of the fp32 op (itself tested against definitions in
// test_cpu_ops.cpp and test_transformer_ops.cpp) applied to the widened inputs, and
// the outputs must match bit for bit; parameter gradients and row statistics stay fp32
// and must equal the fp32 op's exactly. The conversion itself is checked against
// hand-worked bit patterns.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/storage.h"
#include "kernels/dropout_hash.h"
#include "kernels/dtype.h"
#include "kernels/errors.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

constexpr bf16 kNaNBits{0x7fc0};
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

std::vector<bf16> random_bf16(Rng& rng, size_t n, double scale = 1.0, double shift = 0.0) {
  std::vector<bf16> v(n);
  for (bf16& x : v) x = float_to_bf16(static_cast<float>(shift + scale * rng.normal()));
  return v;
}

std::vector<float> widened(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

// The contract's expected bf16 output: each fp32 value rounded once.
std::vector<bf16> rounded(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

::testing::AssertionResult same_bits(const std::vector<bf16>& got, const std::vector<bf16>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes " << got.size() << " and " << want.size();
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].bits != want[i].bits) {
      return ::testing::AssertionFailure() << "element " << i << ": got " << bf16_to_float(got[i]) << " (0x"
                                           << std::hex << got[i].bits << "), want " << bf16_to_float(want[i])
                                           << " (0x" << want[i].bits << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult same_bits(const std::vector<float>& got, const std::vector<float>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "sizes " << got.size() << " and " << want.size();
  for (size_t i = 0; i < got.size(); ++i) {
    if (bits_of(got[i]) != bits_of(want[i])) {
      return ::testing::AssertionFailure() << "element " << i << ": got " << got[i] << ", want " << want[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Guards against a vacuous comparison: some of the fp32 reference is not a bf16 value,
// so the rounding is exercised.
bool needs_rounding(const std::vector<float>& ref) {
  for (float v : ref) {
    if (round_bf16(v) != v) return true;
  }
  return false;
}

size_t workspace_in_use(Context& ctx) {
  return ctx.allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Workspace)];
}

// -------------------------------------------------------------- float_to_bf16

// The row conversions (one clone per ISA, Note [Conversion clones] in
// kernels/cpu/storage.cpp) against the scalar definitions, element by element: every
// bf16 pattern with low halves that round down, tie (to even, both ways), round up and
// carry into the exponent, NaN payloads, infinities and denormals, at lengths with
// vector tails.
TEST(Bf16RowConversion, EqualsTheScalarConversionOnEveryPattern) {
  std::vector<float> in;
  for (uint32_t hi = 0; hi < 0x10000u; ++hi) {
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu}) in.push_back(float_of(hi << 16 | lo));
  }
  for (int64_t n : {int64_t{1}, int64_t{15}, int64_t{33}, static_cast<int64_t>(in.size())}) {
    std::vector<bf16> got(n);
    cpu::narrow_row(in.data(), n, got.data());
    std::vector<float> back(n);
    cpu::widen_row(got.data(), n, back.data());
    for (int64_t i = 0; i < n; ++i) {
      ASSERT_EQ(got[i].bits, float_to_bf16(in[i]).bits) << "n=" << n << " input 0x" << std::hex << bits_of(in[i]);
      ASSERT_EQ(bits_of(back[i]), bits_of(bf16_to_float(got[i]))) << "n=" << n << " element " << i;
    }
  }
  auto ctx = Context::make_cpu(2);
  std::vector<bf16> team(in.size());
  cpu::narrow_team(*ctx, in.data(), static_cast<int64_t>(in.size()), team.data());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(team[i].bits, float_to_bf16(in[i]).bits) << "element " << i;
  std::vector<float> wide(in.size());
  cpu::widen_team(*ctx, team.data(), static_cast<int64_t>(team.size()), wide.data());
  for (size_t i = 0; i < in.size(); ++i) ASSERT_EQ(bits_of(wide[i]), bits_of(bf16_to_float(team[i])));
}


TEST(Bf16Conversion, RoundsToNearestEvenOnHandWorkedBitPatterns) {
  struct Case {
    uint32_t in;
    uint16_t out;
    const char* what;
  };
  const Case cases[] = {
      {0x3f800000u, 0x3f80u, "1.0 is exact"},
      {0x3f807fffu, 0x3f80u, "just below half an ulp rounds down"},
      {0x3f808000u, 0x3f80u, "a tie goes to the even 0x3f80 (down)"},
      {0x3f808001u, 0x3f81u, "just above half an ulp rounds up"},
      {0x3f818000u, 0x3f82u, "a tie goes to the even 0x3f82 (up)"},
      {0xbf818000u, 0xbf82u, "negative ties go to even too"},
      {0xbf808000u, 0xbf80u, "negative tie down to even"},
      {0x3fffffffu, 0x4000u, "the carry into the exponent"},
      {0x7f7f7fffu, 0x7f7fu, "just below the tie above bf16's largest stays finite"},
      {0x7f7f8000u, 0x7f80u, "the tie above bf16's largest (odd) goes to infinity"},
      {0x7f7fffffu, 0x7f80u, "fp32's largest rounds to infinity"},
      {0xff7fffffu, 0xff80u, "and its negative to minus infinity"},
      {0x7f800000u, 0x7f80u, "infinity stays"},
      {0xff800000u, 0xff80u, "minus infinity stays"},
      {0x00000000u, 0x0000u, "zero"},
      {0x80000000u, 0x8000u, "negative zero keeps its sign"},
      {0x00008000u, 0x0000u, "a denormal tie goes to the even 0"},
      {0x00018000u, 0x0002u, "a denormal tie goes to the even 0x0002"},
      {0x00010001u, 0x0001u, "a denormal just below half rounds down"},
      {0x0000c000u, 0x0001u, "a denormal above half rounds up"},
      {0x007fffffu, 0x0080u, "the largest denormal rounds up to the smallest normal"},
      {0x80018000u, 0x8002u, "a negative denormal tie"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(float_to_bf16(float_of(c.in)).bits, c.out) << c.what << ": 0x" << std::hex << c.in;
  }
  EXPECT_TRUE(std::signbit(bf16_to_float(bf16{0x8000})));
  EXPECT_EQ(bf16_to_float(bf16{0x3f80}), 1.0f);
  EXPECT_EQ(bf16_to_float(bf16{0x0001}), float_of(0x00010000u));  // bf16's smallest denormal
  EXPECT_EQ(round_bf16(1.0f + 0x1.0p-8f), 1.0f);
  EXPECT_EQ(round_bf16(1.0f + 0x1.8p-8f), 1.0f + 0x1.0p-7f);
}

TEST(Bf16Conversion, NaNStaysNaNWhateverItsPayload) {
  for (uint32_t nan : {0x7fc00000u, 0x7f800001u, 0x7f80ffffu, 0x7fffffffu, 0xff800001u, 0xffc00000u}) {
    const bf16 h = float_to_bf16(float_of(nan));
    EXPECT_TRUE(std::isnan(bf16_to_float(h))) << std::hex << nan << " -> " << h.bits;
    EXPECT_EQ(h.bits & 0x8000u, (nan >> 16) & 0x8000u) << "the sign of 0x" << std::hex << nan;
  }
  // A signalling NaN whose payload is all in the dropped bits would truncate to infinity.
  EXPECT_NE(float_to_bf16(float_of(0x7f800001u)).bits, 0x7f80u);
}

TEST(Bf16Conversion, ConvertOpRoundsEachElementAndWidensExactly) {
  auto ctx = Context::make_cpu(2);
  Rng rng(1);
  for (int64_t n : {int64_t{7}, int64_t{40001}}) {
    std::vector<float> x(n);
    for (float& v : x) v = static_cast<float>(rng.normal());
    x[0] = float_of(0x3f808000u), x[1] = float_of(0x7f7fffffu), x[2] = kNaN, x[3] = -0.0f;
    std::vector<bf16> y(n, kNaNBits);
    ops::convert(*ctx, x.data(), y.data(), n);
    EXPECT_TRUE(same_bits(y, rounded(x)));
    std::vector<float> back(n, kNaN);
    ops::convert(*ctx, y.data(), back.data(), n);
    EXPECT_TRUE(same_bits(back, widened(y)));
  }
}

// ---------------------------------------------------------------- TypedPtr

TEST(Bf16TypedPtr, PointersCarryTheirTypeAndRefuseTheOther) {
  std::vector<float> f(4);
  std::vector<bf16> h(4);
  const TypedPtr tf = f.data(), th = h.data();
  EXPECT_EQ(tf.type, DType::kF32);
  EXPECT_EQ(th.type, DType::kBF16);
  EXPECT_EQ(tf.f32(), f.data());
  EXPECT_EQ(th.b16(), h.data());
  EXPECT_THROW(tf.b16(), Error);
  EXPECT_THROW(th.f32(), Error);
  EXPECT_EQ(tf.at(3).data, static_cast<void*>(f.data() + 3));
  EXPECT_EQ(th.at(3).data, static_cast<void*>(h.data() + 3));
  const ConstTypedPtr c = th;
  EXPECT_EQ(c.type, DType::kBF16);
  EXPECT_EQ(c.b16(), h.data());
  EXPECT_THROW(c.f32(), Error);
  EXPECT_EQ(ConstTypedPtr(static_cast<const float*>(f.data())).type, DType::kF32);
  EXPECT_EQ(TypedPtr(nullptr).at(5).data, nullptr);
  EXPECT_EQ(dtype_size(DType::kBF16), 2u);
  EXPECT_EQ(dtype_size(DType::kF32), 4u);
}

TEST(Bf16TypedPtr, AnOpGivenMixedTypesThrowsNamingTheOpAndTheTensors) {
  auto ctx = Context::make_cpu(1);
  std::vector<float> f(64, 1.0f);
  std::vector<bf16> h(64, bf16{0x3f80});
  try {
    ops::add(*ctx, f.data(), h.data(), f.data(), 4);
    ADD_FAILURE() << "no Error for fp32 + bf16";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("add"), std::string::npos) << msg;
    EXPECT_NE(msg.find("b is bf16"), std::string::npos) << msg;
  }
  std::vector<float> mean(4), rstd(4);
  EXPECT_THROW(ops::layernorm_forward(*ctx, h.data(), f.data(), f.data(), h.data(), mean.data(), rstd.data(), 2, 2),
               Error);
  EXPECT_THROW(ops::gemm(*ctx, false, false, 2, 2, 2, 1.0f, f.data(), 2, h.data(), 2, 0.0f, f.data(), 2), Error);
  // A bf16 C needs bf16 inputs.
  EXPECT_THROW(ops::gemm(*ctx, false, false, 2, 2, 2, 1.0f, f.data(), 2, f.data(), 2, 0.0f, h.data(), 2), Error);
  EXPECT_THROW(ops::gelu_forward(*ctx, f.data(), h.data(), 4), Error);
  EXPECT_THROW(ops::attention_forward(*ctx, h.data(), h.data(), f.data(), 1, 2, 2, 1), Error);
  EXPECT_EQ(f, std::vector<float>(64, 1.0f)) << "an output moved before the type check";
}

// ---------------------------------------------------------------------- GEMM

struct GemmCase {
  int64_t m, n, k;
};

// C of type c_type from bf16 A and B against the fp32 GEMM of the widened operands
// (and the widened old C), block by block: `budget` forces the blocked path when small,
// and each block of C (gemm_bf16_block's partition; the whole product when it fits)
// must be the fp32 product of its widened operands, computed here by ops::gemm on
// fp32 views of them. Not against the whole fp32 product: on OpenBLAS's AVX2 kernels
// an element's sum order depends on the call's extents (Note [bf16 GEMM]).
void check_bf16_gemm(const GemmCase& g, bool ta, bool tb, float alpha, float beta, DType c_type,
                     size_t budget, Rng& rng, int threads = 2) {
  SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k << " trans_a=" << ta
                                    << " trans_b=" << tb << " alpha=" << alpha << " beta=" << beta
                                    << " C=" << dtype_name(c_type) << " budget=" << budget);
  auto ctx = Context::make_cpu(threads);
  const int64_t a_rows = ta ? g.k : g.m, a_cols = ta ? g.m : g.k;
  const int64_t b_rows = tb ? g.n : g.k, b_cols = tb ? g.k : g.n;
  const int64_t lda = a_cols + 3, ldb = b_cols + 1, ldc = g.n + 2;  // padding that must not move
  const auto a = random_bf16(rng, a_rows * lda), b = random_bf16(rng, b_rows * ldb);
  const auto c0 = random_bf16(rng, g.m * ldc);
  std::vector<float> ref = widened(c0);
  const std::vector<float> aw = widened(a), bw = widened(b);
  const cpu::GemmBlock blk = cpu::gemm_bf16_block(g.m, g.n, g.k, c_type == DType::kBF16, budget);
  for (int64_t i0 = 0; i0 < g.m; i0 += blk.rows) {
    for (int64_t j0 = 0; j0 < g.n; j0 += blk.cols) {
      const int64_t rows = std::min(blk.rows, g.m - i0), cols = std::min(blk.cols, g.n - j0);
      const float* a_block = ta ? aw.data() + i0 : aw.data() + i0 * lda;
      const float* b_block = tb ? bw.data() + j0 * ldb : bw.data() + j0;
      ops::gemm(*ctx, ta, tb, rows, cols, g.k, alpha, a_block, lda, b_block, ldb, beta, ref.data() + i0 * ldc + j0,
                ldc);
    }
  }
  if (c_type == DType::kBF16) {
    std::vector<bf16> c = c0;
    cpu::gemm(*ctx, ta, tb, g.m, g.n, g.k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc, budget);
    EXPECT_TRUE(same_bits(c, rounded(ref)));
    if (g.k > 0) {
      EXPECT_TRUE(needs_rounding(ref));
    }
  } else {
    std::vector<float> c = widened(c0);
    cpu::gemm(*ctx, ta, tb, g.m, g.n, g.k, alpha, a.data(), lda, b.data(), ldb, beta, c.data(), ldc, budget);
    EXPECT_TRUE(same_bits(c, ref));
  }
}

TEST(Bf16Gemm, IsTheRoundedFp32GemmOfTheWidenedInputsForEveryTransposeAndCType) {
  Rng rng(2);
  // Odd sizes, the GPT's (rows x C with C 32 and 48, the vocabulary), and one above the
  // threshold where slabs of C go to the team.
  for (const GemmCase& g : {GemmCase{1, 1, 1}, GemmCase{7, 5, 3}, GemmCase{33, 17, 65}, GemmCase{128, 96, 32},
                            GemmCase{48, 300, 48}, GemmCase{256, 192, 96}}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        check_bf16_gemm(g, ta, tb, 1.0f, 0.0f, DType::kBF16, cpu::kGemmWorkspaceBudget, rng);
        check_bf16_gemm(g, ta, tb, 0.75f, 0.5f, DType::kBF16, cpu::kGemmWorkspaceBudget, rng);
        check_bf16_gemm(g, ta, tb, 1.0f, 1.0f, DType::kF32, cpu::kGemmWorkspaceBudget, rng);  // dW +=
        check_bf16_gemm(g, ta, tb, -1.5f, 0.0f, DType::kF32, cpu::kGemmWorkspaceBudget, rng);
      }
    }
  }
}

TEST(Bf16Gemm, EmptyProductOnlyScalesAndRoundsC) {
  Rng rng(3);
  for (float alpha : {1.0f, 0.0f}) {
    const GemmCase g{5, 6, alpha == 0.0f ? 4 : 0};
    check_bf16_gemm(g, false, false, alpha, 0.3f, DType::kBF16, cpu::kGemmWorkspaceBudget, rng);
    check_bf16_gemm(g, true, true, alpha, 0.3f, DType::kF32, cpu::kGemmWorkspaceBudget, rng);
  }
  // beta == 0 overwrites NaN garbage in a bf16 C, as BLAS does in fp32.
  auto ctx = Context::make_cpu(1);
  const std::vector<bf16> a(12, bf16{0x3f80}), b(12, bf16{0x3f80});
  std::vector<bf16> c(9, kNaNBits);
  ops::gemm(*ctx, false, false, 3, 3, 4, 1.0f, a.data(), 4, b.data(), 3, 0.0f, c.data(), 3);
  EXPECT_TRUE(same_bits(c, std::vector<bf16>(9, float_to_bf16(4.0f))));
  c.assign(9, kNaNBits);
  ops::gemm(*ctx, false, false, 3, 3, 0, 1.0f, a.data(), 1, b.data(), 3, 0.0f, c.data(), 3);
  EXPECT_TRUE(same_bits(c, std::vector<bf16>(9, bf16{0})));
}

TEST(Bf16Gemm, BlocksAreTheWholeProductWhenItFitsElseTheLargestWithinTheBudget) {
  struct Case {
    int64_t m, n, k;
    bool c_bf16;
    int64_t budget_floats, rows, cols;
    const char* why;
  };
  const Case cases[] = {
      {200, 150, 40, true, 44000, 200, 150, "the whole: 200*40 + 40*150 + 200*150 = 44000 floats"},
      {200, 150, 40, true, 18160, 64, 150, "all of op(B) (6000) and rows of 40 + 150: (18160 - 6000) / 190 = 64"},
      {200, 150, 40, true, 18159, 32, 150, "rows in whole units of 32: room for 63 rows"},
      {150, 200, 40, true, 13000, 150, 32,
       "op(B) and 32 rows need 8000 + 32*240 > 13000; op(A) and columns: (13000 - 6000) / 190 = 36"},
      {150, 200, 40, true, 8000, 32, 32, "squares: 2*40*s + s^2 <= 8000 for s = 32, not 64"},
      {1000, 1000, 40, false, 8000, 96, 96, "squares without a bf16 C: 2*40*s <= 8000, s = 100"},
      {1000, 1000, 1 << 20, true, 8000, 32, 32, "one 32 x 32 block whatever k"},
  };
  for (const Case& c : cases) {
    const cpu::GemmBlock b =
        cpu::gemm_bf16_block(c.m, c.n, c.k, c.c_bf16, static_cast<size_t>(c.budget_floats) * sizeof(float));
    EXPECT_EQ(b.rows, c.rows) << c.why;
    EXPECT_EQ(b.cols, c.cols) << c.why;
  }
  // Within the default budget for the GPT-2 head (8192 tokens x 50257 x 768).
  const cpu::GemmBlock b = cpu::gemm_bf16_block(8192, 50257, 768, true, cpu::kGemmWorkspaceBudget);
  const int64_t floats = b.rows * 768 + 768 * b.cols + b.rows * b.cols;
  EXPECT_LE(static_cast<size_t>(floats) * sizeof(float), cpu::kGemmWorkspaceBudget);
  EXPECT_GE(b.rows, 32);
  EXPECT_GE(b.cols, 32);
}

TEST(Bf16Gemm, BlockedProductsAreBitForBitTheFp32ProductsOfTheirBlocks) {
  // Blocks of a few million multiply-adds and more, as the default budget makes them
  // (Note [bf16 GEMM] in gemm.cpp): bands of rows, bands of columns, and squares.
  Rng rng(4);
  struct Blocked {
    GemmCase g;
    int64_t budget_floats;
  };
  for (const Blocked& c : {Blocked{{512, 512, 64}, 106496}, Blocked{{128, 2048, 64}, 190000},
                           Blocked{{512, 512, 128}, 70000}}) {
    const size_t budget = static_cast<size_t>(c.budget_floats) * sizeof(float);
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        check_bf16_gemm(c.g, ta, tb, 1.0f, 0.0f, DType::kBF16, budget, rng);
        check_bf16_gemm(c.g, ta, tb, 0.5f, -1.25f, DType::kBF16, budget, rng);
        check_bf16_gemm(c.g, ta, tb, 1.0f, 1.0f, DType::kF32, budget, rng);
      }
    }
  }
}

TEST(Bf16Gemm, WorkspaceBytesAreWhatTheOpTakes) {
  Rng rng(5);
  for (const GemmCase& g : {GemmCase{7, 5, 3}, GemmCase{128, 96, 32}, GemmCase{256, 192, 96}}) {
    for (DType c_type : {DType::kBF16, DType::kF32}) {
      SCOPED_TRACE(::testing::Message() << "m=" << g.m << " n=" << g.n << " k=" << g.k << " C="
                                        << dtype_name(c_type));
      auto ctx = Context::make_cpu(2);
      const auto a = random_bf16(rng, g.m * g.k), b = random_bf16(rng, g.k * g.n);
      std::vector<bf16> cb(g.m * g.n);
      std::vector<float> cf(g.m * g.n);
      const TypedPtr c = c_type == DType::kBF16 ? TypedPtr(cb.data()) : TypedPtr(cf.data());
      // The emulated GEMM, whatever DTRAIN_CPU_BF16 gives the backend (the native one's
      // workspace: test_cpu_gemm_native.cpp).
      cpu::gemm(*ctx, false, true, g.m, g.n, g.k, 1.0f, a.data(), g.k, b.data(), g.k, 0.0f, c, g.n);
      const size_t formula = cpu::gemm_workspace_bytes(g.m, g.n, g.k, DType::kBF16, c_type);
      EXPECT_EQ(workspace_in_use(*ctx), formula);
      // The whole product fits: op(A), op(B) and, for a bf16 C, C, all widened.
      const int64_t floats = g.m * g.k + g.k * g.n + (c_type == DType::kBF16 ? g.m * g.n : 0);
      EXPECT_EQ(formula, static_cast<size_t>(floats) * sizeof(float));
    }
  }
  // Blocked: the block, not the product.
  const GemmCase g{150, 200, 40};
  const size_t budget = 13000 * sizeof(float);
  auto ctx = Context::make_cpu(2);
  const auto a = random_bf16(rng, g.m * g.k), b = random_bf16(rng, g.k * g.n);
  std::vector<bf16> c(g.m * g.n);
  cpu::gemm(*ctx, false, false, g.m, g.n, g.k, 1.0f, a.data(), g.k, b.data(), g.n, 0.0f, c.data(), g.n, budget);
  EXPECT_EQ(workspace_in_use(*ctx), cpu::gemm_workspace_bytes(g.m, g.n, g.k, DType::kBF16, DType::kBF16, budget));
  EXPECT_EQ(workspace_in_use(*ctx), (150u * 40 + 40 * 32 + 150 * 32) * sizeof(float));
  // fp32 takes none.
  auto fresh = Context::make_cpu(2);
  std::vector<float> af(g.m * g.k, 1.0f), bf(g.k * g.n, 1.0f), cf(g.m * g.n);
  ops::gemm(*fresh, false, false, g.m, g.n, g.k, 1.0f, af.data(), g.k, bf.data(), g.n, 0.0f, cf.data(), g.n);
  EXPECT_EQ(workspace_in_use(*fresh), 0u);
  EXPECT_EQ(ops::gemm_workspace_bytes(*fresh, g.m, g.n, g.k, DType::kF32, DType::kF32), 0u);
}

// ---------------------------------------------------------- bias, add, GELU

struct BiasCase {
  int64_t outer, channels, inner;
};
// Rows x C of the GPT (inner 1), odd planes, and ones above the parallel threshold.
const BiasCase kBiasCases[] = {{37, 48, 1}, {128, 96, 1}, {3, 5, 7}, {300, 130, 1}, {8, 64, 100}};

TEST(Bf16Elementwise, AddBiasIsTheRoundedFp32Sum) {
  auto ctx = Context::make_cpu(2);
  Rng rng(6);
  for (const BiasCase& c : kBiasCases) {
    SCOPED_TRACE(::testing::Message() << "outer=" << c.outer << " channels=" << c.channels << " inner=" << c.inner);
    const auto y0 = random_bf16(rng, c.outer * c.channels * c.inner), bias = random_bf16(rng, c.channels);
    std::vector<float> ref = widened(y0);
    ops::add_bias(*ctx, ref.data(), widened(bias).data(), c.outer, c.channels, c.inner);
    std::vector<bf16> y = y0;
    ops::add_bias(*ctx, y.data(), bias.data(), c.outer, c.channels, c.inner);
    EXPECT_TRUE(same_bits(y, rounded(ref)));
    EXPECT_TRUE(needs_rounding(ref));
  }
}

TEST(Bf16Elementwise, BiasBackwardFromBf16GradientsIsTheFp32OpsExactly) {
  auto ctx = Context::make_cpu(2);
  Rng rng(7);
  for (const BiasCase& c : kBiasCases) {
    SCOPED_TRACE(::testing::Message() << "outer=" << c.outer << " channels=" << c.channels << " inner=" << c.inner);
    const auto dy = random_bf16(rng, c.outer * c.channels * c.inner);
    std::vector<float> db0(c.channels);
    for (float& v : db0) v = static_cast<float>(rng.normal());
    std::vector<float> ref = db0, got = db0;
    ops::bias_backward(*ctx, widened(dy).data(), ref.data(), c.outer, c.channels, c.inner);
    ops::bias_backward(*ctx, dy.data(), got.data(), c.outer, c.channels, c.inner);
    EXPECT_TRUE(same_bits(got, ref));
  }
}

TEST(Bf16Elementwise, AddIsTheRoundedFp32SumAlsoInPlace) {
  auto ctx = Context::make_cpu(2);
  Rng rng(8);
  for (int64_t n : {int64_t{13}, int64_t{50001}}) {
    const auto a = random_bf16(rng, n), b = random_bf16(rng, n, 0.01);  // small b: many sums need rounding
    std::vector<float> ref(n);
    ops::add(*ctx, widened(a).data(), widened(b).data(), ref.data(), n);
    std::vector<bf16> y(n, kNaNBits);
    ops::add(*ctx, a.data(), b.data(), y.data(), n);
    EXPECT_TRUE(same_bits(y, rounded(ref)));
    EXPECT_TRUE(needs_rounding(ref));
    std::vector<bf16> acc = a;
    ops::add(*ctx, acc.data(), b.data(), acc.data(), n);  // y += b
    EXPECT_TRUE(same_bits(acc, y));
  }
}

TEST(Bf16Gelu, ForwardAndBackwardAreTheRoundedFp32OpsAlsoInPlace) {
  auto ctx = Context::make_cpu(2);
  Rng rng(9);
  for (int64_t n : {int64_t{37}, int64_t{40001}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    const auto x = random_bf16(rng, n, 3.0), dy = random_bf16(rng, n);
    std::vector<float> y_ref(n), dx_ref(n);
    ops::gelu_forward(*ctx, widened(x).data(), y_ref.data(), n);
    ops::gelu_backward(*ctx, widened(x).data(), widened(dy).data(), dx_ref.data(), n);
    std::vector<bf16> y(n, kNaNBits), dx(n, kNaNBits);
    ops::gelu_forward(*ctx, x.data(), y.data(), n);
    ops::gelu_backward(*ctx, x.data(), dy.data(), dx.data(), n);
    EXPECT_TRUE(same_bits(y, rounded(y_ref)));
    EXPECT_TRUE(same_bits(dx, rounded(dx_ref)));
    std::vector<bf16> xi = x, dyi = dy;
    ops::gelu_backward(*ctx, x.data(), dyi.data(), dyi.data(), n);
    ops::gelu_forward(*ctx, xi.data(), xi.data(), n);
    EXPECT_TRUE(same_bits(xi, y));
    EXPECT_TRUE(same_bits(dyi, dx));
  }
}

// ----------------------------------------------------------------- LayerNorm

struct RowsCase {
  int64_t rows, channels;
};
const RowsCase kLayerNormCases[] = {{37, 48}, {64, 32}, {5, 7}, {301, 130}};

// x (rows, channels) with the given spread and offset, and the weight and bias.
struct LayerNormInputs {
  std::vector<bf16> x, w, b;
};
LayerNormInputs layernorm_inputs(Rng& rng, const RowsCase& c, double scale, double shift) {
  LayerNormInputs in{random_bf16(rng, c.rows * c.channels, scale, shift), {}, {}};
  in.w = random_bf16(rng, c.channels);
  in.b = random_bf16(rng, c.channels);
  return in;
}

TEST(Bf16LayerNorm, ForwardIsTheRoundedFp32OpWithTheSameFp32Statistics) {
  auto ctx = Context::make_cpu(2);
  Rng rng(10);
  for (const RowsCase& c : kLayerNormCases) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels);
    const auto [x, w, b] = layernorm_inputs(rng, c, 2.0, 0.5);
    std::vector<float> y_ref(x.size()), mean_ref(c.rows), rstd_ref(c.rows);
    ops::layernorm_forward(*ctx, widened(x).data(), widened(w).data(), widened(b).data(), y_ref.data(),
                           mean_ref.data(), rstd_ref.data(), c.rows, c.channels);
    std::vector<bf16> y(x.size(), kNaNBits);
    std::vector<float> mean(c.rows, kNaN), rstd(c.rows, kNaN);
    ops::layernorm_forward(*ctx, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), c.rows,
                           c.channels);
    EXPECT_TRUE(same_bits(y, rounded(y_ref)));
    EXPECT_TRUE(same_bits(mean, mean_ref));
    EXPECT_TRUE(same_bits(rstd, rstd_ref));
    std::vector<bf16> inplace = x;
    ops::layernorm_forward(*ctx, inplace.data(), w.data(), b.data(), inplace.data(), mean.data(), rstd.data(),
                           c.rows, c.channels);
    EXPECT_TRUE(same_bits(inplace, y));
  }
}

TEST(Bf16LayerNorm, BackwardRoundsDxOnceAfterAccumulatingAndKeepsFp32ParameterGradients) {
  auto ctx = Context::make_cpu(2);
  Rng rng(11);
  for (const RowsCase& c : kLayerNormCases) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels);
    const auto [x, w, b] = layernorm_inputs(rng, c, 1.5, 0.3);
    const auto dy = random_bf16(rng, c.rows * c.channels), dx0 = random_bf16(rng, c.rows * c.channels);
    std::vector<float> dw0(c.channels), db0(c.channels);
    for (float& v : dw0) v = static_cast<float>(rng.normal());
    for (float& v : db0) v = static_cast<float>(rng.normal());
    // mean and rstd from the bf16 forward (the same bits as the fp32 one, above).
    std::vector<bf16> y(x.size());
    std::vector<float> mean(c.rows), rstd(c.rows);
    ops::layernorm_forward(*ctx, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), c.rows,
                           c.channels);
    for (bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "accumulate_dx=" << accumulate);
      std::vector<float> dx_ref = widened(dx0), dw_ref = dw0, db_ref = db0;
      ops::layernorm_backward(*ctx, widened(dy).data(), widened(x).data(), widened(w).data(), mean.data(),
                              rstd.data(), dx_ref.data(), dw_ref.data(), db_ref.data(), c.rows, c.channels,
                              accumulate);
      std::vector<bf16> dx = accumulate ? dx0 : std::vector<bf16>(x.size(), kNaNBits);
      std::vector<float> dw = dw0, db = db0;
      ops::layernorm_backward(*ctx, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                              db.data(), c.rows, c.channels, accumulate);
      EXPECT_TRUE(same_bits(dx, rounded(dx_ref)));
      EXPECT_TRUE(same_bits(dw, dw_ref));
      EXPECT_TRUE(same_bits(db, db_ref));
    }
    // dx over dy, as the residual stream's buffer is reused.
    std::vector<bf16> dx(x.size()), inplace = dy;
    std::vector<float> dw = dw0, db = db0;
    ops::layernorm_backward(*ctx, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                            db.data(), c.rows, c.channels, false);
    dw = dw0, db = db0;
    ops::layernorm_backward(*ctx, inplace.data(), x.data(), w.data(), mean.data(), rstd.data(), inplace.data(),
                            dw.data(), db.data(), c.rows, c.channels, false);
    EXPECT_TRUE(same_bits(inplace, dx));
  }
}

// ------------------------------------------------------------ cross-entropy

TEST(Bf16CrossEntropy, LossIsTheFp32OpsAndTheGradientItsRoundingAlsoOverTheLogits) {
  auto ctx = Context::make_cpu(2);
  Rng rng(12);
  for (const RowsCase& c : {RowsCase{16, 64}, RowsCase{37, 300}, RowsCase{5, 7}, RowsCase{200, 257}}) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " classes=" << c.channels);
    const auto z = random_bf16(rng, c.rows * c.channels, 3.0);
    std::vector<int32_t> labels(c.rows);
    for (auto& l : labels) l = static_cast<int32_t>(rng.below(c.channels));
    const float grad_scale = 1.0f / static_cast<float>(c.rows);
    const double weight = 1.0 / 7.0;
    std::vector<float> d_ref(z.size());
    double stats_ref[2] = {0.5, 1.0};
    ops::softmax_cross_entropy(*ctx, widened(z).data(), labels.data(), c.rows, c.channels, grad_scale,
                               d_ref.data(), stats_ref, weight);
    std::vector<bf16> d(z.size(), kNaNBits), inplace = z;
    double stats[2] = {0.5, 1.0}, stats_inplace[2] = {0.5, 1.0}, stats_no_grad[2] = {0.5, 1.0};
    ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), c.rows, c.channels, grad_scale, d.data(), stats,
                               weight);
    ops::softmax_cross_entropy(*ctx, inplace.data(), labels.data(), c.rows, c.channels, grad_scale,
                               inplace.data(), stats_inplace, weight);
    ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), c.rows, c.channels, grad_scale, TypedPtr(nullptr),
                               stats_no_grad, weight);
    EXPECT_TRUE(same_bits(d, rounded(d_ref)));
    EXPECT_TRUE(same_bits(inplace, d));
    for (const double* s : {stats, stats_inplace, stats_no_grad}) {
      EXPECT_EQ(s[0], stats_ref[0]);
      EXPECT_EQ(s[1], stats_ref[1]);
    }
  }
}

// ----------------------------------------------------------------- Embedding

TEST(Bf16Embedding, ForwardIsTheRoundedSumAndBackwardTheFp32OpsExactly) {
  auto ctx = Context::make_cpu(2);
  Rng rng(13);
  struct EmbeddingCase {
    int64_t B, T, C, V, P;
  };
  for (const EmbeddingCase& e : {EmbeddingCase{3, 8, 32, 64, 8}, EmbeddingCase{2, 16, 48, 300, 20},
                                 EmbeddingCase{4, 64, 200, 7, 64}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << e.B << " T=" << e.T << " C=" << e.C << " V=" << e.V);
    std::vector<int32_t> tokens(e.B * e.T);
    for (auto& t : tokens) t = static_cast<int32_t>(rng.below(e.V));
    const auto wte = random_bf16(rng, e.V * e.C), wpe = random_bf16(rng, e.P * e.C);
    std::vector<float> y_ref(e.B * e.T * e.C);
    ops::embedding_forward(*ctx, tokens.data(), widened(wte).data(), widened(wpe).data(), y_ref.data(), e.B, e.T,
                           e.C, e.V);
    std::vector<bf16> y(y_ref.size(), kNaNBits);
    ops::embedding_forward(*ctx, tokens.data(), wte.data(), wpe.data(), y.data(), e.B, e.T, e.C, e.V);
    EXPECT_TRUE(same_bits(y, rounded(y_ref)));
    EXPECT_TRUE(needs_rounding(y_ref));

    const auto dy = random_bf16(rng, y.size());
    std::vector<float> dwte0(wte.size()), dwpe0(wpe.size());
    for (float& v : dwte0) v = static_cast<float>(rng.normal());
    for (float& v : dwpe0) v = static_cast<float>(rng.normal());
    std::vector<float> dwte_ref = dwte0, dwpe_ref = dwpe0, dwte = dwte0, dwpe = dwpe0;
    ops::embedding_backward(*ctx, widened(dy).data(), tokens.data(), dwte_ref.data(), dwpe_ref.data(), e.B, e.T,
                            e.C, e.V);
    ops::embedding_backward(*ctx, dy.data(), tokens.data(), dwte.data(), dwpe.data(), e.B, e.T, e.C, e.V);
    EXPECT_TRUE(same_bits(dwte, dwte_ref));
    EXPECT_TRUE(same_bits(dwpe, dwpe_ref));
  }
}

// ----------------------------------------------------------------- Attention

struct AttentionCase {
  int64_t B, T, C, H;
};
const AttentionCase kAttentionCases[] = {{2, 8, 32, 2}, {3, 16, 48, 4}, {1, 13, 48, 3}, {2, 5, 8, 2}, {1, 1, 4, 1}};

// The forward's contract: probs = round(fp32 softmax of the widened qkv), and out =
// round(round(P) V), the fp32 product of the stored probabilities with the widened V.
struct AttentionForwardRef {
  std::vector<bf16> out, probs;
};
AttentionForwardRef attention_forward_ref(Context& ctx, const std::vector<bf16>& qkv, const AttentionCase& a) {
  const int64_t hs = a.C / a.H, T = a.T;
  const std::vector<float> qkv_w = widened(qkv);
  std::vector<float> out(a.B * T * a.C), probs(a.B * a.H * T * T);
  ops::attention_forward(ctx, qkv_w.data(), out.data(), probs.data(), a.B, T, a.C, a.H);
  AttentionForwardRef ref{{}, rounded(probs)};
  const std::vector<float> p = widened(ref.probs);
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t h = 0; h < a.H; ++h) {
      ops::gemm(ctx, false, false, T, hs, T, 1.0f, p.data() + (b * a.H + h) * T * T, T,
                qkv_w.data() + b * T * 3 * a.C + 2 * a.C + h * hs, 3 * a.C, 0.0f, out.data() + b * T * a.C + h * hs,
                a.C);
    }
  }
  ref.out = rounded(out);
  return ref;
}

TEST(Bf16Attention, ForwardStoresRoundedProbabilitiesAndMultipliesVByThem) {
  auto ctx = Context::make_cpu(2);
  Rng rng(14);
  for (const AttentionCase& a : kAttentionCases) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.B << " T=" << a.T << " C=" << a.C << " H=" << a.H);
    const auto qkv = random_bf16(rng, a.B * a.T * 3 * a.C);
    const AttentionForwardRef ref = attention_forward_ref(*ctx, qkv, a);
    std::vector<bf16> out(a.B * a.T * a.C, kNaNBits), probs(a.B * a.H * a.T * a.T, kNaNBits);
    ops::attention_forward(*ctx, qkv.data(), out.data(), probs.data(), a.B, a.T, a.C, a.H);
    EXPECT_TRUE(same_bits(probs, ref.probs));
    EXPECT_TRUE(same_bits(out, ref.out));
  }
}

TEST(Bf16Attention, BackwardIsTheRoundedFp32OpOnTheStoredProbabilities) {
  auto ctx = Context::make_cpu(2);
  Rng rng(15);
  for (const AttentionCase& a : kAttentionCases) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.B << " T=" << a.T << " C=" << a.C << " H=" << a.H);
    const auto qkv = random_bf16(rng, a.B * a.T * 3 * a.C), dout = random_bf16(rng, a.B * a.T * a.C);
    std::vector<bf16> out(dout.size()), probs(a.B * a.H * a.T * a.T);
    ops::attention_forward(*ctx, qkv.data(), out.data(), probs.data(), a.B, a.T, a.C, a.H);
    std::vector<float> dqkv_ref(qkv.size());
    ops::attention_backward(*ctx, widened(dout).data(), widened(qkv).data(), widened(out).data(), widened(probs).data(), dqkv_ref.data(),
                            a.B, a.T, a.C, a.H);
    std::vector<bf16> dqkv(qkv.size(), kNaNBits);
    ops::attention_backward(*ctx, dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), a.B, a.T, a.C, a.H);
    EXPECT_TRUE(same_bits(dqkv, rounded(dqkv_ref)));
  }
}

TEST(Bf16Attention, WorkspaceBytesAreWhatTheOpsTake) {
  // A slot per pair in flight: P and dS (T x T) and Q, K, V, dO and a result (T x hs).
  EXPECT_EQ(cpu::attention_workspace_bytes(2, 10, 8, 2, DType::kBF16), 4u * (2 * 10 * 10 + 5 * 10 * 4) * sizeof(float));
  EXPECT_EQ(cpu::attention_workspace_bytes(8, 10, 8, 12, DType::kBF16),
            static_cast<size_t>(cpu::kAttentionMaxSlots) * cpu::attention_slot_bytes(10, 8, 12, DType::kBF16));
  EXPECT_LE(cpu::attention_workspace_bytes(8, 1024, 768, 12, DType::kBF16), cpu::kAttentionWorkspaceBudget);
  EXPECT_EQ(cpu::attention_workspace_bytes(1, 4096, 768, 12, DType::kBF16),
            cpu::attention_slot_bytes(4096, 768, 12, DType::kBF16));  // at least one slot
  EXPECT_EQ(cpu::attention_workspace_bytes(2, 10, 8, 2, DType::kF32), 4u * 10 * 10 * sizeof(float));
  Rng rng(16);
  for (const AttentionCase& a : {AttentionCase{3, 16, 48, 4}, AttentionCase{2, 8, 32, 2}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.B << " H=" << a.H);
    auto ctx = Context::make_cpu(2);
    const auto qkv = random_bf16(rng, a.B * a.T * 3 * a.C), dout = random_bf16(rng, a.B * a.T * a.C);
    std::vector<bf16> out(dout.size()), probs(a.B * a.H * a.T * a.T), dqkv(qkv.size());
    ops::attention_forward(*ctx, qkv.data(), out.data(), probs.data(), a.B, a.T, a.C, a.H);
    const size_t forward = workspace_in_use(*ctx);
    ops::attention_backward(*ctx, dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), a.B, a.T, a.C, a.H);
    const size_t formula = ops::attention_workspace_bytes(*ctx, a.B, a.T, a.C, a.H, DType::kBF16);
    EXPECT_EQ(forward, formula);  // forward asks for the same scratch
    EXPECT_EQ(workspace_in_use(*ctx), formula);
  }
}

// ------------------------------------------------------------------ Dropout

TEST(Bf16Dropout, ForwardAndBackwardAreTheRoundedFp32OpsAlsoInPlace) {
  auto ctx = Context::make_cpu(2);
  Rng rng(17);
  const int64_t samples = 3, per_sample = 12001;
  const std::vector<int64_t> ids{11, 5, 1000003};
  const uint64_t key = dropout_key(42, 7, 3);
  for (float p : {0.1f, 0.3f, 0.0f}) {
    SCOPED_TRACE(::testing::Message() << "p=" << p);
    const auto x = random_bf16(rng, samples * per_sample);
    std::vector<float> y_ref(x.size()), dx_ref(x.size());
    ops::dropout_forward(*ctx, widened(x).data(), y_ref.data(), samples, per_sample, ids.data(), key, p);
    ops::dropout_backward(*ctx, widened(x).data(), dx_ref.data(), samples, per_sample, ids.data(), key, p);
    std::vector<bf16> y(x.size(), kNaNBits), dx(x.size(), kNaNBits), inplace = x;
    ops::dropout_forward(*ctx, x.data(), y.data(), samples, per_sample, ids.data(), key, p);
    ops::dropout_backward(*ctx, x.data(), dx.data(), samples, per_sample, ids.data(), key, p);
    EXPECT_TRUE(same_bits(y, rounded(y_ref)));
    EXPECT_TRUE(same_bits(dx, rounded(dx_ref)));
    if (p == 0.3f) {
      EXPECT_TRUE(needs_rounding(y_ref));  // 1/(1-p) is no power of two
    }
    ops::dropout_forward(*ctx, inplace.data(), inplace.data(), samples, per_sample, ids.data(), key, p);
    EXPECT_TRUE(same_bits(inplace, y));
  }
}

// ----------------------------------------------------------- thread counts

// Every bf16 op's output as bytes, on `threads` threads, on shapes above the parallel
// thresholds (and a GEMM in blocks).
std::vector<std::vector<uint8_t>> run_bf16_ops(int threads) {
  auto ctx = Context::make_cpu(threads);
  Rng rng(18);
  std::vector<std::vector<uint8_t>> out;
  auto keep = [&](const auto& v) {
    const auto* p = reinterpret_cast<const uint8_t*>(v.data());
    out.emplace_back(p, p + v.size() * sizeof(v[0]));
  };
  {
    const int64_t m = 256, n = 192, k = 96;  // above the team threshold
    const auto a = random_bf16(rng, m * k), b = random_bf16(rng, k * n);
    auto c = random_bf16(rng, m * n);
    ops::gemm(*ctx, false, true, m, n, k, 1.0f, a.data(), k, b.data(), k, 0.5f, c.data(), n);
    keep(c);
    std::vector<float> cf(m * n, 1.0f);
    ops::gemm(*ctx, true, false, m, n, k / 2, 1.0f, a.data(), m, b.data(), n, 1.0f, cf.data(), n);
    keep(cf);
    cpu::gemm(*ctx, false, false, m, n, k, 1.0f, a.data(), k, b.data(), n, 0.0f, c.data(), n, 20000 * sizeof(float));
    keep(c);
  }
  {
    const int64_t rows = 301, C = 200;
    const auto x = random_bf16(rng, rows * C), w = random_bf16(rng, C), b = random_bf16(rng, C);
    const auto dy = random_bf16(rng, rows * C);
    std::vector<bf16> y(x.size()), dx(x.size()), g(x.size()), dg(x.size()), s(x.size());
    std::vector<float> mean(rows), rstd(rows), dw(C, 0.5f), db(C, 0.25f), dbias(C, 0.0f);
    ops::layernorm_forward(*ctx, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, C);
    ops::layernorm_backward(*ctx, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                            db.data(), rows, C, false);
    ops::gelu_forward(*ctx, y.data(), g.data(), rows * C);
    ops::gelu_backward(*ctx, y.data(), dy.data(), dg.data(), rows * C);
    ops::add(*ctx, g.data(), dg.data(), s.data(), rows * C);
    ops::add_bias(*ctx, s.data(), w.data(), rows, C, 1);
    ops::bias_backward(*ctx, dy.data(), dbias.data(), rows, C, 1);
    const std::vector<int64_t> ids{3, 1, 4};
    std::vector<bf16> drop(x.size());
    ops::dropout_forward(*ctx, s.data(), drop.data(), 1, rows * C, ids.data(), 77, 0.2f);
    for (const auto* v : {&y, &dx, &g, &dg, &s, &drop}) keep(*v);
    for (const auto* v : {&mean, &rstd, &dw, &db, &dbias}) keep(*v);
  }
  {
    const int64_t B = 3, T = 40, C = 32, H = 4;
    const auto qkv = random_bf16(rng, B * T * 3 * C), dout = random_bf16(rng, B * T * C);
    std::vector<bf16> att(B * T * C), probs(B * H * T * T), dqkv(qkv.size());
    ops::attention_forward(*ctx, qkv.data(), att.data(), probs.data(), B, T, C, H);
    ops::attention_backward(*ctx, dout.data(), qkv.data(), att.data(), probs.data(), dqkv.data(), B, T, C, H);
    keep(att);
    keep(probs);
    keep(dqkv);
  }
  {
    const int64_t rows = 200, V = 300;
    auto z = random_bf16(rng, rows * V, 3.0);
    std::vector<int32_t> labels(rows);
    for (auto& l : labels) l = static_cast<int32_t>(rng.below(V));
    std::vector<double> stats{0.0, 0.0};
    ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), rows, V, 0.01f, z.data(), stats.data(), 0.125);
    keep(z);
    keep(stats);
  }
  {
    const int64_t B = 4, T = 64, C = 200, V = 7;
    std::vector<int32_t> tokens(B * T);
    for (auto& t : tokens) t = static_cast<int32_t>(rng.below(V));
    const auto wte = random_bf16(rng, V * C), wpe = random_bf16(rng, T * C), dy = random_bf16(rng, B * T * C);
    std::vector<bf16> y(B * T * C);
    std::vector<float> dwte(V * C, 0.0f), dwpe(T * C, 0.0f);
    ops::embedding_forward(*ctx, tokens.data(), wte.data(), wpe.data(), y.data(), B, T, C, V);
    ops::embedding_backward(*ctx, dy.data(), tokens.data(), dwte.data(), dwpe.data(), B, T, C, V);
    keep(y);
    keep(dwte);
    keep(dwpe);
  }
  return out;
}

TEST(Bf16Ops, GiveTheSameBitsOnOneTwoAndThreeThreads) {
  const auto one = run_bf16_ops(1), two = run_bf16_ops(2), three = run_bf16_ops(3);
  ASSERT_EQ(one.size(), two.size());
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_EQ(one[i], two[i]) << "output " << i;
    EXPECT_EQ(one[i], three[i]) << "output " << i;
  }
}

}  // namespace
}  // namespace dtrain
