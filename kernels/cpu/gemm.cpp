// GEMM on OpenBLAS, split over the OpenMP team; see Note [One thread pool].
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/check.h"
#include "kernels/cpu/cpu_ops.h"

namespace dtrain::cpu {

namespace {

// The Debian OpenBLAS takes 32-bit dimensions; larger ones would silently wrap.
blasint to_blas(int64_t v, const char* what) {
  DTRAIN_ASSERT(v >= 0 && v <= std::numeric_limits<blasint>::max(),
                "gemm " << what << " = " << v << " does not fit OpenBLAS's integer type");
  return static_cast<blasint>(v);
}

// Below this many multiply-adds a GEMM runs on one thread: waking the team (tens of
// microseconds with the passive wait policy on a VM) costs more than half the work.
constexpr int64_t kGemmParallelMinMacs = int64_t{1} << 22;
// Slabs start at multiples of this many rows or columns, so that no thread gets a
// sliver narrower than OpenBLAS's register blocking.
constexpr int64_t kGemmSlabAlign = 32;

// Dimensions already checked by to_blas.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
              static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
              static_cast<blasint>(ldc));
}

}  // namespace

void check_blas_dimension(int64_t v, const char* what) { to_blas(v, what); }

void gemm_serial(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                 const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                 int64_t ldc) {
  sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm(Context& ctx, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
          float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
          float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0 || alpha == 0.0f) {
    // BLAS rejects lda < 1 even when k == 0; the product is empty, so only scale C.
    // beta == 0 overwrites, so NaN garbage in C does not survive (as in BLAS).
    for (int64_t i = 0; i < m; ++i) {
      float* row = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
    }
    return;
  }
  // Checked here, outside the parallel region, where the error may be thrown.
  for (const auto& [v, what] : {std::pair{m, "m"}, {n, "n"}, {k, "k"}, {lda, "lda"},
                                {ldb, "ldb"}, {ldc, "ldc"}}) {
    to_blas(v, what);
  }
  // Note [One thread pool]: each thread computes a slab of C, split along the longer of
  // its dimensions: columns (a slab of op(B)) or rows (a slab of op(A)). Every element
  // of C is still one OpenBLAS dot product over the whole of k, so the result is the
  // same, bit for bit, as on one thread.
  const bool split_columns = n >= m;
  const int64_t extent = split_columns ? n : m;
  const int64_t slabs = std::min<int64_t>(ctx.num_threads(), extent / kGemmSlabAlign);
  if (slabs <= 1 || m * n * k < kGemmParallelMinMacs) {
    sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int64_t units = (extent + kGemmSlabAlign - 1) / kGemmSlabAlign;
#pragma omp parallel for num_threads(static_cast<int>(slabs)) schedule(static, 1)
  for (int64_t slab = 0; slab < slabs; ++slab) {
    const int64_t lo = std::min(extent, units * slab / slabs * kGemmSlabAlign);
    const int64_t hi = std::min(extent, units * (slab + 1) / slabs * kGemmSlabAlign);
    if (hi <= lo) continue;
    if (split_columns) {
      const float* b_slab = trans_b ? b + lo * ldb : b + lo;
      sgemm(trans_a, trans_b, m, hi - lo, k, alpha, a, lda, b_slab, ldb, beta, c + lo, ldc);
    } else {
      const float* a_slab = trans_a ? a + lo : a + lo * lda;
      sgemm(trans_a, trans_b, hi - lo, n, k, alpha, a_slab, lda, b, ldb, beta, c + lo * ldc,
            ldc);
    }
  }
}

}  // namespace dtrain::cpu
