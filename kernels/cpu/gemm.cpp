// GEMM on OpenBLAS, split over the OpenMP team; see Note [One thread pool]. bf16
// inputs are widened to fp32 block by block; see Note [bf16 GEMM].
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gelu_rows.h"
#include "kernels/cpu/storage.h"
#include "kernels/errors.h"

namespace dtrain::cpu {

namespace {

// The Debian OpenBLAS takes 32-bit dimensions; larger ones would silently wrap.
blasint to_blas(int64_t v, const char* what) {
  DTRAIN_ASSERT(v >= 0 && v <= std::numeric_limits<blasint>::max(),
                "gemm " << what << " = " << v << " does not fit OpenBLAS's integer type");
  return static_cast<blasint>(v);
}

// A slab carries at least this many multiply-adds (about 40 us on one AVX2 core): a GEMM
// below twice it runs on one thread, and one below kGemmMaxSlabs times it is cut into
// fewer slabs than its extent allows. Waking a worker that still spins (Note [OpenMP
// wait policy], launch/main.cpp) takes about a microsecond, and each slab packs the
// other operand again. So the 1-rank MLP's three products of 2^21 multiply-adds go to
// two threads, where the worker used to wait them out (bench/RESULTS.md).
constexpr int64_t kGemmMinSlabMacs = int64_t{1} << 20;
// Slabs start at multiples of this many rows or columns, so that no slab is a sliver
// narrower than OpenBLAS's register blocking.
constexpr int64_t kGemmSlabAlign = 32;
// At most this many slabs: so many threads share one GEMM (Note [One thread pool]).
constexpr int64_t kGemmMaxSlabs = 8;

// Note [Zeroing C]
// With beta == 0, OpenBLAS first zeroes C in a pass of its own (its BETA kernel), then
// its GEMM kernel adds alpha op(A) op(B) into C. On its AVX2 cores (Haswell, Zen) that
// BETA kernel stores one float per instruction: it took 7% of the fp32 GPT's CPU step
// on an AVX2 EPYC (bench/gpt_shakespeare.yaml, 2 threads, perf). There C is zeroed
// here, row by row with memset's vector stores, and OpenBLAS is called with beta == 1,
// which skips its pass: the same kernel then adds into the same zeros, so every element
// is the same bits as with beta == 0 (test_cpu_ops.cpp holds it to OpenBLAS's own
// beta == 0 call), NaN garbage in C is overwritten as before, and the zeroing runs on
// the thread that computes the slab, just before the kernel reads it. On a CPU with
// AVX-512 OpenBLAS keeps beta == 0: its BETA kernel there is vectorised, and its direct
// kernel for small untransposed products (no packing) takes only beta == 0.
// Elsewhere than x86-64, OpenBLAS's own path too.
bool zero_c_before_openblas() {
#if defined(__x86_64__)
  static const bool avx2_only = !__builtin_cpu_supports("avx512f");
  return avx2_only;
#else
  return false;
#endif
}

// Dimensions already checked by to_blas.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (beta == 0.0f && zero_c_before_openblas()) {
    for (int64_t i = 0; i < m; ++i) std::memset(c + i * ldc, 0, static_cast<size_t>(n) * sizeof(float));
    beta = 1.0f;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

// Note [One thread pool]
// A GEMM is cut into slabs of C along the longer of its dimensions: columns (a slab of
// op(B)) or rows (a slab of op(A)), each one OpenBLAS call over the whole of k, and the
// team takes the slabs. The cut is a function of the shape alone (gemm_slabs), never of
// the number of threads: OpenBLAS's sgemm kernels for AVX2 (its Haswell and Zen cores)
// sum an element in an order that depends on the call's extents (an element of a slab
// can differ in its last bit from the same element of the whole product), so a cut that
// followed the threads would make the results depend on them. With the shape's cut, the
// same calls run on 1, 2 or 8 threads and give the same bits; more than kGemmMaxSlabs
// threads do not share one GEMM.
struct GemmSlabs {
  bool columns;    // the cut runs across columns of C (else across rows)
  int64_t extent;  // n or m
  int64_t count;   // 1: the whole product, one call
  int64_t lo(int64_t s) const { return std::min(extent, units() * s / count * kGemmSlabAlign); }
  int64_t hi(int64_t s) const { return std::min(extent, units() * (s + 1) / count * kGemmSlabAlign); }
  int64_t units() const { return (extent + kGemmSlabAlign - 1) / kGemmSlabAlign; }
};

GemmSlabs gemm_slabs(int64_t m, int64_t n, int64_t k) {
  const bool columns = n >= m;
  const int64_t extent = columns ? n : m;
  const int64_t count =
      std::clamp<int64_t>(std::min(extent / kGemmSlabAlign, m * n * k / kGemmMinSlabMacs), 1, kGemmMaxSlabs);
  return {columns, extent, count};
}

// The fp32 product on the team, dimensions already checked by to_blas.
void sgemm_team(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                float* c, int64_t ldc) {
  const GemmSlabs slabs = gemm_slabs(m, n, k);
  if (slabs.count == 1) {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int threads = static_cast<int>(std::min<int64_t>(ctx.num_threads(), slabs.count));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
  for (int64_t slab = 0; slab < slabs.count; ++slab) {
    const int64_t lo = slabs.lo(slab), hi = slabs.hi(slab);
    if (hi <= lo) continue;
    if (slabs.columns) {
      const float* b_slab = trans_b ? b + lo * ldb : b + lo;
      sgemm(trans_a, trans_b, m, hi - lo, k, alpha, a, lda, b_slab, ldb, beta, c + lo, ldc);
    } else {
      const float* a_slab = trans_a ? a + lo : a + lo * lda;
      sgemm(trans_a, trans_b, hi - lo, n, k, alpha, a_slab, lda, b, ldb, beta, c + lo * ldc,
            ldc);
    }
  }
}

// C = beta * C, the whole product when it is empty (k == 0 or alpha == 0). BLAS
// rejects lda < 1 even when k == 0, so it is not called. beta == 0 overwrites, so NaN
// garbage in C does not survive (as in BLAS).
template <class T>
void scale_only(int64_t m, int64_t n, float beta, T* c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i) {
    T* row = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) row[j] = narrow<T>(beta == 0.0f ? 0.0f : beta * widen(row[j]));
  }
}

// dst (rows, cols), packed, = src (rows, cols) with row stride ld, widened.
void widen_block(Context& ctx, const bf16* src, int64_t ld, int64_t rows, int64_t cols, float* dst) {
#pragma omp parallel for num_threads(ctx.num_threads()) if (rows * cols >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) widen_row(src + r * ld, cols, dst + r * cols);
}

// dst (rows, cols) with row stride ld = src (rows, cols), packed, rounded.
void narrow_block(Context& ctx, const float* src, int64_t rows, int64_t cols, bf16* dst, int64_t ld) {
#pragma omp parallel for num_threads(ctx.num_threads()) if (rows * cols >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) narrow_row(src + r * cols, cols, dst + r * ld);
}

int64_t gemm_bf16_floats(int64_t rows, int64_t cols, int64_t k, bool c_bf16) {
  return rows * k + k * cols + (c_bf16 ? rows * cols : 0);
}

// Note [bf16 GEMM]
// A GEMM on bf16 A and B widens them to fp32 (exact) and runs the fp32 GEMM, so C is
// exactly the fp32 GEMM of the widened inputs (a bf16 C: that, rounded once, after
// beta * C is added; its old value is widened into the fp32 block first). The widened
// copies are bounded by kGemmWorkspaceBudget: C is covered in blocks of rows of op(A)
// and columns of op(B) (gemm_bf16_block), each one fp32 product over the whole of k on
// the team (Note [One thread pool]), so every element of C is still one OpenBLAS dot
// product over all of k, as in the fp32 GEMM; k is never split. Blocks are chosen to
// widen each element once where the budget allows: the whole product; else all of
// op(B) with bands of op(A)'s rows (or the reverse); else square blocks, where op(B)'s
// blocks are widened again for each band of rows. Widened blocks keep A's and B's own
// layout (a transposed operand stays transposed), so widening is a contiguous copy.
// A product is only blocked when its widened operands exceed the budget (64 MiB: the
// GPT-2 head's scale), and its blocks are then millions of multiply-adds, never small
// slivers (OpenBLAS's kernels for small products, below about 10^6 multiply-adds on
// x86, round some elements differently). Each block is exactly the fp32 GEMM of its
// widened operands, which test_bf16_ops.cpp holds to the bit. A blocked product equals
// the whole fp32 product to the bit only where the BLAS sums an element the same way
// whatever the call's extents: OpenBLAS's AVX-512 kernels do, its AVX2 ones (Haswell,
// Zen) do not (Note [One thread pool]); there the two differ within fp32's sum-order
// bound, and a bf16 C by at most one bf16 step where that straddles a rounding point.
//
// store_block, when given, replaces C's bf16 store (the fused linear epilogue, Note
// [Fused linear epilogue] in kernels/ops.h): it receives each fp32 block of alpha *
// op(A) op(B) (beta must be 0; c is then unused) as (block, i0, j0, rows, cols), the
// block packed with row stride cols, and stores what it derives from it. The blocks
// and the workspace are those of a bf16 C.
struct NoStore {};
template <class Store = NoStore>
void gemm_bf16(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, TypedPtr c, int64_t ldc,
               size_t budget_bytes, Store store_block = {}) {
  constexpr bool kCustomStore = !std::is_same_v<Store, NoStore>;
  const bool c_bf16 = kCustomStore || c.type == DType::kBF16;
  const GemmBlock blk = gemm_bf16_block(m, n, k, c_bf16, budget_bytes);
  auto* aw = static_cast<float*>(
      ctx.workspace(static_cast<size_t>(gemm_bf16_floats(blk.rows, blk.cols, k, c_bf16)) * sizeof(float)));
  float* bw = aw + blk.rows * k;
  float* cw = bw + k * blk.cols;
  const bool one_column_block = blk.cols >= n;
  for (int64_t i0 = 0; i0 < m; i0 += blk.rows) {
    const int64_t rows = std::min(blk.rows, m - i0);
    // op(A)'s rows [i0, i0 + rows): A's columns when it is transposed.
    if (trans_a) {
      widen_block(ctx, a + i0, lda, k, rows, aw);
    } else {
      widen_block(ctx, a + i0 * lda, lda, rows, k, aw);
    }
    const int64_t aw_ld = trans_a ? rows : k;
    for (int64_t j0 = 0; j0 < n; j0 += blk.cols) {
      const int64_t cols = std::min(blk.cols, n - j0);
      if (i0 == 0 || !one_column_block) {
        if (trans_b) {
          widen_block(ctx, b + j0 * ldb, ldb, cols, k, bw);
        } else {
          widen_block(ctx, b + j0, ldb, k, cols, bw);
        }
      }
      const int64_t bw_ld = trans_b ? k : cols;
      if constexpr (kCustomStore) {
        sgemm_team(ctx, trans_a, trans_b, rows, cols, k, alpha, aw, aw_ld, bw, bw_ld, 0.0f, cw, cols);
        store_block(static_cast<const float*>(cw), i0, j0, rows, cols);
        continue;
      }
      if (!c_bf16) {
        sgemm_team(ctx, trans_a, trans_b, rows, cols, k, alpha, aw, aw_ld, bw, bw_ld, beta,
                   c.f32() + i0 * ldc + j0, ldc);
        continue;
      }
      bf16* cb = c.b16() + i0 * ldc + j0;
      if (beta != 0.0f) widen_block(ctx, cb, ldc, rows, cols, cw);
      sgemm_team(ctx, trans_a, trans_b, rows, cols, k, alpha, aw, aw_ld, bw, bw_ld, beta, cw, cols);
      narrow_block(ctx, cw, rows, cols, cb, ldc);
    }
  }
}

// The linear epilogue on rows [r0, r0 + rows) and columns [j0, j0 + cols) of the
// output: v = block + bias in fp32, stored once (Note [Fused linear epilogue]), by the
// runs of gelu_rows.h, whose expressions are add_bias's and gelu_forward's, so fp32
// gives the chain's bits. block may be the output (pre, or y without GELU) itself.
template <class T>
void linear_epilogue(Context& ctx, const float* block, int64_t ld_block, int64_t r0, int64_t j0, int64_t rows,
                     int64_t cols, const T* bias, T* pre, T* y, int64_t ld, LinearEpilogue epilogue) {
  const bool gelu = epilogue == LinearEpilogue::kBiasGelu;
#pragma omp parallel for num_threads(ctx.num_threads()) if (rows * cols >= kParallelMinWork)
  for (int64_t r = 0; r < rows; ++r) {
    const float* vr = block + r * ld_block;
    T* yr = y + (r0 + r) * ld + j0;
    if (gelu) {
      bias_gelu_epilogue_run(vr, bias + j0, pre + (r0 + r) * ld + j0, yr, cols);
    } else {
      bias_epilogue_run(vr, bias + j0, yr, cols);
    }
  }
}

}  // namespace

void linear_epilogue_rows(Context& ctx, const float* block, int64_t r0, int64_t rows, int64_t out, const bf16* bias,
                          bf16* pre, bf16* y, LinearEpilogue epilogue) {
  linear_epilogue(ctx, block, out, r0, 0, rows, out, bias, pre, y, out, epilogue);
}

GemmBlock gemm_bf16_block(int64_t m, int64_t n, int64_t k, bool c_bf16, size_t budget_bytes) {
  const auto budget = static_cast<int64_t>(budget_bytes / sizeof(float));
  const int64_t c_floats = c_bf16 ? 1 : 0;
  if (k <= 0 || gemm_bf16_floats(m, n, k, c_bf16) <= budget) return {m, n};
  // The most rows (each of `per_row` floats) that fit beside `fixed` floats, in whole
  // slab units; 0 when not even one unit fits.
  auto fitting = [&](int64_t fixed, int64_t per_row) -> int64_t {
    if (fixed >= budget) return 0;
    return (budget - fixed) / per_row / kGemmSlabAlign * kGemmSlabAlign;
  };
  if (const int64_t rows = fitting(k * n, k + c_floats * n); rows > 0) return {std::min(rows, m), n};
  if (const int64_t cols = fitting(m * k, k + c_floats * m); cols > 0) return {m, std::min(cols, n)};
  // Square blocks: the largest side s with 2 s k (+ s^2 for a bf16 C) within the budget.
  const double kd = static_cast<double>(k), bd = static_cast<double>(budget);
  int64_t side = static_cast<int64_t>(c_bf16 ? std::sqrt(kd * kd + bd) - kd : bd / (2.0 * kd));
  side = std::max(kGemmSlabAlign, side / kGemmSlabAlign * kGemmSlabAlign);
  auto fits = [&](int64_t s) { return gemm_bf16_floats(s, s, k, c_bf16) <= budget; };
  while (fits(side + kGemmSlabAlign)) side += kGemmSlabAlign;  // the square root's rounding
  while (side > kGemmSlabAlign && !fits(side)) side -= kGemmSlabAlign;
  return {std::min(side, m), std::min(side, n)};
}

size_t gemm_workspace_bytes(int64_t m, int64_t n, int64_t k, DType ab, DType c, size_t budget_bytes) {
  if (ab == DType::kF32 || m <= 0 || n <= 0 || k <= 0) return 0;
  const bool c_bf16 = c == DType::kBF16;
  const GemmBlock blk = gemm_bf16_block(m, n, k, c_bf16, budget_bytes);
  return static_cast<size_t>(gemm_bf16_floats(blk.rows, blk.cols, k, c_bf16)) * sizeof(float);
}

void check_blas_dimension(int64_t v, const char* what) { to_blas(v, what); }

void gemm_serial(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
  sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          float alpha, ConstTypedPtr a, int64_t lda, ConstTypedPtr b, int64_t ldb, float beta,
          TypedPtr c, int64_t ldc, size_t budget_bytes) {
  const DType ab = common_type("gemm", {{"A", a}, {"B", b}});
  if (ab == DType::kF32 && c.type != DType::kF32) {
    throw Error("gemm: C is bf16 but A and B are fp32; a bf16 C needs bf16 A and B (Note [bf16 storage] in "
                "kernels/dtype.h)");
  }
  if (m == 0 || n == 0) return;
  if (k == 0 || alpha == 0.0f) {
    with_storage(c.type, [&](auto tag) { scale_only(m, n, beta, typed<decltype(tag)>(c), ldc); });
    return;
  }
  // Checked here, outside the parallel region, where the error may be thrown.
  for (const auto& [v, what] : {std::pair{m, "m"}, {n, "n"}, {k, "k"}, {lda, "lda"},
                                {ldb, "ldb"}, {ldc, "ldc"}}) {
    to_blas(v, what);
  }
  if (ab == DType::kF32) {
    sgemm_team(ctx, trans_a, trans_b, m, n, k, alpha, a.f32(), lda, b.f32(), ldb, beta, c.f32(), ldc);
  } else {
    gemm_bf16(ctx, trans_a, trans_b, m, n, k, alpha, a.b16(), lda, b.b16(), ldb, beta, c, ldc, budget_bytes);
  }
}

size_t linear_forward_workspace_bytes(int64_t rows, int64_t in, int64_t out, DType type) {
  // The bf16 product is blocked as for a bf16 C; fp32 runs in y (or pre) itself.
  return gemm_workspace_bytes(rows, out, in, type, type);
}

void linear_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias, TypedPtr pre, TypedPtr y,
                    int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue) {
  const bool gelu = epilogue == LinearEpilogue::kBiasGelu;
  const DType type = common_type("linear_forward", {{"x", x}, {"w", w}, {"bias", bias}, {"pre", pre}, {"y", y}});
  if (gelu && pre.data == nullptr) throw Error("linear_forward: the GELU epilogue needs pre, to keep for backward");
  if (rows == 0 || out == 0) return;
  if (type == DType::kF32) {
    // The product into its stored place, then the epilogue over it in place: the chain.
    float* product = gelu ? pre.f32() : y.f32();
    gemm(ctx, false, true, rows, out, in, 1.0f, x, in, w, in, 0.0f, product, out);
    linear_epilogue(ctx, product, out, 0, 0, rows, out, bias.f32(), gelu ? pre.f32() : nullptr, y.f32(), out,
                    epilogue);
    return;
  }
  if (in == 0) {
    std::vector<float> zeros(static_cast<size_t>(out), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      linear_epilogue(ctx, zeros.data(), out, r, 0, 1, out, bias.b16(), gelu ? pre.b16() : nullptr, y.b16(), out,
                      epilogue);
    }
    return;
  }
  for (const auto& [v, what] : {std::pair{rows, "rows"}, {in, "in"}, {out, "out"}}) to_blas(v, what);
  const bf16* b16_bias = bias.b16();
  bf16* b16_pre = gelu ? pre.b16() : nullptr;
  bf16* b16_y = y.b16();
  gemm_bf16(ctx, false, true, rows, out, in, 1.0f, x.b16(), in, w.b16(), in, 0.0f, TypedPtr(), out,
            kGemmWorkspaceBudget, [&](const float* block, int64_t i0, int64_t j0, int64_t r, int64_t c) {
              linear_epilogue(ctx, block, c, i0, j0, r, c, b16_bias, b16_pre, b16_y, out, epilogue);
            });
}

}  // namespace dtrain::cpu
