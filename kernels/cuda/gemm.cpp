// Row-major GEMM on cuBLAS, which is column-major.
//
// A row-major matrix read as column-major is its transpose, so C = op(A) op(B) in
// row-major is C^T = op(B)^T op(A)^T in column-major: call cuBLAS with the operands
// swapped (B first), m and n swapped, and each operand's own transpose flag. No data
// moves; the leading dimensions stay what they are.
#include <algorithm>
#include <limits>

#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"

namespace dtrain {

namespace {

// cublasSgemm takes int dimensions; larger ones would silently wrap.
int to_blas(int64_t v, const char* what) {
  DTRAIN_ASSERT(v >= 0 && v <= std::numeric_limits<int>::max(),
                "gemm " << what << " = " << v << " does not fit cuBLAS's int");
  return static_cast<int>(v);
}

}  // namespace

void CudaBackend::gemm(Context& /*ctx*/, bool trans_a, bool trans_b, int64_t m, int64_t n,
                       int64_t k, float alpha, ConstTypedPtr a_t, int64_t lda, ConstTypedPtr b_t,
                       int64_t ldb, float beta, TypedPtr c_t, int64_t ldc) { const float* a = a_t.f32(); const float* b = b_t.f32(); float* c = c_t.f32();
  if (m == 0 || n == 0) return;
  // With k == 0 the row-major leading dimensions of A and B may legally be 0, which
  // cuBLAS rejects even though it reads nothing; it then only scales C by beta (and
  // with beta == 0 writes zeros without reading C, as the CPU backend does).
  const int64_t lda_ok = k == 0 ? std::max<int64_t>(lda, 1) : lda;
  const int64_t ldb_ok = k == 0 ? std::max<int64_t>(ldb, 1) : ldb;
  DTRAIN_CUBLAS_CHECK(cublasSgemm(cublas_.get(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                  trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, to_blas(n, "n"),
                                  to_blas(m, "m"), to_blas(k, "k"), &alpha, b,
                                  to_blas(ldb_ok, "ldb"), a, to_blas(lda_ok, "lda"), &beta, c,
                                  to_blas(ldc, "ldc")));
}

}  // namespace dtrain
