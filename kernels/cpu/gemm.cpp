#include <cblas.h>

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

}  // namespace

void gemm(Context& /*ctx*/, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
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
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, to_blas(m, "m"), to_blas(n, "n"),
              to_blas(k, "k"), alpha, a, to_blas(lda, "lda"), b, to_blas(ldb, "ldb"), beta, c,
              to_blas(ldc, "ldc"));
}

}  // namespace dtrain::cpu
