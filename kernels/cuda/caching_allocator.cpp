#include "kernels/cuda/caching_allocator.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <sstream>

#include "kernels/cuda/cuda_check.h"
#include "kernels/errors.h"

namespace dtrain {

namespace {

// The current device is per host thread, and a thread other than the one that made
// the context starts on device 0; every device call here first selects ours.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    DTRAIN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) DTRAIN_CUDA_CHECK(cudaSetDevice(device));
    device_ = device;
  }
  ~DeviceGuard() {
    if (previous_ != device_) DTRAIN_CUDA_REPORT(cudaSetDevice(previous_));
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
  int device_ = -1;
};

size_t round_up(size_t bytes, size_t granularity) {
  return (bytes + granularity - 1) / granularity * granularity;
}

}  // namespace

size_t CudaCachingAllocator::rounded_size(size_t bytes) {
  if (bytes < kSmallLimit) return round_up(bytes, kSmallGranularity);
  return round_up(bytes, kLargeGranularity);
}

CudaCachingAllocator::CudaCachingAllocator(int device, size_t limit_bytes)
    : device_(device), limit_(limit_bytes) {
  cudaDeviceProp props{};
  DTRAIN_CUDA_CHECK(cudaGetDeviceProperties(&props, device));
  name_ = "cuda:" + std::to_string(device) + " (" + props.name + ")";
}

CudaCachingAllocator::~CudaCachingAllocator() {
  // Blocks still in use here belong to Buffers that outlived their Context (a bug
  // elsewhere); their memory goes back with the rest, as the context is gone.
  DTRAIN_CUDA_REPORT(cudaSetDevice(device_));
  for (const auto& [size, ptr] : cache_) DTRAIN_CUDA_REPORT(cudaFree(ptr));
  for (const auto& [ptr, block] : used_) DTRAIN_CUDA_REPORT(cudaFree(ptr));
}

void* CudaCachingAllocator::take_cached(size_t size, size_t& block_size) {
  auto it = cache_.lower_bound(size);
  if (it == cache_.end() || it->first - size > size / 8) return nullptr;
  void* ptr = it->second;
  block_size = it->first;
  cached_ -= it->first;
  cache_.erase(it);
  return ptr;
}

void CudaCachingAllocator::free_cache() {
  if (cache_.empty()) return;
  // A cached block may still be read by work queued before it was released (Note
  // [Stream-ordered reuse]); wait for that work before the memory leaves us.
  DTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
  // Each block leaves the books before it is freed, so a failure midway cannot lead
  // to a second cudaFree of it later.
  while (!cache_.empty()) {
    const auto [size, ptr] = *cache_.begin();
    cache_.erase(cache_.begin());
    reserved_ -= size;
    cached_ -= size;
    DTRAIN_CUDA_CHECK(cudaFree(ptr));
  }
}

void* CudaCachingAllocator::device_malloc(size_t size, size_t requested, MemoryCategory category) {
  if (limit_ != 0 && reserved_ + size > limit_) {
    if (reserved_ - cached_ + size <= limit_) free_cache();
    if (reserved_ + size > limit_) throw_out_of_memory(requested, size, category, true);
  }
  void* ptr = nullptr;
  cudaError_t status = cudaMalloc(&ptr, size);
  if (status == cudaErrorMemoryAllocation) {
    // A failed cudaMalloc is also recorded as the thread's last error; clear it, or the
    // next launch check would blame an innocent kernel.
    (void)cudaGetLastError();
    free_cache();
    status = cudaMalloc(&ptr, size);
    if (status == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      throw_out_of_memory(requested, size, category, false);
    }
  }
  if (status != cudaSuccess) {
    detail::throw_library_error<DeviceError>("CUDA", "cudaMalloc(&ptr, size)", __FILE__, __LINE__,
                                             cuda_detail::cuda_error_string(status),
                                             cuda_detail::current_device());
  }
  reserved_ += size;
  return ptr;
}

void* CudaCachingAllocator::allocate(size_t bytes, MemoryCategory category) {
  if (bytes == 0) return nullptr;
  const size_t size = rounded_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  // A size near 2^64 (a negative size cast by a caller) wraps when rounded.
  if (size < bytes) throw_out_of_memory(bytes, bytes, category, false);
  size_t block_size = size;
  void* ptr = take_cached(size, block_size);
  if (ptr == nullptr) {
    DeviceGuard guard(device_);
    ptr = device_malloc(size, bytes, category);
  }
  used_[ptr] = Block{block_size, bytes, category};

  const int c = static_cast<int>(category);
  stats_.in_use += bytes;
  stats_.in_use_by[c] += bytes;
  if (stats_.in_use > stats_.peak) stats_.peak = stats_.in_use;
  if (stats_.in_use_by[c] > stats_.peak_by[c]) stats_.peak_by[c] = stats_.in_use_by[c];
  return ptr;
}

void CudaCachingAllocator::release(void* ptr, size_t /*bytes*/, MemoryCategory /*category*/) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = used_.find(ptr);
  if (it == used_.end()) {
    // Called from destructors, so it cannot throw; a foreign pointer is a bug elsewhere.
    cuda_detail::report("dtrain allocator", "release", __FILE__, __LINE__,
                        "pointer was not allocated by " + name_ + "; ignored");
    return;
  }
  // The accounting uses what was recorded at allocation, the one source of truth.
  const Block block = it->second;
  used_.erase(it);
  const int c = static_cast<int>(block.category);
  stats_.in_use -= block.requested;
  stats_.in_use_by[c] -= block.requested;
  cache_.emplace(block.size, ptr);
  cached_ += block.size;
}

MemoryStats CudaCachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CudaCachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak = stats_.in_use;
  stats_.peak_by = stats_.in_use_by;
}

MemoryCapacity CudaCachingAllocator::capacity() const {
  const DeviceMemoryInfo info = memory_info();
  std::lock_guard<std::mutex> lock(mu_);
  MemoryCapacity c;
  c.total = info.total;
  c.free = info.free;
  c.limit = limit_;
  c.available = info.free + cached_;
  if (limit_ != 0) {
    const size_t held = reserved_ - cached_;
    c.available = std::min(c.available, limit_ > held ? limit_ - held : 0);
  }
  return c;
}

size_t CudaCachingAllocator::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_;
}

size_t CudaCachingAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

void CudaCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  DeviceGuard guard(device_);
  free_cache();
}

DeviceMemoryInfo CudaCachingAllocator::memory_info() const {
  DeviceGuard guard(device_);
  DeviceMemoryInfo info;
  DTRAIN_CUDA_CHECK(cudaMemGetInfo(&info.free, &info.total));
  return info;
}

void CudaCachingAllocator::throw_out_of_memory(size_t requested, size_t block,
                                               MemoryCategory category, bool over_limit) const {
  // Called with mu_ held and the device selected; reads the counters directly.
  DeviceMemoryInfo info;
  if (cudaMemGetInfo(&info.free, &info.total) != cudaSuccess) (void)cudaGetLastError();
  std::ostringstream msg;
  msg << "out of memory on " << name_ << ": " << requested << " bytes of "
      << memory_category_name(category) << " requested";
  // The limit counts reserved blocks, which are rounded up: name the block, or a
  // request that seems to fit under the limit would read as a wrong refusal.
  if (block != requested) msg << " (a " << block << "-byte block)";
  msg << " with " << stats_.in_use << " in use, " << reserved_ << " reserved";
  if (over_limit) msg << " of the " << limit_ << "-byte limit";
  msg << ", " << info.free << " free of " << info.total << "; lower train.micro_batch";
  if (over_limit) msg << " or raise the memory limit";
  throw OutOfMemoryError(msg.str());
}

}  // namespace dtrain
