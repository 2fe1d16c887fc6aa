#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

// Whether candidate v replaces the window's best so far: it is larger, or it is the
// first NaN (a NaN wins over numbers, so divergence propagates as in PyTorch). With the
// window scanned in row-major order, the strict '>' keeps the first of equal maxima.
inline bool pool_takes(float v, float best) {
  return v > best || (std::isnan(v) && !std::isnan(best));
}

// One output row of the 2x2, stride-2 pool: r0 and r1 = r0 + width are the two input
// rows, `base` is the plane index of r0[0]. Which of the four candidates wins is a coin
// toss on real activations, so the per-window scan mispredicts a branch for most
// windows (10 ns a window); four windows at a time are compared with SSE masks instead,
// in the same order and with the same rule as pool_takes.
void pool2x2_row(const float* r0, int64_t width, int64_t wo, int32_t base, float* y,
                 int32_t* argmax) {
  const float* r1 = r0 + width;
  const auto w = static_cast<int32_t>(width);
  int64_t ow = 0;
#if defined(__SSE2__)
  const auto takes = [](__m128 v, __m128 best) {
    return _mm_or_ps(_mm_cmpgt_ps(v, best),
                     _mm_and_ps(_mm_cmpunord_ps(v, v), _mm_cmpord_ps(best, best)));
  };
  const auto select = [](__m128 mask, __m128 a, __m128 b) {
    return _mm_or_ps(_mm_and_ps(mask, a), _mm_andnot_ps(mask, b));
  };
  const __m128 at_top_right = _mm_castsi128_ps(_mm_set1_epi32(1));
  const __m128 at_bottom_left = _mm_castsi128_ps(_mm_set1_epi32(w));
  const __m128 at_bottom_right = _mm_castsi128_ps(_mm_set1_epi32(w + 1));
  const __m128i window_starts = _mm_set_epi32(6, 4, 2, 0);
  const auto pool4 = [&](int64_t ow) {  // windows ow .. ow + 3
    const __m128 t0 = _mm_loadu_ps(r0 + 2 * ow), t1 = _mm_loadu_ps(r0 + 2 * ow + 4);
    const __m128 b0 = _mm_loadu_ps(r1 + 2 * ow), b1 = _mm_loadu_ps(r1 + 2 * ow + 4);
    const __m128 top_left = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
    const __m128 top_right = _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
    const __m128 bottom_left = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0));
    const __m128 bottom_right = _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1));
    __m128 best = top_left;
    __m128 at = _mm_setzero_ps();  // offset of the winner from the window's top left
    __m128 take = takes(top_right, best);
    best = select(take, top_right, best);
    at = select(take, at_top_right, at);
    take = takes(bottom_left, best);
    best = select(take, bottom_left, best);
    at = select(take, at_bottom_left, at);
    take = takes(bottom_right, best);
    best = select(take, bottom_right, best);
    at = select(take, at_bottom_right, at);
    const __m128i top_lefts =
        _mm_add_epi32(_mm_set1_epi32(base + static_cast<int32_t>(2 * ow)), window_starts);
    _mm_storeu_ps(y + ow, best);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(argmax + ow),
                     _mm_add_epi32(top_lefts, _mm_castps_si128(at)));
  };
  for (; ow + 4 <= wo; ow += 4) pool4(ow);
  // The last windows short of four: the four that end the row, some of them again (the
  // same results), instead of the scan, whose branches made a 7-window row (the CNN's
  // second pool) take 5x as long as oneDNN's pooling.
  if (ow < wo && wo >= 4) {
    pool4(wo - 4);
    ow = wo;
  }
#endif
  for (; ow < wo; ++ow) {
    const int32_t top_left = base + static_cast<int32_t>(2 * ow);
    const int32_t at[4] = {top_left, top_left + 1, top_left + w, top_left + w + 1};
    const float v[4] = {r0[2 * ow], r0[2 * ow + 1], r1[2 * ow], r1[2 * ow + 1]};
    float best = v[0];
    int32_t best_at = at[0];
    for (int c = 1; c < 4; ++c) {
      if (pool_takes(v[c], best)) {
        best = v[c];
        best_at = at[c];
      }
    }
    y[ow] = best;
    argmax[ow] = best_at;
  }
}

}  // namespace

void maxpool2d_forward(Context& ctx, const Pool2dShape& s, const float* x, float* y,
                       int32_t* argmax) {
  check_shape(s, "maxpool2d_forward");
  const int64_t ho = s.out_height(), wo = s.out_width();
  const int64_t in_plane = s.height * s.width, out_plane = ho * wo;
  const int64_t planes = s.batch * s.channels;
  const bool parallel = planes * in_plane >= kParallelMinWork;
  if (s.window == 2 && s.stride == 2) {
#pragma omp parallel for num_threads(ctx.num_threads()) if (parallel)
    for (int64_t pl = 0; pl < planes; ++pl) {
      for (int64_t oh = 0; oh < ho; ++oh) {
        pool2x2_row(x + pl * in_plane + 2 * oh * s.width, s.width, wo,
                    static_cast<int32_t>(2 * oh * s.width), y + pl * out_plane + oh * wo,
                    argmax + pl * out_plane + oh * wo);
      }
    }
    return;
  }
#pragma omp parallel for num_threads(ctx.num_threads()) if (parallel)
  for (int64_t pl = 0; pl < planes; ++pl) {
    const float* xp = x + pl * in_plane;
    float* yp = y + pl * out_plane;
    int32_t* ap = argmax + pl * out_plane;
    for (int64_t oh = 0; oh < ho; ++oh) {
      for (int64_t ow = 0; ow < wo; ++ow) {
        const int64_t h0 = oh * s.stride, w0 = ow * s.stride;
        int64_t best_at = h0 * s.width + w0;
        float best = xp[best_at];
        for (int64_t i = 0; i < s.window; ++i) {
          const float* row = xp + (h0 + i) * s.width;
          for (int64_t j = 0; j < s.window; ++j) {
            const float v = row[w0 + j];
            if (pool_takes(v, best)) {
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
