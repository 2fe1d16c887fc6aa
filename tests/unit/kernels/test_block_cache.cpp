// The caching allocator's bookkeeping (kernels/block_cache.h) without a GPU: pointers
// are only names here. Expected sizes follow the rounding rule by hand: up to the next
// 512 B below 1 MiB, to the next 2 MiB from 1 MiB on; in use counts what was asked,
// reserved every block held (in use or cached) at its rounded size.
#include <gtest/gtest.h>

#include <cstdint>

#include "kernels/block_cache.h"

namespace dtrain {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

void* name(uintptr_t n) { return reinterpret_cast<void*>(n * 4096); }

// What the CUDA allocator does for a request that finds no cached block.
void* allocate_fresh(BlockCache& cache, void* ptr, size_t requested, MemoryCategory c) {
  const size_t size = BlockCache::rounded_size(requested);
  cache.add_reserved(size);
  cache.use(ptr, size, requested, c);
  return ptr;
}

TEST(BlockCache, RoundsTo512BytesBelowOneMiBAndTo2MiBAbove) {
  EXPECT_EQ(BlockCache::rounded_size(1), 512u);
  EXPECT_EQ(BlockCache::rounded_size(513), 1024u);
  EXPECT_EQ(BlockCache::rounded_size(kMiB - 1), kMiB);
  EXPECT_EQ(BlockCache::rounded_size(kMiB), 2 * kMiB);
  EXPECT_EQ(BlockCache::rounded_size(kMiB + 1), 2 * kMiB);
  EXPECT_EQ(BlockCache::rounded_size(5 * kMiB + 1), 6 * kMiB);
}

TEST(BlockCache, InUseCountsRequestedBytesAndReservedTheRoundedBlocks) {
  BlockCache cache;
  allocate_fresh(cache, name(1), kMiB + 1, MemoryCategory::Activations);  // a 2 MiB block
  allocate_fresh(cache, name(2), 100, MemoryCategory::Params);             // a 512 B block
  MemoryStats s = cache.stats();
  EXPECT_EQ(s.in_use, kMiB + 1 + 100);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Activations)], kMiB + 1);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Params)], 100u);
  EXPECT_EQ(s.reserved, 2 * kMiB + 512);
  EXPECT_EQ(s.peak_reserved, 2 * kMiB + 512);

  // Released, the block is cached: no longer in use, still reserved.
  ASSERT_TRUE(cache.release(name(1)));
  s = cache.stats();
  EXPECT_EQ(s.in_use, 100u);
  EXPECT_EQ(s.peak, kMiB + 1 + 100);
  EXPECT_EQ(s.reserved, 2 * kMiB + 512);
  EXPECT_EQ(cache.cached(), 2 * kMiB);
  EXPECT_EQ(cache.held_in_use(), 512u);
  EXPECT_FALSE(cache.release(name(1))) << "a block released twice";
}

TEST(BlockCache, ACachedBlockServesTheSameSizeClassWithoutReservingMore) {
  BlockCache cache;
  allocate_fresh(cache, name(1), 3 * kMiB, MemoryCategory::Activations);  // a 4 MiB block
  cache.release(name(1));
  size_t block = 0;
  // 5 MiB rounds to 6 MiB: larger than the block.
  EXPECT_EQ(cache.take_cached(6 * kMiB, block), nullptr);
  // 2 MiB would waste 2 MiB of the 4 MiB block, more than 2 MiB / 8.
  EXPECT_EQ(cache.take_cached(2 * kMiB, block), nullptr);
  ASSERT_EQ(cache.take_cached(4 * kMiB, block), name(1));
  EXPECT_EQ(block, 4 * kMiB);
  cache.use(name(1), block, 4 * kMiB - 7, MemoryCategory::Workspace);
  EXPECT_EQ(cache.stats().reserved, 4 * kMiB);
  EXPECT_EQ(cache.stats().in_use, 4 * kMiB - 7);
  EXPECT_EQ(cache.cached(), 0u);
}

TEST(BlockCache, EmptyingTheCacheLowersReservedAndResetPeakStartsFromIt) {
  BlockCache cache;
  allocate_fresh(cache, name(1), 2 * kMiB, MemoryCategory::Activations);
  allocate_fresh(cache, name(2), 6 * kMiB, MemoryCategory::Activations);
  allocate_fresh(cache, name(3), 1000, MemoryCategory::Params);  // 1024 B
  cache.release(name(1));
  cache.release(name(2));
  void* ptr = nullptr;
  size_t size = 0;
  size_t popped = 0;
  while (cache.pop_cached(ptr, size)) popped += size;
  EXPECT_EQ(popped, 8 * kMiB);
  const MemoryStats s = cache.stats();
  EXPECT_EQ(s.reserved, 1024u);
  EXPECT_EQ(s.peak_reserved, 8 * kMiB + 1024);
  cache.reset_peak();
  EXPECT_EQ(cache.stats().peak_reserved, 1024u);
  EXPECT_EQ(cache.stats().peak, 1000u);
}

}  // namespace
}  // namespace dtrain
