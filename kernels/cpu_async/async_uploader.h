// The Uploader of the asynchronous CPU device (Note [Batch prefetch], kernels/ops.h):
// copies run on the Uploader's own queue (`side`), ordered against the compute queue by
// task numbers as the CUDA Uploader orders its two streams with events.
#pragma once

#include <memory>

#include "kernels/cpu_async/transfer_memory.h"
#include "kernels/cpu_async/work_queue.h"
#include "kernels/ops.h"

namespace dtrain {

std::unique_ptr<Uploader> make_async_uploader(std::shared_ptr<WorkQueue> compute,
                                              std::shared_ptr<WorkQueue> side,
                                              std::shared_ptr<const TransferMemory> transfer);

}  // namespace dtrain
