#include "runtime/step_buffers.h"

namespace dtrain {

StepBuffers::StepBuffers(Context& ctx, const SampleLayout& layout, int64_t micro_batch)
    : batch(ctx, layout, micro_batch),
      stats(ctx.allocator(), kStepStats * sizeof(double), MemoryCategory::Workspace) {}

}  // namespace dtrain
