// Convolution as im2col + GEMM, a chunk of samples at a time: the oracle the oneDNN
// convolutions (conv2d.cpp) are tested against (conv2d_im2col.h).
//
// Note [conv2d column layout]
// The columns of a chunk of `nb` samples form one matrix cols (Ci*K*K, nb*P), P = Ho*Wo,
// whose column n*P + p is the receptive field of output position p of sample n. One
// GEMM per chunk then covers every sample: W (Co, Ci*K*K) x cols = (Co, nb*P). That
// product is channel-major across samples, so it is scattered to NCHW (forward) or
// gathered from it (backward). Backward recomputes im2col instead of keeping the
// forward's columns: memory is the scarce resource, and im2col is cheap next to GEMM.
//
// Note [conv2d chunk size]
// The GEMMs of few-channel layers are thin and only become efficient when nb*P is
// wide, but past a few thousand columns they gain nothing more, while the column
// matrix of a large chunk no longer fits in cache: im2col then writes it to memory and
// the GEMM reads it back (OpenBLAS packs it), and ranks sharing a machine compete for
// the memory bandwidth. So the default chunk is as many samples as fit
// kConvChunkBytesPerThread per thread (12 samples, nb*P = 2352, for the Fashion-MNIST
// CNN's 16->32 layer on one thread), at most kConvWorkspaceBudget. Measured on 2 cores
// (bench/RESULTS.md), against the whole batch in one chunk: the CNN's layer ops 1.3x
// faster with two 1-thread processes side by side, and about 1.2x with one 2-thread
// process. (This was the backend's convolution before oneDNN's, Note [oneDNN
// convolutions] in conv2d.cpp, which is about twice as fast again.)
#include <algorithm>
#include <cstring>

#include "kernels/check.h"
#include "kernels/cpu/conv2d_im2col.h"
#include "kernels/cpu/cpu_ops.h"

namespace dtrain::cpu {

namespace {

// Workspace offsets are rounded to this many floats to keep each operand 64-byte aligned.
constexpr int64_t kAlignFloats = 16;

// Output positions o along one axis whose input coordinate o*stride - pad + k lies
// in [0, extent): those in [lo, hi) read the input, the rest read padding.
struct Span {
  int64_t lo, hi;
};

Span valid_span(int64_t k, int64_t stride, int64_t pad, int64_t extent, int64_t out) {
  const int64_t first = pad - k;               // smallest o*stride that is inside
  const int64_t last = extent - 1 + pad - k;   // largest o*stride that is inside
  const int64_t hi = last < 0 ? 0 : std::min(out, last / stride + 1);
  const int64_t lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  return {std::min(lo, hi), hi};
}

struct Geometry {
  int64_t ho, wo, p, ckk, in_plane;
  explicit Geometry(const Conv2dShape& s)
      : ho(s.out_height()), wo(s.out_width()), p(ho * wo),
        ckk(s.in_channels * s.kernel * s.kernel), in_plane(s.height * s.width) {}
};

// Note [Same-size stride-1 columns]
// When the convolution has stride 1 and keeps the size ("same" padding), row (ci, kh, kw)
// of one sample's columns is col[oh*W + ow] = plane[(oh+dh)*W + ow+dw] (0 outside the
// plane), with dh = kh - pad and dw = kw - pad. In row-major order that is the plane
// shifted by dh*W + dw: the rows of the band that lie inside the plane are one block,
// except for the |dw| entries per row that wrap around to the neighbouring row. So
// im2col is one block copy plus zeroing, and col2im one block add after the wrapped
// entries of the (scratch) columns are zeroed, instead of one short loop or memcpy
// call per output row.
struct ShiftedBand {
  int64_t off;             // col[i] = plane[i + off] inside the band
  int64_t row_lo, row_hi;  // output rows whose input row is inside the plane
  int64_t lo, hi;          // the band [row_lo*W, row_hi*W), less the ends whose source
                           // lies outside the plane (wrapped entries either way)
  int64_t wrap_lo, wrap_hi;  // the columns that wrap around

  ShiftedBand(int64_t h, int64_t w, int64_t dh, int64_t dw)
      : off(dh * w + dw),
        row_lo(std::clamp<int64_t>(-dh, 0, h)),
        row_hi(std::clamp<int64_t>(h - dh, row_lo, h)),
        lo(std::clamp(-off, row_lo * w, row_hi * w)),
        hi(std::clamp(h * w - off, lo, row_hi * w)),
        wrap_lo(dw > 0 ? std::max<int64_t>(0, w - dw) : 0),
        wrap_hi(dw > 0 ? w : std::min(w, -dw)) {}

  // Zeroes the wrapped entries of the band's rows in col. Column by column: a
  // std::fill per row would be a memset call for 1 or 2 floats.
  void zero_wrapped(float* col, int64_t w) const {
    for (int64_t c = wrap_lo; c < wrap_hi; ++c) {
      for (int64_t r = row_lo; r < row_hi; ++r) col[r * w + c] = 0.0f;
    }
  }
};

void im2col_same_stride1(const float* plane, int64_t h, int64_t w, int64_t dh, int64_t dw,
                         float* col) {
  const ShiftedBand band(h, w, dh, dw);
  std::fill(col, col + band.lo, 0.0f);
  if (band.hi > band.lo) {
    std::memcpy(col + band.lo, plane + band.lo + band.off,
                static_cast<size_t>(band.hi - band.lo) * sizeof(float));
  }
  std::fill(col + band.hi, col + h * w, 0.0f);
  band.zero_wrapped(col, w);
}

// plane += the adjoint of im2col_same_stride1 applied to col, whose wrapped entries
// are zeroed on the way (col is scratch).
void col2im_same_stride1(float* col, int64_t h, int64_t w, int64_t dh, int64_t dw,
                         float* plane) {
  const ShiftedBand band(h, w, dh, dw);
  band.zero_wrapped(col, w);
  for (int64_t i = band.lo; i < band.hi; ++i) plane[i + band.off] += col[i];
}

// cols (Ci*K*K, nb*P) <- x (nb, Ci, H, W); see Note [conv2d column layout].
void im2col(Context& ctx, const Conv2dShape& s, const Geometry& g, const float* x, int64_t nb,
            float* cols) {
  const int64_t ld = nb * g.p;
  const int64_t k = s.kernel, st = s.stride, pad = s.padding;
  const bool parallel = nb * g.ckk * g.p >= kParallelMinWork;
  const bool same_stride1 = st == 1 && g.ho == s.height && g.wo == s.width;
#pragma omp parallel for collapse(2) num_threads(ctx.num_threads()) if (parallel)
  for (int64_t n = 0; n < nb; ++n) {
    for (int64_t ci = 0; ci < s.in_channels; ++ci) {
      const float* plane = x + (n * s.in_channels + ci) * g.in_plane;
      for (int64_t kh = 0; kh < k; ++kh) {
        for (int64_t kw = 0; kw < k; ++kw) {
          float* dst = cols + ((ci * k + kh) * k + kw) * ld + n * g.p;
          if (same_stride1) {
            im2col_same_stride1(plane, s.height, s.width, kh - pad, kw - pad, dst);
            continue;
          }
          const Span cs = valid_span(kw, st, pad, s.width, g.wo);
          for (int64_t oh = 0; oh < g.ho; ++oh) {
            float* d = dst + oh * g.wo;
            const int64_t ih = oh * st - pad + kh;
            if (ih < 0 || ih >= s.height) {
              std::fill(d, d + g.wo, 0.0f);
              continue;
            }
            const float* src = plane + ih * s.width;
            const int64_t shift = kw - pad;  // iw = ow*st + shift
            std::fill(d, d + cs.lo, 0.0f);
            if (st == 1 && cs.hi > cs.lo) {
              std::memcpy(d + cs.lo, src + cs.lo + shift,
                          static_cast<size_t>(cs.hi - cs.lo) * sizeof(float));
            } else if (st != 1) {
              for (int64_t ow = cs.lo; ow < cs.hi; ++ow) d[ow] = src[ow * st + shift];
            }
            std::fill(d + cs.hi, d + g.wo, 0.0f);
          }
        }
      }
    }
  }
}

// dx (nb, Ci, H, W) = the adjoint of im2col applied to cols; overwrites dx. cols is
// scratch: the same-size stride-1 path zeroes entries of it.
void col2im(Context& ctx, const Conv2dShape& s, const Geometry& g, float* cols, int64_t nb,
            float* dx) {
  const int64_t ld = nb * g.p;
  const int64_t k = s.kernel, st = s.stride, pad = s.padding;
  const bool parallel = nb * g.ckk * g.p >= kParallelMinWork;
  const bool same_stride1 = st == 1 && g.ho == s.height && g.wo == s.width;
#pragma omp parallel for collapse(2) num_threads(ctx.num_threads()) if (parallel)
  for (int64_t n = 0; n < nb; ++n) {
    for (int64_t ci = 0; ci < s.in_channels; ++ci) {
      float* plane = dx + (n * s.in_channels + ci) * g.in_plane;
      std::fill(plane, plane + g.in_plane, 0.0f);
      for (int64_t kh = 0; kh < k; ++kh) {
        for (int64_t kw = 0; kw < k; ++kw) {
          float* src = cols + ((ci * k + kh) * k + kw) * ld + n * g.p;
          if (same_stride1) {
            col2im_same_stride1(src, s.height, s.width, kh - pad, kw - pad, plane);
            continue;
          }
          const Span cs = valid_span(kw, st, pad, s.width, g.wo);
          const int64_t shift = kw - pad;
          for (int64_t oh = 0; oh < g.ho; ++oh) {
            const int64_t ih = oh * st - pad + kh;
            if (ih < 0 || ih >= s.height) continue;
            float* d = plane + ih * s.width;
            const float* srow = src + oh * g.wo;
            if (st == 1) {  // unit stride vectorises
              for (int64_t ow = cs.lo; ow < cs.hi; ++ow) d[ow + shift] += srow[ow];
            } else {
              for (int64_t ow = cs.lo; ow < cs.hi; ++ow) d[ow * st + shift] += srow[ow];
            }
          }
        }
      }
    }
  }
}

// packed (Co, nb*P) <- dy (nb, Co, P).
void gather_channel_major(Context& ctx, const float* nchw, int64_t nb, int64_t channels,
                          int64_t p, float* packed) {
  const int64_t ld = nb * p;
#pragma omp parallel for collapse(2) num_threads(ctx.num_threads()) \
    if (nb * channels * p >= kParallelMinWork)
  for (int64_t n = 0; n < nb; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      std::memcpy(packed + c * ld + n * p, nchw + (n * channels + c) * p,
                  static_cast<size_t>(p) * sizeof(float));
    }
  }
}

// y (nb, Co, P) <- packed (Co, nb*P) + bias.
void scatter_channel_major(Context& ctx, const float* packed, const float* bias, int64_t nb,
                           int64_t channels, int64_t p, float* nchw) {
  const int64_t ld = nb * p;
#pragma omp parallel for collapse(2) num_threads(ctx.num_threads()) \
    if (nb * channels * p >= kParallelMinWork)
  for (int64_t n = 0; n < nb; ++n) {
    for (int64_t c = 0; c < channels; ++c) {
      const float b = bias != nullptr ? bias[c] : 0.0f;
      const float* src = packed + c * ld + n * p;
      float* dst = nchw + (n * channels + c) * p;
      for (int64_t i = 0; i < p; ++i) dst[i] = src[i] + b;
    }
  }
}

int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// The workspace of one chunk: the column matrix, then the (Co, nb*P) GEMM operand.
struct ChunkScratch {
  float* cols;
  float* packed;
};

int64_t chunk_cols_floats(const Geometry& g, int64_t chunk) {
  return round_up(g.ckk * chunk * g.p, kAlignFloats);
}

size_t chunk_scratch_bytes(const Conv2dShape& s, const Geometry& g, int64_t chunk) {
  return static_cast<size_t>(chunk_cols_floats(g, chunk) + s.out_channels * chunk * g.p) *
         sizeof(float);
}

ChunkScratch chunk_scratch(Context& ctx, const Conv2dShape& s, const Geometry& g, int64_t chunk) {
  auto* base = static_cast<float*>(ctx.workspace(chunk_scratch_bytes(s, g, chunk)));
  return {base, base + chunk_cols_floats(g, chunk)};
}

// The workspace budget of a conv op's call: see kConvCacheBudget.
size_t resolve_budget(const Context& ctx, size_t budget_bytes) {
  if (budget_bytes != kConvCacheBudget) return budget_bytes;
  const auto threads = static_cast<size_t>(std::max(1, ctx.num_threads()));
  return std::min(kConvWorkspaceBudget, kConvChunkBytesPerThread * threads);
}

}  // namespace

int64_t conv2d_im2col_chunk_samples(const Conv2dShape& s, size_t budget_bytes) {
  if (s.batch <= 0) return 0;
  const Geometry g(s);
  const auto per_sample =
      static_cast<size_t>((g.ckk + s.out_channels) * g.p) * sizeof(float);
  const auto fit = static_cast<int64_t>(budget_bytes / per_sample);
  return std::clamp<int64_t>(fit, 1, s.batch);
}

size_t conv2d_im2col_workspace_bytes(const Context& ctx, const Conv2dShape& s) {
  conv2d_check_shape(s, "conv2d_im2col_workspace_bytes");  // a bad shape is no workspace size (as on CUDA)
  if (s.batch <= 0) return 0;
  const Geometry g(s);
  return chunk_scratch_bytes(s, g, conv2d_im2col_chunk_samples(s, resolve_budget(ctx, kConvCacheBudget)));
}

void conv2d_im2col_forward(Context& ctx, const Conv2dShape& s, const float* x, const float* w,
                    const float* bias, float* y, size_t budget_bytes) {
  conv2d_check_shape(s, "conv2d_im2col_forward");
  if (s.batch == 0) return;
  const Geometry g(s);
  const int64_t chunk = conv2d_im2col_chunk_samples(s, resolve_budget(ctx, budget_bytes));
  const ChunkScratch ws = chunk_scratch(ctx, s, g, chunk);
  const int64_t co = s.out_channels;
  for (int64_t n0 = 0; n0 < s.batch; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.batch - n0);
    float* y0 = y + n0 * co * g.p;
    im2col(ctx, s, g, x + n0 * s.in_channels * g.in_plane, nb, ws.cols);
    if (nb == 1) {
      // One sample's (Co, P) product is already its NCHW slice.
      gemm(ctx, false, false, co, g.p, g.ckk, 1.0f, w, g.ckk, ws.cols, g.p, 0.0f, y0, g.p);
      if (bias != nullptr) add_bias(ctx, y0, bias, 1, co, g.p);
    } else {
      gemm(ctx, false, false, co, nb * g.p, g.ckk, 1.0f, w, g.ckk, ws.cols, nb * g.p, 0.0f,
           ws.packed, nb * g.p);
      scatter_channel_major(ctx, ws.packed, bias, nb, co, g.p, y0);
    }
  }
}

// dY of samples [n0, n0+nb) as (Co, nb*P) for the backward GEMMs: one sample's NCHW
// slice already is; several are gathered into `scratch`.
const float* channel_major_grad(Context& ctx, const Geometry& g, const float* dy, int64_t n0,
                                int64_t nb, int64_t co, float* scratch) {
  const float* dy0 = dy + n0 * co * g.p;
  if (nb == 1) return dy0;
  gather_channel_major(ctx, dy0, nb, co, g.p, scratch);
  return scratch;
}

void conv2d_im2col_backward_data(Context& ctx, const Conv2dShape& s, const float* dy, const float* w,
                          float* dx, size_t budget_bytes) {
  conv2d_check_shape(s, "conv2d_im2col_backward_data");
  if (s.batch == 0) return;
  const Geometry g(s);
  const int64_t chunk = conv2d_im2col_chunk_samples(s, resolve_budget(ctx, budget_bytes));
  const ChunkScratch ws = chunk_scratch(ctx, s, g, chunk);
  const int64_t co = s.out_channels;
  for (int64_t n0 = 0; n0 < s.batch; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.batch - n0);
    const float* dy_packed = channel_major_grad(ctx, g, dy, n0, nb, co, ws.packed);
    // dcols (Ci*K*K, nb*P) = W^T x dY
    gemm(ctx, true, false, g.ckk, nb * g.p, co, 1.0f, w, g.ckk, dy_packed, nb * g.p, 0.0f,
         ws.cols, nb * g.p);
    col2im(ctx, s, g, ws.cols, nb, dx + n0 * s.in_channels * g.in_plane);
  }
}

void conv2d_im2col_backward_filter(Context& ctx, const Conv2dShape& s, const float* x, const float* dy,
                            float* dw, float* dbias, size_t budget_bytes) {
  conv2d_check_shape(s, "conv2d_im2col_backward_filter");
  if (s.batch == 0) return;
  const Geometry g(s);
  const int64_t chunk = conv2d_im2col_chunk_samples(s, resolve_budget(ctx, budget_bytes));
  const ChunkScratch ws = chunk_scratch(ctx, s, g, chunk);
  const int64_t co = s.out_channels;
  for (int64_t n0 = 0; n0 < s.batch; n0 += chunk) {
    const int64_t nb = std::min(chunk, s.batch - n0);
    const float* dy_packed = channel_major_grad(ctx, g, dy, n0, nb, co, ws.packed);
    im2col(ctx, s, g, x + n0 * s.in_channels * g.in_plane, nb, ws.cols);
    // dW (Co, Ci*K*K) += dY x cols^T
    gemm(ctx, false, true, co, g.ckk, nb * g.p, 1.0f, dy_packed, nb * g.p, ws.cols, nb * g.p,
         1.0f, dw, g.ckk);
  }
  if (dbias != nullptr) bias_backward(ctx, dy, dbias, s.batch, co, g.p);
}

}  // namespace dtrain::cpu
