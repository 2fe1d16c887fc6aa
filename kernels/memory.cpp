#include "kernels/memory.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "kernels/errors.h"

namespace dtrain {

const char* memory_category_name(MemoryCategory c) {
  switch (c) {
    case MemoryCategory::Params: return "params";
    case MemoryCategory::Grads: return "grads";
    case MemoryCategory::Optimizer: return "optimizer";
    case MemoryCategory::Activations: return "activations";
    case MemoryCategory::Workspace: return "workspace";
    case MemoryCategory::Other: return "other";
  }
  return "unknown";
}

void* CpuAllocator::allocate(size_t bytes, MemoryCategory category) {
  if (bytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  if (limit_ != 0 && stats_.in_use + bytes > limit_) {
    std::ostringstream msg;
    msg << "out of memory on " << name_ << ": " << bytes << " bytes of " << memory_category_name(category)
        << " requested with " << stats_.in_use << " of the " << limit_
        << "-byte limit in use; lower train.micro_batch or raise the memory limit";
    throw OutOfMemoryError(msg.str());
  }
  constexpr size_t kAlign = 64;
  void* p = std::aligned_alloc(kAlign, (bytes + kAlign - 1) / kAlign * kAlign);
  if (p == nullptr) {
    std::ostringstream msg;
    msg << "out of host memory: " << bytes << " bytes of " << memory_category_name(category)
        << " requested with " << stats_.in_use << " bytes in use";
    throw OutOfMemoryError(msg.str());
  }
  const int c = static_cast<int>(category);
  stats_.in_use += bytes;
  stats_.in_use_by[c] += bytes;
  stats_.reserved = stats_.in_use;
  if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
  stats_.peak_reserved = stats_.peak;
  if (stats_.in_use_by[c] > stats_.peak_by[c]) stats_.peak_by[c] = stats_.in_use_by[c];
  return p;
}

void CpuAllocator::release(void* ptr, size_t bytes, MemoryCategory category) {
  if (ptr == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.in_use -= bytes;
    stats_.in_use_by[static_cast<int>(category)] -= bytes;
    stats_.reserved = stats_.in_use;
  }
  if (dispose_) {
    dispose_(ptr, bytes);
  } else {
    std::free(ptr);
  }
}

MemoryStats CpuAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

MemoryCapacity host_memory() {
  MemoryCapacity c;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  size_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemTotal:") c.total = kib * 1024;
    if (key == "MemAvailable:") c.free = kib * 1024;
  }
  const long page = sysconf(_SC_PAGESIZE);
  if (c.total == 0) c.total = static_cast<size_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<size_t>(page);
  if (c.free == 0) c.free = static_cast<size_t>(sysconf(_SC_AVPHYS_PAGES)) * static_cast<size_t>(page);
  c.available = c.free;
  return c;
}

MemoryCapacity CpuAllocator::capacity() const {
  MemoryCapacity c = host_memory();
  std::lock_guard<std::mutex> lock(mu_);
  c.limit = limit_;
  if (limit_ != 0) c.available = std::min(c.free, limit_ > stats_.in_use ? limit_ - stats_.in_use : 0);
  return c;
}

void CpuAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.in_use;
  stats_.peak_by = stats_.in_use_by;
  stats_.peak_reserved = stats_.peak;
}

Buffer::Buffer(Allocator& alloc, size_t bytes, MemoryCategory category)
    : alloc_(&alloc), ptr_(alloc.allocate(bytes, category)), bytes_(bytes), category_(category) {}

Buffer& Buffer::operator=(Buffer&& o) noexcept {
  if (this != &o) {
    reset();
    alloc_ = o.alloc_;
    ptr_ = o.ptr_;
    bytes_ = o.bytes_;
    category_ = o.category_;
    o.alloc_ = nullptr;
    o.ptr_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

void Buffer::reset() {
  if (alloc_ != nullptr && ptr_ != nullptr) alloc_->release(ptr_, bytes_, category_);
  alloc_ = nullptr;
  ptr_ = nullptr;
  bytes_ = 0;
}

}  // namespace dtrain
