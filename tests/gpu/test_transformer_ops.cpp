// The transformer ops of kernels/ops.h (Note [Transformer ops]) on the CUDA context
// against the CPU ops (DESIGN contract 6: the CPU op is the oracle), on fresh seeded
// random inputs and odd shapes, with a tolerance per op:
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
// and, where the op promises it, equal bits across runs (layernorm and embedding
// backward: deterministic reductions). Outputs an op must overwrite start as NaN on the
// device; gradients it must add into start random, so += is checked.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/dropout_hash.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/gpu_test.h"

namespace dtrain {
namespace {

using testing::all_close;
using testing::DeviceArray;
using testing::norm_close;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> random_normal(Rng& rng, int64_t n, double scale = 1.0, double offset = 0.0) {
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(offset + scale * rng.normal());
  return v;
}

std::vector<int32_t> random_tokens(Rng& rng, int64_t n, int64_t vocab) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& t : v) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return v;
}

std::vector<float> nans(int64_t n) { return std::vector<float>(static_cast<size_t>(n), kNaN); }

class TransformerOps : public testing::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    gpu_ = Context::make_cuda(CudaOptions{});  // TF32 off: full fp32 GEMMs
    cpu_ = Context::make_cpu(2);
  }
  Context& gpu() { return *gpu_; }
  Context& cpu() { return *cpu_; }

  std::unique_ptr<Context> gpu_;
  std::unique_ptr<Context> cpu_;
};

// ----------------------------------------------------------------------- LayerNorm

struct RowsCase {
  int64_t rows, channels;
};
// One channel (zero variance: rstd = 1/sqrt(eps)), widths below, at and above a warp,
// GPT-2's 768, and enough rows for several parameter-gradient chunks (32 to 128 rows each).
const RowsCase kLayerNormCases[] = {{1, 1}, {3, 5}, {17, 32}, {40, 33}, {64, 768}, {1000, 96}, {5003, 40}};

TEST_F(TransformerOps, LayerNormForwardMatchesCpu) {
  Rng rng(1);
  for (const RowsCase& c : kLayerNormCases) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels);
    const int64_t n = c.rows * c.channels;
    // A mean far from 0, so a one-pass variance would lose digits.
    const auto x = random_normal(rng, n, 2.0, 3.0);
    const auto w = random_normal(rng, c.channels, 0.5, 1.0);
    const auto b = random_normal(rng, c.channels, 0.5);
    std::vector<float> y(static_cast<size_t>(n)), mean(static_cast<size_t>(c.rows)), rstd(mean.size());
    ops::layernorm_forward(cpu(), x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), c.rows,
                           c.channels);
    DeviceArray<float> gx(gpu(), x), gw(gpu(), w), gb(gpu(), b), gy(gpu(), nans(n));
    DeviceArray<float> gmean(gpu(), nans(c.rows)), grstd(gpu(), nans(c.rows));
    ops::layernorm_forward(gpu(), gx.get(), gw.get(), gb.get(), gy.get(), gmean.get(), grstd.get(), c.rows,
                           c.channels);
    EXPECT_TRUE(all_close(gy.to_host(), y, 2e-5));
    EXPECT_TRUE(all_close(gmean.to_host(), mean, 2e-5));
    EXPECT_TRUE(all_close(grstd.to_host(), rstd, 2e-5));
  }
}

TEST_F(TransformerOps, LayerNormBackwardMatchesCpuAndAccumulates) {
  Rng rng(2);
  for (const RowsCase& c : kLayerNormCases) {
    for (const bool accumulate : {false, true}) {
      SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels
                                        << " accumulate_dx=" << accumulate);
      const int64_t n = c.rows * c.channels;
      const auto x = random_normal(rng, n, 2.0, -1.0);
      const auto w = random_normal(rng, c.channels, 0.5, 1.0);
      const auto b = random_normal(rng, c.channels, 0.5);
      const auto dy = random_normal(rng, n);
      // Both backwards read the CPU forward's statistics, so only backward is compared.
      std::vector<float> y(static_cast<size_t>(n)), mean(static_cast<size_t>(c.rows)), rstd(mean.size());
      ops::layernorm_forward(cpu(), x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), c.rows,
                             c.channels);
      auto dx = accumulate ? random_normal(rng, n) : nans(n);
      auto dw = random_normal(rng, c.channels);
      auto db = random_normal(rng, c.channels);
      DeviceArray<float> gx(gpu(), x), gw(gpu(), w), gdy(gpu(), dy), gmean(gpu(), mean), grstd(gpu(), rstd);
      DeviceArray<float> gdx(gpu(), dx), gdw(gpu(), dw), gdb(gpu(), db);
      if (!accumulate) dx.assign(dx.size(), 0.0f);  // the CPU's dx may hold anything
      ops::layernorm_backward(cpu(), dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(),
                              dw.data(), db.data(), c.rows, c.channels, accumulate);
      ops::layernorm_backward(gpu(), gdy.get(), gx.get(), gw.get(), gmean.get(), grstd.get(), gdx.get(),
                              gdw.get(), gdb.get(), c.rows, c.channels, accumulate);
      EXPECT_TRUE(norm_close(gdx.to_host(), dx, 1e-4));
      EXPECT_TRUE(norm_close(gdw.to_host(), dw, 1e-4));
      EXPECT_TRUE(norm_close(gdb.to_host(), db, 1e-4));
    }
  }
}

TEST_F(TransformerOps, LayerNormBackwardIsBitIdenticalAcrossRuns) {
  Rng rng(3);
  const RowsCase c{8 * 1024 + 3, 192};  // 127 chunks of 65 rows (the last shorter)
  const int64_t n = c.rows * c.channels;
  const auto x = random_normal(rng, n);
  const auto w = random_normal(rng, c.channels, 0.5, 1.0);
  const auto b = random_normal(rng, c.channels);
  const auto dy = random_normal(rng, n);
  DeviceArray<float> gx(gpu(), x), gw(gpu(), w), gb(gpu(), b), gdy(gpu(), dy), gy(gpu(), nans(n));
  DeviceArray<float> gmean(gpu(), nans(c.rows)), grstd(gpu(), nans(c.rows));
  ops::layernorm_forward(gpu(), gx.get(), gw.get(), gb.get(), gy.get(), gmean.get(), grstd.get(), c.rows,
                         c.channels);
  const auto dx0 = random_normal(rng, n);
  const auto start = random_normal(rng, c.channels);
  std::vector<float> first_dx, first_dw, first_db;
  for (int run = 0; run < 3; ++run) {
    DeviceArray<float> gdx(gpu(), dx0), gdw(gpu(), start), gdb(gpu(), start);
    ops::layernorm_backward(gpu(), gdy.get(), gx.get(), gw.get(), gmean.get(), grstd.get(), gdx.get(), gdw.get(),
                            gdb.get(), c.rows, c.channels, /*accumulate_dx=*/true);
    if (run == 0) {
      first_dx = gdx.to_host();
      first_dw = gdw.to_host();
      first_db = gdb.to_host();
    } else {
      EXPECT_TRUE(all_close(gdx.to_host(), first_dx, 0.0));
      EXPECT_TRUE(all_close(gdw.to_host(), first_dw, 0.0));
      EXPECT_TRUE(all_close(gdb.to_host(), first_db, 0.0));
    }
  }
}

// ----------------------------------------------------------- GELU, add and scale

TEST_F(TransformerOps, GeluMatchesCpu) {
  Rng rng(4);
  for (const int64_t n : {int64_t{1}, int64_t{1000}, int64_t{1'000'003}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto x = random_normal(rng, n, 3.0);
    // The tails, where tanh saturates (and 1/cosh^2 would overflow in float).
    const float tails[] = {0.0f, -0.0f, 10.0f, -10.0f, 100.0f, -100.0f, 1e-8f};
    for (size_t i = 0; i < std::size(tails) && i < x.size(); ++i) x[i] = tails[i];
    const auto dy = random_normal(rng, n);
    std::vector<float> y(x.size()), dx(x.size());
    ops::gelu_forward(cpu(), x.data(), y.data(), n);
    ops::gelu_backward(cpu(), x.data(), dy.data(), dx.data(), n);
    DeviceArray<float> gx(gpu(), x), gy(gpu(), nans(n)), gdy(gpu(), dy), gdx(gpu(), nans(n));
    ops::gelu_forward(gpu(), gx.get(), gy.get(), n);
    ops::gelu_backward(gpu(), gx.get(), gdy.get(), gdx.get(), n);
    EXPECT_TRUE(all_close(gy.to_host(), y, 1e-6));
    EXPECT_TRUE(all_close(gdx.to_host(), dx, 1e-5));
    // In place, as ops.h allows: y over x, dx over dy.
    ops::gelu_backward(gpu(), gx.get(), gdy.get(), gdy.get(), n);
    EXPECT_TRUE(all_close(gdy.to_host(), dx, 1e-5));
    ops::gelu_forward(gpu(), gx.get(), gx.get(), n);
    EXPECT_TRUE(all_close(gx.to_host(), y, 1e-6));
  }
}

TEST_F(TransformerOps, AddAndScaleMatchCpuExactly) {
  Rng rng(5);
  for (const int64_t n : {int64_t{1}, int64_t{777}, int64_t{3'000'001}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto a = random_normal(rng, n);
    const auto b = random_normal(rng, n);
    std::vector<float> y(a.size());
    DeviceArray<float> ga(gpu(), a), gb(gpu(), b), gy(gpu(), nans(n));
    ops::add(cpu(), a.data(), b.data(), y.data(), n);
    ops::add(gpu(), ga.get(), gb.get(), gy.get(), n);
    EXPECT_TRUE(all_close(gy.to_host(), y, 0.0));
    // y += b, the residual stream's form.
    ops::add(cpu(), a.data(), b.data(), a.data(), n);
    ops::add(gpu(), ga.get(), gb.get(), ga.get(), n);
    EXPECT_TRUE(all_close(ga.to_host(), a, 0.0));
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

TEST_F(TransformerOps, EmbeddingForwardMatchesCpuExactly) {
  Rng rng(6);
  for (const EmbeddingCase& e : kEmbeddingCases) {
    SCOPED_TRACE(::testing::Message() << "B=" << e.batch << " T=" << e.seq << " C=" << e.channels
                                      << " V=" << e.vocab);
    const auto tokens = random_tokens(rng, e.batch * e.seq, e.vocab);
    const auto wte = random_normal(rng, e.vocab * e.channels);
    const auto wpe = random_normal(rng, (e.seq + 5) * e.channels);
    const int64_t n = e.batch * e.seq * e.channels;
    std::vector<float> y(static_cast<size_t>(n));
    ops::embedding_forward(cpu(), tokens.data(), wte.data(), wpe.data(), y.data(), e.batch, e.seq, e.channels,
                           e.vocab);
    DeviceArray<int32_t> gtokens(gpu(), tokens);
    DeviceArray<float> gwte(gpu(), wte), gwpe(gpu(), wpe), gy(gpu(), nans(n));
    ops::embedding_forward(gpu(), gtokens.get(), gwte.get(), gwpe.get(), gy.get(), e.batch, e.seq, e.channels,
                           e.vocab);
    EXPECT_TRUE(all_close(gy.to_host(), y, 0.0));
  }
}

TEST_F(TransformerOps, EmbeddingBackwardAccumulatesLikeCpu) {
  Rng rng(7);
  for (const EmbeddingCase& e : kEmbeddingCases) {
    SCOPED_TRACE(::testing::Message() << "B=" << e.batch << " T=" << e.seq << " C=" << e.channels
                                      << " V=" << e.vocab);
    const auto tokens = random_tokens(rng, e.batch * e.seq, e.vocab);
    const auto dy = random_normal(rng, e.batch * e.seq * e.channels);
    auto dwte = random_normal(rng, e.vocab * e.channels);
    auto dwpe = random_normal(rng, (e.seq + 5) * e.channels);
    DeviceArray<int32_t> gtokens(gpu(), tokens);
    DeviceArray<float> gdy(gpu(), dy), gdwte(gpu(), dwte), gdwpe(gpu(), dwpe);
    for (int call = 0; call < 2; ++call) {  // += twice
      ops::embedding_backward(cpu(), dy.data(), tokens.data(), dwte.data(), dwpe.data(), e.batch, e.seq,
                              e.channels, e.vocab);
      ops::embedding_backward(gpu(), gdy.get(), gtokens.get(), gdwte.get(), gdwpe.get(), e.batch, e.seq,
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
// sizes 1 to 32; seq above a warp.
const AttentionCase kAttentionCases[] = {{1, 1, 4, 1},  {2, 7, 12, 3},  {3, 33, 64, 4},
                                         {5, 64, 32, 8}, {6, 17, 24, 2}, {2, 100, 48, 1}};

TEST_F(TransformerOps, AttentionMatchesCpu) {
  Rng rng(10);
  for (const AttentionCase& a : kAttentionCases) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.batch << " T=" << a.seq << " C=" << a.channels
                                      << " H=" << a.heads);
    const int64_t T = a.seq;
    const int64_t n_qkv = a.batch * T * 3 * a.channels, n_out = a.batch * T * a.channels;
    const int64_t n_probs = a.batch * a.heads * T * T;
    const auto qkv = random_normal(rng, n_qkv);
    const auto dout = random_normal(rng, n_out);
    std::vector<float> out(static_cast<size_t>(n_out)), probs(static_cast<size_t>(n_probs));
    std::vector<float> dqkv(static_cast<size_t>(n_qkv));
    ops::attention_forward(cpu(), qkv.data(), out.data(), probs.data(), a.batch, T, a.channels, a.heads);
    ops::attention_backward(cpu(), dout.data(), qkv.data(), probs.data(), dqkv.data(), a.batch, T, a.channels,
                            a.heads);
    DeviceArray<float> gqkv(gpu(), qkv), gout(gpu(), nans(n_out)), gprobs(gpu(), nans(n_probs));
    DeviceArray<float> gdout(gpu(), dout), gdqkv(gpu(), nans(n_qkv));
    ops::attention_forward(gpu(), gqkv.get(), gout.get(), gprobs.get(), a.batch, T, a.channels, a.heads);
    ops::attention_backward(gpu(), gdout.get(), gqkv.get(), gprobs.get(), gdqkv.get(), a.batch, T, a.channels,
                            a.heads);
    const auto got_probs = gprobs.to_host();
    EXPECT_TRUE(all_close(got_probs, probs, 1e-5));
    int64_t above_diagonal_nonzero = 0;
    for (int64_t r = 0; r < a.batch * a.heads * T; ++r) {
      for (int64_t j = r % T + 1; j < T; ++j) above_diagonal_nonzero += got_probs[r * T + j] != 0.0f;
    }
    EXPECT_EQ(above_diagonal_nonzero, 0);
    EXPECT_TRUE(norm_close(gout.to_host(), out, 1e-4));
    EXPECT_TRUE(norm_close(gdqkv.to_host(), dqkv, 1e-4));
  }
}

TEST_F(TransformerOps, AttentionWorkspaceBytesAreWhatTheOpsTake) {
  for (const AttentionCase& a : {AttentionCase{2, 64, 48, 4}, AttentionCase{8, 32, 32, 2}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.batch << " H=" << a.heads);
    auto fresh = Context::make_cuda(CudaOptions{});
    const size_t predicted = ops::attention_workspace_bytes(*fresh, a.batch, a.seq, a.channels, a.heads);
    Rng rng(11);
    const int64_t T = a.seq;
    DeviceArray<float> qkv(*fresh, random_normal(rng, a.batch * T * 3 * a.channels));
    DeviceArray<float> dout(*fresh, random_normal(rng, a.batch * T * a.channels));
    DeviceArray<float> out(*fresh, nans(a.batch * T * a.channels));
    DeviceArray<float> probs(*fresh, nans(a.batch * a.heads * T * T));
    DeviceArray<float> dqkv(*fresh, nans(a.batch * T * 3 * a.channels));
    const auto workspace = static_cast<int>(MemoryCategory::Workspace);
    const size_t before = fresh->allocator().stats().in_use_by[workspace];
    fresh->allocator().reset_peak();
    ops::attention_forward(*fresh, qkv.get(), out.get(), probs.get(), a.batch, T, a.channels, a.heads);
    ops::attention_backward(*fresh, dout.get(), qkv.get(), probs.get(), dqkv.get(), a.batch, T, a.channels,
                            a.heads);
    fresh->synchronize();
    EXPECT_GT(predicted, 0u);
    EXPECT_LE(fresh->allocator().stats().peak_by[workspace] - before, predicted);
  }
}

// ------------------------------------------------------------------------- Dropout

TEST_F(TransformerOps, DropoutDropsWhatTheHashSaysLikeCpu) {
  Rng rng(12);
  const int64_t samples = 5, per_sample = 1001;
  const int64_t n = samples * per_sample;
  // Global sample indices, as a micro-batch holds them: arbitrary and large.
  const std::vector<int64_t> ids = {3, 0, 1'000'000'007, 42, int64_t{1} << 40};
  const uint64_t key = dropout_key(1234, 17, 3);
  // Inputs without zeros, so a zero in the output means a drop.
  auto x = random_normal(rng, n);
  for (float& v : x) v = v >= 0.0f ? v + 0.1f : v - 0.1f;
  DeviceArray<int64_t> gids(gpu(), ids);
  for (const float p : {0.0f, 0.1f, 0.5f, 0.9f}) {
    SCOPED_TRACE(::testing::Message() << "p=" << p);
    std::vector<float> y(x.size()), dx(x.size());
    ops::dropout_forward(cpu(), x.data(), y.data(), samples, per_sample, ids.data(), key, p);
    ops::dropout_backward(cpu(), x.data(), dx.data(), samples, per_sample, ids.data(), key, p);
    DeviceArray<float> gx(gpu(), x), gy(gpu(), nans(n)), gdx(gpu(), nans(n));
    ops::dropout_forward(gpu(), gx.get(), gy.get(), samples, per_sample, gids.get(), key, p);
    ops::dropout_backward(gpu(), gx.get(), gdx.get(), samples, per_sample, gids.get(), key, p);
    const auto got = gy.to_host();
    const auto got_dx = gdx.to_host();
    int64_t mask_mismatch = 0, hash_mismatch = 0, dropped = 0;
    for (int64_t i = 0; i < n; ++i) {
      const bool kept = dropout_keeps(key, ids[static_cast<size_t>(i / per_sample)], i % per_sample, p);
      mask_mismatch += (got[i] == 0.0f) != (y[i] == 0.0f);
      mask_mismatch += (got_dx[i] == 0.0f) != (dx[i] == 0.0f);
      hash_mismatch += (got[i] != 0.0f) != kept;
      dropped += got[i] == 0.0f;
    }
    EXPECT_EQ(mask_mismatch, 0);
    EXPECT_EQ(hash_mismatch, 0);
    if (p == 0.0f) {
      EXPECT_TRUE(all_close(got, x, 0.0));  // p = 0 copies
    } else {
      // About p of the elements (5005 draws: 6 standard deviations is under 0.05).
      EXPECT_NEAR(static_cast<double>(dropped) / n, p, 0.05);
    }
    EXPECT_TRUE(all_close(got, y, 1e-6));
    EXPECT_TRUE(all_close(got_dx, dx, 1e-6));
    // In place, as ops.h allows; forward and backward agree.
    ops::dropout_forward(gpu(), gx.get(), gx.get(), samples, per_sample, gids.get(), key, p);
    EXPECT_TRUE(all_close(gx.to_host(), got, 0.0));
  }
}

}  // namespace
}  // namespace dtrain
