// The transformer ops of kernels/ops.h (Note [Transformer ops]) on the CUDA context
// against the CPU ops (DESIGN contract 6: the CPU op is the oracle), on fresh seeded
// random inputs and odd shapes. The tests of TransformerOpsIn run in fp32 and in bf16
// (tests/gpu/stored_types.h: a bf16 result may differ by one rounding more than the
// fp32 bound below). The tolerance per op:
//   add, scale, embedding forward   equal bits (one float operation per element)
//   dropout                          the same elements zeroed, exactly, and as the hash
//                                    says (kernels/dropout_hash.h); kept values 1e-6
//                                    (1/(1-p) may be applied as a product or a quotient)
//   GELU                             1e-6 forward, 1e-5 backward: tanhf is within 2 ulp
//                                    on the GPU, the host's simd_tanh within 1.2e-7
//                                    (kernels/cpu/vector_math.h), and the derivative
//                                    multiplies tanh's error by up to ~5 for |x| <= 10
//   LayerNorm forward                2e-5: mean and variance are sums of C terms in
//                                    another order (double here); a wrong variance
//                                    (unbiased: a factor 1 + 1/C) would show for C < 25000
//   LayerNorm backward, attention,   1e-4 of the result's magnitude: sums over C, T or
//   embedding gradient sums          rows in another order (as GEMM in test_cuda_ops.cpp)
//   attention probabilities          1e-5, and exactly 0 above the diagonal
//   attention in bf16                the bounds derived for Note [bf16 attention]
//                                    (kernels/cuda/attention.cu) in AttentionBounds
// and, where the op promises it, equal bits across runs (layernorm and embedding
// backward: deterministic reductions), and between the packed and scalar forms of
// layernorm's parameter gradients (Note [Column sum partition]). Outputs an op must overwrite start as NaN on the
// device; gradients it must add into start random, so += is checked.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/context.h"
#include "kernels/dropout_hash.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/stored_types.h"

namespace dtrain {
namespace {

using testing::all_close;
using testing::close_relative;
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

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<int32_t> random_tokens(Rng& rng, int64_t n, int64_t vocab) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& t : v) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return v;
}

class TransformerOps : public testing::CudaAgainstCpuTest {};

// The tests run for each stored type T (float, bf16) of the typed tensors.
template <class T>
class TransformerOpsIn : public testing::CudaAgainstCpuTest {};
TYPED_TEST_SUITE(TransformerOpsIn, testing::StoredTypes, testing::StoredTypeNames);

// ----------------------------------------------------------------------- LayerNorm

struct RowsCase {
  int64_t rows, channels;
};
// One channel (zero variance: rstd = 1/sqrt(eps)), widths below, at and above a warp,
// GPT-2's 768 (at its 16384 rows too), enough rows for many parameter-gradient chunks
// (Note [Column sum partition]: 64 rows or more each), widths that are not multiples
// of 8 (the scalar form) over many rows, and widths past the fused backward's 1024
// (Note [Fused LayerNorm backward]), which take the rows kernel and the column sums.
const RowsCase kLayerNormCases[] = {{1, 1},       {3, 5},     {17, 32},    {40, 33},     {64, 768},  {1000, 96},
                                    {5003, 40},   {2049, 100}, {16384, 768}, {1024, 1024}, {300, 1600}, {130, 1027}};

TYPED_TEST(TransformerOpsIn, LayerNormForwardMatchesCpu) {
  using T = TypeParam;
  Rng rng(1);
  for (const RowsCase& c : kLayerNormCases) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels);
    const int64_t n = c.rows * c.channels;
    // A mean far from 0, so a one-pass variance would lose digits.
    const auto x = stored<T>(random_normal(rng, n, 2.0, 3.0));
    const auto w = stored<T>(random_normal(rng, c.channels, 0.5, 1.0));
    const auto b = stored<T>(random_normal(rng, c.channels, 0.5));
    std::vector<T> y(static_cast<size_t>(n));
    std::vector<float> mean(static_cast<size_t>(c.rows)), rstd(mean.size());
    ops::layernorm_forward(this->cpu(), x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), c.rows,
                           c.channels);
    // x and y aligned (the packed form where channels % 8 == 0), then one element off
    // (the scalar form).
    for (const size_t offset : {size_t{0}, size_t{1}}) {
      SCOPED_TRACE(::testing::Message() << "x and y at element offset " << offset);
      DeviceArray<T> gx(this->gpu(), x, offset), gw(this->gpu(), w), gb(this->gpu(), b),
          gy(this->gpu(), stored_nans<T>(n), offset);
      DeviceArray<float> gmean(this->gpu(), nans(c.rows)), grstd(this->gpu(), nans(c.rows));
      ops::layernorm_forward(this->gpu(), gx.get(), gw.get(), gb.get(), gy.get(), gmean.get(), grstd.get(), c.rows,
                             c.channels);
      EXPECT_TRUE(close_relative(gy.to_host(), y, 2e-5));
      EXPECT_TRUE(all_close(gmean.to_host(), mean, 2e-5));
      EXPECT_TRUE(all_close(grstd.to_host(), rstd, 2e-5));
    }
  }
}

// A backward test's inputs, and the CPU forward's row statistics: both backwards read
// them, so only backward is compared.
template <class T>
struct LayerNormBackwardInputs {
  std::vector<T> x, w, dy;
  std::vector<float> mean, rstd;
};
template <class T>
LayerNormBackwardInputs<T> layernorm_backward_inputs(Context& cpu, Rng& rng, const RowsCase& c) {
  const int64_t n = c.rows * c.channels;
  LayerNormBackwardInputs<T> in;
  in.x = stored<T>(random_normal(rng, n, 2.0, -1.0));
  in.w = stored<T>(random_normal(rng, c.channels, 0.5, 1.0));
  const auto b = stored<T>(random_normal(rng, c.channels, 0.5));
  in.dy = stored<T>(random_normal(rng, n));
  std::vector<T> y(static_cast<size_t>(n));
  in.mean.resize(static_cast<size_t>(c.rows));
  in.rstd.resize(in.mean.size());
  ops::layernorm_forward(cpu, in.x.data(), in.w.data(), b.data(), y.data(), in.mean.data(), in.rstd.data(), c.rows,
                         c.channels);
  return in;
}

TYPED_TEST(TransformerOpsIn, LayerNormBackwardMatchesCpuAndAccumulates) {
  using T = TypeParam;
  Rng rng(2);
  const auto chains = testing::make_cuda_chains();  // the rows kernel and the column sums, at any width
  for (const RowsCase& c : kLayerNormCases) {
    for (const bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels
                                        << " accumulate_dx=" << accumulate);
      const int64_t n = c.rows * c.channels;
      const auto [x, w, dy, mean, rstd] = layernorm_backward_inputs<T>(this->cpu(), rng, c);
      auto dx = accumulate ? stored<T>(random_normal(rng, n)) : stored_nans<T>(n);
      auto dw = random_normal(rng, c.channels);
      auto db = random_normal(rng, c.channels);
      const auto dx0 = dx;  // what the GPU starts from: NaNs or the values to accumulate onto
      const auto dw0 = dw;
      const auto db0 = db;
      if (!accumulate) dx = stored<T>(std::vector<float>(dx.size(), 0.0f));  // the CPU's dx may hold anything
      ops::layernorm_backward(this->cpu(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                              dw.data(), db.data(), c.rows, c.channels, accumulate);
      for (Context* gpu : {&this->gpu(), chains.get()}) {
        SCOPED_TRACE(gpu == chains.get() ? "CudaFusions off" : "fused");
        DeviceArray<T> gx(*gpu, x), gw(*gpu, w), gdy(*gpu, dy), gdx(*gpu, dx0);
        DeviceArray<float> gmean(*gpu, mean), grstd(*gpu, rstd), gdw(*gpu, dw0), gdb(*gpu, db0);
        ops::layernorm_backward(*gpu, gdy.get(), gx.get(), gw.get(), gmean.get(), grstd.get(), gdx.get(), gdw.get(),
                                gdb.get(), c.rows, c.channels, accumulate);
        EXPECT_TRUE(close_to_norm(gdx.to_host(), dx, 1e-4));
        EXPECT_TRUE(norm_close(gdw.to_host(), dw, 1e-4));
        EXPECT_TRUE(norm_close(gdb.to_host(), db, 1e-4));
      }
    }
  }
}

// dx over dy (as ops.h allows), with dy, x and dx aligned (the packed form) and one
// element off (the scalar form; weight stays aligned): both match the CPU doing the
// same in place, and the parameter gradients agree bit for bit between the forms (Notes
// [Column sum partition] and [Fused LayerNorm backward]: each channel's terms in the
// same order). dx may differ in the order of its row sums.
TYPED_TEST(TransformerOpsIn, LayerNormBackwardInPlaceMatchesCpuInEitherForm) {
  using T = TypeParam;
  Rng rng(5);
  for (const RowsCase& c : {RowsCase{16384, 768}, RowsCase{4099, 520}, RowsCase{1030, 1536}}) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels);
    const auto [x, w, dy, mean, rstd] = layernorm_backward_inputs<T>(this->cpu(), rng, c);
    const auto dw0 = random_normal(rng, c.channels);
    const auto db0 = random_normal(rng, c.channels);
    auto dx = dy;  // becomes dy + the input gradient
    auto dw = dw0, db = db0;
    ops::layernorm_backward(this->cpu(), dx.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                            dw.data(), db.data(), c.rows, c.channels, /*accumulate_dx=*/true);
    std::vector<float> aligned_dw, aligned_db;
    for (const size_t offset : {size_t{0}, size_t{1}}) {
      SCOPED_TRACE(::testing::Message() << "dy, x and dx at element offset " << offset);
      DeviceArray<T> gx(this->gpu(), x, offset), gw(this->gpu(), w), gdy(this->gpu(), dy, offset);
      DeviceArray<float> gmean(this->gpu(), mean), grstd(this->gpu(), rstd), gdw(this->gpu(), dw0),
          gdb(this->gpu(), db0);
      ops::layernorm_backward(this->gpu(), gdy.get(), gx.get(), gw.get(), gmean.get(), grstd.get(), gdy.get(),
                              gdw.get(), gdb.get(), c.rows, c.channels, /*accumulate_dx=*/true);
      EXPECT_TRUE(close_to_norm(gdy.to_host(), dx, 1e-4));
      EXPECT_TRUE(norm_close(gdw.to_host(), dw, 1e-4));
      EXPECT_TRUE(norm_close(gdb.to_host(), db, 1e-4));
      if (offset == 0) {
        aligned_dw = gdw.to_host();
        aligned_db = gdb.to_host();
      } else {
        EXPECT_TRUE(same_bits(gdw.to_host(), aligned_dw));
        EXPECT_TRUE(same_bits(gdb.to_host(), aligned_db));
      }
    }
  }
}

// Many chunks of rows (Note [Column sum partition]) in both forms: 8195 x 192 ends in a
// partial chunk, 16384 x 768 is GPT-2's, 2049 x 100 takes the scalar form, 2050 x
// 1280 the unfused pair (Note [Fused LayerNorm backward]).
TYPED_TEST(TransformerOpsIn, LayerNormBackwardIsBitIdenticalAcrossRuns) {
  using T = TypeParam;
  Rng rng(3);
  for (const RowsCase& c :
       {RowsCase{8 * 1024 + 3, 192}, RowsCase{16384, 768}, RowsCase{2049, 100}, RowsCase{2050, 1280}}) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels);
    const int64_t n = c.rows * c.channels;
    const auto x = stored<T>(random_normal(rng, n));
    const auto w = stored<T>(random_normal(rng, c.channels, 0.5, 1.0));
    const auto b = stored<T>(random_normal(rng, c.channels));
    const auto dy = stored<T>(random_normal(rng, n));
    DeviceArray<T> gx(this->gpu(), x), gw(this->gpu(), w), gb(this->gpu(), b), gdy(this->gpu(), dy),
        gy(this->gpu(), stored_nans<T>(n));
    DeviceArray<float> gmean(this->gpu(), nans(c.rows)), grstd(this->gpu(), nans(c.rows));
    ops::layernorm_forward(this->gpu(), gx.get(), gw.get(), gb.get(), gy.get(), gmean.get(), grstd.get(), c.rows,
                           c.channels);
    const auto dx0 = stored<T>(random_normal(rng, n));
    const auto start = random_normal(rng, c.channels);
    std::vector<T> first_dx;
    std::vector<float> first_dw, first_db;
    for (int run = 0; run < 3; ++run) {
      DeviceArray<T> gdx(this->gpu(), dx0);
      DeviceArray<float> gdw(this->gpu(), start), gdb(this->gpu(), start);
      ops::layernorm_backward(this->gpu(), gdy.get(), gx.get(), gw.get(), gmean.get(), grstd.get(), gdx.get(),
                              gdw.get(), gdb.get(), c.rows, c.channels, /*accumulate_dx=*/true);
      if (run == 0) {
        first_dx = gdx.to_host();
        first_dw = gdw.to_host();
        first_db = gdb.to_host();
      } else {
        EXPECT_TRUE(same_bits(gdx.to_host(), first_dx));
        EXPECT_TRUE(same_bits(gdw.to_host(), first_dw));
        EXPECT_TRUE(same_bits(gdb.to_host(), first_db));
      }
    }
  }
}

// The memory model's figure (ops::layernorm_backward_workspace_bytes, counted by
// Gpt::workspace_bytes_in) is what the op takes: two outputs' partials.
TEST_F(TransformerOps, LayerNormBackwardTakesTheWorkspaceItDeclares) {
  Rng rng(6);
  const RowsCase c{16384, 768};
  auto fresh = Context::make_cuda(CudaOptions{});
  const size_t declared = ops::layernorm_backward_workspace_bytes(*fresh, c.rows, c.channels);
  EXPECT_GT(declared, 0u);
  EXPECT_LE(declared, size_t{5} << 20);  // 2.5 MiB a parameter gradient
  const int64_t n = c.rows * c.channels;
  DeviceArray<float> gx(*fresh, random_normal(rng, n)), gdy(*fresh, random_normal(rng, n)), gdx(*fresh, nans(n));
  DeviceArray<float> gw(*fresh, random_normal(rng, c.channels)), gmean(*fresh, random_normal(rng, c.rows)),
      grstd(*fresh, std::vector<float>(static_cast<size_t>(c.rows), 1.0f));
  DeviceArray<float> gdw(*fresh, std::vector<float>(static_cast<size_t>(c.channels), 0.0f)),
      gdb(*fresh, std::vector<float>(static_cast<size_t>(c.channels), 0.0f));
  const auto workspace = static_cast<int>(MemoryCategory::Workspace);
  const size_t before = fresh->allocator().stats().in_use_by[workspace];
  ops::layernorm_backward(*fresh, gdy.get(), gx.get(), gw.get(), gmean.get(), grstd.get(), gdx.get(), gdw.get(),
                          gdb.get(), c.rows, c.channels, /*accumulate_dx=*/false);
  fresh->synchronize();
  EXPECT_EQ(fresh->allocator().stats().in_use_by[workspace] - before, declared);
}

// ----------------------------------------------------------- GELU, add and scale

TYPED_TEST(TransformerOpsIn, GeluMatchesCpu) {
  using T = TypeParam;
  Rng rng(4);
  for (const int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1'000'003}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto xf = random_normal(rng, n, 3.0);
    // The tails, where tanh saturates (and 1/cosh^2 would overflow in float).
    const float tails[] = {0.0f, -0.0f, 10.0f, -10.0f, 100.0f, -100.0f, 1e-8f};
    for (size_t i = 0; i < std::size(tails) && i < xf.size(); ++i) xf[i] = tails[i];
    const auto x = stored<T>(xf);
    const auto dy = stored<T>(random_normal(rng, n));
    std::vector<T> y(x.size()), dx(x.size());
    ops::gelu_forward(this->cpu(), x.data(), y.data(), n);
    ops::gelu_backward(this->cpu(), x.data(), dy.data(), dx.data(), n);
    DeviceArray<T> gx(this->gpu(), x), gy(this->gpu(), stored_nans<T>(n)), gdy(this->gpu(), dy),
        gdx(this->gpu(), stored_nans<T>(n));
    ops::gelu_forward(this->gpu(), gx.get(), gy.get(), n);
    ops::gelu_backward(this->gpu(), gx.get(), gdy.get(), gdx.get(), n);
    EXPECT_TRUE(close_relative(gy.to_host(), y, 1e-6));
    EXPECT_TRUE(close_relative(gdx.to_host(), dx, 1e-5));
    // In place, as ops.h allows: y over x, dx over dy.
    ops::gelu_backward(this->gpu(), gx.get(), gdy.get(), gdy.get(), n);
    EXPECT_TRUE(close_relative(gdy.to_host(), dx, 1e-5));
    ops::gelu_forward(this->gpu(), gx.get(), gx.get(), n);
    EXPECT_TRUE(close_relative(gx.to_host(), y, 1e-6));
  }
}

// Sizes with and without a tail after bf16's 8-element packs; `offset` 1 starts every
// array one element past the allocation (2 bytes for bf16), which the bf16 kernel
// takes element by element.
TYPED_TEST(TransformerOpsIn, AddMatchesCpuExactlyAlignedOrNot) {
  using T = TypeParam;
  Rng rng(5);
  for (const int64_t n : {int64_t{1}, int64_t{777}, int64_t{8000}, int64_t{3'000'001}}) {
    for (const int64_t offset : {int64_t{0}, int64_t{1}}) {
      SCOPED_TRACE(::testing::Message() << "n=" << n << " offset=" << offset);
      auto a = stored<T>(random_normal(rng, n + offset));
      const auto b = stored<T>(random_normal(rng, n + offset));
      auto y = stored_nans<T>(n + offset);
      DeviceArray<T> ga(this->gpu(), a), gb(this->gpu(), b), gy(this->gpu(), y);
      ops::add(this->cpu(), a.data() + offset, b.data() + offset, y.data() + offset, n);
      ops::add(this->gpu(), ga.get() + offset, gb.get() + offset, gy.get() + offset, n);
      EXPECT_TRUE(exactly(gy.to_host(), y));
      // y += b, the residual stream's form.
      ops::add(this->cpu(), a.data() + offset, b.data() + offset, a.data() + offset, n);
      ops::add(this->gpu(), ga.get() + offset, gb.get() + offset, ga.get() + offset, n);
      EXPECT_TRUE(exactly(ga.to_host(), a));
    }
  }
}

TEST_F(TransformerOps, ScaleMatchesCpuExactly) {
  Rng rng(5);
  for (const int64_t n : {int64_t{1}, int64_t{777}, int64_t{3'000'001}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto a = random_normal(rng, n);
    DeviceArray<float> ga(gpu(), a);
    ops::scale(cpu(), a.data(), n, 0.37f);
    ops::scale(gpu(), ga.get(), n, 0.37f);
    EXPECT_TRUE(all_close(ga.to_host(), a, 0.0));
  }
}

// ----------------------------------------------------------------------- Embedding

struct EmbeddingCase {
  int64_t batch, seq, channels, vocab;
};
// Small vocabularies repeat tokens often (long runs in the sorted backward); wpe has
// more rows than seq, as a model whose context is longer than the batch's windows.
const EmbeddingCase kEmbeddingCases[] = {
    {1, 1, 1, 1}, {2, 5, 3, 4}, {3, 17, 40, 50}, {4, 33, 65, 7}, {8, 128, 96, 50257}, {16, 64, 32, 3}};

TYPED_TEST(TransformerOpsIn, EmbeddingForwardMatchesCpuExactly) {
  using T = TypeParam;
  Rng rng(6);
  for (const EmbeddingCase& e : kEmbeddingCases) {
    SCOPED_TRACE(::testing::Message() << "B=" << e.batch << " T=" << e.seq << " C=" << e.channels
                                      << " V=" << e.vocab);
    const auto tokens = random_tokens(rng, e.batch * e.seq, e.vocab);
    const auto wte = stored<T>(random_normal(rng, e.vocab * e.channels));
    const auto wpe = stored<T>(random_normal(rng, (e.seq + 5) * e.channels));
    const int64_t n = e.batch * e.seq * e.channels;
    std::vector<T> y(static_cast<size_t>(n));
    ops::embedding_forward(this->cpu(), tokens.data(), wte.data(), wpe.data(), y.data(), e.batch, e.seq,
                           e.channels, e.vocab);
    DeviceArray<int32_t> gtokens(this->gpu(), tokens);
    DeviceArray<T> gwte(this->gpu(), wte), gwpe(this->gpu(), wpe), gy(this->gpu(), stored_nans<T>(n));
    ops::embedding_forward(this->gpu(), gtokens.get(), gwte.get(), gwpe.get(), gy.get(), e.batch, e.seq,
                           e.channels, e.vocab);
    EXPECT_TRUE(exactly(gy.to_host(), y));
  }
}

TYPED_TEST(TransformerOpsIn, EmbeddingBackwardAccumulatesLikeCpu) {
  using T = TypeParam;
  Rng rng(7);
  for (const EmbeddingCase& e : kEmbeddingCases) {
    SCOPED_TRACE(::testing::Message() << "B=" << e.batch << " T=" << e.seq << " C=" << e.channels
                                      << " V=" << e.vocab);
    const auto tokens = random_tokens(rng, e.batch * e.seq, e.vocab);
    const auto dy = stored<T>(random_normal(rng, e.batch * e.seq * e.channels));
    auto dwte = random_normal(rng, e.vocab * e.channels);
    auto dwpe = random_normal(rng, (e.seq + 5) * e.channels);
    DeviceArray<int32_t> gtokens(this->gpu(), tokens);
    DeviceArray<T> gdy(this->gpu(), dy);
    DeviceArray<float> gdwte(this->gpu(), dwte), gdwpe(this->gpu(), dwpe);
    for (int call = 0; call < 2; ++call) {  // += twice
      ops::embedding_backward(this->cpu(), dy.data(), tokens.data(), dwte.data(), dwpe.data(), e.batch, e.seq,
                              e.channels, e.vocab);
      ops::embedding_backward(this->gpu(), gdy.get(), gtokens.get(), gdwte.get(), gdwpe.get(), e.batch, e.seq,
                              e.channels, e.vocab);
    }
    // Rows of tokens that never occur, and wpe's rows past seq, must be untouched:
    // norm_close bounds them too (their values equal the CPU's start).
    EXPECT_TRUE(norm_close(gdwte.to_host(), dwte, 1e-4));
    EXPECT_TRUE(norm_close(gdwpe.to_host(), dwpe, 1e-4));
  }
}

TEST_F(TransformerOps, EmbeddingBackwardIsBitIdenticalAcrossRuns) {
  Rng rng(8);
  for (const EmbeddingCase& e : {EmbeddingCase{8, 256, 128, 11}, EmbeddingCase{4, 512, 64, 50257}}) {
    SCOPED_TRACE(::testing::Message() << "V=" << e.vocab);
    const auto tokens = random_tokens(rng, e.batch * e.seq, e.vocab);
    const auto dy = random_normal(rng, e.batch * e.seq * e.channels);
    const auto start_wte = random_normal(rng, e.vocab * e.channels);
    const auto start_wpe = random_normal(rng, e.seq * e.channels);
    DeviceArray<int32_t> gtokens(gpu(), tokens);
    DeviceArray<float> gdy(gpu(), dy);
    std::vector<float> first_wte, first_wpe;
    for (int run = 0; run < 3; ++run) {
      DeviceArray<float> gdwte(gpu(), start_wte), gdwpe(gpu(), start_wpe);
      ops::embedding_backward(gpu(), gdy.get(), gtokens.get(), gdwte.get(), gdwpe.get(), e.batch, e.seq,
                              e.channels, e.vocab);
      if (run == 0) {
        first_wte = gdwte.to_host();
        first_wpe = gdwpe.to_host();
      } else {
        EXPECT_TRUE(all_close(gdwte.to_host(), first_wte, 0.0));
        EXPECT_TRUE(all_close(gdwpe.to_host(), first_wpe, 0.0));
      }
    }
  }
}

TEST_F(TransformerOps, EmbeddingReportsBadTokenAtTheNextSynchronization) {
  const int64_t batch = 2, seq = 4, channels = 3, vocab = 10;
  DeviceArray<float> wte(gpu(), std::vector<float>(vocab * channels, 1.0f));
  DeviceArray<float> wpe(gpu(), std::vector<float>(seq * channels, 0.5f));
  DeviceArray<float> y(gpu(), nans(batch * seq * channels));
  DeviceArray<float> dwte(gpu(), std::vector<float>(vocab * channels, 0.0f));
  DeviceArray<float> dwpe(gpu(), std::vector<float>(seq * channels, 0.0f));
  DeviceArray<int32_t> good(gpu(), std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 9});
  for (const int32_t bad : {10, -1}) {
    for (const bool backward : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "bad token " << bad << (backward ? " in backward" : " in forward"));
      // Flat position 6 is sample 1, position 2; a later bad one must not be the one named.
      DeviceArray<int32_t> tokens(gpu(), std::vector<int32_t>{0, 1, 2, 3, 4, 5, bad, bad});
      if (backward) {
        ops::embedding_backward(gpu(), y.get(), tokens.get(), dwte.get(), dwpe.get(), batch, seq, channels, vocab);
      } else {
        ops::embedding_forward(gpu(), tokens.get(), wte.get(), wpe.get(), y.get(), batch, seq, channels, vocab);
      }
      try {
        gpu().synchronize();
        FAIL() << "expected DataError for token " << bad;
      } catch (const DataError& e) {
        const std::string what = e.what();
        EXPECT_NE(what.find("token " + std::to_string(bad) + " at position 2 of sample 1 "), std::string::npos)
            << what;
        EXPECT_NE(what.find("[0, 10)"), std::string::npos) << what;
      }
      // The record is re-armed: good tokens then synchronize cleanly.
      ops::embedding_forward(gpu(), good.get(), wte.get(), wpe.get(), y.get(), batch, seq, channels, vocab);
      EXPECT_NO_THROW(gpu().synchronize());
    }
  }
  // A bad token read no wte row: its output is wpe alone.
  DeviceArray<int32_t> tokens(gpu(), std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 1 << 30});
  ops::embedding_forward(gpu(), tokens.get(), wte.get(), wpe.get(), y.get(), batch, seq, channels, vocab);
  EXPECT_THROW(gpu().synchronize(), DataError);
  const auto out = y.to_host();
  EXPECT_EQ(out[7 * channels], 0.5f);
  EXPECT_EQ(out[6 * channels], 1.5f);
}

TEST_F(TransformerOps, EmbeddingBackwardWorkspaceBytesAreWhatItTakes) {
  const EmbeddingCase e{8, 128, 96, 50257};
  auto fresh = Context::make_cuda(CudaOptions{});
  const size_t predicted = ops::embedding_backward_workspace_bytes(*fresh, e.batch, e.seq, e.channels, e.vocab);
  Rng rng(9);
  DeviceArray<int32_t> tokens(*fresh, random_tokens(rng, e.batch * e.seq, e.vocab));
  DeviceArray<float> dy(*fresh, random_normal(rng, e.batch * e.seq * e.channels));
  DeviceArray<float> dwte(*fresh, std::vector<float>(e.vocab * e.channels, 0.0f));
  DeviceArray<float> dwpe(*fresh, std::vector<float>(e.seq * e.channels, 0.0f));
  const auto workspace = static_cast<int>(MemoryCategory::Workspace);
  const size_t before = fresh->allocator().stats().in_use_by[workspace];
  fresh->allocator().reset_peak();
  ops::embedding_backward(*fresh, dy.get(), tokens.get(), dwte.get(), dwpe.get(), e.batch, e.seq, e.channels,
                          e.vocab);
  fresh->synchronize();
  EXPECT_GT(predicted, 0u);
  EXPECT_LE(fresh->allocator().stats().peak_by[workspace] - before, predicted);
}

// ----------------------------------------------------------------------- Attention

struct AttentionCase {
  int64_t batch, seq, channels, heads;
};
// B <= H and B > H take the two GEMM loops (over b, or over h); one position; head
// sizes 1 to 64; seq above a warp, and a longer one.
const AttentionCase kAttentionCases[] = {{1, 1, 4, 1},   {2, 7, 12, 3},   {3, 33, 64, 4},   {5, 64, 32, 8},
                                         {6, 17, 24, 2}, {2, 100, 48, 1}, {2, 256, 128, 2}};

// Note [bf16 attention] (kernels/cuda/attention.cu): both backends keep S, dP and dS in
// fp32, so they differ by the order of fp32 sums, and where each rounds the same
// value to bf16. With q, k, v the heads' rows, s = 1/sqrt(hs), gamma_n as above, and
// every quantity from the same bf16 inputs (products exact in fp32):
//
// probs: S_il = s q_i.k_l differs by at most sigma_il = 2 gamma_{hs+1} s sum_d |q_id k_ld|.
//   P_ij = exp(S_ij - m_i) / Z_i moves by dP_ij/dS_il = P_ij (delta_jl - P_il), so by
//   at most P_ij (|dS_ij| + sum_l P_il |dS_il|) <= 2 P_ij max_l sigma_il; evaluating it
//   (expf within 2 ulp on the GPU, the exponent's rounding |S_ij - m_i| 2^-24, the
//   reciprocal and the product) adds P_ij (16 + 2 |S_ij - m_i|) 2^-24 at most.
// out: out_i = sum_j P^_ij v_j from each backend's stored P^: the two differ by
//   sum_j |P^gpu_ij - P^cpu_ij| |v_j| (measured) + 2 gamma_T sum_j P^_ij |v_j|.
// backward, run on the CPU's P^ on both (so its inputs are the same):
//   dP_ij = dO_i.v_j             within e_ij = 2 gamma_hs sum_d |dO_id v_jd|
//   D_i = sum_j P_ij dP_ij       within dD_i = sum_j P_ij e_ij + 2^-22 |D_i| (float rounding)
//   dS_ij = s P_ij (dP_ij - D_i) within dS~_ij = s P_ij (e_ij + dD_i + 2^-21 (|dP_ij| + |D_i|))
//   dV_j = sum_i P_ij dO_i       within 2 gamma_T sum_i P_ij |dO_i|
//   dQ_i = sum_j dS_ij k_j       within sum_j dS~_ij |k_j| + 2 gamma_T sum_j |dS_ij| |k_j|
//   dK_j = sum_i dS_ij q_i       within sum_i dS~_ij |q_i| + 2 gamma_T sum_i |dS_ij| |q_i|
// The magnitudes are computed here in double from the inputs.
struct AttentionBounds {
  std::vector<double> probs, out, dqkv;
};

AttentionBounds attention_bounds(const AttentionCase& a, const std::vector<float>& qkv,
                                 const std::vector<float>& dout, const std::vector<float>& probs_cpu,
                                 const std::vector<float>& probs_gpu) {
  const int64_t B = a.batch, T = a.seq, C = a.channels, H = a.heads, hs = C / H, ld = 3 * C;
  const double s = 1.0 / std::sqrt(static_cast<double>(static_cast<float>(hs)));
  const double u = std::ldexp(1.0, -24);
  AttentionBounds bounds{std::vector<double>(probs_cpu.size(), 0.0), std::vector<double>(dout.size(), 0.0),
                         std::vector<double>(qkv.size(), 0.0)};
  std::vector<double> score(static_cast<size_t>(T)), sigma(static_cast<size_t>(T));
  std::vector<double> dp(static_cast<size_t>(T * T)), e(static_cast<size_t>(T * T));
  std::vector<double> ds(static_cast<size_t>(T * T)), ds_err(static_cast<size_t>(T * T));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float* q = qkv.data() + b * T * ld + h * hs;
      const float* k = q + C;
      const float* v = q + 2 * C;
      const float* dO = dout.data() + b * T * C + h * hs;
      const int64_t pair = (b * H + h) * T * T;
      const float* pc = probs_cpu.data() + pair;
      const float* pg = probs_gpu.data() + pair;
      const auto at_qkv = [&](int64_t t, int64_t third, int64_t d) { return b * T * ld + t * ld + third * C + h * hs + d; };
      for (int64_t i = 0; i < T; ++i) {
        double mx = -std::numeric_limits<double>::infinity(), max_sigma = 0.0;
        for (int64_t l = 0; l <= i; ++l) {
          const auto [dot, mag] = testing::dot_magnitude(q + i * ld, k + l * ld, hs);
          score[l] = s * dot;
          sigma[l] = 2.0 * gamma_n(hs + 1) * s * mag;
          mx = std::max(mx, score[l]);
          max_sigma = std::max(max_sigma, sigma[l]);
        }
        for (int64_t j = 0; j <= i; ++j) {
          const double p = std::max(pc[i * T + j], pg[i * T + j]);
          bounds.probs[pair + i * T + j] = p * (2.0 * max_sigma + (16.0 + 2.0 * std::fabs(score[j] - mx)) * u);
        }
        for (int64_t d = 0; d < hs; ++d) {
          double diff = 0.0, mag = 0.0;
          for (int64_t j = 0; j <= i; ++j) {
            diff += std::fabs(static_cast<double>(pg[i * T + j]) - pc[i * T + j]) * std::fabs(v[j * ld + d]);
            mag += std::max(pc[i * T + j], pg[i * T + j]) * std::fabs(v[j * ld + d]);
          }
          bounds.out[b * T * C + i * C + h * hs + d] = diff + 2.0 * gamma_n(T) * mag;
        }
      }
      // Backward, on the CPU's probabilities.
      for (int64_t i = 0; i < T; ++i) {
        double D = 0.0, D_err = 0.0;
        for (int64_t j = 0; j < T; ++j) {
          const auto [dot, mag] = testing::dot_magnitude(dO + i * C, v + j * ld, hs);
          dp[i * T + j] = dot;
          e[i * T + j] = 2.0 * gamma_n(hs) * mag;
          if (j <= i) {
            D += pc[i * T + j] * dot;
            D_err += pc[i * T + j] * e[i * T + j];
          }
        }
        D_err += 4.0 * u * std::fabs(D);
        for (int64_t j = 0; j < T; ++j) {
          const double p = j <= i ? pc[i * T + j] : 0.0;
          ds[i * T + j] = s * p * (dp[i * T + j] - D);
          ds_err[i * T + j] = s * p * (e[i * T + j] + D_err + 8.0 * u * (std::fabs(dp[i * T + j]) + std::fabs(D)));
        }
      }
      for (int64_t d = 0; d < hs; ++d) {
        for (int64_t i = 0; i < T; ++i) {  // dQ_i
          double err = 0.0, mag = 0.0;
          for (int64_t j = 0; j <= i; ++j) {
            err += ds_err[i * T + j] * std::fabs(k[j * ld + d]);
            mag += std::fabs(ds[i * T + j] * k[j * ld + d]);
          }
          bounds.dqkv[at_qkv(i, 0, d)] = err + 2.0 * gamma_n(T) * mag;
        }
        for (int64_t j = 0; j < T; ++j) {  // dK_j and dV_j
          double err = 0.0, mag = 0.0, mag_v = 0.0;
          for (int64_t i = j; i < T; ++i) {
            err += ds_err[i * T + j] * std::fabs(q[i * ld + d]);
            mag += std::fabs(ds[i * T + j] * q[i * ld + d]);
            mag_v += pc[i * T + j] * std::fabs(dO[i * C + d]);
          }
          bounds.dqkv[at_qkv(j, 1, d)] = err + 2.0 * gamma_n(T) * mag;
          bounds.dqkv[at_qkv(j, 2, d)] = 2.0 * gamma_n(T) * mag_v;
        }
      }
    }
  }
  return bounds;
}


// The unfused path, which keeps the probabilities (the fused ones have
// tests/gpu/test_fused_attention.cpp, cuDNN's, and test_flash_attention.cpp, dtrain's).
// Backward runs on the CPU's probabilities on both backends, so both have the same
// inputs (in bf16 the forwards' stored probabilities may differ by a rounding).
TYPED_TEST(TransformerOpsIn, AttentionMatchesCpu) {
  using Stored = TypeParam;
  const auto unfused = testing::make_cuda_unfused_attention();
  Context& gpu = *unfused;
  Rng rng(10);
  for (const AttentionCase& a : kAttentionCases) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.batch << " T=" << a.seq << " C=" << a.channels
                                      << " H=" << a.heads);
    const int64_t T = a.seq;
    const int64_t n_qkv = a.batch * T * 3 * a.channels, n_out = a.batch * T * a.channels;
    const int64_t n_probs = a.batch * a.heads * T * T;
    const auto qkv = stored<Stored>(random_normal(rng, n_qkv));
    const auto dout = stored<Stored>(random_normal(rng, n_out));
    std::vector<Stored> out(static_cast<size_t>(n_out)), probs(static_cast<size_t>(n_probs));
    std::vector<Stored> dqkv(static_cast<size_t>(n_qkv));
    ops::attention_forward(this->cpu(), qkv.data(), out.data(), probs.data(), a.batch, T, a.channels, a.heads);
    ops::attention_backward(this->cpu(), dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), a.batch, T,
                            a.channels, a.heads);
    DeviceArray<Stored> gqkv(gpu, qkv), gout(gpu, stored_nans<Stored>(n_out)),
        gprobs(gpu, stored_nans<Stored>(n_probs));
    DeviceArray<Stored> cpu_probs(gpu, probs), gdout(gpu, dout),
        gdqkv(gpu, stored_nans<Stored>(n_qkv));
    ops::attention_forward(gpu, gqkv.get(), gout.get(), gprobs.get(), a.batch, T, a.channels, a.heads);
    ops::attention_backward(gpu, gdout.get(), gqkv.get(), gout.get(), cpu_probs.get(), gdqkv.get(), a.batch, T,
                            a.channels, a.heads);
    const auto got_probs = gprobs.to_host();
    const auto got_probs_v = testing::values(got_probs);
    int64_t above_diagonal_nonzero = 0;
    for (int64_t r = 0; r < a.batch * a.heads * T; ++r) {
      for (int64_t j = r % T + 1; j < T; ++j) above_diagonal_nonzero += got_probs_v[r * T + j] != 0.0f;
    }
    EXPECT_EQ(above_diagonal_nonzero, 0);
    if constexpr (std::is_same_v<Stored, float>) {
      EXPECT_TRUE(all_close(got_probs, probs, 1e-5));
      EXPECT_TRUE(norm_close(gout.to_host(), out, 1e-4));
      EXPECT_TRUE(norm_close(gdqkv.to_host(), dqkv, 1e-4));
    } else {
      const AttentionBounds bounds = attention_bounds(a, testing::values(qkv), testing::values(dout),
                                                      testing::values(probs), got_probs_v);
      EXPECT_TRUE(testing::bf16_close(got_probs, probs, bounds.probs));
      EXPECT_TRUE(testing::bf16_close(gout.to_host(), out, bounds.out));
      EXPECT_TRUE(testing::bf16_close(gdqkv.to_host(), dqkv, bounds.dqkv));
    }
  }
}

// On both paths (fused: cuDNN's or, where it declines, as for fp32 and for the head
// size of 12 in bf16, dtrain's own): the workspace the ops take is at most what the
// memory model is told, and the saved state is what it is told.
TYPED_TEST(TransformerOpsIn, AttentionWorkspaceBytesAreWhatTheOpsTake) {
  using T = TypeParam;
  for (const bool fused : {false, true}) {
    for (const AttentionCase& a : {AttentionCase{2, 64, 48, 4}, AttentionCase{8, 32, 32, 2}, AttentionCase{2, 64, 128, 2}}) {
      SCOPED_TRACE(::testing::Message() << "fused=" << fused << " B=" << a.batch << " H=" << a.heads);
      CudaOptions options;
      options.fused_attention = fused;
      auto fresh = Context::make_cuda(options);
      const DType type = testing::dtype_of<T>;
      const size_t predicted = ops::attention_workspace_bytes(*fresh, a.batch, a.seq, a.channels, a.heads, type);
      const size_t saved_bytes = ops::attention_saved_bytes(*fresh, a.batch, a.seq, a.channels, a.heads, type);
      const bool probs_saved = saved_bytes == static_cast<size_t>(a.batch * a.heads * a.seq * a.seq) * sizeof(T);
      const bool stats_saved = saved_bytes == static_cast<size_t>(a.batch * a.heads * a.seq) * sizeof(float);
      EXPECT_TRUE(fused ? probs_saved || stats_saved : probs_saved) << saved_bytes << " bytes saved";
      Rng rng(11);
      DeviceArray<T> qkv(*fresh, stored<T>(random_normal(rng, a.batch * a.seq * 3 * a.channels)));
      DeviceArray<T> dout(*fresh, stored<T>(random_normal(rng, a.batch * a.seq * a.channels)));
      DeviceArray<T> out(*fresh, stored_nans<T>(a.batch * a.seq * a.channels));
      DeviceArray<T> saved(*fresh, stored_nans<T>(static_cast<int64_t>(saved_bytes / sizeof(T))));
      DeviceArray<T> dqkv(*fresh, stored_nans<T>(a.batch * a.seq * 3 * a.channels));
      const auto workspace = static_cast<int>(MemoryCategory::Workspace);
      const size_t before = fresh->allocator().stats().in_use_by[workspace];
      fresh->allocator().reset_peak();
      ops::attention_forward(*fresh, qkv.get(), out.get(), saved.get(), a.batch, a.seq, a.channels, a.heads);
      ops::attention_backward(*fresh, dout.get(), qkv.get(), out.get(), saved.get(), dqkv.get(), a.batch, a.seq,
                              a.channels, a.heads);
      fresh->synchronize();
      EXPECT_LE(fresh->allocator().stats().peak_by[workspace] - before, predicted);
      for (const float v : testing::values(dqkv.to_host())) ASSERT_TRUE(std::isfinite(v));
    }
  }
}

// ------------------------------------------------------------------------- Dropout

TYPED_TEST(TransformerOpsIn, DropoutDropsWhatTheHashSaysLikeCpu) {
  using T = TypeParam;
  Rng rng(12);
  const int64_t samples = 5, per_sample = 1001;
  const int64_t n = samples * per_sample;
  // Global sample indices, as a micro-batch holds them: arbitrary and large.
  const std::vector<int64_t> ids = {3, 0, 1'000'000'007, 42, int64_t{1} << 40};
  const uint64_t key = dropout_key(1234, 17, 3);
  // Inputs without zeros, so a zero in the output means a drop.
  auto xf = random_normal(rng, n);
  for (float& v : xf) v = v >= 0.0f ? v + 0.1f : v - 0.1f;
  const auto x = stored<T>(xf);
  DeviceArray<int64_t> gids(this->gpu(), ids);
  for (const float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
    SCOPED_TRACE(::testing::Message() << "p=" << p);
    std::vector<T> y(x.size()), dx(x.size());
    ops::dropout_forward(this->cpu(), x.data(), y.data(), samples, per_sample, ids.data(), key, p);
    ops::dropout_backward(this->cpu(), x.data(), dx.data(), samples, per_sample, ids.data(), key, p);
    DeviceArray<T> gx(this->gpu(), x), gy(this->gpu(), stored_nans<T>(n)), gdx(this->gpu(), stored_nans<T>(n));
    ops::dropout_forward(this->gpu(), gx.get(), gy.get(), samples, per_sample, gids.get(), key, p);
    ops::dropout_backward(this->gpu(), gx.get(), gdx.get(), samples, per_sample, gids.get(), key, p);
    const auto got = gy.to_host();
    const auto got_dx = gdx.to_host();
    const auto got_v = testing::values(got), got_dx_v = testing::values(got_dx);
    const auto y_v = testing::values(y), dx_v = testing::values(dx);
    int64_t mask_mismatch = 0, hash_mismatch = 0, dropped = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool kept = dropout_keeps(key, ids[static_cast<size_t>(i / per_sample)], i % per_sample, p);
      mask_mismatch += (got_v[i] == 0.0f) != (y_v[i] == 0.0f);
      mask_mismatch += (got_dx_v[i] == 0.0f) != (dx_v[i] == 0.0f);
      hash_mismatch += (got_v[i] != 0.0f) != kept;
      dropped += got_v[i] == 0.0f;
    }
    EXPECT_EQ(mask_mismatch, 0);
    EXPECT_EQ(hash_mismatch, 0);
    if (p == 0.0f) {
      EXPECT_TRUE(exactly(got, x));  // p = 0 copies
    } else {
      // About p of the elements (5005 draws: 6 standard deviations is under 0.05).
      EXPECT_NEAR(static_cast<double>(dropped) / n, p, 0.05);
    }
    EXPECT_TRUE(close_relative(got, y, 1e-6));
    EXPECT_TRUE(close_relative(got_dx, dx, 1e-6));
    // In place, as ops.h allows; forward and backward agree.
    ops::dropout_forward(this->gpu(), gx.get(), gx.get(), samples, per_sample, gids.get(), key, p);
    EXPECT_TRUE(exactly(gx.to_host(), got));
  }
}

}  // namespace
}  // namespace dtrain
