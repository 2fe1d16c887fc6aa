// The bookkeeping of a caching device allocator (kernels/cuda/caching_allocator.h):
// the size classes, which blocks are in use and what was asked of each, which are
// cached, and the accounting of both. It makes no device call and treats pointers as
// names, so its arithmetic is tested on machines without a GPU
// (tests/unit/kernels/test_block_cache.cpp). Not thread-safe: its owner locks.
//
// Two figures, as PyTorch reports them (memory_allocated / memory_reserved):
//   in use    the bytes the live buffers asked for, by category: what the memory model
//             predicts and the reports break down
//   reserved  the bytes held from the device: every block, in use or cached, at its
//             rounded size. This is what the device has given away, so it is what a
//             budget or a limit must be checked against.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <unordered_map>

#include "kernels/memory.h"

namespace dtrain {

class BlockCache {
 public:
  // Requests below kSmallLimit round up to kSmallGranularity, larger ones to
  // kLargeGranularity (Note [Caching allocator rounding and reuse]).
  static constexpr size_t kSmallLimit = size_t{1} << 20;
  static constexpr size_t kSmallGranularity = 512;
  static constexpr size_t kLargeGranularity = size_t{2} << 20;

  // The block size a request of `bytes` needs; less than `bytes` when it wraps (a
  // request near 2^64), which callers refuse.
  static size_t rounded_size(size_t bytes);

  // A cached block of at least `size` that wastes at most size/8, taken off the cache,
  // with its real size in `block_size`; null when there is none.
  void* take_cached(size_t size, size_t& block_size);
  // A block of `size` bytes is now held from the device.
  void add_reserved(size_t size);
  // `ptr`, a held block of `block_size`, now serves a request of `requested` bytes.
  void use(void* ptr, size_t block_size, size_t requested, MemoryCategory category);
  // Moves the block `ptr` from use to the cache; false when `ptr` is not in use.
  bool release(void* ptr);
  // Takes the smallest cached block off the books (its owner then frees it): false
  // when the cache is empty.
  bool pop_cached(void*& ptr, size_t& size);
  // Every block held, in use or cached (for the owner's destructor).
  void for_each_block(const std::function<void(void* ptr, size_t size)>& f) const;

  // In use and peak by category (requested bytes), reserved and its peak.
  MemoryStats stats() const { return stats_; }
  void reset_peak();
  size_t reserved() const { return stats_.reserved; }
  size_t cached() const { return cached_; }
  // In use at the blocks' sizes: reserved less the cache.
  size_t held_in_use() const { return stats_.reserved - cached_; }

 private:
  struct Block {
    size_t size;       // rounded, as held from the device
    size_t requested;  // as asked for; what in use counts
    MemoryCategory category;
  };
  MemoryStats stats_;
  size_t cached_ = 0;
  std::unordered_map<void*, Block> used_;
  std::multimap<size_t, void*> cache_;  // rounded size -> block
};

}  // namespace dtrain
