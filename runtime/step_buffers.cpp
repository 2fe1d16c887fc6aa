#include "runtime/step_buffers.h"

namespace dtrain {

StepBuffers::StepBuffers(Context& ctx, const Shape& sample_shape, int64_t classes, int64_t micro_batch)
    : batch(ctx, sample_shape, micro_batch),
      dlogits(ctx.allocator(), static_cast<size_t>(micro_batch * classes) * sizeof(float),
              MemoryCategory::Activations),
      stats(ctx.allocator(), kStepStats * sizeof(double), MemoryCategory::Workspace) {}

int64_t StepBuffers::bytes_per_sample(const Shape& sample_shape, int64_t classes) {
  return DeviceBatch::bytes_per_sample(sample_shape) + classes * static_cast<int64_t>(sizeof(float));
}

}  // namespace dtrain
