// The launch of the deterministic column sums (Note [Column sum partition],
// kernels/cuda/column_sum_kernels.cuh), for the reductions over rows: bias_backward's
// (elementwise.cu) and LayerNorm's parameter gradients (layernorm.cu).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"
// After storage.cuh, which provides what the kernels load with.
#include "kernels/cuda/column_sum_kernels.cuh"

namespace dtrain::cuda {

// Queues both kernels on `stream`. workspace: column_sum_workspace_bytes(rows, channels,
// Terms::kOutputs); packed: rows_packable for every array the terms read. rows and
// channels > 0.
template <class Terms>
void column_sums(cudaStream_t stream, const Terms& terms, bool packed, int64_t rows, int64_t channels,
                 double* workspace, ColumnOutputs<Terms::kOutputs> outputs) {
  const ColumnSumPlan plan = column_sum_plan(rows, channels);
  with_row_form(packed, [&](auto form) {
    constexpr int V = decltype(form)::value;
    const auto tiles = static_cast<unsigned>((channels + kColumnLanes * V - 1) / (kColumnLanes * V));
    column_partials<V><<<dim3(tiles, static_cast<unsigned>(plan.chunks)), kBlockThreads, 0, stream>>>(
        terms, rows, channels, plan, workspace);
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
  const auto groups = static_cast<unsigned>((channels + kTotalLanes - 1) / kTotalLanes);
  column_totals<<<dim3(groups, Terms::kOutputs), kBlockThreads, 0, stream>>>(workspace, plan.chunks, channels,
                                                                            outputs);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace dtrain::cuda
