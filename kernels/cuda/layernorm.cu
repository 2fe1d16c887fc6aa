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
// by the column sums of kernels/cuda/column_sums.cuh (Note [Column sum partition]):
// chunks of rows sized by the shape alone (never the device or grid) -> double
// partials in the workspace -> a second kernel adds each channel's partials in chunk
// order. The same inputs give the same bits on every run and every GPU.
//
// In bf16 (x, weight, bias, y, dy and dx; the row statistics and parameter gradients
// stay fp32) every kernel widens what it reads and computes as in fp32; y and dx are
// rounded once when stored, dx after the accumulation (dx = round(dx + grad)).
#include <cstdint>

#include "kernels/context.h"
#include "kernels/cuda/column_sums.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace dtrain {

namespace {

using cuda::kBlockThreads;
using cuda::kWarpSize;
using cuda::load_floats;
using cuda::store_floats;
using cuda::to_float;
using cuda::typed;

constexpr int kRowsPerBlock = kBlockThreads / kWarpSize;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr double kEps = 1e-5;

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
#pragma unroll 4
  for (int64_t c = lane * V; c < channels; c += kStride) {
    float xv[V];
    load_floats<V>(xr + c, xv);
#pragma unroll
    for (int k = 0; k < V; ++k) sum += xv[k];
  }
  const double m = warp_sum(sum) / static_cast<double>(channels);
  // Two passes (deviations from the mean), so a large mean does not cancel the variance.
  double sq = 0.0;
#pragma unroll 4
  for (int64_t c = lane * V; c < channels; c += kStride) {
    float xv[V];
    load_floats<V>(xr + c, xv);
#pragma unroll
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
#pragma unroll
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
#pragma unroll
        for (int k = 0; k < V; ++k) {
          av[k] = to_float(ar[c + k]);
          bv[k] = to_float(br[c + k]);
        }
      }
#pragma unroll
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
#pragma unroll
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
#pragma unroll
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
#pragma unroll
    for (int k = 0; k < V; ++k) {
      const float xhat = (xv[k] - m) * s;
      acc[0][k] += static_cast<double>(g[k]) * xhat;
      acc[1][k] += g[k];
    }
  }
};

}  // namespace

size_t CudaBackend::layernorm_backward_workspace_bytes(int64_t rows, int64_t channels) const {
  return cuda::column_sum_workspace_bytes(rows, channels, LayerNormParamTerms<float>::kOutputs);
}

void CudaBackend::layernorm_forward(Context& /*ctx*/, ConstTypedPtr x_t, ConstTypedPtr weight_t, ConstTypedPtr bias_t,
                                    TypedPtr y_t, float* mean, float* rstd, int64_t rows, int64_t channels) {
  if (rows == 0 || channels == 0) return;
  const unsigned grid = blocks_for((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1);
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "layernorm_forward";
    const T* x = typed<T>(x_t, kOp);
    const T* weight = typed<T>(weight_t, kOp);
    const T* bias = typed<T>(bias_t, kOp);
    T* y = typed<T>(y_t, kOp);
    cuda::with_row_form(cuda::rows_packable(channels, x, weight, bias, y), [&](auto form) {
      layernorm_forward_rows<decltype(form)::value>
          <<<grid, kBlockThreads, 0, stream()>>>(x, weight, bias, y, mean, rstd, rows, channels);
    });
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::add_layernorm_forward(Context& /*ctx*/, ConstTypedPtr a_t, ConstTypedPtr b_t,
                                        TypedPtr residual_t, ConstTypedPtr weight_t, ConstTypedPtr bias_t,
                                        TypedPtr y_t, float* mean, float* rstd, int64_t rows, int64_t channels) {
  if (rows == 0 || channels == 0) return;
  const unsigned grid = blocks_for((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1);
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "add_layernorm_forward";
    const T* a = typed<T>(a_t, kOp);
    const T* b = typed<T>(b_t, kOp);
    T* residual = typed<T>(residual_t, kOp);
    const T* weight = typed<T>(weight_t, kOp);
    const T* bias = typed<T>(bias_t, kOp);
    T* y = typed<T>(y_t, kOp);
    // The row's form as layernorm_forward would choose it for x = residual (the chain).
    const bool ab_packed = cuda::rows_packable(channels, a, b);
    cuda::with_row_form(cuda::rows_packable(channels, residual, weight, bias, y), [&](auto form) {
      add_layernorm_forward_rows<decltype(form)::value><<<grid, kBlockThreads, 0, stream()>>>(
          a, b, residual, weight, bias, y, mean, rstd, rows, channels, ab_packed);
    });
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::layernorm_backward(Context& ctx, ConstTypedPtr dy_t, ConstTypedPtr x_t, ConstTypedPtr weight_t,
                                     const float* mean, const float* rstd, TypedPtr dx_t, float* dweight,
                                     float* dbias, int64_t rows, int64_t channels, bool accumulate_dx) {
  if (rows == 0 || channels == 0) return;
  auto* partials = static_cast<double*>(ctx.workspace(layernorm_backward_workspace_bytes(rows, channels)));
  const unsigned grid = blocks_for((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1);
  cuda::storage_dispatch(dx_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "layernorm_backward";
    const T* dy = typed<T>(dy_t, kOp);
    const T* x = typed<T>(x_t, kOp);
    const T* weight = typed<T>(weight_t, kOp);
    T* dx = typed<T>(dx_t, kOp);
    // The parameter sums read dy before the row kernel may overwrite it (dx aliasing dy).
    cuda::column_sums(stream(), LayerNormParamTerms<T>{dy, x, mean, rstd}, cuda::rows_packable(channels, dy, x),
                      rows, channels, partials, cuda::ColumnOutputs<2>{{dweight, dbias}});
    cuda::with_row_form(cuda::rows_packable(channels, dy, x, weight, dx), [&](auto form) {
      layernorm_backward_rows<decltype(form)::value><<<grid, kBlockThreads, 0, stream()>>>(
          dy, x, weight, mean, rstd, dx, rows, channels, accumulate_dx);
    });
    DTRAIN_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace dtrain
