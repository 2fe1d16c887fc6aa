#include "kernels/cuda/linear_lt.h"

#include <array>
#include <cstdint>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "kernels/errors.h"
#include "kernels/gemm_autotune.h"
#include "kernels/memory.h"

namespace dtrain {

namespace {

// The alignment the algorithms may assume; the calls decline pointers below it.
constexpr uint32_t kAlignment = 16;

bool aligned(const void* p) { return reinterpret_cast<uintptr_t>(p) % kAlignment == 0; }

// The epilogue calls decline a dimension below this: cuBLASLt's bias epilogues have
// been reported to refuse such shapes in its heuristic (INVALID_VALUE, which plan()
// takes for a bug, not a decline) and, on some cards, to leave the bias off a 1-row
// product; at that size the unfused form costs nothing worth the risk.
constexpr int64_t kLtMinExtent = 2;

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
// A is stored (k, m) when taken transposed, else (m, k); B (n, k) or (k, n); D (m, n).
struct LinearLt::Shape {
  bool trans_a = false, trans_b = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldd = 0;
  bool d_fp32 = false;
};

struct LinearLt::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};
  std::vector<cublasLtMatmulAlgo_t> candidates;  // the heuristic's, best first; algo is one
  // D's columns for cudaMemcpy2DAsync: n of them, each `d_column_bytes` wide, one every
  // `d_pitch_bytes` (the leading dimension's padding is not D's).
  size_t d_column_bytes = 0, d_pitch_bytes = 0, d_columns = 0;
  bool tuned = false;  // Note [GEMM autotuning]: timed, or left untimed for good
  bool ok = false;     // cleared too when cuBLASLt refuses the algorithm at run time
  ~Plan() {
    if (d != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatrixLayoutDestroy(d));
    if (b != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatrixLayoutDestroy(b));
    if (a != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatrixLayoutDestroy(a));
    if (op != nullptr) DTRAIN_CUBLAS_REPORT(cublasLtMatmulDescDestroy(op));
  }
};

LinearLt::LinearLt(void* workspace, size_t workspace_bytes, Allocator* scratch, bool autotune)
    : workspace_(workspace), workspace_bytes_(workspace_bytes), scratch_(scratch), autotune_(autotune) {
  DTRAIN_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

LinearLt::~LinearLt() {
  plans_.clear();
  DTRAIN_CUBLAS_REPORT(cublasLtDestroy(handle_));
}

LinearLt::Plan& LinearLt::plan(Kind kind, const Shape& s) {
  const std::array<int64_t, 8> key = {static_cast<int64_t>(kind), s.m,   s.n,   s.k,
                                      s.lda,                      s.ldb, s.ldd,
                                      int64_t{s.trans_a} | int64_t{s.trans_b} << 1 | int64_t{s.d_fp32} << 2};
  auto found = plans_.find(key);
  if (found != plans_.end()) return *found->second;
  auto p = std::make_unique<Plan>();
  const size_t d_element = s.d_fp32 ? sizeof(float) : sizeof(uint16_t);
  p->d_column_bytes = static_cast<size_t>(s.m) * d_element;
  p->d_pitch_bytes = static_cast<size_t>(s.ldd) * d_element;
  p->d_columns = static_cast<size_t>(s.n);
  const bool bias = kind == Kind::kBias || kind == Kind::kBiasGelu || kind == Kind::kParameterGradients;
  DTRAIN_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose_a = s.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t transpose_b = s.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasLtEpilogue_t epilogue = kind == Kind::kBias           ? CUBLASLT_EPILOGUE_BIAS
                                      : kind == Kind::kBiasGelu     ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS
                                      : kind == Kind::kGeluBackward ? CUBLASLT_EPILOGUE_DGELU
                                      : kind == Kind::kPlain        ? CUBLASLT_EPILOGUE_DEFAULT
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
  if (bias) {
    // The bias in the output's type: bf16 forward, fp32 for the bias gradient.
    const cudaDataType_t bias_type = s.d_fp32 ? CUDA_R_32F : CUDA_R_16BF;
    DTRAIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof bias_type));
    DTRAIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &stand_in, sizeof stand_in));
  }
  if (kind == Kind::kBiasGelu || kind == Kind::kGeluBackward) {
    // pre in the output's type (bf16, the attribute's default) and layout.
    DTRAIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &s.ldd, sizeof s.ldd));
    DTRAIN_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &stand_in, sizeof stand_in));
  }
  const auto layout = [](cublasLtMatrixLayout_t* l, cudaDataType_t type, int64_t r, int64_t c, int64_t ld) {
    DTRAIN_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(l, type, static_cast<uint64_t>(r), static_cast<uint64_t>(c), ld));
  };
  layout(&p->a, CUDA_R_16BF, s.trans_a ? s.k : s.m, s.trans_a ? s.m : s.k, s.lda);
  layout(&p->b, CUDA_R_16BF, s.trans_b ? s.n : s.k, s.trans_b ? s.k : s.n, s.ldb);
  layout(&p->d, s.d_fp32 ? CUDA_R_32F : CUDA_R_16BF, s.m, s.n, s.ldd);

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
  std::array<cublasLtMatmulHeuristicResult_t, kCandidates> results{};
  int found_algos = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle_, p->op, p->a, p->b, p->d, p->d, preference, autotune_ ? kCandidates : 1, results.data(), &found_algos);
  DTRAIN_CUBLAS_REPORT(cublasLtMatmulPreferenceDestroy(preference));
  // "No algorithm" declines the shape; any other failure is a bug to see, not to hide
  // behind the unfused form.
  if (status != CUBLAS_STATUS_NOT_SUPPORTED) DTRAIN_CUBLAS_CHECK(status);
  if (status == CUBLAS_STATUS_SUCCESS) {
    for (int i = 0; i < found_algos; ++i) {
      if (results[static_cast<size_t>(i)].state == CUBLAS_STATUS_SUCCESS) {
        p->candidates.push_back(results[static_cast<size_t>(i)].algo);
      }
    }
  }
  candidates_offered_ += static_cast<int64_t>(p->candidates.size());
  p->ok = !p->candidates.empty();
  if (p->ok) p->algo = p->candidates.front();
  p->tuned = p->candidates.size() < 2;  // nothing to choose between
  return *plans_.emplace(key, std::move(p)).first->second;
}

namespace {

// A CUDA event with timing, destroyed on every path out (the timing may throw).
struct TimingEvent {
  cudaEvent_t event = nullptr;
  TimingEvent() { DTRAIN_CUDA_CHECK(cudaEventCreate(&event)); }
  ~TimingEvent() { DTRAIN_CUDA_REPORT(cudaEventDestroy(event)); }
  TimingEvent(const TimingEvent&) = delete;
  TimingEvent& operator=(const TimingEvent&) = delete;
};

}  // namespace

// Note [GEMM autotuning]. The candidates run back to back, each between its own pair of
// events, and the host waits once, at the end: no candidate's time includes the gap of
// a host wait before it (which would favour the one timed first).
void LinearLt::tune(cudaStream_t stream, Plan& p, const void* a, const void* b, void* d, float alpha, float beta) {
  p.tuned = true;  // once, whatever happens below: an untimed shape is not retried every call
  if (d == a || d == b) return;  // the timing would overwrite an operand (no op does this)
  Buffer saved;
  const auto copy_d = [&](void* to, size_t to_pitch, const void* from, size_t from_pitch) {
    return cudaMemcpy2DAsync(to, to_pitch, from, from_pitch, p.d_column_bytes, p.d_columns,
                             cudaMemcpyDeviceToDevice, stream);
  };
  if (beta != 0.0f) {
    if (scratch_ == nullptr) return;
    try {
      saved = Buffer(*scratch_, p.d_column_bytes * p.d_columns, MemoryCategory::Workspace);
    } catch (const OutOfMemoryError&) {
      return;  // the heuristic's choice, untimed: the memory is the run's, not the tuning's
    }
    DTRAIN_CUDA_CHECK(copy_d(saved.data(), p.d_column_bytes, d, p.d_pitch_bytes));
  }
  const auto launch = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle_, p.op, &alpha, a, p.a, b, p.b, &beta, d, p.d, d, p.d, &algo, workspace_,
                          workspace_bytes_, stream);
  };
  const size_t count = p.candidates.size();
  std::vector<TimingEvent> starts(count), stops(count);
  std::vector<bool> ran(count, false);
  try {
    for (size_t i = 0; i < count; ++i) {
      const cublasStatus_t warm_up = launch(p.candidates[i]);
      if (warm_up == CUBLAS_STATUS_NOT_SUPPORTED) continue;  // nothing queued
      DTRAIN_CUBLAS_CHECK(warm_up);
      DTRAIN_CUDA_CHECK(cudaEventRecord(starts[i].event, stream));
      for (int r = 0; r < kRepeats; ++r) DTRAIN_CUBLAS_CHECK(launch(p.candidates[i]));
      DTRAIN_CUDA_CHECK(cudaEventRecord(stops[i].event, stream));
      ran[i] = true;
    }
  } catch (...) {
    // Put the accumulated output back as far as the device still lets us, and wait for
    // it before `saved` is released.
    if (saved.data() != nullptr) DTRAIN_CUDA_REPORT(copy_d(d, p.d_pitch_bytes, saved.data(), p.d_column_bytes));
    DTRAIN_CUDA_REPORT(cudaStreamSynchronize(stream));
    throw;
  }
  if (saved.data() != nullptr) DTRAIN_CUDA_CHECK(copy_d(d, p.d_pitch_bytes, saved.data(), p.d_column_bytes));
  // The one wait: for the events, and for the copy back before `saved` goes back to the
  // allocator, whose next owner may use it on another stream (an uploader's).
  DTRAIN_CUDA_CHECK(cudaStreamSynchronize(stream));
  ++tuning_syncs_;
  std::vector<double> ms(count, -1.0);  // negative: refused
  for (size_t i = 0; i < count; ++i) {
    if (!ran[i]) continue;
    float elapsed = 0.0f;
    DTRAIN_CUDA_CHECK(cudaEventElapsedTime(&elapsed, starts[i].event, stops[i].event));
    ms[i] = static_cast<double>(elapsed) / kRepeats;
    ++timed_candidates_;
  }
  const int chosen = choose_gemm_candidate(ms, kMargin);
  // None ran: matmul's own call refuses too and declines the shape.
  if (chosen >= 0) p.algo = p.candidates[static_cast<size_t>(chosen)];
  ++tuned_plans_;
}

bool LinearLt::matmul(cudaStream_t stream, Plan& p, const void* a, const void* b, void* d, float alpha, float beta) {
  if (!p.tuned) tune(stream, p, a, b, d, alpha, beta);
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
  if (rows < kLtMinExtent || in < kLtMinExtent || out < kLtMinExtent) return false;
  if (!aligned(x) || !aligned(w) || !aligned(bias) || !aligned(y)) return false;
  if (gelu && (!aligned(gelu_pre) || out % 8 != 0)) return false;
  Shape s;  // W' (in, out) taken transposed, x' (in, rows), y' (out, rows)
  s.trans_a = true;
  s.m = out, s.n = rows, s.k = in, s.lda = in, s.ldb = in, s.ldd = out;
  Plan& p = plan(gelu ? Kind::kBiasGelu : Kind::kBias, s);
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
  if (rows < kLtMinExtent || in < kLtMinExtent || out < kLtMinExtent) return false;
  if (!aligned(dy) || !aligned(w) || !aligned(pre) || !aligned(dpre) || in % 8 != 0) return false;
  Shape s;  // W' (in, out), dy' (out, rows), dpre' (in, rows)
  s.m = in, s.n = rows, s.k = out, s.lda = in, s.ldb = out, s.ldd = in;
  Plan& p = plan(Kind::kGeluBackward, s);
  if (!p.ok) return false;
  DTRAIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &pre, sizeof pre));
  if (!matmul(stream, p, w, dy, dpre)) return false;
  ++gelu_backward_calls_;
  return true;
}

bool LinearLt::run_parameter_gradients(cudaStream_t stream, const void* dy, const void* x, float* dw,
                                       float* column_sums, int64_t rows, int64_t in, int64_t out) {
  if (rows < kLtMinExtent || in < kLtMinExtent || out < kLtMinExtent) return false;
  if (!aligned(dy) || !aligned(x) || !aligned(dw) || !aligned(column_sums)) return false;
  Shape s;  // x' (in, rows), dy' (out, rows) taken transposed, dW' (in, out) in fp32
  s.trans_b = true;
  s.m = in, s.n = out, s.k = rows, s.lda = in, s.ldb = out, s.ldd = in, s.d_fp32 = true;
  Plan& p = plan(Kind::kParameterGradients, s);
  if (!p.ok) return false;
  DTRAIN_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &column_sums, sizeof column_sums));
  if (!matmul(stream, p, x, dy, dw, 1.0f, 1.0f)) return false;
  ++parameter_gradient_calls_;
  return true;
}

bool LinearLt::run_gemm(cudaStream_t stream, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                        float alpha, const void* a, int64_t lda, const void* b, int64_t ldb, float beta, void* c,
                        int64_t ldc, bool c_fp32) {
  if (!autotune_ || m <= 0 || n <= 0 || k <= 0) return false;
  if (!aligned(a) || !aligned(b) || !aligned(c)) return false;
  Shape s;
  s.trans_a = trans_a, s.trans_b = trans_b;
  s.m = m, s.n = n, s.k = k, s.lda = lda, s.ldb = ldb, s.ldd = ldc, s.d_fp32 = c_fp32;
  Plan& p = plan(Kind::kPlain, s);
  if (!p.ok || !matmul(stream, p, a, b, c, alpha, beta)) return false;
  ++plain_calls_;
  return true;
}

}  // namespace dtrain
