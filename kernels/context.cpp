#include "kernels/context.h"

#include "kernels/cpu/cpu_backend.h"
#include "kernels/ops.h"

namespace dtrain {

Context::Context(DeviceKind kind, std::unique_ptr<Allocator> allocator, OpsBackend& backend,
                 int num_threads)
    : kind_(kind), allocator_(std::move(allocator)), backend_(&backend),
      num_threads_(num_threads < 1 ? 1 : num_threads) {}

Context::Context(DeviceKind kind, std::unique_ptr<Allocator> allocator,
                 std::unique_ptr<OpsBackend> backend, int num_threads)
    : kind_(kind), allocator_(std::move(allocator)), owned_backend_(std::move(backend)),
      backend_(owned_backend_.get()), num_threads_(num_threads < 1 ? 1 : num_threads) {}

Context::~Context() { workspace_.reset(); }

void Context::synchronize() { backend_->synchronize(*this); }

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

void Context::release_workspace() {
  synchronize();
  workspace_.reset();
}

}  // namespace dtrain
