// The CPU transformer ops (Note [Transformer ops] in kernels/ops.h) against references
// written here: plain loops in double, by the definition of each op. Every backward is
// checked against central finite differences, in double, of the reference forward
// under a scalar loss L = sum(dy * y) with a random dy; parameter gradients must add
// into what was there. Ops that sum over rows are run on 1 and 2 threads and must give
// the same bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/dropout_hash.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr double kFdStep = 1e-5;

std::vector<float> random_normal(Rng& rng, size_t n, double scale = 1.0, double shift = 0.0) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(shift + scale * rng.normal());
  return v;
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// |got - ref| <= tol * (1 + |ref|) everywhere; reports the first few offenders.
::testing::AssertionResult all_close(const std::vector<float>& got, const std::vector<double>& ref,
                                     double tol = 1e-4) {
  if (got.size() != ref.size()) {
    return ::testing::AssertionFailure() << "size " << got.size() << " != reference size " << ref.size();
  }
  std::ostringstream bad;
  size_t failures = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
    if (!(err <= tol * (1.0 + std::fabs(ref[i])))) {
      if (failures < 5) bad << "\n  [" << i << "] got " << got[i] << ", want " << ref[i];
      ++failures;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << got.size() << " elements differ:" << bad.str();
}

::testing::AssertionResult same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return ::testing::AssertionFailure() << "sizes " << a.size() << " and " << b.size();
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) {
      return ::testing::AssertionFailure() << "element " << i << ": " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

// Central differences of a scalar function of `x` at every element of x, in double.
std::vector<double> finite_differences(const std::function<double(const std::vector<double>&)>& loss,
                                       std::vector<double> x) {
  std::vector<double> grad(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + kFdStep;
    const double up = loss(x);
    x[i] = keep - kFdStep;
    const double down = loss(x);
    x[i] = keep;
    grad[i] = (up - down) / (2.0 * kFdStep);
  }
  return grad;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

std::vector<double> plus(const std::vector<float>& base, const std::vector<double>& delta) {
  std::vector<double> out(base.size());
  for (size_t i = 0; i < base.size(); ++i) out[i] = base[i] + delta[i];
  return out;
}

// ---------------------------------------------------------------------- LayerNorm

std::vector<double> layernorm_ref(const std::vector<double>& x, const std::vector<double>& w,
                                  const std::vector<double>& b, int64_t rows, int64_t channels) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mu = 0.0, var = 0.0;
    for (int64_t c = 0; c < channels; ++c) mu += x[r * channels + c];
    mu /= static_cast<double>(channels);
    for (int64_t c = 0; c < channels; ++c) var += (x[r * channels + c] - mu) * (x[r * channels + c] - mu);
    var /= static_cast<double>(channels);  // biased, as torch.nn.LayerNorm
    for (int64_t c = 0; c < channels; ++c) {
      y[r * channels + c] = (x[r * channels + c] - mu) / std::sqrt(var + 1e-5) * w[c] + b[c];
    }
  }
  return y;
}

TEST(TransformerOpsLayerNorm, ForwardMatchesDefinitionAndSavesMeanAndRstd) {
  auto ctx = Context::make_cpu(2);
  Rng rng(1);
  for (auto [rows, channels] : {std::pair<int64_t, int64_t>{5, 7}, {300, 130}, {1, 1}}) {
    SCOPED_TRACE(::testing::Message() << "rows=" << rows << " channels=" << channels);
    const auto x = random_normal(rng, rows * channels, 2.0, 0.5);
    const auto w = random_normal(rng, channels), b = random_normal(rng, channels);
    std::vector<float> y(x.size(), kNaN), mean(rows, kNaN), rstd(rows, kNaN);
    ops::layernorm_forward(*ctx, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, channels);
    EXPECT_TRUE(all_close(y, layernorm_ref(to_double(x), to_double(w), to_double(b), rows, channels)));
    std::vector<double> mean_ref(rows), rstd_ref(rows);
    for (int64_t r = 0; r < rows; ++r) {
      double mu = 0.0, var = 0.0;
      for (int64_t c = 0; c < channels; ++c) mu += x[r * channels + c];
      mu /= static_cast<double>(channels);
      for (int64_t c = 0; c < channels; ++c) var += (x[r * channels + c] - mu) * (x[r * channels + c] - mu);
      mean_ref[r] = mu;
      rstd_ref[r] = 1.0 / std::sqrt(var / static_cast<double>(channels) + 1e-5);
    }
    EXPECT_TRUE(all_close(mean, mean_ref));
    EXPECT_TRUE(all_close(rstd, rstd_ref));
    // In place (y over x) gives the same values.
    std::vector<float> inplace = x;
    ops::layernorm_forward(*ctx, inplace.data(), w.data(), b.data(), inplace.data(), mean.data(), rstd.data(),
                           rows, channels);
    EXPECT_TRUE(same_bits(inplace, y));
  }
}

TEST(TransformerOpsLayerNorm, BackwardMatchesFiniteDifferencesAndAddsParameterGradients) {
  auto ctx = Context::make_cpu(2);
  Rng rng(2);
  const int64_t rows = 6, channels = 9;
  const auto x = random_normal(rng, rows * channels, 1.5, 0.3);
  const auto w = random_normal(rng, channels), b = random_normal(rng, channels);
  const auto dy = random_normal(rng, rows * channels);
  const auto dy_d = to_double(dy), x_d = to_double(x), w_d = to_double(w), b_d = to_double(b);
  const auto fd_x = finite_differences(
      [&](const std::vector<double>& v) { return dot(dy_d, layernorm_ref(v, w_d, b_d, rows, channels)); }, x_d);
  const auto fd_w = finite_differences(
      [&](const std::vector<double>& v) { return dot(dy_d, layernorm_ref(x_d, v, b_d, rows, channels)); }, w_d);
  const auto fd_b = finite_differences(
      [&](const std::vector<double>& v) { return dot(dy_d, layernorm_ref(x_d, w_d, v, rows, channels)); }, b_d);

  std::vector<float> y(x.size()), mean(rows), rstd(rows);
  ops::layernorm_forward(*ctx, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, channels);
  const auto dw0 = random_normal(rng, channels), db0 = random_normal(rng, channels);
  const auto dx0 = random_normal(rng, rows * channels);
  for (bool accumulate : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "accumulate_dx=" << accumulate);
    std::vector<float> dx = accumulate ? dx0 : std::vector<float>(x.size(), kNaN);
    std::vector<float> dw = dw0, db = db0;
    ops::layernorm_backward(*ctx, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                            db.data(), rows, channels, accumulate);
    EXPECT_TRUE(all_close(dx, accumulate ? plus(dx0, fd_x) : fd_x));
    EXPECT_TRUE(all_close(dw, plus(dw0, fd_w)));
    EXPECT_TRUE(all_close(db, plus(db0, fd_b)));
  }
  // dx over dy (the residual stream's buffer reused) gives the same values.
  std::vector<float> dx(x.size()), dw = dw0, db = db0, inplace = dy;
  ops::layernorm_backward(*ctx, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                          db.data(), rows, channels, false);
  dw = dw0, db = db0;
  ops::layernorm_backward(*ctx, inplace.data(), x.data(), w.data(), mean.data(), rstd.data(), inplace.data(),
                          dw.data(), db.data(), rows, channels, false);
  EXPECT_TRUE(same_bits(inplace, dx));
}

TEST(TransformerOpsLayerNorm, BackwardGivesTheSameBitsOnOneAndTwoThreads) {
  Rng rng(3);
  const int64_t rows = 301, channels = 200;  // above kParallelMinWork, several column blocks
  ASSERT_GE(rows * channels, cpu::kParallelMinWork);
  const auto x = random_normal(rng, rows * channels), w = random_normal(rng, channels),
             b = random_normal(rng, channels), dy = random_normal(rng, rows * channels);
  auto run = [&](int threads) {
    auto ctx = Context::make_cpu(threads);
    std::vector<float> y(x.size()), mean(rows), rstd(rows), dx(x.size()), dw(channels, 0.5f), db(channels, 0.25f);
    ops::layernorm_forward(*ctx, x.data(), w.data(), b.data(), y.data(), mean.data(), rstd.data(), rows, channels);
    ops::layernorm_backward(*ctx, dy.data(), x.data(), w.data(), mean.data(), rstd.data(), dx.data(), dw.data(),
                            db.data(), rows, channels, false);
    return std::vector<std::vector<float>>{y, mean, rstd, dx, dw, db};
  };
  const auto one = run(1), two = run(2);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(same_bits(one[i], two[i])) << "output " << i;
}

// --------------------------------------------------------------- GELU, add, scale

double gelu_ref(double x) {
  return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

TEST(TransformerOpsGelu, ForwardIsTheTanhFormAndBackwardMatchesFiniteDifferences) {
  auto ctx = Context::make_cpu(2);
  Rng rng(4);
  for (int64_t n : {int64_t{37}, int64_t{40000}}) {
    SCOPED_TRACE(::testing::Message() << "n=" << n);
    auto x = random_normal(rng, n, 3.0);
    x[0] = 0.0f, x[1] = 12.0f, x[2] = -12.0f, x[3] = 1.0f;
    const auto dy = random_normal(rng, n);
    std::vector<double> y_ref(n), dx_ref(n);
    for (int64_t i = 0; i < n; ++i) {
      y_ref[i] = gelu_ref(x[i]);
      dx_ref[i] = dy[i] * (gelu_ref(x[i] + kFdStep) - gelu_ref(x[i] - kFdStep)) / (2.0 * kFdStep);
    }
    std::vector<float> y(n, kNaN), dx(n, kNaN);
    ops::gelu_forward(*ctx, x.data(), y.data(), n);
    ops::gelu_backward(*ctx, x.data(), dy.data(), dx.data(), n);
    EXPECT_TRUE(all_close(y, y_ref, 1e-5));
    EXPECT_TRUE(all_close(dx, dx_ref, 1e-5));
    EXPECT_NEAR(y[3], 0.8411919906082768, 1e-6);  // torch.nn.functional.gelu(1.0, approximate='tanh')
    // In place: y over x, dx over dy.
    std::vector<float> xi = x, dyi = dy;
    ops::gelu_backward(*ctx, x.data(), dyi.data(), dyi.data(), n);
    ops::gelu_forward(*ctx, xi.data(), xi.data(), n);
    EXPECT_TRUE(same_bits(xi, y));
    EXPECT_TRUE(same_bits(dyi, dx));
  }
}

TEST(TransformerOpsElementwise, AddAndScaleIncludingInPlace) {
  auto ctx = Context::make_cpu(2);
  Rng rng(5);
  for (int64_t n : {int64_t{13}, int64_t{50000}}) {
    const auto a = random_normal(rng, n), b = random_normal(rng, n);
    std::vector<float> y(n, kNaN);
    ops::add(*ctx, a.data(), b.data(), y.data(), n);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], a[i] + b[i]) << i;
    std::vector<float> acc = a;
    ops::add(*ctx, acc.data(), b.data(), acc.data(), n);  // y += b
    EXPECT_TRUE(same_bits(acc, y));
    acc = b;
    ops::add(*ctx, a.data(), acc.data(), acc.data(), n);
    EXPECT_TRUE(same_bits(acc, y));
    ops::scale(*ctx, acc.data(), n, -0.5f);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(acc[i], y[i] * -0.5f) << i;
  }
}

// ---------------------------------------------------------------------- Attention

struct AttentionRef {
  std::vector<double> out, probs;
};

// out[b, t, h*hs + d] = sum_{s <= t} softmax_s(q_t . k_s / sqrt(hs)) v_s[d], head by head.
AttentionRef attention_ref(const std::vector<double>& qkv, int64_t B, int64_t T, int64_t C, int64_t H) {
  const int64_t hs = C / H;
  AttentionRef r{std::vector<double>(B * T * C, 0.0), std::vector<double>(B * H * T * T, 0.0)};
  auto at = [&](int64_t b, int64_t t, int64_t part, int64_t h, int64_t d) {
    return qkv[(b * T + t) * 3 * C + part * C + h * hs + d];
  };
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> score(t + 1);
        double mx = -1e300;
        for (int64_t s = 0; s <= t; ++s) {
          double q_dot_k = 0.0;
          for (int64_t d = 0; d < hs; ++d) q_dot_k += at(b, t, 0, h, d) * at(b, s, 1, h, d);
          score[s] = q_dot_k / std::sqrt(static_cast<double>(hs));
          mx = std::max(mx, score[s]);
        }
        double sum = 0.0;
        for (double& e : score) sum += (e = std::exp(e - mx));
        for (int64_t s = 0; s <= t; ++s) {
          const double p = score[s] / sum;
          r.probs[((b * H + h) * T + t) * T + s] = p;
          for (int64_t d = 0; d < hs; ++d) r.out[(b * T + t) * C + h * hs + d] += p * at(b, s, 2, h, d);
        }
      }
    }
  }
  return r;
}

TEST(TransformerOpsAttention, ForwardMatchesDefinitionWithZeroProbsAboveTheDiagonal) {
  auto ctx = Context::make_cpu(2);
  Rng rng(6);
  struct Shape {
    int64_t B, T, C, H;
  };
  for (const Shape& s : {Shape{2, 5, 8, 2}, Shape{3, 33, 24, 3}, Shape{1, 1, 4, 1}, Shape{2, 17, 12, 4}}) {
    SCOPED_TRACE(::testing::Message() << "B=" << s.B << " T=" << s.T << " C=" << s.C << " H=" << s.H);
    const auto qkv = random_normal(rng, s.B * s.T * 3 * s.C);
    std::vector<float> out(s.B * s.T * s.C, kNaN), probs(s.B * s.H * s.T * s.T, kNaN);
    ops::attention_forward(*ctx, qkv.data(), out.data(), probs.data(), s.B, s.T, s.C, s.H);
    const AttentionRef ref = attention_ref(to_double(qkv), s.B, s.T, s.C, s.H);
    EXPECT_TRUE(all_close(out, ref.out));
    EXPECT_TRUE(all_close(probs, ref.probs));
    for (int64_t bh = 0; bh < s.B * s.H; ++bh) {
      for (int64_t i = 0; i < s.T; ++i) {
        for (int64_t j = i + 1; j < s.T; ++j) ASSERT_EQ(probs[(bh * s.T + i) * s.T + j], 0.0f);
      }
    }
  }
}

TEST(TransformerOpsAttention, BackwardMatchesFiniteDifferences) {
  auto ctx = Context::make_cpu(2);
  Rng rng(7);
  const int64_t B = 2, T = 5, C = 8, H = 2;
  const auto qkv = random_normal(rng, B * T * 3 * C);
  const auto dout = random_normal(rng, B * T * C);
  const auto dout_d = to_double(dout);
  const auto fd = finite_differences(
      [&](const std::vector<double>& v) { return dot(dout_d, attention_ref(v, B, T, C, H).out); }, to_double(qkv));
  std::vector<float> out(B * T * C), probs(B * H * T * T), dqkv(qkv.size(), kNaN);
  ops::attention_forward(*ctx, qkv.data(), out.data(), probs.data(), B, T, C, H);
  ops::attention_backward(*ctx, dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), B, T, C, H);
  EXPECT_TRUE(all_close(dqkv, fd));
  EXPECT_GE(ops::attention_workspace_bytes(*ctx, B, T, C, H), size_t{T * T * sizeof(float)});
}

TEST(TransformerOpsAttention, IsCausalAFutureKeyOrValueChangesNoEarlierOutput) {
  auto ctx = Context::make_cpu(2);
  Rng rng(8);
  const int64_t B = 2, T = 9, C = 12, H = 3, future = 6;
  const auto qkv = random_normal(rng, B * T * 3 * C);
  auto changed = qkv;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t f = C; f < 3 * C; ++f) changed[(b * T + future) * 3 * C + f] += 3.0f;  // its key and value
  }
  std::vector<float> out(B * T * C), probs(B * H * T * T), out2(out.size()), probs2(probs.size());
  ops::attention_forward(*ctx, qkv.data(), out.data(), probs.data(), B, T, C, H);
  ops::attention_forward(*ctx, changed.data(), out2.data(), probs2.data(), B, T, C, H);
  bool later_changed = false;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t c = 0; c < C; ++c) {
        const int64_t i = (b * T + t) * C + c;
        if (t < future) {
          ASSERT_EQ(out[i], out2[i]) << "b=" << b << " t=" << t << " c=" << c;
        } else if (out[i] != out2[i]) {
          later_changed = true;
        }
      }
    }
  }
  EXPECT_TRUE(later_changed);
  // And backward: a loss on the earlier outputs gives the future key and value no gradient.
  std::vector<float> dout(out.size(), 0.0f), dqkv(qkv.size(), kNaN);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t i = 0; i < future * C; ++i) dout[b * T * C + i] = static_cast<float>(rng.normal());
  }
  ops::attention_backward(*ctx, dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), B, T, C, H);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = future; t < T; ++t) {
      for (int64_t f = 0; f < 3 * C; ++f) ASSERT_EQ(dqkv[(b * T + t) * 3 * C + f], 0.0f) << "t=" << t << " f=" << f;
    }
  }
}

TEST(TransformerOpsAttention, GivesTheSameBitsOnOneAndTwoThreads) {
  Rng rng(9);
  const int64_t B = 3, T = 40, C = 32, H = 4;  // above kParallelMinWork
  const auto qkv = random_normal(rng, B * T * 3 * C), dout = random_normal(rng, B * T * C);
  auto run = [&](int threads) {
    auto ctx = Context::make_cpu(threads);
    std::vector<float> out(B * T * C), probs(B * H * T * T), dqkv(qkv.size());
    ops::attention_forward(*ctx, qkv.data(), out.data(), probs.data(), B, T, C, H);
    ops::attention_backward(*ctx, dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), B, T, C, H);
    return std::vector<std::vector<float>>{out, probs, dqkv};
  };
  const auto one = run(1), two = run(2), three = run(3);
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_TRUE(same_bits(one[i], two[i])) << "output " << i;
    EXPECT_TRUE(same_bits(one[i], three[i])) << "output " << i;
  }
}

TEST(TransformerOpsAttention, WorkspaceIsOneTByTPerPairInFlightWithinTheBudget) {
  // A pure function of the shape: the memory model and the op agree on any backend.
  EXPECT_EQ(cpu::attention_workspace_bytes(2, 10, 8, 2), 4u * 10 * 10 * sizeof(float));
  EXPECT_EQ(cpu::attention_workspace_bytes(8, 10, 8, 12),
            static_cast<size_t>(cpu::kAttentionMaxSlots) * 10 * 10 * sizeof(float));
  EXPECT_LE(cpu::attention_workspace_bytes(8, 1024, 768, 12), cpu::kAttentionWorkspaceBudget);
  EXPECT_EQ(cpu::attention_workspace_bytes(1, 8192, 768, 12), size_t{8192} * 8192 * sizeof(float));  // at least one
}

// ---------------------------------------------------------------------- Embedding

struct EmbeddingCase {
  int64_t B, T, C, V, P;  // P: rows of wpe (>= T)
};

std::vector<double> embedding_ref(const std::vector<int32_t>& tokens, const std::vector<double>& wte,
                                  const std::vector<double>& wpe, const EmbeddingCase& e) {
  std::vector<double> y(e.B * e.T * e.C);
  for (int64_t b = 0; b < e.B; ++b) {
    for (int64_t t = 0; t < e.T; ++t) {
      for (int64_t c = 0; c < e.C; ++c) {
        y[(b * e.T + t) * e.C + c] = wte[tokens[b * e.T + t] * e.C + c] + wpe[t * e.C + c];
      }
    }
  }
  return y;
}

TEST(TransformerOpsEmbedding, ForwardAndBackwardMatchDefinitionAndFiniteDifferences) {
  auto ctx = Context::make_cpu(2);
  Rng rng(10);
  const EmbeddingCase e{3, 4, 5, 4, 6};  // 12 tokens from a vocabulary of 4: repeats
  std::vector<int32_t> tokens(e.B * e.T);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(e.V - 1));  // token V-1 never appears
  tokens[0] = tokens[5] = tokens[11] = 2;
  const auto wte = random_normal(rng, e.V * e.C), wpe = random_normal(rng, e.P * e.C);
  const auto dy = random_normal(rng, e.B * e.T * e.C);
  std::vector<float> y(e.B * e.T * e.C, kNaN);
  ops::embedding_forward(*ctx, tokens.data(), wte.data(), wpe.data(), y.data(), e.B, e.T, e.C, e.V);
  EXPECT_TRUE(all_close(y, embedding_ref(tokens, to_double(wte), to_double(wpe), e), 1e-7));  // one float add

  const auto dy_d = to_double(dy), wte_d = to_double(wte), wpe_d = to_double(wpe);
  const auto fd_wte = finite_differences(
      [&](const std::vector<double>& v) { return dot(dy_d, embedding_ref(tokens, v, wpe_d, e)); }, wte_d);
  const auto fd_wpe = finite_differences(
      [&](const std::vector<double>& v) { return dot(dy_d, embedding_ref(tokens, wte_d, v, e)); }, wpe_d);
  const auto dwte0 = random_normal(rng, wte.size()), dwpe0 = random_normal(rng, wpe.size());
  std::vector<float> dwte = dwte0, dwpe = dwpe0;
  ops::embedding_backward(*ctx, dy.data(), tokens.data(), dwte.data(), dwpe.data(), e.B, e.T, e.C, e.V);
  EXPECT_TRUE(all_close(dwte, plus(dwte0, fd_wte)));
  EXPECT_TRUE(all_close(dwpe, plus(dwpe0, fd_wpe)));
  // The unused token's row and the positions past T keep their bits.
  for (int64_t c = 0; c < e.C; ++c) EXPECT_EQ(dwte[(e.V - 1) * e.C + c], dwte0[(e.V - 1) * e.C + c]);
  for (int64_t i = e.T * e.C; i < e.P * e.C; ++i) EXPECT_EQ(dwpe[i], dwpe0[i]);
  EXPECT_EQ(ops::embedding_backward_workspace_bytes(*ctx, e.B, e.T, e.C, e.V), 0u);
}

TEST(TransformerOpsEmbedding, BackwardGivesTheSameBitsOnOneAndTwoThreads) {
  Rng rng(11);
  const EmbeddingCase e{4, 64, 200, 7, 64};  // many repeats; above kParallelMinWork
  std::vector<int32_t> tokens(e.B * e.T);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(e.V));
  const auto dy = random_normal(rng, e.B * e.T * e.C);
  const auto dwte0 = random_normal(rng, e.V * e.C), dwpe0 = random_normal(rng, e.P * e.C);
  auto run = [&](int threads) {
    auto ctx = Context::make_cpu(threads);
    std::vector<float> dwte = dwte0, dwpe = dwpe0;
    ops::embedding_backward(*ctx, dy.data(), tokens.data(), dwte.data(), dwpe.data(), e.B, e.T, e.C, e.V);
    return std::vector<std::vector<float>>{dwte, dwpe};
  };
  const auto one = run(1), two = run(2);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(same_bits(one[i], two[i])) << "output " << i;
}

TEST(TransformerOpsEmbedding, TokenOutsideTheVocabularyIsADataErrorBeforeAnyOutputMoves) {
  auto ctx = Context::make_cpu(2);
  const int64_t B = 2, T = 3, C = 4, V = 5;
  const std::vector<float> wte(V * C, 1.0f), wpe(T * C, 1.0f), dy(B * T * C, 1.0f);
  for (int32_t bad : {-1, 5, 1000}) {
    std::vector<int32_t> tokens{0, 1, 2, 3, bad, 4};  // sequence 1, position 1
    std::vector<float> y(B * T * C, 7.0f), dwte(V * C, 7.0f), dwpe(T * C, 7.0f);
    for (bool forward : {true, false}) {
      try {
        if (forward) {
          ops::embedding_forward(*ctx, tokens.data(), wte.data(), wpe.data(), y.data(), B, T, C, V);
        } else {
          ops::embedding_backward(*ctx, dy.data(), tokens.data(), dwte.data(), dwpe.data(), B, T, C, V);
        }
        ADD_FAILURE() << "no DataError for token " << bad;
      } catch (const DataError& err) {
        const std::string msg = err.what();
        EXPECT_NE(msg.find("token " + std::to_string(bad)), std::string::npos) << msg;
        EXPECT_NE(msg.find("position 1"), std::string::npos) << msg;
        EXPECT_NE(msg.find("sequence 1"), std::string::npos) << msg;
        EXPECT_NE(msg.find(std::to_string(V)), std::string::npos) << msg;
      }
    }
    EXPECT_EQ(y, std::vector<float>(B * T * C, 7.0f));
    EXPECT_EQ(dwte, std::vector<float>(V * C, 7.0f));
    EXPECT_EQ(dwpe, std::vector<float>(T * C, 7.0f));
  }
}

// ------------------------------------------------------------------------ Dropout

TEST(TransformerOpsDropout, KeepsByTheHashScalesByOneOverOneMinusPAndBackwardUsesTheSameMask) {
  auto ctx = Context::make_cpu(2);
  Rng rng(12);
  const int64_t samples = 4, per_sample = 25000, n = samples * per_sample;
  const float p = 0.3f;
  const uint64_t key = dropout_key(42, 7, 3);
  const std::vector<int64_t> ids{11, 5, 1000003, 0};
  const auto x = random_normal(rng, n, 1.0, 5.0);  // never 0, so y == 0 means dropped
  const auto dy = random_normal(rng, n, 1.0, 5.0);
  std::vector<float> y(n, kNaN), dx(n, kNaN);
  ops::dropout_forward(*ctx, x.data(), y.data(), samples, per_sample, ids.data(), key, p);
  ops::dropout_backward(*ctx, dy.data(), dx.data(), samples, per_sample, ids.data(), key, p);
  std::vector<double> y_ref(n), dx_ref(n);
  int64_t dropped = 0;
  for (int64_t s = 0; s < samples; ++s) {
    for (int64_t i = 0; i < per_sample; ++i) {
      const int64_t k = s * per_sample + i;
      const bool keep = dropout_keeps(key, ids[s], i, p);
      y_ref[k] = keep ? x[k] / (1.0 - p) : 0.0;
      dx_ref[k] = keep ? dy[k] / (1.0 - p) : 0.0;
      dropped += keep ? 0 : 1;
      ASSERT_EQ(y[k] == 0.0f, dx[k] == 0.0f) << "forward and backward masks differ at " << k;
    }
  }
  EXPECT_TRUE(all_close(y, y_ref, 1e-6));
  EXPECT_TRUE(all_close(dx, dx_ref, 1e-6));
  // Hoeffding: if the hash behaves as independent uniforms, P(|dropped/n - p| >= eps)
  // <= 2 exp(-2 n eps^2); eps for a 1e-9 chance of a false alarm.
  const double eps = std::sqrt(std::log(2.0 / 1e-9) / (2.0 * static_cast<double>(n)));
  EXPECT_NEAR(static_cast<double>(dropped) / static_cast<double>(n), p, eps);
  // The backward is the derivative of sum(dy * y): finite differences of the reference.
  const int64_t small = 50;
  const auto fd = finite_differences(
      [&](const std::vector<double>& v) {
        double loss = 0.0;
        for (int64_t i = 0; i < small; ++i) loss += dy[i] * (dropout_keeps(key, ids[0], i, p) ? v[i] / (1.0 - p) : 0.0);
        return loss;
      },
      std::vector<double>(x.begin(), x.begin() + small));
  EXPECT_TRUE(all_close(std::vector<float>(dx.begin(), dx.begin() + small), fd));
  // In place gives the same bits.
  std::vector<float> inplace = x;
  ops::dropout_forward(*ctx, inplace.data(), inplace.data(), samples, per_sample, ids.data(), key, p);
  EXPECT_TRUE(same_bits(inplace, y));
  inplace = dy;
  ops::dropout_backward(*ctx, inplace.data(), inplace.data(), samples, per_sample, ids.data(), key, p);
  EXPECT_TRUE(same_bits(inplace, dx));
  // Another key (another step or layer) drops other elements.
  std::vector<float> other(n);
  ops::dropout_forward(*ctx, x.data(), other.data(), samples, per_sample, ids.data(), dropout_key(42, 8, 3), p);
  EXPECT_FALSE(same_bits(other, y));
}

TEST(TransformerOpsDropout, TheMaskIsTheSamplesWhereverItSitsInTheBatch) {
  auto ctx = Context::make_cpu(2);
  Rng rng(13);
  const int64_t per_sample = 3000;
  const uint64_t key = dropout_key(1, 2, 3);
  const auto row = random_normal(rng, per_sample, 1.0, 4.0);
  // Sample 77 first in a batch of two, then last in a batch of three.
  const std::vector<int64_t> first{77, 12}, last{9, 12, 77};
  std::vector<float> x2(2 * per_sample), x3(3 * per_sample);
  for (int64_t i = 0; i < per_sample; ++i) x2[i] = x3[2 * per_sample + i] = row[i];
  std::vector<float> y2(x2.size()), y3(x3.size());
  ops::dropout_forward(*ctx, x2.data(), y2.data(), 2, per_sample, first.data(), key, 0.5f);
  ops::dropout_forward(*ctx, x3.data(), y3.data(), 3, per_sample, last.data(), key, 0.5f);
  EXPECT_TRUE(same_bits(std::vector<float>(y2.begin(), y2.begin() + per_sample),
                        std::vector<float>(y3.begin() + 2 * per_sample, y3.end())));
}

TEST(TransformerOpsDropout, ZeroProbabilityIsTheIdentity) {
  auto ctx = Context::make_cpu(2);
  Rng rng(14);
  const int64_t samples = 3, per_sample = 20000;
  const std::vector<int64_t> ids{1, 2, 3};
  const auto x = random_normal(rng, samples * per_sample);
  std::vector<float> y(x.size(), kNaN), dx(x.size(), kNaN), inplace = x;
  ops::dropout_forward(*ctx, x.data(), y.data(), samples, per_sample, ids.data(), 99, 0.0f);
  ops::dropout_backward(*ctx, x.data(), dx.data(), samples, per_sample, ids.data(), 99, 0.0f);
  ops::dropout_forward(*ctx, inplace.data(), inplace.data(), samples, per_sample, ids.data(), 99, 0.0f);
  EXPECT_TRUE(same_bits(y, x));
  EXPECT_TRUE(same_bits(dx, x));
  EXPECT_TRUE(same_bits(inplace, x));
}

// ------------------------------------------------------ softmax_cross_entropy's new arguments

TEST(TransformerOpsCrossEntropy, LossWeightScalesTheStatistics) {
  auto ctx = Context::make_cpu(2);
  Rng rng(15);
  const int64_t batch = 40, classes = 11;
  const auto z = random_normal(rng, batch * classes, 2.0);
  std::vector<int32_t> labels(batch);
  for (auto& l : labels) l = static_cast<int32_t>(rng.below(classes));
  double loss_ref = 0.0, correct_ref = 0.0;
  for (int64_t r = 0; r < batch; ++r) {
    double mx = z[r * classes];
    int64_t arg = 0;
    for (int64_t c = 1; c < classes; ++c) {
      if (z[r * classes + c] > mx) mx = z[r * classes + c], arg = c;
    }
    double sum = 0.0;
    for (int64_t c = 0; c < classes; ++c) sum += std::exp(z[r * classes + c] - mx);
    loss_ref += std::log(sum) + mx - z[r * classes + labels[r]];
    correct_ref += arg == labels[r] ? 1.0 : 0.0;
  }
  double plain[2] = {0.0, 0.0}, weighted[2] = {1.0, 2.0};
  const double weight = 1.0 / 7.0;  // a language model's 1/T
  ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), batch, classes, 1.0f, nullptr, plain);
  ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), batch, classes, 1.0f, nullptr, weighted, weight);
  EXPECT_NEAR(plain[0], loss_ref, 1e-4 * (1.0 + loss_ref));
  EXPECT_EQ(plain[1], correct_ref);
  EXPECT_DOUBLE_EQ(weighted[0], 1.0 + weight * plain[0]);
  EXPECT_DOUBLE_EQ(weighted[1], 2.0 + weight * plain[1]);
}

TEST(TransformerOpsCrossEntropy, GradientOverTheLogitsGivesTheSameBitsAsSeparateBuffers) {
  auto ctx = Context::make_cpu(2);
  Rng rng(16);
  for (auto [batch, classes] : {std::pair<int64_t, int64_t>{7, 13}, {300, 211}}) {
    const auto z = random_normal(rng, batch * classes, 3.0);
    std::vector<int32_t> labels(batch);
    for (auto& l : labels) l = static_cast<int32_t>(rng.below(classes));
    std::vector<float> dz(z.size(), kNaN), inplace = z;
    double separate[2] = {0.0, 0.0}, same[2] = {0.0, 0.0};
    ops::softmax_cross_entropy(*ctx, z.data(), labels.data(), batch, classes, 0.25f, dz.data(), separate, 0.5);
    ops::softmax_cross_entropy(*ctx, inplace.data(), labels.data(), batch, classes, 0.25f, inplace.data(), same,
                               0.5);
    EXPECT_TRUE(same_bits(inplace, dz));
    EXPECT_EQ(separate[0], same[0]);
    EXPECT_EQ(separate[1], same[1]);
  }
}

}  // namespace
}  // namespace dtrain
