#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/check.h"
#include "kernels/cpu/cpu_ops.h"

namespace dtrain::cpu {

namespace {

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

}  // namespace

void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* x, float* y,
                       int32_t* argmax) {
  check_shape(s, "maxpool2d_forward");
  const int64_t ho = s.out_height(), wo = s.out_width();
  const int64_t in_plane = s.height * s.width, out_plane = ho * wo;
  const int64_t planes = s.batch * s.channels;
#pragma omp parallel for num_threads(ctx.num_threads()) if (planes * in_plane >= kParallelMinWork)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * in_plane;
    float* yp = y + pl * out_plane;
    int32_t* ap = argmax + pl * out_plane;
    for (int64_t oh = 0; oh < ho; ++oh) {
      for (int64_t ow = 0; ow < wo; ++ow) {
        const int64_t h0 = oh * s.stride, w0 = ow * s.stride;
        int64_t best_at = h0 * s.width + w0;
        float best = xp[best_at];
        // Row-major scan with a strict '>' keeps the first of equal maxima. A NaN wins
        // over numbers, so divergence propagates as in PyTorch.
        for (int64_t i = 0; i < s.window; ++i) {
          const float* row = xp + (h0 + i) * s.width;
          for (int64_t j = 0; j < s.window; ++j) {
            const float v = row[w0 + j];
            if (v > best || (std::isnan(v) && !std::isnan(best))) {
              best = v;
              best_at = (h0 + i) * s.width + w0 + j;
            }
          }
        }
        yp[oh * wo + ow] = best;
        ap[oh * wo + ow] = static_cast<int32_t>(best_at);
      }
    }
  }
}

void maxpool2d_backward(Context& ctx, const Pool2dShape& s, const float* dy,
                        const int32_t* argmax, float* dx) {
  check_shape(s, "maxpool2d_backward");
  const int64_t in_plane = s.height * s.width, out_plane = s.out_height() * s.out_width();
  const int64_t planes = s.batch * s.channels;
  // Windows overlap when stride < window, so one input can win several: accumulate.
#pragma omp parallel for num_threads(ctx.num_threads()) if (planes * in_plane >= kParallelMinWork)
  for (int64_t pl = 0; pl < planes; ++pl) {
    float* dxp = dx + pl * in_plane;
    const float* dyp = dy + pl * out_plane;
    const int32_t* ap = argmax + pl * out_plane;
    std::fill(dxp, dxp + in_plane, 0.0f);
    for (int64_t j = 0; j < out_plane; ++j) dxp[ap[j]] += dyp[j];
  }
}

}  // namespace dtrain::cpu
