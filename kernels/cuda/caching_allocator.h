// The device allocator of one CUDA device (DESIGN contract 5): cudaMalloc is slow and
// synchronizes the device, so freed blocks are kept and handed out again.
//
// Note [Caching allocator rounding and reuse]
// Requests are rounded up to 512 B below 1 MiB and to 2 MiB above, and a freed block
// goes to a free list keyed by its rounded size. A request takes the smallest cached
// block of at least its rounded size that wastes at most 1/8 of it; blocks are never
// split or merged. dtrain allocates the same sizes every step (flat buffers once,
// activations and workspace per shape), so size classes find their block again after
// the first step, and the waste is bounded by the rounding. When cudaMalloc fails (or
// the byte limit would be passed) the cache is returned to the device and the request
// is tried once more before it fails with a message the user can act on.
//
// Note [Stream-ordered reuse]
// A block released while kernels queued on the context's stream still use it may be
// handed out again at once. That is safe because every op and copy of the context
// runs on that one stream, so the new owner's work is queued after the old owner's.
// Code that uses device memory on another stream (NCCL, a prefetch stream) must make
// the context's stream wait for that work (an event) before releasing the Buffer.
//
// The bookkeeping (size classes, blocks in use and cached, the accounting) is
// BlockCache's (kernels/block_cache.h), tested without a GPU; this class adds the
// device calls and a lock. In use counts the bytes requested, by category; reserved
// what is held from the device (in use plus cached, as rounded), with its peak; the
// byte limit applies to reserved. Thread-safe.
#pragma once

#include <cstddef>
#include <mutex>
#include <string>

#include "kernels/block_cache.h"
#include "kernels/memory.h"

namespace dtrain {

struct DeviceMemoryInfo {
  size_t free = 0;   // bytes the device can still give (cudaMemGetInfo)
  size_t total = 0;  // the device's memory
};

class CudaCachingAllocator final : public Allocator {
 public:
  // `device`: index among the visible devices. `limit_bytes` (0 = none) caps the bytes
  // reserved from the device, so a run can be planned as if on a smaller card.
  explicit CudaCachingAllocator(int device, size_t limit_bytes = 0);
  ~CudaCachingAllocator() override;
  CudaCachingAllocator(const CudaCachingAllocator&) = delete;
  CudaCachingAllocator& operator=(const CudaCachingAllocator&) = delete;

  void* allocate(size_t bytes, MemoryCategory category) override;
  void release(void* ptr, size_t bytes, MemoryCategory category) override;
  // "cuda:0 (NVIDIA H100 80GB HBM3)".
  std::string device_name() const override { return name_; }
  MemoryStats stats() const override;
  void reset_peak() override;
  // free: cudaMemGetInfo's; available: that plus this allocator's cache, within the limit.
  MemoryCapacity capacity() const override;

  // Bytes held from the device: blocks in use plus cached ones, as rounded.
  size_t reserved_bytes() const;
  // Bytes held in the cache, free for reuse.
  size_t cached_bytes() const;
  // Returns every cached block to the device (waits for the device first).
  void empty_cache() override;
  // The device's free and total memory, as the driver reports them.
  DeviceMemoryInfo memory_info() const;
  int device() const { return device_; }

  // The size a request is rounded to (see Note [Caching allocator rounding and reuse]).
  static size_t rounded_size(size_t bytes) { return BlockCache::rounded_size(bytes); }

 private:
  void* device_malloc(size_t size, size_t requested, MemoryCategory category);
  void free_cache();
  // `block` is the rounded size the allocator needed for `requested`.
  [[noreturn]] void throw_out_of_memory(size_t requested, size_t block, MemoryCategory category,
                                        bool over_limit) const;

  const int device_;
  const size_t limit_;
  std::string name_;

  mutable std::mutex mu_;
  BlockCache blocks_;
};

}  // namespace dtrain
