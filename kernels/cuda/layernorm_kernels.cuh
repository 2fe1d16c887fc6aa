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
// by the column sums of kernels/cuda/column_sum_kernels.cuh (Note [Column sum partition]):
// chunks of rows sized by the shape alone (never the device or grid) -> double
// partials in the workspace -> a second kernel adds each channel's partials in chunk
// order. The same inputs give the same bits on every run and every GPU.
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
    double g_sum = 0.0, gx_sum = 0.0;
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
    const auto g_mean = static_cast<float>(warp_sum(g_sum) / static_cast<double>(channels));
    const auto gx_mean = static_cast<float>(warp_sum(gx_sum) / static_cast<double>(channels));
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
