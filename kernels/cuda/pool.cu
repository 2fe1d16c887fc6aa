// Max-pooling with an int32 argmax in the (H, W) plane, as the CPU op.
//
// Forward: one thread per output, scanning its window in row-major order with a strict
// '>' (the first of equal maxima wins; a NaN wins over numbers), so y and argmax equal
// the CPU's bit for bit.
//
// Backward gathers instead of scattering: one thread per input element sums dy over
// the windows that contain it and chose it, in row-major window order. Each dx element
// is written exactly once (so dx is overwritten without a separate clear), no atomics
// are needed when windows overlap (stride < window), and the sum is added in the same
// order as the CPU's scatter loop, so the result is the same bit for bit too.
#include <cstdint>
#include <limits>

#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"

namespace dtrain {

namespace {

using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;

void check_shape(const Pool2dShape& s, const char* op) {
  DTRAIN_ASSERT(s.batch >= 0 && s.channels > 0 && s.height > 0 && s.width > 0 && s.window > 0 &&
                    s.stride > 0,
                op << ": invalid shape");
  DTRAIN_ASSERT(s.window <= s.height && s.window <= s.width,
                op << ": window " << s.window << " is larger than the " << s.height << "x"
                   << s.width << " input");
  DTRAIN_ASSERT(s.height * s.width <= std::numeric_limits<int32_t>::max(),
                op << ": a " << s.height << "x" << s.width << " plane overflows the int32 argmax");
}

struct PoolGeometry {
  int64_t height, width, window, stride, out_height, out_width;
};

PoolGeometry geometry(const Pool2dShape& s) {
  return {s.height, s.width, s.window, s.stride, s.out_height(), s.out_width()};
}

__global__ void maxpool_forward_kernel(PoolGeometry g, const float* x, float* y, int32_t* argmax,
                                       int64_t total) {
  const int64_t out_plane = g.out_height * g.out_width;
  for (int64_t idx = grid_start(); idx < total; idx += grid_stride()) {
    const int64_t plane = idx / out_plane;
    const int64_t rest = idx - plane * out_plane;
    const int64_t oh = rest / g.out_width, ow = rest - oh * g.out_width;
    const float* xp = x + plane * g.height * g.width;
    const int64_t h0 = oh * g.stride, w0 = ow * g.stride;
    int64_t best_at = h0 * g.width + w0;
    float best = xp[best_at];
    for (int64_t i = 0; i < g.window; ++i) {
      const float* row = xp + (h0 + i) * g.width;
      for (int64_t j = 0; j < g.window; ++j) {
        const float v = row[w0 + j];
        if (v > best || (v != v && best == best)) {  // v != v: v is NaN
          best = v;
          best_at = (h0 + i) * g.width + w0 + j;
        }
      }
    }
    y[idx] = best;
    argmax[idx] = static_cast<int32_t>(best_at);
  }
}

__global__ void maxpool_backward_kernel(PoolGeometry g, const float* dy, const int32_t* argmax,
                                        float* dx, int64_t total) {
  const int64_t in_plane = g.height * g.width, out_plane = g.out_height * g.out_width;
  for (int64_t idx = grid_start(); idx < total; idx += grid_stride()) {
    const int64_t plane = idx / in_plane;
    const int64_t at = idx - plane * in_plane;
    const int64_t h = at / g.width, w = at - h * g.width;
    // Windows o with o*stride <= h < o*stride + window, clipped to the output.
    const int64_t oh_lo = h < g.window ? 0 : (h - g.window) / g.stride + 1;
    const int64_t ow_lo = w < g.window ? 0 : (w - g.window) / g.stride + 1;
    const int64_t oh_hi = min(h / g.stride, g.out_height - 1);
    const int64_t ow_hi = min(w / g.stride, g.out_width - 1);
    const float* dyp = dy + plane * out_plane;
    const int32_t* ap = argmax + plane * out_plane;
    float sum = 0.0f;
    for (int64_t oh = oh_lo; oh <= oh_hi; ++oh) {
      for (int64_t ow = ow_lo; ow <= ow_hi; ++ow) {
        const int64_t o = oh * g.out_width + ow;
        if (ap[o] == at) sum += dyp[o];
      }
    }
    dx[idx] = sum;
  }
}

}  // namespace

void CudaBackend::maxpool2d_forward(Context& /*ctx*/, const Pool2dShape& s, const float* x,
                                    float* y, int32_t* argmax) {
  check_shape(s, "maxpool2d_forward");
  const int64_t total = s.batch * s.channels * s.out_height() * s.out_width();
  if (total == 0) return;
  maxpool_forward_kernel<<<blocks_for(total, kBlockThreads), kBlockThreads, 0, stream()>>>(
      geometry(s), x, y, argmax, total);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::maxpool2d_backward(Context& /*ctx*/, const Pool2dShape& s, const float* dy,
                                     const int32_t* argmax, float* dx) {
  check_shape(s, "maxpool2d_backward");
  const int64_t total = s.batch * s.channels * s.height * s.width;
  if (total == 0) return;
  maxpool_backward_kernel<<<blocks_for(total, kBlockThreads), kBlockThreads, 0, stream()>>>(
      geometry(s), dy, argmax, dx, total);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace dtrain
