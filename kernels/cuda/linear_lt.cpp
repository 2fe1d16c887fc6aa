#include "kernels/cuda/linear_lt.h"

#include <cstdint>

#include "kernels/cuda/cuda_check.h"

namespace dtrain {

namespace {

// The alignment the algorithms may assume; the calls decline pointers below it.
constexpr uint32_t kAlignment = 16;

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAlignment == 0; }

}  // namespace

// Row-major matrices seen column-major (cuBLASLt's order): a row-major (r, c) matrix is
// the column-major (c, r) one with leading dimension c.
//   forward   y (rows, out) = x W^T is y' (out, rows) = op(W') x' with W' the (in, out)
//             view of W taken transposed and x' the (in, rows) view of x: m = out,
//             n = rows, k = in. The bias (length m) is added down each column, i.e. to
//             each row of y; GELU's auxiliary output pre has y's layout (ld out).
//   backward  dpre (rows, in) = dy W is dpre' (in, rows) = W' dy' with W' the (in, out)
//             view of W and dy' the (out, rows) view of dy, neither transposed: m = in,
//             n = rows, k = out; the auxiliary input pre has dpre's layout (ld in).
//   parameter dW (out, in) += dy^T x is dW' (in, out) = x' op(dy') with x' the (in,
//   gradients rows) view of x and dy' the (out, rows) view of dy taken transposed:
//             m = in, n = out, k = rows, D fp32. BGRADB sums op(B) = dy over k, one
//             value per column of D: the column sums of dy, length out.
struct LinearLt::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool ok = false;  // cleared too when cuBLASLt refuses the algorithm at run time
  ~Plan() {
    if (d != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatrixLayoutDestroy(d));
    if (b != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatrixLayoutDestroy(b));
    if (a != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatrixLayoutDestroy(a));
    if (op != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatmulDescDestroy(op));
  }
};

LinearLt::LinearLt(void* workspace, size_t workspace_bytes) : workspace_(workspace), workspace_bytes_(workspace_bytes) {
  DTRAIN_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

LinearLt::~LinearLt() {
  plans_.clear();
  DTRAIN_CUBLAS_REPORT(cublasLtDestroy(handle_));
}

LinearLt::Plan& LinearLt::plan(Kind kind, int64_t rows, int64_t in, int64_t out) {
  const auto key = std::make_tuple(kind, rows, in, out);
  auto found = plans_.find(key);
  if (found != plans_.end()) return *found->second;
  auto p = std::make_unique<Plan>();
  const bool forward = kind == Kind::kBias || kind == Kind::kBiasGelu;
  const bool parameters = kind == Kind::kParameterGradients;
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose_a = forward ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t transpose_b = parameters ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasLtEpilogue_t epilogue = kind == Kind::kBias           ? CUBLASLT_EPILOGUE_BIAS
                                      : kind == Kind::kBiasGelu     ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                      : kind == Kind::kGeluBackward ? CUBLASLT_EPILOGUE_DGELU
                                                                    : CUBLASLT_EPILOGUE_BGRADB;
  DTRAIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose_a, sizeof transpose_a));
  DTRAIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &transpose_b, sizeof transpose_b));
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
  // The heuristic reads the bias and auxiliary pointers' values (never what they point
  // to) for the alignment it may assume: a stand-in with exactly the alignment the
  // calls guarantee, so that no algorithm counting on more is chosen (a null pointer
  // looks aligned to everything).
  const void* stand_in = reinterpret_cast<const void*>(uintptr_t{kAlignment});
  if (forward || parameters) {
    // The bias in the output's type: bf16 forward, fp32 for the bias gradient.
    const cudaDataType_t bias_type = parameters ? CUDA_R_32F : CUDA_R_16BF;
    DTRAIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
    DTRAIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &stand_in, sizeof stand_in));
  }
  if (kind == Kind::kBiasGelu || kind == Kind::kGeluBackward) {
    // pre in the output's type (bf16, the attribute's default) and layout.
    const int64_t aux_ld = forward ? out : in;
    DTRAIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &aux_ld, sizeof aux_ld));
    DTRAIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &stand_in, sizeof stand_in));
  }
  const auto layout = [](cublasLtMatrixLayout_t* l, cudaDataType_t type, int64_t r, int64_t c) {
    DTRAIN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(l, type, static_cast<uint64_t>(r), static_cast<uint64_t>(c), r));
  };
  if (forward) {
    layout(&p->a, CUDA_R_16BF, in, out);   // W' (in, out), taken transposed
    layout(&p->b, CUDA_R_16BF, in, rows);  // x'
    layout(&p->d, CUDA_R_16BF, out, rows);
  } else if (parameters) {
    layout(&p->a, CUDA_R_16BF, in, rows);   // x'
    layout(&p->b, CUDA_R_16BF, out, rows);  // dy', taken transposed
    layout(&p->d, CUDA_R_32F, in, out);     // dW'
  } else {
    layout(&p->a, CUDA_R_16BF, in, out);    // W' (in, out)
    layout(&p->b, CUDA_R_16BF, out, rows);  // dy'
    layout(&p->d, CUDA_R_16BF, in, rows);
  }

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
  // them in the output's type, bf16, which would round the product before the
  // epilogue, against the ops' one rounding. (The cuBLAS handle's
  // CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION does not reach cuBLASLt.)
  const uint32_t reductions = CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                           &reductions, sizeof reductions));
  cublasLtMatmulHeuristicResult_t result{};
  int found_algos = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(handle_, p->op, p->a, p->b, p->d, p->d, preference,
                                                               1, &result, &found_algos);
  DTRAIN_CUBLAS_REPORT(cublasLtMatmulPreferenceDestroy(preference));
  // "No algorithm" declines the shape; any other failure is a bug to see, not to hide
  // behind the unfused form.
  if (status != CUBLAS_STATUS_NOT_SUPPORTED) DTRAIN_CUBLAS_CHECK(status);
  p->ok = status == CUBLAS_STATUS_SUCCESS && found_algos > 0 && result.state == CUBLAS_STATUS_SUCCESS;
  if (p->ok) p->algo = result.algo;
  return *plans_.emplace(key, std::move(p)).first->second;
}

bool LinearLt::matmul(cudaStream_t stream, Plan& p, const void* a, const void* b, void* d, float beta) {
  const float alpha = 1.0f;
  const cublasStatus_t status = cublasLtMatmul(handle_, p.op, &alpha, a, p.a, b, p.b, &beta, d, p.d, d, p.d, &p.algo,
                                               workspace_, workspace_bytes_, stream);
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

bool LinearLt::run(cudaStream_t stream, const void* x, const void* w, const void* bias, void* y, int64_t rows,
                   int64_t in, int64_t out, void* gelu_pre) {
  const bool gelu = gelu_pre != nullptr;
  if (rows <= 0 || in <= 0 || out <= 0) return false;
  if (!aligned(x) || !aligned(w) || !aligned(bias) || !aligned(y)) return false;
  if (gelu && (!aligned(gelu_pre) || out % 8 != 0)) return false;
  Plan& p = plan(gelu ? Kind::kBiasGelu : Kind::kBias, rows, in, out);
  if (!p.ok) return false;
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias));
  if (gelu) {
    DTRAIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &gelu_pre, sizeof gelu_pre));
  }
  if (!matmul(stream, p, w, x, y)) return false;
  if (gelu) ++gelu_calls_;
  return true;
}

bool LinearLt::run_gelu_backward(cudaStream_t stream, const void* dy, const void* w, const void* pre, void* dpre,
                                 int64_t rows, int64_t in, int64_t out) {
  if (rows <= 0 || in <= 0 || out <= 0) return false;
  if (!aligned(dy) || !aligned(w) || !aligned(pre) || !aligned(dpre) || in % 8 != 0) return false;
  Plan& p = plan(Kind::kGeluBackward, rows, in, out);
  if (!p.ok) return false;
  DTRAIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &pre, sizeof pre));
  if (!matmul(stream, p, w, dy, dpre)) return false;
  ++gelu_backward_calls_;
  return true;
}

bool LinearLt::run_parameter_gradients(cudaStream_t stream, const void* dy, const void* x, float* dw,
                                       float* column_sums, int64_t rows, int64_t in, int64_t out) {
  if (rows <= 0 || in <= 0 || out <= 0) return false;
  if (!aligned(dy) || !aligned(x) || !aligned(dw) || !aligned(column_sums)) return false;
  Plan& p = plan(Kind::kParameterGradients, rows, in, out);
  if (!p.ok) return false;
  DTRAIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &column_sums, sizeof column_sums));
  if (!matmul(stream, p, x, dy, dw, 1.0f)) return false;
  ++parameter_gradient_calls_;
  return true;
}

}  // namespace dtrain
