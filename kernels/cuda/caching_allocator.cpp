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

}  // namespace

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
  blocks_.for_each_block([](void* ptr, size_t) { DTRAIN_CUDA_REPORT(cudaFree(ptr)); });
}

void CudaCachingAllocator::free_cache() {
  if (blocks_.cached() == 0) return;
  // A cached block may still be read by work queued before it was released (Note
  // [Stream-ordered reuse]); wait for that work before the memory leaves us.
  DTRAIN_CUDA_CHECK(cudaDeviceSynchronize());
  // Each block leaves the books before it is freed, so a failure midway cannot lead
  // to a second cudaFree of it later.
  void* ptr = nullptr;
  size_t size = 0;
  while (blocks_.pop_cached(ptr, size)) DTRAIN_CUDA_CHECK(cudaFree(ptr));
}

void* CudaCachingAllocator::device_malloc(size_t size, size_t requested, MemoryCategory category) {
  if (limit_ != 0 && blocks_.reserved() + size > limit_) {
    if (blocks_.held_in_use() + size <= limit_) free_cache();
    if (blocks_.reserved() + size > limit_) throw_out_of_memory(requested, size, category, true);
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
  blocks_.add_reserved(size);
  return ptr;
}

void* CudaCachingAllocator::allocate(size_t bytes, MemoryCategory category) {
  if (bytes == 0) return nullptr;
  const size_t size = rounded_size(bytes);
  std::lock_guard<std::mutex> lock(mu_);
  // A size near 2^64 (a negative size cast by a caller) wraps when rounded.
  if (size < bytes) throw_out_of_memory(bytes, bytes, category, false);
  size_t block_size = size;
  void* ptr = blocks_.take_cached(size, block_size);
  if (ptr == nullptr) {
    DeviceGuard guard(device_);
    ptr = device_malloc(size, bytes, category);
  }
  blocks_.use(ptr, block_size, bytes, category);
  return ptr;
}

void CudaCachingAllocator::release(void* ptr, size_t /*bytes*/, MemoryCategory /*category*/) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!blocks_.release(ptr)) {
    // Called from destructors, so it cannot throw; a foreign pointer is a bug elsewhere.
    cuda_detail::report("dtrain allocator", "release", __FILE__, __LINE__,
                        "pointer was not allocated by " + name_ + "; ignored");
  }
}

MemoryStats CudaCachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return blocks_.stats();
}

void CudaCachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(mu_);
  blocks_.reset_peak();
}

MemoryCapacity CudaCachingAllocator::capacity() const {
  const DeviceMemoryInfo info = memory_info();
  std::lock_guard<std::mutex> lock(mu_);
  MemoryCapacity c;
  c.total = info.total;
  c.free = info.free;
  c.limit = limit_;
  c.available = info.free + blocks_.cached();
  if (limit_ != 0) {
    const size_t held = blocks_.held_in_use();
    c.available = std::min(c.available, limit_ > held ? limit_ - held : 0);
  }
  return c;
}

size_t CudaCachingAllocator::reserved_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return blocks_.reserved();
}

size_t CudaCachingAllocator::cached_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return blocks_.cached();
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
  msg << " with " << blocks_.stats().in_use << " in use, " << blocks_.reserved() << " reserved";
  if (over_limit) msg << " of the " << limit_ << "-byte limit";
  msg << ", " << info.free << " free of " << info.total << "; lower train.micro_batch";
  if (over_limit) msg << " or raise the memory limit";
  throw OutOfMemoryError(msg.str());
}

}  // namespace dtrain
