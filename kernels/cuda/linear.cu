// The linear forward with its epilogue (Note [Fused linear epilogue], kernels/ops.h):
// y = epilogue(x W^T + bias), each stored value rounded once from its fp32 value.
//
// The bf16 linear, bias or bias and GELU, is one cuBLASLt GEMM with its epilogue
// (kernels/cuda/linear_lt.h), where cuBLASLt takes the shape. Otherwise (fp32, a
// declined shape) cuBLAS computes the product in fp32 (into pre or y for fp32; for bf16
// inputs into an fp32 workspace, cublasGemmEx with an fp32 C), and one elementwise pass
// adds the bias, applies GELU and rounds. That meets the op's contract (the product is
// never rounded before the bias) at the cost of one extra pass over the output and, in
// bf16, a workspace for the fp32 product. The bf16 product is taken in bands of rows,
// each at most kBandBytes of floats, so that the workspace, which
// linear_forward_workspace_bytes reports for every bf16 call (cuBLASLt's calls use
// none of it), stays bounded however large the micro-batch: as rows x out floats it
// was the memory model's largest workspace for GPT-2 124M, 5 GB at micro-batch 398.
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gelu.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"
#include "kernels/errors.h"

namespace dtrain {

namespace {

using cuda::from_float;
using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;
using cuda::to_float;
using cuda::typed;

// product may be pre (with GELU) or y (without) for fp32: each element is read, then
// written, by one thread.
template <class T>
__global__ void linear_epilogue_kernel(const float* product, const T* bias, T* pre, T* y, int64_t rows,
                                       int64_t out, bool gelu) {
  const int64_t n = rows * out;
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const float v = product[i] + to_float(bias[i % out]);
    if (gelu) {
      pre[i] = from_float<T>(v);
      y[i] = from_float<T>(cuda::gelu_tanh(v));
    } else {
      y[i] = from_float<T>(v);
    }
  }
}

// The most bytes of fp32 product one band of a bf16 linear's rows takes (at least one
// row): 64 MiB, 5,461 rows of GPT-2's widest linear (3072), enough for full-size GEMMs.
constexpr int64_t kBandBytes = int64_t{64} << 20;

int64_t band_rows(int64_t rows, int64_t out) {
  const int64_t fit = kBandBytes / (out * static_cast<int64_t>(sizeof(float)));
  return std::clamp<int64_t>(fit, 1, rows);
}

}  // namespace

size_t CudaBackend::linear_forward_workspace_bytes(int64_t rows, int64_t /*in*/, int64_t out, DType type) const {
  if (type == DType::kF32 || rows <= 0 || out <= 0) return 0;
  return static_cast<size_t>(band_rows(rows, out)) * static_cast<size_t>(out) * sizeof(float);
}

void CudaBackend::linear_forward(Context& ctx, ConstTypedPtr x, ConstTypedPtr w, ConstTypedPtr bias, TypedPtr pre,
                                 TypedPtr y, int64_t rows, int64_t in, int64_t out, LinearEpilogue epilogue) {
  const bool gelu = epilogue == LinearEpilogue::kBiasGelu;
  if (gelu && pre.data == nullptr) throw Error("linear_forward: the GELU epilogue needs pre, to keep for backward");
  if (rows == 0 || out == 0) return;
  cuda::storage_dispatch(y.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "linear_forward";
    const T* b = typed<T>(bias, kOp);
    T* p = typed<T>(pre, kOp);
    T* yt = typed<T>(y, kOp);
    (void)typed<T>(x, kOp);  // checks: all of one type
    (void)typed<T>(w, kOp);
    if constexpr (!std::is_same_v<T, float>) {
      const bool lt = !gelu || fusions_.gelu_epilogue;  // CudaFusions: off, the band path below
      if (lt && linear_lt_->run(stream(), x.data, w.data, b, yt, rows, in, out, gelu ? p : nullptr)) return;
    }
    if constexpr (std::is_same_v<T, float>) {
      float* product = gelu ? p : yt;  // in place: one thread reads, then writes, each element
      gemm(ctx, false, true, rows, out, in, 1.0f, x, in, w, in, 0.0f, TypedPtr(product, DType::kF32), out);
      linear_epilogue_kernel<<<blocks_for(rows * out, kBlockThreads), kBlockThreads, 0, stream()>>>(
          product, b, p, yt, rows, out, gelu);
    } else {
      const int64_t band = band_rows(rows, out);
      auto* product = static_cast<float*>(ctx.workspace(linear_forward_workspace_bytes(rows, in, out, y.type)));
      for (int64_t first = 0; first < rows; first += band) {
        const int64_t n = std::min(band, rows - first);
        gemm(ctx, false, true, n, out, in, 1.0f, x.at(first * in), in, w, in, 0.0f, TypedPtr(product, DType::kF32),
             out);
        linear_epilogue_kernel<<<blocks_for(n * out, kBlockThreads), kBlockThreads, 0, stream()>>>(
            product, b, p == nullptr ? nullptr : p + first * out, yt + first * out, n, out, gelu);
      }
    }
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

// Note [Fused GELU backward]: one cuBLASLt GEMM in bf16 where it takes the shape, else
// the chain (cuBLAS, then the GELU backward pass).
void CudaBackend::linear_backward_input_gelu(Context& ctx, ConstTypedPtr dy, ConstTypedPtr w, ConstTypedPtr pre,
                                             TypedPtr dpre, int64_t rows, int64_t in, int64_t out) {
  const bool bf16 = dy.type == DType::kBF16 && w.type == DType::kBF16 && pre.type == DType::kBF16 &&
                    dpre.type == DType::kBF16;
  if (bf16 && fusions_.gelu_backward && linear_lt_->run_gelu_backward(stream(), dy.data, w.data, pre.data, dpre.data, rows, in, out)) return;
  OpsBackend::linear_backward_input_gelu(ctx, dy, w, pre, dpre, rows, in, out);
}

// Note [Fused bias gradient]: in bf16 one cuBLASLt GEMM writes the weight gradient and
// the column sums of dy (into the workspace: the epilogue overwrites), which one add
// then puts into db; else the chain (cuBLAS, then bias_backward).
void CudaBackend::linear_parameter_gradients(Context& ctx, ConstTypedPtr dy, ConstTypedPtr x, float* dw, float* db,
                                             int64_t rows, int64_t in, int64_t out) {
  if (fusions_.bias_gradient && dy.type == DType::kBF16 && x.type == DType::kBF16 && rows > 0 && in > 0 &&
      out > 0) {
    auto* column_sums = static_cast<float*>(ctx.workspace(static_cast<size_t>(out) * sizeof(float)));
    if (linear_lt_->run_parameter_gradients(stream(), dy.data, x.data, dw, column_sums, rows, in, out)) {
      add(ctx, column_sums, db, db, out);
      return;
    }
  }
  OpsBackend::linear_parameter_gradients(ctx, dy, x, dw, db, rows, in, out);
}

size_t CudaBackend::linear_parameter_gradients_workspace_bytes(int64_t rows, int64_t in, int64_t out,
                                                               DType type) const {
  const size_t fused = type == DType::kBF16 ? static_cast<size_t>(out) * sizeof(float) : 0;
  return std::max(fused, OpsBackend::linear_parameter_gradients_workspace_bytes(rows, in, out, type));
}

}  // namespace dtrain
