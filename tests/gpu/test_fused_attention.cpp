// The fused attention of the CUDA backend (Note [Fused attention],
// kernels/cuda/fused_attention.h: cuDNN's SDPA in bf16) against the CPU's attention,
// the oracle, within a bound derived below; that it takes GPT-2's shape on a GPU that
// can; that it repeats bit for bit; and that it declines what it should.
//
// The bound. Every input is the same bf16 value on both sides, so products are exact
// in fp32 and the two differ only by where each rounds to bf16 and by the order of fp32
// sums. With q, k, v, dO the heads' rows, s = 1/sqrt(hs), u = 2^-8 (bf16's unit
// roundoff), gamma_n the fp32 sum bound (tests/gpu/stored_types.h) and P the exact
// softmax (computed here in double):
//   scores   S_il = s q_i.k_l within sigma_il = 2 gamma_{hs+1} s sum_d |q_id k_ld| on
//            each side, so the softmax's P_ij moves by at most 2 P_ij max_l sigma_il,
//            and its fp32 evaluation adds eps_ij = (16 + 2 |S_ij - m_i|) 2^-24 of P_ij
//            (as the unfused test derives).
//   forward  the CPU rounds P once, normalised (relative error u); the fused kernel
//            rounds exp(S - running max) to bf16 for the P V product (u) and divides
//            by the row sum after. So out_i differs by at most
//              sum_j P_ij |v_j| (2u + 4 sigma_i + 2 eps_ij + 2 gamma_T).
//   stats    the row's log-sum-exp log sum_j exp(S_ij) within max_l sigma_il plus
//            (T + 16) 2^-24 (1 + |lse|) of fp32 sums, exp and log.
//   backward both sides' P differ by rho_ij = P_ij (2u + 5 sigma_i + 4 eps_ij): the
//            CPU's stored P against the fused kernel's recomputed exp(S - lse),
//            rounded for dV. dP_ij = dO_i.v_j is within e_ij = 2 gamma_hs
//            sum_d |dO_id v_jd|. D_i is sum_j P_ij dP_ij on the CPU and dO_i.O_i from
//            the stored (bf16) fused output on the GPU: they differ by at most
//              dD_i = sum_d |dO_id| (out bound_id + u |O_id|) + sum_j P_ij ((u +
//                     2 sigma_i + eps_ij) |dP_ij| + e_ij) + gamma_hs sum_d |dO_id O_id|
//                     + 2^-21 |D_i|.
//            dS_ij = s P_ij (dP_ij - D_i): the GPU's from its fp32 P (within u +
//            5 sigma_i + 2 eps_ij of the CPU's rounded one), rounded to bf16 before
//            dQ and dK (u |dS_ij|); the CPU's kept in fp32. So within
//              dS~_ij = s P_ij (1 + 2u) ((u + 5 sigma_i + 2 eps_ij) |dP_ij - D_i|
//                       + 2 e_ij + dD_i + 2^-21 (|dP_ij| + |D_i|)) + u |dS_ij|,
//            and dV_j, dQ_i, dK_j by
//              sum_i rho_ij |dO_i| + 2 gamma_T sum_i P_ij |dO_i|,
//              sum_j dS~_ij |k_j| + 2 gamma_{T+2} sum_j |dS_ij k_j|,
//              sum_i dS~_ij |q_i| + 2 gamma_{T+2} sum_i |dS_ij q_i|
//            (T+2: the scale s may be applied to an operand or to the result).
// bf16_close adds the last rounding of each stored output (one bf16 ulp).
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
#include "kernels/cuda/cuda_backend.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/stored_types.h"

namespace dtrain {
namespace {

using testing::DeviceArray;
using testing::gamma_n;
using testing::random_normal;
using testing::stored;
using testing::values;

struct Shape {
  int64_t batch, seq, channels, heads;
};

// Head sizes 32, 64 and 128; one head and many; seq a multiple of 8 from 8 to 256.
const Shape kShapes[] = {{2, 64, 128, 2}, {1, 8, 64, 1}, {3, 72, 96, 3}, {2, 256, 256, 4}, {1, 128, 512, 4}};

const FusedAttention& fused_of(Context& ctx) { return dynamic_cast<CudaBackend&>(ctx.backend()).fused_attention(); }

// Skips unless fused attention can run here at all: a build with the cuDNN frontend
// and a GPU of compute capability 8.0 or more (cuDNN's SDPA needs Ampere or later).
class FusedAttentionTest : public testing::CudaAgainstCpuTest {
 protected:
  void SetUp() override {
    CudaAgainstCpuTest::SetUp();
    if (IsSkipped()) return;
    const std::string why = fused_of(gpu()).declined({1, 64, 128, 2}, DType::kBF16);
    if (why.find("no cuDNN frontend") != std::string::npos) GTEST_SKIP() << why;
    int major = 0;
    ASSERT_EQ(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), cudaSuccess);
    if (major < 8) GTEST_SKIP() << "cuDNN's fused attention needs compute capability 8.0 or more; this GPU has " << major;
  }
};

struct Bounds {
  std::vector<double> out, stats_error, dqkv;
  std::vector<double> lse;  // each row's exact log-sum-exp
};

// The file comment's bounds, in double from the inputs. probs_cpu: the CPU's stored
// probabilities; out_gpu: the fused forward's stored output (backward's O).
Bounds fused_bounds(const Shape& a, const std::vector<float>& qkv, const std::vector<float>& dout,
                    const std::vector<float>& probs_cpu, const std::vector<float>& out_gpu) {
  const int64_t B = a.batch, T = a.seq, C = a.channels, H = a.heads, hs = C / H, ld = 3 * C;
  const double s = 1.0 / std::sqrt(static_cast<double>(static_cast<float>(hs)));
  const double u = std::ldexp(1.0, -8), f = std::ldexp(1.0, -24);
  Bounds r{std::vector<double>(dout.size(), 0.0), std::vector<double>(static_cast<size_t>(B * H * T), 0.0),
           std::vector<double>(qkv.size(), 0.0), std::vector<double>(static_cast<size_t>(B * H * T), 0.0)};
  const auto n = static_cast<size_t>(T * T);
  std::vector<double> p(n), eps(n), dp(n), e(n), ds(n), ds_err(n), sigma(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t h = 0; h < H; ++h) {
      const float* q = qkv.data() + b * T * ld + h * hs;
      const float* k = q + C;
      const float* v = q + 2 * C;
      const float* dO = dout.data() + b * T * C + h * hs;
      const float* O = out_gpu.data() + b * T * C + h * hs;
      const float* pc = probs_cpu.data() + (b * H + h) * T * T;
      const int64_t row0 = (b * H + h) * T;
      const auto at_qkv = [&](int64_t t, int64_t third, int64_t d) { return b * T * ld + t * ld + third * C + h * hs + d; };
      // Forward: P, its error terms, out's bound and the statistics.
      for (int64_t i = 0; i < T; ++i) {
        double m = -std::numeric_limits<double>::infinity(), max_sigma = 0.0;
        std::vector<double> score(static_cast<size_t>(i + 1));
        for (int64_t l = 0; l <= i; ++l) {
          const auto [dot, mag] = testing::dot_magnitude(q + i * ld, k + l * ld, hs);
          score[l] = s * dot;
          m = std::max(m, score[l]);
          max_sigma = std::max(max_sigma, 2.0 * gamma_n(hs + 1) * s * mag);
        }
        double z = 0.0;
        for (int64_t l = 0; l <= i; ++l) z += std::exp(score[l] - m);
        sigma[i] = max_sigma;
        for (int64_t j = 0; j < T; ++j) {
          p[i * T + j] = j <= i ? std::exp(score[j] - m) / z : 0.0;
          eps[i * T + j] = j <= i ? (16.0 + 2.0 * std::fabs(score[j] - m)) * f : 0.0;
        }
        r.lse[row0 + i] = m + std::log(z);
        r.stats_error[row0 + i] = max_sigma + static_cast<double>(T + 16) * f * (1.0 + std::fabs(r.lse[row0 + i]));
        for (int64_t d = 0; d < hs; ++d) {
          double bound = 0.0;
          for (int64_t j = 0; j <= i; ++j) {
            bound += p[i * T + j] * std::fabs(v[j * ld + d]) *
                     (2.0 * u + 4.0 * max_sigma + 2.0 * eps[i * T + j] + 2.0 * gamma_n(T));
          }
          r.out[b * T * C + i * C + h * hs + d] = bound;
        }
      }
      // Backward.
      for (int64_t i = 0; i < T; ++i) {
        double D = 0.0, dD = 0.0;
        for (int64_t j = 0; j < T; ++j) {
          const auto [dot, mag] = testing::dot_magnitude(dO + i * C, v + j * ld, hs);
          dp[i * T + j] = dot;
          e[i * T + j] = 2.0 * gamma_n(hs) * mag;
          if (j <= i) {
            D += pc[i * T + j] * dot;
            dD += p[i * T + j] * ((u + 2.0 * sigma[i] + eps[i * T + j]) * std::fabs(dot) + e[i * T + j]);
          }
        }
        double o_mag = 0.0;
        for (int64_t d = 0; d < hs; ++d) {
          const double o = O[i * C + d];
          dD += std::fabs(dO[i * C + d]) * (r.out[b * T * C + i * C + h * hs + d] + u * std::fabs(o));
          o_mag += std::fabs(dO[i * C + d] * o);
        }
        dD += gamma_n(hs) * o_mag + 4.0 * std::ldexp(1.0, -23) * std::fabs(D);
        for (int64_t j = 0; j < T; ++j) {
          const double pij = p[i * T + j];
          ds[i * T + j] = j <= i ? s * pc[i * T + j] * (dp[i * T + j] - D) : 0.0;
          ds_err[i * T + j] =
              s * pij * (1.0 + 2.0 * u) *
                  ((u + 5.0 * sigma[i] + 2.0 * eps[i * T + j]) * std::fabs(dp[i * T + j] - D) + 2.0 * e[i * T + j] +
                   dD + 4.0 * std::ldexp(1.0, -23) * (std::fabs(dp[i * T + j]) + std::fabs(D))) +
              u * std::fabs(ds[i * T + j]);
        }
      }
      for (int64_t d = 0; d < hs; ++d) {
        for (int64_t i = 0; i < T; ++i) {  // dQ_i
          double err = 0.0, mag = 0.0;
          for (int64_t j = 0; j <= i; ++j) {
            err += ds_err[i * T + j] * std::fabs(k[j * ld + d]);
            mag += std::fabs(ds[i * T + j] * k[j * ld + d]);
          }
          r.dqkv[at_qkv(i, 0, d)] = err + 2.0 * gamma_n(T + 2) * mag;
        }
        for (int64_t j = 0; j < T; ++j) {  // dK_j and dV_j
          double err = 0.0, mag = 0.0, err_v = 0.0;
          for (int64_t i = j; i < T; ++i) {
            err += ds_err[i * T + j] * std::fabs(q[i * ld + d]);
            mag += std::fabs(ds[i * T + j] * q[i * ld + d]);
            const double rho = 2.0 * u + 5.0 * sigma[i] + 4.0 * eps[i * T + j];
            err_v += p[i * T + j] * (1.0 + 2.0 * u) * std::fabs(dO[i * C + d]) * (rho + 2.0 * gamma_n(T));
          }
          r.dqkv[at_qkv(j, 1, d)] = err + 2.0 * gamma_n(T + 2) * mag;
          r.dqkv[at_qkv(j, 2, d)] = err_v;
        }
      }
    }
  }
  return r;
}

TEST_F(FusedAttentionTest, TakesGpt2ShapesInBf16) {
  // GPT-2 124M's attention (12 heads of 64, T = 1024) at two micro-batches.
  for (const int64_t batch : {int64_t{1}, int64_t{16}}) {
    const FusedAttentionShape shape{batch, 1024, 768, 12};
    EXPECT_EQ(fused_of(gpu()).declined(shape, DType::kBF16), "") << "batch " << batch;
    EXPECT_EQ(ops::attention_saved_bytes(gpu(), batch, 1024, 768, 12, DType::kBF16),
              static_cast<size_t>(batch * 12 * 1024) * sizeof(float));
  }
}

TEST_F(FusedAttentionTest, DeclinesFp32OddShapesAndWhenOff) {
  const FusedAttention& fused = fused_of(gpu());
  EXPECT_NE(fused.declined({2, 64, 128, 2}, DType::kF32), "");
  EXPECT_NE(fused.declined({2, 64, 12, 3}, DType::kBF16), "");   // head size 4
  EXPECT_NE(fused.declined({2, 33, 128, 2}, DType::kBF16), "");  // seq not a multiple of 8
  EXPECT_NE(fused.declined({2, 64, 512, 2}, DType::kBF16), "");  // head size 256
  // Declined shapes keep the probabilities.
  EXPECT_EQ(ops::attention_saved_bytes(gpu(), 2, 64, 128, 2, DType::kF32), size_t{2 * 2 * 64 * 64 * 4});
  const auto unfused = testing::make_cuda_unfused_attention();
  EXPECT_NE(fused_of(*unfused).declined({2, 64, 128, 2}, DType::kBF16), "");
  EXPECT_EQ(ops::attention_saved_bytes(*unfused, 2, 64, 128, 2, DType::kBF16), size_t{2 * 2 * 64 * 64 * 2});
}

// Forward against the CPU's; backward against the CPU's backward on the CPU's
// probabilities, the fused one from its own forward (its saved statistics and output).
TEST_F(FusedAttentionTest, MatchesCpuWithinTheDerivedBound) {
  Rng rng(21);
  for (const Shape& a : kShapes) {
    SCOPED_TRACE(::testing::Message() << "B=" << a.batch << " T=" << a.seq << " C=" << a.channels << " H=" << a.heads);
    ASSERT_EQ(fused_of(gpu()).declined({a.batch, a.seq, a.channels, a.heads}, DType::kBF16), "");
    const int64_t T = a.seq, n_qkv = a.batch * T * 3 * a.channels, n_out = a.batch * T * a.channels;
    const int64_t rows = a.batch * a.heads * T;
    const auto qkv = stored<bf16>(random_normal(rng, n_qkv));
    const auto dout = stored<bf16>(random_normal(rng, n_out));
    std::vector<bf16> out(static_cast<size_t>(n_out)), probs(static_cast<size_t>(rows * T));
    std::vector<bf16> dqkv(static_cast<size_t>(n_qkv));
    ops::attention_forward(cpu(), qkv.data(), out.data(), probs.data(), a.batch, T, a.channels, a.heads);
    ops::attention_backward(cpu(), dout.data(), qkv.data(), out.data(), probs.data(), dqkv.data(), a.batch, T,
                            a.channels, a.heads);

    ASSERT_EQ(ops::attention_saved_bytes(gpu(), a.batch, T, a.channels, a.heads, DType::kBF16),
              static_cast<size_t>(rows) * sizeof(float));
    DeviceArray<bf16> gqkv(gpu(), qkv), gdout(gpu(), dout), gout(gpu(), testing::stored_nans<bf16>(n_out));
    DeviceArray<bf16> gdqkv(gpu(), testing::stored_nans<bf16>(n_qkv));
    DeviceArray<float> gstats(gpu(), testing::nans(rows));
    ops::attention_forward(gpu(), gqkv.get(), gout.get(), TypedPtr(gstats.get(), DType::kBF16), a.batch, T,
                           a.channels, a.heads);
    ops::attention_backward(gpu(), gdout.get(), gqkv.get(), gout.get(), ConstTypedPtr(gstats.get(), DType::kBF16),
                            gdqkv.get(), a.batch, T, a.channels, a.heads);
    const auto got_out = gout.to_host();
    const auto got_stats = gstats.to_host();
    const Bounds bounds = fused_bounds(a, values(qkv), values(dout), values(probs), values(got_out));
    EXPECT_TRUE(testing::bf16_close(got_out, out, bounds.out));
    int64_t bad_stats = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const double error = std::fabs(static_cast<double>(got_stats[r]) - bounds.lse[r]);
      if (!(error <= bounds.stats_error[r]) && bad_stats++ < 3) {
        ADD_FAILURE() << "row " << r << ": statistic " << got_stats[r] << ", log-sum-exp " << bounds.lse[r]
                      << ", allowed " << bounds.stats_error[r];
      }
    }
    EXPECT_EQ(bad_stats, 0);
    EXPECT_TRUE(testing::bf16_close(gdqkv.to_host(), dqkv, bounds.dqkv));
  }
}

// Note [Fused attention]: backward asks for cuDNN's deterministic algorithm.
TEST_F(FusedAttentionTest, RepeatsBitForBit) {
  const Shape a{4, 256, 256, 4};
  Rng rng(22);
  const int64_t T = a.seq, n_qkv = a.batch * T * 3 * a.channels, n_out = a.batch * T * a.channels;
  DeviceArray<bf16> qkv(gpu(), stored<bf16>(random_normal(rng, n_qkv)));
  DeviceArray<bf16> dout(gpu(), stored<bf16>(random_normal(rng, n_out)));
  std::vector<std::vector<bf16>> outs, grads;
  for (int run = 0; run < 3; ++run) {
    DeviceArray<bf16> out(gpu(), testing::stored_nans<bf16>(n_out)), dqkv(gpu(), testing::stored_nans<bf16>(n_qkv));
    DeviceArray<float> stats(gpu(), testing::nans(a.batch * a.heads * T));
    ops::attention_forward(gpu(), qkv.get(), out.get(), TypedPtr(stats.get(), DType::kBF16), a.batch, T, a.channels,
                           a.heads);
    ops::attention_backward(gpu(), dout.get(), qkv.get(), out.get(), ConstTypedPtr(stats.get(), DType::kBF16),
                            dqkv.get(), a.batch, T, a.channels, a.heads);
    outs.push_back(out.to_host());
    grads.push_back(dqkv.to_host());
  }
  for (int run = 1; run < 3; ++run) {
    EXPECT_EQ(std::memcmp(outs[run].data(), outs[0].data(), outs[0].size() * sizeof(bf16)), 0) << "run " << run;
    EXPECT_EQ(std::memcmp(grads[run].data(), grads[0].data(), grads[0].size() * sizeof(bf16)), 0) << "run " << run;
  }
}

}  // namespace
}  // namespace dtrain
