#include "kernels/context.h"

#include "kernels/cpu/cpu_backend.h"

namespace dtrain {

Context::Context(DeviceKind kind, std::unique_ptr<Allocator> allocator, OpsBackend& backend,
                 int num_threads)
    : kind_(kind), allocator_(std::move(allocator)), backend_(backend),
      num_threads_(num_threads < 1 ? 1 : num_threads) {}

std::unique_ptr<Context> Context::make_cpu(int num_threads, size_t memory_limit_bytes) {
  cpu::set_num_threads(num_threads);
  return std::make_unique<Context>(DeviceKind::Cpu,
                                   std::make_unique<CpuAllocator>(memory_limit_bytes),
                                   cpu::backend(), num_threads);
}

void* Context::workspace(size_t bytes) {
  if (workspace_.bytes() < bytes) {
    workspace_.reset();  // free first so the old and new never coexist
    workspace_ = Buffer(*allocator_, bytes, MemoryCategory::Workspace);
  }
  return workspace_.data();
}

}  // namespace dtrain
