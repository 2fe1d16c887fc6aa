// The bound within which a fused causal attention (one that keeps each row's
// log-sum-exp instead of the probabilities, and recomputes them in backward) must match
// the CPU's attention, the oracle: shared by the GPU tests of cuDNN's fused attention
// (test_fused_attention.cpp) and of dtrain's own (test_flash_attention.cpp), and by the
// CI test that runs dtrain's own kernels under the SIMT emulator
// (tests/unit/kernels/test_flash_attention_emulated.cpp).
//
// The bound. Every input is the same stored value on both sides, so products are exact
// in fp32 and the two differ only by where each rounds to the storage type and by the
// order of fp32 sums. With q, k, v, dO the heads' rows, s = 1/sqrt(hs), u the storage
// type's unit roundoff (2^-8 for bf16; 2^-24 for fp32, where it only adds slack), gamma_n the fp32 sum bound (tests/gpu/stored_types.h) and P the exact
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
// The kernel this was derived for, cuDNN's SDPA, rounds P and dS to bf16; dtrain's own
// fused kernels (kernels/cuda/flash_attention.h) round neither and keep the same
// statistic and the same D_i, so the bound covers them a fortiori, in fp32 too.
// fused_close adds the last rounding of each stored output (one ulp of the type).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <sstream>
#include <type_traits>
#include <vector>

#include "kernels/dtype.h"
#include "tests/gpu/stored_types.h"

namespace dtrain::testing {

struct AttentionShape {
  int64_t batch, seq, channels, heads;
};

struct Bounds {
  std::vector<double> out, stats_error, dqkv;
  std::vector<double> lse;  // each row's exact log-sum-exp
};

// The file comment's bounds, in double from the inputs. probs_cpu: the CPU's stored
// probabilities; out_gpu: the fused forward's stored output (backward's O).
inline Bounds fused_attention_bounds(const AttentionShape& a, double u, const std::vector<float>& qkv, const std::vector<float>& dout,
                    const std::vector<float>& probs_cpu, const std::vector<float>& out_gpu) {
  const int64_t B = a.batch, T = a.seq, C = a.channels, H = a.heads, hs = C / H, ld = 3 * C;
  const double s = 1.0 / std::sqrt(static_cast<double>(static_cast<float>(hs)));
  const double f = std::ldexp(1.0, -24);
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

// Each row's statistic within its bound of the exact log-sum-exp.
inline ::testing::AssertionResult stats_close(const std::vector<float>& got, const Bounds& bounds) {
  std::ostringstream bad;
  size_t failures = 0;
  for (size_t r = 0; r < bounds.lse.size(); ++r) {
    const double error = std::fabs(static_cast<double>(got[r]) - bounds.lse[r]);
    if (!(error <= bounds.stats_error[r])) {
      if (failures < 3) {
        bad << "\n  row " << r << ": statistic " << got[r] << ", log-sum-exp " << bounds.lse[r] << ", allowed "
            << bounds.stats_error[r];
      }
      ++failures;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << bounds.lse.size() << " rows differ:" << bad.str();
}

// |got - want| <= one ulp of T at max(|got|, |want|) + slack[i] everywhere.
template <class T>
::testing::AssertionResult fused_close(const std::vector<T>& got, const std::vector<T>& want,
                                       const std::vector<double>& slack) {
  if constexpr (std::is_same_v<T, bf16>) {
    return bf16_close(got, want, slack);
  } else {
    if (got.size() != want.size() || slack.size() != want.size()) {
      return ::testing::AssertionFailure() << "sizes " << got.size() << ", " << want.size() << ", " << slack.size();
    }
    std::ostringstream bad;
    size_t failures = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      const double g = got[i], w = want[i];
      if (g == w) continue;
      const double allowed = std::ldexp(std::max(std::fabs(g), std::fabs(w)), -23) + slack[i];
      if (!(std::fabs(g - w) <= allowed)) {
        if (failures < 5) bad << "\n  [" << i << "] got " << g << ", want " << w << ", allowed " << allowed;
        ++failures;
      }
    }
    if (failures == 0) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << failures << " of " << want.size() << " elements differ:" << bad.str();
  }
}

}  // namespace dtrain::testing
