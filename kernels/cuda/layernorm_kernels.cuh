// LayerNorm over the last dimension (Note [Transformer ops], kernels/ops.h): eps 1e-5,
// biased variance, as torch.nn.LayerNorm; and the residual add fused with it (Note
// [Fused residual LayerNorm]), which runs the same row code after the add.
//
// Forward and the input gradient take one warp per row (GPT widths are a few hundred
// to a few thousand channels: coalesced reads, eight rows per block). Where
// rows_packable allows (channels % 8 == 0 and every array aligned to its pack), lane l
// takes the row's packs l, l + 32, ... and reads and writes them with 16-byte accesses
// (bf16); otherwise channels l, l + 32, ... one by one. Scalar loads kept one element
// in flight per lane and made layernorm_backward_rows ~15x slower than its memory
// traffic (461 us for 16384 x 768 in bf16 on an H200). Each element gets the same float
// operations either way; only the order of the row sums differs between the two forms.
// Row sums are accumulated in double per lane and combined by a butterfly, which gives
// every lane the same bits, so the result does not depend on the grid: each row is
// always summed in the same order (for a given form, which the shape and the arrays'
// alignment fix). Forward saves the row's mean and 1/sqrt(var + eps) in float.
//
// Backward, with xhat = (x - mean) * rstd and g = dy * weight:
//   dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))   (= or += into dx)
//   dweight += sum over rows of dy * xhat
//   dbias   += sum over rows of dy
// The parameter sums are a reduction over rows, done without atomics in a fixed order
// over the chunks of rows of the column sums (kernels/cuda/column_sum_kernels.cuh, Note
// [Column sum partition]): chunks sized by the shape alone (never the device or grid)
// -> double partials in the workspace -> column_totals adds each channel's partials in
// chunk order. The same inputs give the same bits on every run and every GPU. Up to
// kFusedMaxChannels one kernel gives dx and the partials (Note [Fused LayerNorm
// backward], whose warps first sum their rows of a chunk in float); wider rows take
// the column sums' own kernels, double throughout, after the rows kernel.
//
// In bf16 (x, weight, bias, y, dy and dx; the row statistics and parameter gradients
// stay fp32) every kernel widens what it reads and computes as in fp32; y and dx are
// rounded once when stored, dx after the accumulation (dx = round(dx + grad)).
//
// The kernels live here, apart from their launches (layernorm.cu), so that the unit
// tests' SIMT emulator (tests/unit/kernels/simt_emulator.h) runs this very source on
// the CPU in CI (tests/unit/kernels/test_layernorm_emulated.cpp): it keeps to the CUDA
// names the emulator defines, and to to_float, load_floats and store_floats
// (kernels/cuda/storage.cuh on the device, the test's own on the host), which the
// includer provides first, before column_sum_kernels.cuh.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/column_sum_kernels.cuh"
#include "kernels/cuda/launch.cuh"

namespace dtrain::cuda::layernorm {

inline constexpr int kRowsPerBlock = kBlockThreads / kWarpSize;
inline constexpr unsigned kFullMask = 0xffffffffu;
inline constexpr double kEps = 1e-5;

// Every lane returns the same bits: at each step lanes i and i^k add the same two
// values (a + b == b + a exactly).
__device__ inline double warp_sum(double v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// One row by one warp: yr = LayerNorm(xr) * weight + bias; lane 0 stores the row's mean
// and rstd. Lane `lane` takes the row's elements c .. c + V - 1 for c = V * lane,
// V * (lane + 32), ... (V = kPackElements: packs; V = 1: single channels). yr may be xr:
// each element is read by the lane that writes it, after the row's sums. Shared by
// layernorm_forward and add_layernorm_forward, so that the two give the same bits (Note
// [Fused residual LayerNorm], kernels/ops.h).
template <int V, class T>
__device__ void layernorm_row(const T* xr, const T* weight, const T* bias, T* yr, float* mean, float* rstd,
                              int64_t channels, int lane) {
  constexpr int64_t kStride = int64_t{kWarpSize} * V;
  double sum = 0.0;
  DTRAIN_UNROLL_BY(4)
  for (int64_t c = lane * V; c < channels; c += kStride) {
    float xv[V];
    load_floats<V>(xr + c, xv);
    DTRAIN_UNROLL
    for (int k = 0; k < V; ++k) sum += xv[k];
  }
  const double m = warp_sum(sum) / static_cast<double>(channels);
  // Two passes (deviations from the mean), so a large mean does not cancel the variance.
  double sq = 0.0;
  DTRAIN_UNROLL_BY(4)
  for (int64_t c = lane * V; c < channels; c += kStride) {
    float xv[V];
    load_floats<V>(xr + c, xv);
    DTRAIN_UNROLL
    for (int k = 0; k < V; ++k) {
      const double d = static_cast<double>(xv[k]) - m;
      sq += d * d;
    }
  }
  const double var = warp_sum(sq) / static_cast<double>(channels);
  const auto mf = static_cast<float>(m);
  const auto rs = static_cast<float>(1.0 / sqrt(var + kEps));
  for (int64_t c = lane * V; c < channels; c += kStride) {
    float xv[V], wv[V], bv[V], yv[V];
    load_floats<V>(xr + c, xv);
    load_floats<V>(weight + c, wv);
    load_floats<V>(bias + c, bv);
    DTRAIN_UNROLL
    for (int k = 0; k < V; ++k) yv[k] = (xv[k] - mf) * rs * wv[k] + bv[k];
    store_floats<V>(yr + c, yv);
  }
  if (lane == 0) {
    *mean = mf;
    *rstd = rs;
  }
}

template <int V, class T>
__global__ void layernorm_forward_rows(const T* x, const T* weight, const T* bias, T* y, float* mean,
                                       float* rstd, int64_t rows, int64_t channels) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    layernorm_row<V>(x + r * channels, weight, bias, y + r * channels, mean + r, rstd + r, channels, lane);
  }
}

// The residual add, rounded as add() rounds it, then layernorm_row on the stored sum.
// Each lane writes the elements layernorm_row then has it read (the same V-wide
// strided runs), so no synchronisation is needed and the row's second read comes from
// L1/L2. V is chosen from residual, weight, bias and y, as layernorm_forward chooses it
// for x = residual, so the row is summed in the chain's order; a and b are read in packs
// too when `ab_packed`, else one element at a time. residual may be a or b (each
// element is read, then written, by one lane).
template <int V, class T>
__global__ void add_layernorm_forward_rows(const T* a, const T* b, T* residual, const T* weight, const T* bias,
                                           T* y, float* mean, float* rstd, int64_t rows, int64_t channels,
                                           bool ab_packed) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* ar = a + r * channels;
    const T* br = b + r * channels;
    T* rr = residual + r * channels;
    for (int64_t c = lane * V; c < channels; c += int64_t{kWarpSize} * V) {
      float av[V], bv[V], sv[V];
      if (ab_packed) {
        load_floats<V>(ar + c, av);
        load_floats<V>(br + c, bv);
      } else {
        DTRAIN_UNROLL
        for (int k = 0; k < V; ++k) {
          av[k] = to_float(ar[c + k]);
          bv[k] = to_float(br[c + k]);
        }
      }
      DTRAIN_UNROLL
      for (int k = 0; k < V; ++k) sv[k] = av[k] + bv[k];
      store_floats<V>(rr + c, sv);
    }
    layernorm_row<V>(static_cast<const T*>(rr), weight, bias, y + r * channels, mean + r, rstd + r, channels, lane);
  }
}

// A row's means of g = dy * weight and of g * xhat over its channels, summed in double
// by each lane over its V-wide runs in order and combined by warp_sum: every lane gets
// the same bits. Both backward kernels take them from here, so their row sums agree.
struct GradientMeans {
  float g, gx;
};
template <int V, class T>
__device__ GradientMeans gradient_means(const T* xr, const T* dyr, const T* weight, float m, float rs,
                                        int64_t channels, int lane) {
  constexpr int64_t kStride = int64_t{kWarpSize} * V;
  double g_sum = 0.0, gx_sum = 0.0;
  DTRAIN_UNROLL_BY(4)
  for (int64_t c = lane * V; c < channels; c += kStride) {
    float xv[V], dyv[V], wv[V];
    load_floats<V>(xr + c, xv);
    load_floats<V>(dyr + c, dyv);
    load_floats<V>(weight + c, wv);
    DTRAIN_UNROLL
    for (int k = 0; k < V; ++k) {
      const float xhat = (xv[k] - m) * rs;
      const float g = dyv[k] * wv[k];
      g_sum += g;
      gx_sum += static_cast<double>(g) * xhat;
    }
  }
  return {static_cast<float>(warp_sum(g_sum) / static_cast<double>(channels)),
          static_cast<float>(warp_sum(gx_sum) / static_cast<double>(channels))};
}

// dx (= or +=) per row, lanes taking V-wide runs as layernorm_row does; dx may alias
// dy (each element is read before it is written, by the lane that writes it).
template <int V, class T>
__global__ void layernorm_backward_rows(const T* dy, const T* x, const T* weight, const float* mean,
                                        const float* rstd, T* dx, int64_t rows, int64_t channels,
                                        bool accumulate) {
  constexpr int64_t kStride = int64_t{kWarpSize} * V;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* xr = x + r * channels;
    const T* dyr = dy + r * channels;
    const float m = mean[r];
    const float rs = rstd[r];
    const GradientMeans means = gradient_means<V>(xr, dyr, weight, m, rs, channels, lane);
    const float g_mean = means.g, gx_mean = means.gx;
    T* dxr = dx + r * channels;
    for (int64_t c = lane * V; c < channels; c += kStride) {
      float xv[V], dyv[V], wv[V], out[V];
      load_floats<V>(xr + c, xv);
      load_floats<V>(dyr + c, dyv);
      load_floats<V>(weight + c, wv);
      if (accumulate) load_floats<V>(dxr + c, out);
      DTRAIN_UNROLL
      for (int k = 0; k < V; ++k) {
        const float xhat = (xv[k] - m) * rs;
        const float g = dyv[k] * wv[k];
        const float grad = rs * (g - g_mean - xhat * gx_mean);
        out[k] = accumulate ? out[k] + grad : grad;
      }
      store_floats<V>(dxr + c, out);
    }
  }
}

// Note [Fused LayerNorm backward]
// dx and the chunk partials of dweight and dbias in one kernel, so that dy and x are
// read once (the rows' second pass finds them in L1/L2) where the rows kernel and the
// column sums read them twice, in three launches: on an H100 the pair took 34 + 26 us
// a call on GPT-2's 16384 x 768 bf16 rows (bench/RESULTS.md). Block b takes chunk b
// of column_sum_plan's partition; its warp w takes the chunk's rows w, w + 8, ... in
// order and computes each row's dx as layernorm_backward_rows does, and adds each of
// its channels' dy * xhat and dy into float sums held in registers (the product by
// __fmul_rn, which no compiler contracts into an fma, so the bits are the source's).
// The block then adds its warps' sums in warp order, in double, and writes the chunk's
// partials, which column_totals adds as before. A lane holds kPacks runs of V channels
// per output, so the kernel takes rows of at most kFusedMaxChannels channels (32
// floats a lane for each sum); wider rows take the unfused pair. Each channel's terms
// get the same float operations in the same order in either row form (only which lane
// holds the channel differs), so both forms give the same bits, and the order depends
// on the shape alone. The price of registers: a warp sums its rows of a chunk in
// float, not double as the column sums do: n = rows_per_chunk / 8 terms (8 at GPT-2's
// 16384 x 768, 64-row chunks; 149 at micro-batch 398, 407,552 rows), so within
// gamma_n (n 2^-24 / (1 - n 2^-24), under 1e-5 for n = 149) of the sum of the terms'
// magnitudes before the partials' double sums, a bound the tests' 1e-4 of the norm
// covers. (The chunks are column_sum_plan's, at least 64 rows: at GPT-2's size that is
// 256 blocks of 8 warps, where the rows kernel ran 2048 of a row a warp.)
inline constexpr int kFusedLaneChannels = 32;
inline constexpr int64_t kFusedMaxChannels = int64_t{kWarpSize} * kFusedLaneChannels;

template <int V, int kPacks, class T>
__global__ void __launch_bounds__(kBlockThreads)
    layernorm_backward_fused(const T* dy, const T* x, const T* weight, const float* mean, const float* rstd, T* dx,
                             int64_t rows, int64_t channels, ColumnSumPlan plan, double* partials, bool accumulate) {
  static_assert(kPacks * V <= kFusedLaneChannels, "a lane's sums must fit its registers");
  constexpr int64_t kStride = int64_t{kWarpSize} * V;
  __shared__ double block_sums[2][kFusedMaxChannels];
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int64_t chunk = blockIdx.x;
  const int64_t first = chunk * plan.rows_per_chunk;
  const int64_t last = first + plan.rows_per_chunk < rows ? first + plan.rows_per_chunk : rows;
  float dweight_sum[kPacks][V] = {}, dbias_sum[kPacks][V] = {};
  for (int64_t r = first + warp; r < last; r += kRowsPerBlock) {
    const T* xr = x + r * channels;
    const T* dyr = dy + r * channels;
    const float m = mean[r];
    const float rs = rstd[r];
    const GradientMeans means = gradient_means<V>(xr, dyr, weight, m, rs, channels, lane);
    const float g_mean = means.g, gx_mean = means.gx;
    T* dxr = dx + r * channels;
    DTRAIN_UNROLL
    for (int p = 0; p < kPacks; ++p) {
      const int64_t c = lane * V + p * kStride;
      if (c >= channels) continue;
      float xv[V], dyv[V], wv[V], out[V];
      load_floats<V>(xr + c, xv);
      load_floats<V>(dyr + c, dyv);
      load_floats<V>(weight + c, wv);
      if (accumulate) load_floats<V>(dxr + c, out);
      DTRAIN_UNROLL
      for (int k = 0; k < V; ++k) {
        const float xhat = (xv[k] - m) * rs;
        const float g = dyv[k] * wv[k];
        const float grad = rs * (g - g_mean - xhat * gx_mean);
        out[k] = accumulate ? out[k] + grad : grad;
        dweight_sum[p][k] += __fmul_rn(dyv[k], xhat);
        dbias_sum[p][k] += dyv[k];
      }
      store_floats<V>(dxr + c, out);
    }
  }
  // The warps' sums, added in warp order (warp 0's start the block's).
  for (int w = 0; w < kRowsPerBlock; ++w) {
    if (warp == w) {
      DTRAIN_UNROLL
      for (int p = 0; p < kPacks; ++p) {
        const int64_t c = lane * V + p * kStride;
        if (c >= channels) continue;
        DTRAIN_UNROLL
        for (int k = 0; k < V; ++k) {
          const double before_w = w == 0 ? 0.0 : block_sums[0][c + k];
          const double before_b = w == 0 ? 0.0 : block_sums[1][c + k];
          block_sums[0][c + k] = before_w + dweight_sum[p][k];
          block_sums[1][c + k] = before_b + dbias_sum[p][k];
        }
      }
    }
    __syncthreads();
  }
  for (int64_t c = threadIdx.x; c < channels; c += kBlockThreads) {
    partials[chunk * channels + c] = block_sums[0][c];
    partials[(plan.chunks + chunk) * channels + c] = block_sums[1][c];
  }
}

// Calls f(std::integral_constant<int, P>{}) with P the runs of V channels a lane holds
// in layernorm_backward_fused: as few as the width needs in packs (1 to 4), and in
// single channels a multiple of 8 (8 to 32), so that the scalar form, which only odd
// or unaligned rows take, has four instances rather than 32. channels <=
// kFusedMaxChannels.
template <int V, class F>
void with_lane_runs(int64_t channels, F&& f) {
  const int64_t runs = (channels + int64_t{kWarpSize} * V - 1) / (int64_t{kWarpSize} * V);
  constexpr int kStep = V == 1 ? 8 : 1;
  static_assert(4 * kStep * V == kFusedLaneChannels, "the largest instance holds kFusedLaneChannels");
  if (runs <= kStep) {
    f(std::integral_constant<int, kStep>{});
  } else if (runs <= 2 * kStep) {
    f(std::integral_constant<int, 2 * kStep>{});
  } else if (runs <= 3 * kStep) {
    f(std::integral_constant<int, 3 * kStep>{});
  } else {
    f(std::integral_constant<int, 4 * kStep>{});
  }
}

// The terms of dweight += sum of dy * xhat and dbias += sum of dy, for cuda::column_sums.
template <class T>
struct LayerNormParamTerms {
  static constexpr int kOutputs = 2;  // dweight, dbias
  const T* dy;
  const T* x;
  const float* mean;
  const float* rstd;
  template <int V>
  __device__ void add(int64_t row, int64_t at, double (&acc)[2][V]) const {
    float g[V], xv[V];
    load_floats<V>(dy + at, g);
    load_floats<V>(x + at, xv);
    const float m = mean[row], s = rstd[row];
    DTRAIN_UNROLL
    for (int k = 0; k < V; ++k) {
      const float xhat = (xv[k] - m) * s;
      acc[0][k] += static_cast<double>(g[k]) * xhat;
      acc[1][k] += g[k];
    }
  }
};

}  // namespace dtrain::cuda::layernorm
