#include "kernels/cuda/bias_linear_lt.h"

#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace dtrain {

namespace {

// The alignment the algorithms may assume; run() declines pointers below it.
constexpr uint32_t kAlignment = 16;

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAlignment == 0; }

}  // namespace

// Row-major y (rows, out) = x (rows, in) W^T is column-major y^T (out, rows) =
// op(W') x', with W' the column-major (in, out) view of W taken transposed and x' the
// column-major (in, rows) view of x: m = out, n = rows, k = in, and the bias (length
// m) is added down each column, i.e. to each row of y.
struct BiasLinearLt::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t w = nullptr, x = nullptr, y = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;  // cleared too when cuBLASLt refuses the algorithm at run time
  ~Plan() {
    if (y != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatrixLayoutDestroy(y));
    if (x != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatrixLayoutDestroy(x));
    if (w != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatrixLayoutDestroy(w));
    if (op != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatmulDescDestroy(op));
  }
};

BiasLinearLt::BiasLinearLt(void* workspace, size_t workspace_bytes)
    : workspace_(workspace), workspace_bytes_(workspace_bytes) {
  DTRAIN_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

BiasLinearLt::~BiasLinearLt() {
  plans_.clear();
  DTRAIN_CUBLAS_REPORT(cublasLtDestroy(handle_));
}

BiasLinearLt::Plan& BiasLinearLt::plan(int64_t rows, int64_t in, int64_t out) {
  const auto key = std::make_tuple(rows, in, out);
  auto found = plans_.find(key);
  if (found != plans_.end()) return *found->second;
  auto p = std::make_unique<Plan>();
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
  const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
  const cudaDataType_t bias_type = CUDA_R_16BF;
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose));
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof none));
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  DTRAIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
  // The heuristic reads the bias pointer's value (never what it points to) for the
  // alignment it may assume: a stand-in with exactly the alignment run() guarantees,
  // so that no algorithm counting on more is chosen (a null pointer looks aligned to
  // everything).
  const void* stand_in = reinterpret_cast<const void*>(uintptr_t{kAlignment});
  DTRAIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &stand_in, sizeof stand_in));
  DTRAIN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->w, CUDA_R_16BF, static_cast<uint64_t>(in),
                                                 static_cast<uint64_t>(out), in));
  DTRAIN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->x, CUDA_R_16BF, static_cast<uint64_t>(in),
                                                 static_cast<uint64_t>(rows), in));
  DTRAIN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->y, CUDA_R_16BF, static_cast<uint64_t>(out),
                                                 static_cast<uint64_t>(rows), out));

  cublasLtMatmulPreference_t preference = nullptr;
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&preference));
  const uint64_t bytes = workspace_bytes_;
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                           &bytes, sizeof bytes));
  for (const auto attribute : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                               CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    DTRAIN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &kAlignment, sizeof kAlignment));
  }
  // Split-K partial sums only in fp32 (the compute type): INPLACE and OUTPUT_TYPE add
  // them in the output's type, bf16, which would round the product before the bias,
  // against the op's one rounding. (The cuBLAS handle's
  // CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION does not reach cuBLASLt.)
  const uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                           &reductions, sizeof reductions));
  cublasLtMatmulHeuristicResult_t result{};
  int found_algos = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle_, p->op, p->w, p->x, p->y, p->y, preference,
                                                               1, &result, &found_algos);
  DTRAIN_CUBLAS_REPORT(cublasLtMatmulPreferenceDestroy(preference));
  // "No algorithm" declines the shape; any other failure is a bug to see, not to hide
  // behind the two-pass form.
  if (status != CUBLAS_STATUS_NOT_SUPPORTED) DTRAIN_CUBLAS_CHECK(status);
  p->ok = status == CUBLAS_STATUS_SUCCESS && found_algos > 0;
  if (p->ok) p->algo = result.algo;
  return *plans_.emplace(key, std::move(p)).first->second;
}

bool BiasLinearLt::run(cudaStream_t stream, const void* x, const void* w, const void* bias, void* y, int64_t rows,
                       int64_t in, int64_t out) {
  if (rows <= 0 || in <= 0 || out <= 0) return false;
  if (!aligned(x) || !aligned(w) || !aligned(bias) || !aligned(y)) return false;
  Plan& p = plan(rows, in, out);
  if (!p.ok) return false;
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  const float alpha = 1.0f, beta = 0.0f;
  const cublasStatus_t status = cublasLtMatmul(handle_, p.op, &alpha, w, p.w, x, p.x, &beta, y, p.y, y, p.y,
                                               &p.algo, workspace_, workspace_bytes_, stream);
  // An algorithm may still refuse the call (cublasLtMatmulAlgoCheck's caveat); nothing
  // was queued then, so the shape is declined from now on.
  if (status == CUBLAS_STATUS_NOT_SUPPORTED) {
    p.ok = false;
    return false;
  }
  DTRAIN_CUBLAS_CHECK(status);
  ++calls_;
  return true;
}

}  // namespace dtrain
