// Row-major GEMM on cuBLAS, which is column-major: gemm(), and the strided-batched form
// the attention ops use (attention.cu).
//
// A row-major matrix read as column-major is its transpose, so C = op(A) op(B) in
// row-major is C^T = op(B)^T op(A)^T in column-major: call cuBLAS with the operands
// swapped (B first), m and n swapped, and each operand's own transpose flag. No data
// moves; the leading dimensions stay what they are.
//
// Types (Note [bf16 storage], kernels/ops.h): fp32 A and B with fp32 C run cublasSgemm
// (TF32 tensor cores only when the context allows them); bf16 A and B with a bf16 or
// fp32 C run cublasGemmEx with CUBLAS_COMPUTE_32F: the products of bf16 values are
// exact in fp32, they are summed in fp32, and cuBLAS's epilogue forms alpha * AB +
// beta * C in fp32 and rounds a bf16 C once, to nearest (the handle's math mode
// forbids split-K reductions in bf16: cuda_backend.cpp). Both take only the cuBLAS
// workspace the backend set on its handle, so gemm_workspace_bytes stays the base's 0.
// With CudaOptions::gemm_autotune a bf16 GEMM goes to cuBLASLt instead, whose candidate
// algorithms it times (Note [GEMM autotuning], kernels/cuda/linear_lt.h), with the same
// types, accumulation and fp32-only split-K sums.
#include <algorithm>
#include <limits>

#include "kernels/check.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"

namespace dtrain {

namespace {

// cuBLAS takes int dimensions; larger ones would silently wrap.
int to_blas(int64_t v, const char* what) {
  DTRAIN_ASSERT(v >= 0 && v <= std::numeric_limits<int>::max(),
                "gemm " << what << " = " << v << " does not fit cuBLAS's int");
  return static_cast<int>(v);
}

cudaDataType_t blas_type(DType t) { return t == DType::kBF16 ? CUDA_R_16BF : CUDA_R_32F; }

// The type of A and B, checked against the combinations cuBLAS is asked for. A null
// operand (k == 0 reads none) takes the other's type, or C's when both are null.
DType operand_type(ConstTypedPtr a, ConstTypedPtr b, TypedPtr c, const char* op) {
  const DType ab = a.data != nullptr ? a.type : b.data != nullptr ? b.type : c.type;
  DTRAIN_ASSERT(a.data == nullptr || b.data == nullptr || a.type == b.type,
                "cuda " << op << ": A is " << dtype_name(a.type) << " but B is " << dtype_name(b.type));
  DTRAIN_ASSERT(ab == DType::kBF16 || c.type == DType::kF32,
                "cuda " << op << ": fp32 A and B need an fp32 C, got " << dtype_name(c.type));
  return ab;
}

cublasOperation_t blas_op(bool trans) { return trans ? CUBLAS_OP_T : CUBLAS_OP_N; }

}  // namespace

void CudaBackend::gemm(Context& /*ctx*/, bool trans_a, bool trans_b, int64_t m, int64_t n,
                       int64_t k, float alpha, ConstTypedPtr a, int64_t lda, ConstTypedPtr b,
                       int64_t ldb, float beta, TypedPtr c, int64_t ldc) {
  const DType ab = operand_type(a, b, c, "gemm");
  if (m == 0 || n == 0) return;
  // With k == 0 the row-major leading dimensions of A and B may legally be 0, which
  // cuBLAS rejects even though it reads nothing; it then only scales C by beta (and
  // with beta == 0 writes zeros without reading C, as the CPU backend does).
  const int64_t lda_ok = k == 0 ? std::max<int64_t>(lda, 1) : lda;
  const int64_t ldb_ok = k == 0 ? std::max<int64_t>(ldb, 1) : ldb;
  if (ab == DType::kF32) {
    DTRAIN_CUBLAS_CHECK(cublasSgemm(cublas_.get(), blas_op(trans_b), blas_op(trans_a), to_blas(n, "n"),
                                    to_blas(m, "m"), to_blas(k, "k"), &alpha, static_cast<const float*>(b.data),
                                    to_blas(ldb_ok, "ldb"), static_cast<const float*>(a.data),
                                    to_blas(lda_ok, "lda"), &beta, c.f32(), to_blas(ldc, "ldc")));
    return;
  }
  if (linear_lt_->run_gemm(stream(), trans_b, trans_a, n, m, k, alpha, b.data, ldb, a.data, lda, beta, c.data, ldc,
                           c.type == DType::kF32)) {
    return;
  }
  DTRAIN_CUBLAS_CHECK(cublasGemmEx(cublas_.get(), blas_op(trans_b), blas_op(trans_a), to_blas(n, "n"),
                                   to_blas(m, "m"), to_blas(k, "k"), &alpha, b.data, CUDA_R_16BF,
                                   to_blas(ldb_ok, "ldb"), a.data, CUDA_R_16BF, to_blas(lda_ok, "lda"), &beta,
                                   c.data, blas_type(c.type), to_blas(ldc, "ldc"), CUBLAS_COMPUTE_32F,
                                   CUBLAS_GEMM_DEFAULT));
}

void CudaBackend::gemm_strided_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                                       ConstTypedPtr a, int64_t lda, int64_t stride_a, ConstTypedPtr b,
                                       int64_t ldb, int64_t stride_b, float beta, TypedPtr c, int64_t ldc,
                                       int64_t stride_c, int64_t batch) {
  const DType ab = operand_type(a, b, c, "strided-batched gemm");
  if (m == 0 || n == 0 || batch == 0) return;
  if (ab == DType::kF32) {
    DTRAIN_CUBLAS_CHECK(cublasSgemmStridedBatched(
        cublas_.get(), blas_op(trans_b), blas_op(trans_a), to_blas(n, "n"), to_blas(m, "m"), to_blas(k, "k"),
        &alpha, static_cast<const float*>(b.data), to_blas(ldb, "ldb"), stride_b,
        static_cast<const float*>(a.data), to_blas(lda, "lda"), stride_a, &beta, c.f32(), to_blas(ldc, "ldc"),
        stride_c, to_blas(batch, "batch")));
    return;
  }
  DTRAIN_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      cublas_.get(), blas_op(trans_b), blas_op(trans_a), to_blas(n, "n"), to_blas(m, "m"), to_blas(k, "k"), &alpha,
      b.data, CUDA_R_16BF, to_blas(ldb, "ldb"), stride_b, a.data, CUDA_R_16BF, to_blas(lda, "lda"), stride_a,
      &beta, c.data, blas_type(c.type), to_blas(ldc, "ldc"), stride_c, to_blas(batch, "batch"),
      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace dtrain
