// LayerNorm over the last dimension (Note [Transformer ops], kernels/ops.h) and the
// residual add fused with it (Note [Fused residual LayerNorm]): the host half, which
// picks the row form and launches the kernels of layernorm_kernels.cuh (the design and
// the formulas are there).
#include <cstdint>

#include "kernels/context.h"
#include "kernels/cuda/column_sums.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"
// After storage.cuh, which provides what the kernels load and store with.
#include "kernels/cuda/layernorm_kernels.cuh"

namespace dtrain {

namespace {

using cuda::kBlockThreads;
using cuda::typed;
using cuda::layernorm::add_layernorm_forward_rows;
using cuda::layernorm::kFusedMaxChannels;
using cuda::layernorm::kRowsPerBlock;
using cuda::layernorm::layernorm_backward_fused;
using cuda::layernorm::layernorm_backward_rows;
using cuda::layernorm::layernorm_forward_rows;
using cuda::layernorm::with_lane_runs;
using cuda::layernorm::LayerNormParamTerms;

}  // namespace

size_t CudaBackend::layernorm_backward_workspace_bytes(int64_t rows, int64_t channels) const {
  return cuda::column_sum_workspace_bytes(rows, channels, LayerNormParamTerms<float>::kOutputs);
}

void CudaBackend::layernorm_forward(Context& /*ctx*/, ConstTypedPtr x_t, ConstTypedPtr weight_t, ConstTypedPtr bias_t,
                                    TypedPtr y_t, float* mean, float* rstd, int64_t rows, int64_t channels) {
  if (rows == 0 || channels == 0) return;
  const unsigned grid = blocks_for((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1);
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "layernorm_forward";
    const T* x = typed<T>(x_t, kOp);
    const T* weight = typed<T>(weight_t, kOp);
    const T* bias = typed<T>(bias_t, kOp);
    T* y = typed<T>(y_t, kOp);
    cuda::with_row_form(cuda::rows_packable(channels, x, weight, bias, y), [&](auto form) {
      layernorm_forward_rows<decltype(form)::value>
          <<<grid, kBlockThreads, 0, stream()>>>(x, weight, bias, y, mean, rstd, rows, channels);
    });
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::add_layernorm_forward(Context& /*ctx*/, ConstTypedPtr a_t, ConstTypedPtr b_t,
                                        TypedPtr residual_t, ConstTypedPtr weight_t, ConstTypedPtr bias_t,
                                        TypedPtr y_t, float* mean, float* rstd, int64_t rows, int64_t channels) {
  if (rows == 0 || channels == 0) return;
  const unsigned grid = blocks_for((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1);
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "add_layernorm_forward";
    const T* a = typed<T>(a_t, kOp);
    const T* b = typed<T>(b_t, kOp);
    T* residual = typed<T>(residual_t, kOp);
    const T* weight = typed<T>(weight_t, kOp);
    const T* bias = typed<T>(bias_t, kOp);
    T* y = typed<T>(y_t, kOp);
    // The row's form as layernorm_forward would choose it for x = residual (the chain).
    const bool ab_packed = cuda::rows_packable(channels, a, b);
    cuda::with_row_form(cuda::rows_packable(channels, residual, weight, bias, y), [&](auto form) {
      add_layernorm_forward_rows<decltype(form)::value><<<grid, kBlockThreads, 0, stream()>>>(
          a, b, residual, weight, bias, y, mean, rstd, rows, channels, ab_packed);
    });
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

void CudaBackend::layernorm_backward(Context& ctx, ConstTypedPtr dy_t, ConstTypedPtr x_t, ConstTypedPtr weight_t,
                                     const float* mean, const float* rstd, TypedPtr dx_t, float* dweight,
                                     float* dbias, int64_t rows, int64_t channels, bool accumulate_dx) {
  if (rows == 0 || channels == 0) return;
  auto* partials = static_cast<double*>(ctx.workspace(layernorm_backward_workspace_bytes(rows, channels)));
  const unsigned grid = blocks_for((rows + kRowsPerBlock - 1) / kRowsPerBlock, 1);
  cuda::storage_dispatch(dx_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "layernorm_backward";
    const T* dy = typed<T>(dy_t, kOp);
    const T* x = typed<T>(x_t, kOp);
    const T* weight = typed<T>(weight_t, kOp);
    T* dx = typed<T>(dx_t, kOp);
    const bool packed = cuda::rows_packable(channels, dy, x, weight, dx);
    if (fusions_.layernorm_backward && channels <= kFusedMaxChannels) {
      // Note [Fused LayerNorm backward]: dx and the partials, then their totals.
      const cuda::ColumnSumPlan plan = cuda::column_sum_plan(rows, channels);
      cuda::with_row_form(packed, [&](auto form) {
        constexpr int V = decltype(form)::value;
        with_lane_runs<V>(channels, [&](auto runs) {
          layernorm_backward_fused<V, decltype(runs)::value><<<static_cast<unsigned>(plan.chunks), kBlockThreads, 0,
                                                               stream()>>>(dy, x, weight, mean, rstd, dx, rows,
                                                                           channels, plan, partials, accumulate_dx);
        });
      });
      DTRAIN_CUDA_LAUNCH_CHECK();
      ++fused_layernorm_backward_calls_;
      const auto groups = static_cast<unsigned>((channels + cuda::kTotalLanes - 1) / cuda::kTotalLanes);
      cuda::column_totals<<<dim3(groups, 2), kBlockThreads, 0, stream()>>>(partials, plan.chunks, channels,
                                                                          cuda::ColumnOutputs<2>{{dweight, dbias}});
      DTRAIN_CUDA_LAUNCH_CHECK();
      return;
    }
    // The parameter sums read dy before the row kernel may overwrite it (dx aliasing dy).
    cuda::column_sums(stream(), LayerNormParamTerms<T>{dy, x, mean, rstd}, cuda::rows_packable(channels, dy, x),
                      rows, channels, partials, cuda::ColumnOutputs<2>{{dweight, dbias}});
    cuda::with_row_form(packed, [&](auto form) {
      layernorm_backward_rows<decltype(form)::value><<<grid, kBlockThreads, 0, stream()>>>(
          dy, x, weight, mean, rstd, dx, rows, channels, accumulate_dx);
    });
    DTRAIN_CUDA_LAUNCH_CHECK();
  });
}

}  // namespace dtrain
