// LayerNorm over the last dimension (Note [Transformer ops], kernels/ops.h): eps 1e-5,
// biased variance, as torch.nn.LayerNorm; and the residual add fused with it (Note
// [Fused residual LayerNorm]), which runs the same row code after the add.
//
// Forward and the input gradient take one warp per row (GPT widths are a few hundred
// to a few thousand channels: coalesced reads, eight rows per block). Row sums are
// accumulated in double per lane and combined by a butterfly, which gives every lane
// the same bits, so the result does not depend on the grid: each row is always summed
// in the same order. Forward saves the row's mean and 1/sqrt(var + eps) in float.
//
// Backward, with xhat = (x - mean) * rstd and g = dy * weight:
//   dx      = rstd * (g - mean(g) - xhat * mean(g * xhat))   (= or += into dx)
//   dweight += sum over rows of dy * xhat
//   dbias   += sum over rows of dy
// The parameter sums are a reduction over rows, done without atomics in a fixed order:
// the rows are cut into chunks whose size depends on `rows` alone (never on the device
// or grid), one block per (32-channel tile, chunk) writes the chunk's partial sums in
// double to the workspace, and a second kernel adds each channel's partials in chunk
// order. The same inputs give the same bits on every run and every GPU.
//
// In bf16 (x, weight, bias, y, dy and dx; the row statistics and parameter gradients
// stay fp32) every kernel widens what it reads and computes as in fp32; y and dx are
// rounded once when stored, dx after the accumulation (dx = round(dx + grad)).
#include <cstdint>

#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace dtrain {

namespace {

using cuda::from_float;
using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;
using cuda::kWarpSize;
using cuda::to_float;
using cuda::typed;

constexpr int kRowsPerBlock = kBlockThreads / kWarpSize;
constexpr unsigned kFullMask = 0xffffffffu;
constexpr double kEps = 1e-5;
// Rows of a parameter-gradient chunk: at least kMinChunkRows, and no more than
// kMaxChunks chunks, so the partials stay small (2 * kMaxChunks doubles per channel).
constexpr int64_t kMinChunkRows = 32;
constexpr int64_t kMaxChunks = 128;
// Row groups of a parameter-gradient block (its y extent): 8 x 32 threads.
constexpr int kRowGroups = kBlockThreads / kWarpSize;

struct ChunkPlan {
  int64_t rows_per_chunk, chunks;
};

ChunkPlan chunk_plan(int64_t rows) {
  int64_t per = (rows + kMaxChunks - 1) / kMaxChunks;
  if (per < kMinChunkRows) per = kMinChunkRows;
  return {per, (rows + per - 1) / per};
}

// Every lane returns the same bits: at each step lanes i and i^k add the same two
// values (a + b == b + a exactly).
__device__ inline double warp_sum(double v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// One row by one warp: yr = LayerNorm(xr) * weight + bias; lane 0 stores the row's mean
// and rstd. yr may be xr: each element is read by the lane that writes it, after the
// row's sums. Shared by layernorm_forward and add_layernorm_forward, so that the two
// give the same bits (Note [Fused residual LayerNorm], kernels/ops.h).
template <class T>
__device__ void layernorm_row(const T* xr, const T* weight, const T* bias, T* yr, float* mean, float* rstd,
                              int64_t channels, int lane) {
  double sum = 0.0;
  for (int64_t c = lane; c < channels; c += kWarpSize) sum += to_float(xr[c]);
  const double m = warp_sum(sum) / static_cast<double>(channels);
  // Two passes (deviations from the mean), so a large mean does not cancel the variance.
  double sq = 0.0;
  for (int64_t c = lane; c < channels; c += kWarpSize) {
    const double d = static_cast<double>(to_float(xr[c])) - m;
    sq += d * d;
  }
  const double var = warp_sum(sq) / static_cast<double>(channels);
  const auto mf = static_cast<float>(m);
  const auto rs = static_cast<float>(1.0 / sqrt(var + kEps));
  for (int64_t c = lane; c < channels; c += kWarpSize) {
    yr[c] = from_float<T>((to_float(xr[c]) - mf) * rs * to_float(weight[c]) + to_float(bias[c]));
  }
  if (lane == 0) {
    *mean = mf;
    *rstd = rs;
  }
}

template <class T>
__global__ void layernorm_forward_rows(const T* x, const T* weight, const T* bias, T* y, float* mean,
                                       float* rstd, int64_t rows, int64_t channels) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    layernorm_row(x + r * channels, weight, bias, y + r * channels, mean + r, rstd + r, channels, lane);
  }
}

// The residual add, rounded as add() rounds it, then layernorm_row on the stored sum.
// Each lane re-reads only the elements it wrote itself (the same strided columns), so
// no synchronisation is needed and the row's second read comes from L1/L2. residual
// may be a or b (each element is read, then written, by one lane).
template <class T>
__global__ void add_layernorm_forward_rows(const T* a, const T* b, T* residual, const T* weight, const T* bias,
                                           T* y, float* mean, float* rstd, int64_t rows, int64_t channels) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* ar = a + r * channels;
    const T* br = b + r * channels;
    T* rr = residual + r * channels;
    for (int64_t c = lane; c < channels; c += kWarpSize) rr[c] = from_float<T>(to_float(ar[c]) + to_float(br[c]));
    layernorm_row(static_cast<const T*>(rr), weight, bias, y + r * channels, mean + r, rstd + r, channels, lane);
  }
}

// dx (= or +=) per row; dx may alias dy (each element is read before it is written,
// by the lane that writes it).
template <class T>
__global__ void layernorm_backward_rows(const T* dy, const T* x, const T* weight, const float* mean,
                                        const float* rstd, T* dx, int64_t rows, int64_t channels,
                                        bool accumulate) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* xr = x + r * channels;
    const T* dyr = dy + r * channels;
    const float m = mean[r];
    const float rs = rstd[r];
    double g_sum = 0.0, gx_sum = 0.0;
    for (int64_t c = lane; c < channels; c += kWarpSize) {
      const float xhat = (to_float(xr[c]) - m) * rs;
      const float g = to_float(dyr[c]) * to_float(weight[c]);
      g_sum += g;
      gx_sum += static_cast<double>(g) * xhat;
    }
    const auto g_mean = static_cast<float>(warp_sum(g_sum) / static_cast<double>(channels));
    const auto gx_mean = static_cast<float>(warp_sum(gx_sum) / static_cast<double>(channels));
    T* dxr = dx + r * channels;
    for (int64_t c = lane; c < channels; c += kWarpSize) {
      const float xhat = (to_float(xr[c]) - m) * rs;
      const float g = to_float(dyr[c]) * to_float(weight[c]);
      const float grad = rs * (g - g_mean - xhat * gx_mean);
      dxr[c] = from_float<T>(accumulate ? to_float(dxr[c]) + grad : grad);
    }
  }
}

// Block (tile, chunk) with 32 x kRowGroups threads: the chunk's sums of dy * xhat and
// dy for the tile's 32 channels, into partial_w/partial_b[chunk * channels + c].
template <class T>
__global__ void layernorm_param_partials(const T* dy, const T* x, const float* mean,
                                         const float* rstd, int64_t rows, int64_t channels,
                                         int64_t rows_per_chunk, double* partial_w, double* partial_b) {
  __shared__ double sw[kRowGroups][kWarpSize];
  __shared__ double sb[kRowGroups][kWarpSize];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kWarpSize + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t first = chunk * rows_per_chunk;
  const int64_t last = first + rows_per_chunk < rows ? first + rows_per_chunk : rows;
  double acc_w = 0.0, acc_b = 0.0;
  if (c < channels) {
    for (int64_t r = first + threadIdx.y; r < last; r += kRowGroups) {
      const float g = to_float(dy[r * channels + c]);
      const float xhat = (to_float(x[r * channels + c]) - mean[r]) * rstd[r];
      acc_w += static_cast<double>(g) * xhat;
      acc_b += g;
    }
  }
  sw[threadIdx.y][threadIdx.x] = acc_w;
  sb[threadIdx.y][threadIdx.x] = acc_b;
  __syncthreads();
  if (threadIdx.y == 0 && c < channels) {
    double w = 0.0, b = 0.0;
    for (int g = 0; g < kRowGroups; ++g) {
      w += sw[g][threadIdx.x];
      b += sb[g][threadIdx.x];
    }
    partial_w[chunk * channels + c] = w;
    partial_b[chunk * channels + c] = b;
  }
}

// dweight[c] += sum of the chunks' partials in chunk order; likewise dbias.
__global__ void layernorm_param_totals(const double* partial_w, const double* partial_b, int64_t chunks,
                                       int64_t channels, float* dweight, float* dbias) {
  for (int64_t c = grid_start(); c < channels; c += grid_stride()) {
    double w = 0.0, b = 0.0;
    for (int64_t k = 0; k < chunks; ++k) {
      w += partial_w[k * channels + c];
      b += partial_b[k * channels + c];
    }
    dweight[c] += static_cast<float>(w);
    dbias[c] += static_cast<float>(b);
  }
}

}  // namespace

size_t CudaBackend::layernorm_backward_workspace_bytes(int64_t rows, int64_t channels) {
  if (rows <= 0 || channels <= 0) return 0;
  return 2 * static_cast<size_t>(chunk_plan(rows).chunks) * static_cast<size_t>(channels) * sizeof(double);
}

void CudaBackend::layernorm_forward(Context& /*ctx*/, ConstTypedPtr x_t, ConstTypedPtr weight_t, ConstTypedPtr bias_t,
                                    TypedPtr y_t, float* mean, float* rstd, int64_t rows, int64_t channels) {
  if (rows == 0 || channels == 0) return;
  const int64_t row_blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "layernorm_forward";
    layernorm_forward_rows<<<blocks_for(row_blocks, 1), kBlockThreads, 0, stream()>>>(
        typed<T>(x_t, kOp), typed<T>(weight_t, kOp), typed<T>(bias_t, kOp), typed<T>(y_t, kOp), mean, rstd, rows,
        channels);
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::add_layernorm_forward(Context& /*ctx*/, ConstTypedPtr a_t, ConstTypedPtr b_t,
                                        TypedPtr residual_t, ConstTypedPtr weight_t, ConstTypedPtr bias_t,
                                        TypedPtr y_t, float* mean, float* rstd, int64_t rows, int64_t channels) {
  if (rows == 0 || channels == 0) return;
  const int64_t row_blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "add_layernorm_forward";
    add_layernorm_forward_rows<<<blocks_for(row_blocks, 1), kBlockThreads, 0, stream()>>>(
        typed<T>(a_t, kOp), typed<T>(b_t, kOp), typed<T>(residual_t, kOp), typed<T>(weight_t, kOp),
        typed<T>(bias_t, kOp), typed<T>(y_t, kOp), mean, rstd, rows, channels);
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::layernorm_backward(Context& ctx, ConstTypedPtr dy_t, ConstTypedPtr x_t, ConstTypedPtr weight_t,
                                     const float* mean, const float* rstd, TypedPtr dx_t, float* dweight,
                                     float* dbias, int64_t rows, int64_t channels, bool accumulate_dx) {
  if (rows == 0 || channels == 0) return;
  const ChunkPlan plan = chunk_plan(rows);
  auto* partial_w = static_cast<double*>(ctx.workspace(layernorm_backward_workspace_bytes(rows, channels)));
  double* partial_b = partial_w + plan.chunks * channels;

  cuda::storage_dispatch(dx_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "layernorm_backward";
    const T* dy = typed<T>(dy_t, kOp);
    const T* x = typed<T>(x_t, kOp);
    const T* weight = typed<T>(weight_t, kOp);
    T* dx = typed<T>(dx_t, kOp);
    // The parameter sums read dy before the row kernel may overwrite it (dx aliasing dy).
    const int64_t tiles = (channels + kWarpSize - 1) / kWarpSize;
    layernorm_param_partials<<<dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(plan.chunks)),
                               dim3(kWarpSize, kRowGroups), 0, stream()>>>(
        dy, x, mean, rstd, rows, channels, plan.rows_per_chunk, partial_w, partial_b);
    DTRAIN_CUDA_LAUNCH_CHECK();
    layernorm_param_totals<<<blocks_for(channels, kBlockThreads), kBlockThreads, 0, stream()>>>(
        partial_w, partial_b, plan.chunks, channels, dweight, dbias);
    DTRAIN_CUDA_LAUNCH_CHECK();

    const int64_t row_blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
    layernorm_backward_rows<<<blocks_for(row_blocks, 1), kBlockThreads, 0, stream()>>>(
        dy, x, weight, mean, rstd, dx, rows, channels, accumulate_dx);
    DTRAIN_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace dtrain
