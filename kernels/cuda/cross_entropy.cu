// Softmax cross-entropy on the device: the host half, which picks the kernel (a warp
// or a block per row) and the row form, and launches the kernels of
// cross_entropy_kernels.cuh (Note [Fused classifier] there).
#include <cstdint>
#include <limits>
#include <string>

#include "kernels/check.h"
#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/index_check.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"
// After storage.cuh, which provides what the kernels load and store with.
#include "kernels/cuda/cross_entropy_kernels.cuh"
#include "kernels/errors.h"

namespace dtrain {

namespace {

using cuda::xent::cross_entropy_block_rows;
using cuda::xent::cross_entropy_rows;
using cuda::xent::cross_entropy_totals;
using cuda::xent::kBlockRowClasses;
using cuda::xent::kRowThreads;
using cuda::xent::kRowsPerBlock;
using cuda::kBlockThreads;

}  // namespace

size_t CudaBackend::softmax_cross_entropy_workspace_bytes(int64_t batch) const {
  return static_cast<size_t>(batch) * (sizeof(double) + sizeof(int32_t));
}

void CudaBackend::softmax_cross_entropy(Context& ctx, ConstTypedPtr logits_t, const int32_t* labels,
                                        int64_t batch, int64_t classes, float grad_scale,
                                        TypedPtr dlogits_t, double* stats, double loss_weight) {
  if (batch == 0) return;
  if (classes <= 0) {  // as the CPU op says it
    throw DataError("softmax_cross_entropy: " + std::to_string(classes) +
                    " classes, so every label is out of range; check that the dataset's labels "
                    "match the model's number of classes");
  }
  // The label record packs the row into 32 bits (Note [Label check on the device]).
  DTRAIN_ASSERT(batch <= std::numeric_limits<int32_t>::max(),
                "softmax_cross_entropy: batch " << batch << " exceeds 2^31 rows");
  // Workspace: row losses (double) first, so both arrays stay aligned.
  const size_t loss_bytes = static_cast<size_t>(batch) * sizeof(double);
  auto* scratch = static_cast<char*>(ctx.workspace(softmax_cross_entropy_workspace_bytes(batch)));
  auto* row_loss = reinterpret_cast<double*>(scratch);
  auto* row_hit = reinterpret_cast<int32_t*>(scratch + loss_bytes);

  const int64_t row_blocks = (batch + kRowsPerBlock - 1) / kRowsPerBlock;
  cuda::storage_dispatch(logits_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* logits = cuda::typed<T>(logits_t, "softmax_cross_entropy");
    T* dlogits = cuda::typed<T>(dlogits_t, "softmax_cross_entropy");
    if (classes < kBlockRowClasses) {
      cross_entropy_rows<<<blocks_for(row_blocks, 1), kBlockThreads, 0, stream()>>>(
          logits, labels, batch, classes, grad_scale, dlogits, loss_weight, row_loss, row_hit,
          label_error_.as<unsigned long long>(), label_launches_);
      return;
    }
    // A block per row, a grid-stride loop over the rows (blocks_for caps the grid).
    cuda::with_row_form(cuda::rows_packable(classes, logits, dlogits), [&](auto form) {
      cross_entropy_block_rows<decltype(form)::value><<<blocks_for(batch, 1), kRowThreads, 0, stream()>>>(
          logits, labels, batch, classes, grad_scale, dlogits, loss_weight, row_loss, row_hit,
          label_error_.as<unsigned long long>(), label_launches_);
    });
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
  ++label_launches_;
  cross_entropy_totals<<<1, kBlockThreads, 0, stream()>>>(row_loss, row_hit, batch, loss_weight, stats);
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace dtrain
