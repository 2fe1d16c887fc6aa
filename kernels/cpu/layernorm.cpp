// LayerNorm over the last dimension (Note [Transformer ops] in kernels/ops.h).
// Row statistics are accumulated in double; everything a row computes is that row's
// alone, and the parameter gradients are column sums over the rows in row order, so no
// result depends on the number of threads.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/storage.h"

namespace dtrain::cpu {

namespace {

constexpr double kLayerNormEps = 1e-5;
// Channels whose weight and bias gradients one thread sums over all rows.
constexpr int64_t kColumnBlock = 64;

// One row: y = LayerNorm(x) * weight + bias, with the row's mean and 1/std. Not
// inlined, so that layernorm_forward and add_layernorm_forward run the same machine
// code for it (the simd sums' order is the compiler's choice per copy) and give the
// same bits (Note [Fused residual LayerNorm] in kernels/ops.h).
template <class T>
[[gnu::noinline]] void layernorm_row(const T* xr, const T* weight, const T* bias, T* yr, float* mean,
                                     float* rstd, int64_t channels) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t c = 0; c < channels; ++c) sum += widen(xr[c]);
  const double mu = sum / static_cast<double>(channels);
  // Two passes: the variance from centred values does not cancel catastrophically.
  double sq = 0.0;
#pragma omp simd reduction(+ : sq)
  for (int64_t c = 0; c < channels; ++c) {
    const double d = widen(xr[c]) - mu;
    sq += d * d;
  }
  const double inv = 1.0 / std::sqrt(sq / static_cast<double>(channels) + kLayerNormEps);
  const auto m = static_cast<float>(mu);
  const auto s = static_cast<float>(inv);
  // yr may be xr: each element is read before it is written.
#pragma omp simd
  for (int64_t c = 0; c < channels; ++c) {
    yr[c] = narrow<T>((widen(xr[c]) - m) * s * widen(weight[c]) + widen(bias[c]));
  }
  *mean = m;
  *rstd = s;
}

template <class T>
void layernorm_forward_typed(Context& ctx, const T* x, const T* weight, const T* bias, T* y, float* mean,
                             float* rstd, int64_t rows, int64_t channels) {
#pragma omp parallel for num_threads(ctx.num_threads()) if (rows * channels >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    layernorm_row(x + r * channels, weight, bias, y + r * channels, mean + r, rstd + r, channels);
  }
}

// Each row: the sum as add() stores it (one rounding), then layernorm_row on the
// stored sum while the row is in cache.
template <class T>
void add_layernorm_forward_typed(Context& ctx, const T* a, const T* b, T* residual, const T* weight,
                                 const T* bias, T* y, float* mean, float* rstd, int64_t rows, int64_t channels) {
#pragma omp parallel for num_threads(ctx.num_threads()) if (rows * channels >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const T* ar = a + r * channels;
    const T* br = b + r * channels;
    T* rr = residual + r * channels;  // may be ar or br: each element is read before it is written
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) rr[c] = narrow<T>(widen(ar[c]) + widen(br[c]));
    layernorm_row(rr, weight, bias, y + r * channels, mean + r, rstd + r, channels);
  }
}

template <class T>
void layernorm_backward_typed(Context& ctx, const T* dy, const T* x, const T* weight, const float* mean,
                              const float* rstd, T* dx, float* dweight, float* dbias, int64_t rows,
                              int64_t channels, bool accumulate_dx) {
  const bool parallel = rows * channels >= kParallelMinWork;
  // Parameter gradients first, so that dx may be dy itself. Each column is summed by
  // one thread over all rows in order: the same bits for any team.
  const int64_t blocks = (channels + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for num_threads(ctx.num_threads()) if (parallel)
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = blk * kColumnBlock;
    const int64_t width = std::min(kColumnBlock, channels - c0);
    double acc_w[kColumnBlock] = {};
    double acc_b[kColumnBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const T* dyr = dy + r * channels + c0;
      const T* xr = x + r * channels + c0;
      const float m = mean[r], s = rstd[r];
#pragma omp simd
      for (int64_t j = 0; j < width; ++j) {
        const float g = widen(dyr[j]);
        const float xhat = (widen(xr[j]) - m) * s;
        acc_w[j] += static_cast<double>(g) * xhat;
        acc_b[j] += g;
      }
    }
    for (int64_t j = 0; j < width; ++j) {
      dweight[c0 + j] += static_cast<float>(acc_w[j]);
      dbias[c0 + j] += static_cast<float>(acc_b[j]);
    }
  }
  // dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight.
  const double inv_channels = 1.0 / static_cast<double>(channels);
#pragma omp parallel for num_threads(ctx.num_threads()) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const T* dyr = dy + r * channels;
    const T* xr = x + r * channels;
    const float m = mean[r], s = rstd[r];
    double sum_g = 0.0, sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int64_t c = 0; c < channels; ++c) {
      const float g = widen(dyr[c]) * widen(weight[c]);
      sum_g += g;
      sum_gx += static_cast<double>(g) * ((widen(xr[c]) - m) * s);
    }
    const auto mean_g = static_cast<float>(sum_g * inv_channels);
    const auto mean_gx = static_cast<float>(sum_gx * inv_channels);
    T* dxr = dx + r * channels;
    if (accumulate_dx) {
      // dx's old value plus the gradient, rounded once (Note [bf16 storage]).
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        const float xhat = (widen(xr[c]) - m) * s;
        dxr[c] = narrow<T>(widen(dxr[c]) + s * (widen(dyr[c]) * widen(weight[c]) - mean_g - xhat * mean_gx));
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        const float xhat = (widen(xr[c]) - m) * s;
        dxr[c] = narrow<T>(s * (widen(dyr[c]) * widen(weight[c]) - mean_g - xhat * mean_gx));
      }
    }
  }
}

}  // namespace

void layernorm_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y,
                       float* mean, float* rstd, int64_t rows, int64_t channels) {
  const DType type = common_type("layernorm_forward", {{"x", x}, {"weight", weight}, {"bias", bias}, {"y", y}});
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    layernorm_forward_typed(ctx, typed<T>(x), typed<T>(weight), typed<T>(bias), typed<T>(y), mean, rstd, rows,
                            channels);
  });
}

void add_layernorm_forward(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr residual_out,
                           ConstTypedPtr weight, ConstTypedPtr bias, TypedPtr y, float* mean, float* rstd,
                           int64_t rows, int64_t channels) {
  const DType type = common_type("add_layernorm_forward", {{"a", a},
                                                           {"b", b},
                                                           {"residual_out", residual_out},
                                                           {"weight", weight},
                                                           {"bias", bias},
                                                           {"y", y}});
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    add_layernorm_forward_typed(ctx, typed<T>(a), typed<T>(b), typed<T>(residual_out), typed<T>(weight),
                                typed<T>(bias), typed<T>(y), mean, rstd, rows, channels);
  });
}

void layernorm_backward(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, ConstTypedPtr weight,
                        const float* mean, const float* rstd, TypedPtr dx, float* dweight, float* dbias,
                        int64_t rows, int64_t channels, bool accumulate_dx) {
  const DType type = common_type("layernorm_backward", {{"dy", dy}, {"x", x}, {"weight", weight}, {"dx", dx}});
  with_storage(type, [&](auto tag) {
    using T = decltype(tag);
    layernorm_backward_typed(ctx, typed<T>(dy), typed<T>(x), typed<T>(weight), mean, rstd, typed<T>(dx), dweight,
                             dbias, rows, channels, accumulate_dx);
  });
}

}  // namespace dtrain::cpu
