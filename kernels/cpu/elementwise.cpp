#include <algorithm>
#include <cstring>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/storage.h"

namespace dtrain::cpu {

namespace {

// Channels summed together by one thread when a bias gradient is a column sum.
constexpr int64_t kColumnBlock = 64;
// Partial sums per plane when a bias gradient sums planes (the convolution case).
constexpr int64_t kPlaneLanes = 8;

template <class T>
void add_bias_typed(Context& ctx, T* y, const T* bias, int64_t outer, int64_t channels, int64_t inner) {
  const bool parallel = outer * channels * inner >= kParallelMinWork;
  if (inner == 1) {
    // The linear-layer case: a row of `channels` per sample, vectorised along the row.
#pragma omp parallel for num_threads(ctx.num_threads()) if (parallel)
    for (int64_t o = 0; o < outer; ++o) {
      T* row = y + o * channels;
      for (int64_t c = 0; c < channels; ++c) row[c] = narrow<T>(widen(row[c]) + widen(bias[c]));
    }
    return;
  }
#pragma omp parallel for num_threads(ctx.num_threads()) if (parallel)
  for (int64_t oc = 0; oc < outer * channels; ++oc) {
    const float b = widen(bias[oc % channels]);
    T* plane = y + oc * inner;
    for (int64_t i = 0; i < inner; ++i) plane[i] = narrow<T>(widen(plane[i]) + b);
  }
}

template <class T>
void bias_backward_typed(Context& ctx, const T* dy, float* dbias, int64_t outer, int64_t channels,
                         int64_t inner) {
  const bool parallel = outer * channels * inner >= kParallelMinWork;
  if (inner == 1) {
    const int64_t blocks = (channels + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for num_threads(ctx.num_threads()) if (parallel)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t c0 = blk * kColumnBlock;
      const int64_t width = std::min(kColumnBlock, channels - c0);
      double acc[kColumnBlock] = {};
      for (int64_t o = 0; o < outer; ++o) {
        const T* row = dy + o * channels + c0;
        for (int64_t j = 0; j < width; ++j) acc[j] += widen(row[j]);
      }
      for (int64_t j = 0; j < width; ++j) dbias[c0 + j] += static_cast<float>(acc[j]);
    }
    return;
  }
  // Each channel is summed by one thread in a fixed order: deterministic for any team.
#pragma omp parallel for num_threads(ctx.num_threads()) if (parallel)
  for (int64_t c = 0; c < channels; ++c) {
    double acc = 0.0;
    for (int64_t o = 0; o < outer; ++o) {
      const T* plane = dy + (o * channels + c) * inner;
      // kPlaneLanes interleaved partial sums, combined in a fixed order: one running
      // sum would be a chain of dependent adds that cannot be vectorised (4x slower).
      float lanes[kPlaneLanes] = {};
      int64_t i = 0;
      for (; i + kPlaneLanes <= inner; i += kPlaneLanes) {
        for (int64_t j = 0; j < kPlaneLanes; ++j) lanes[j] += widen(plane[i + j]);
      }
      for (int64_t j = 0; i < inner; ++i, ++j) lanes[j] += widen(plane[i]);
      float part = 0.0f;
      for (int64_t j = 0; j < kPlaneLanes; ++j) part += lanes[j];
      acc += part;
    }
    dbias[c] += static_cast<float>(acc);
  }
}

template <class T>
void add_typed(Context& ctx, const T* a, const T* b, T* y, int64_t n) {
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) y[i] = narrow<T>(widen(a[i]) + widen(b[i]));
}

}  // namespace

void add_bias(Context& ctx, TypedPtr y, ConstTypedPtr bias, int64_t outer, int64_t channels,
              int64_t inner) {
  with_storage(common_type("add_bias", {{"y", y}, {"bias", bias}}), [&](auto tag) {
    using T = decltype(tag);
    add_bias_typed(ctx, typed<T>(y), typed<T>(bias), outer, channels, inner);
  });
}

void bias_backward(Context& ctx, ConstTypedPtr dy, float* dbias, int64_t outer, int64_t channels,
                   int64_t inner) {
  with_storage(dy.type, [&](auto tag) {
    bias_backward_typed(ctx, typed<decltype(tag)>(dy), dbias, outer, channels, inner);
  });
}

void relu_forward(Context& ctx, const float* x, float* y, int64_t n) {
  // `x < 0 ? 0 : x` rather than max(): a NaN passes through, so divergence stays visible.
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.0f ? 0.0f : x[i];
}

void relu_backward(Context& ctx, const float* y, const float* dy, float* dx, int64_t n) {
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) {
    // dy is loaded whatever y is: a select between two loaded values vectorises, while
    // a load under the condition compiles to a branch that mispredicts on about every
    // other element of real activations (30x slower).
    const float g = dy[i];
    dx[i] = y[i] > 0.0f ? g : 0.0f;
  }
}

void fill(Context& ctx, float* x, int64_t n, float value) {
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) x[i] = value;
}

void add(Context& ctx, ConstTypedPtr a, ConstTypedPtr b, TypedPtr y, int64_t n) {
  with_storage(common_type("add", {{"a", a}, {"b", b}, {"y", y}}), [&](auto tag) {
    using T = decltype(tag);
    add_typed(ctx, typed<T>(a), typed<T>(b), typed<T>(y), n);
  });
}

void scale(Context& ctx, float* x, int64_t n, float alpha) {
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
  for (int64_t i = 0; i < n; ++i) x[i] *= alpha;
}

void copy_from_host(Context& /*ctx*/, void* dst, const void* src, size_t bytes) {
  if (bytes != 0) std::memcpy(dst, src, bytes);
}

void copy_to_host(Context& /*ctx*/, void* dst, const void* src, size_t bytes) {
  if (bytes != 0) std::memcpy(dst, src, bytes);
}

}  // namespace dtrain::cpu
