// The CUDA caching allocator: reuse of freed blocks, accounting by category and peak
// (requested bytes, as CpuAllocator), reserved bytes, the byte limit and the
// out-of-memory message. The expected values follow from the rounding rule
// (Note [Caching allocator rounding and reuse]) and the request sizes.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <string>

#include "kernels/cuda/caching_allocator.h"
#include "kernels/errors.h"
#include "kernels/memory.h"
#include "tests/gpu/gpu_test.h"

namespace dtrain {
namespace {

constexpr size_t kMiB = size_t{1} << 20;

// The rounding rule is a pure function: checked on every machine.
TEST(CudaCachingAllocatorRounding, SmallRequestsRoundTo512BytesLargeOnesTo2MiB) {
  EXPECT_EQ(CudaCachingAllocator::rounded_size(1), 512u);
  EXPECT_EQ(CudaCachingAllocator::rounded_size(512), 512u);
  EXPECT_EQ(CudaCachingAllocator::rounded_size(513), 1024u);
  EXPECT_EQ(CudaCachingAllocator::rounded_size(kMiB - 1), kMiB);
  EXPECT_EQ(CudaCachingAllocator::rounded_size(kMiB), 2 * kMiB);
  EXPECT_EQ(CudaCachingAllocator::rounded_size(3 * kMiB), 4 * kMiB);
  EXPECT_EQ(CudaCachingAllocator::rounded_size(4 * kMiB + 1), 6 * kMiB);
}

class CudaCachingAllocatorTest : public testing::GpuTest {};

TEST_F(CudaCachingAllocatorTest, FreedBlockIsHandedOutAgainForTheSameSizeClass) {
  CudaCachingAllocator alloc(0);
  void* p = alloc.allocate(1000, MemoryCategory::Activations);
  ASSERT_NE(p, nullptr);
  alloc.release(p, 1000, MemoryCategory::Activations);
  EXPECT_EQ(alloc.allocate(1000, MemoryCategory::Activations), p);
  alloc.release(p, 1000, MemoryCategory::Activations);
  // 900 bytes round to the same 1024-byte block; a different category may take it.
  EXPECT_EQ(alloc.allocate(900, MemoryCategory::Params), p);
  // A second live request cannot get the same block.
  void* q = alloc.allocate(900, MemoryCategory::Params);
  EXPECT_NE(q, p);
  alloc.release(p, 900, MemoryCategory::Params);
  alloc.release(q, 900, MemoryCategory::Params);

  // Large blocks too, and a request far smaller than a cached block does not take it.
  void* big = alloc.allocate(10 * kMiB, MemoryCategory::Workspace);
  alloc.release(big, 10 * kMiB, MemoryCategory::Workspace);
  EXPECT_EQ(alloc.allocate(10 * kMiB - 100, MemoryCategory::Workspace), big);
  alloc.release(big, 10 * kMiB - 100, MemoryCategory::Workspace);
  void* small = alloc.allocate(3 * kMiB, MemoryCategory::Workspace);
  EXPECT_NE(small, big);
  alloc.release(small, 3 * kMiB, MemoryCategory::Workspace);
}

TEST_F(CudaCachingAllocatorTest, AccountsRequestedBytesByCategoryWithPeaks) {
  CudaCachingAllocator alloc(0);
  void* params = alloc.allocate(1000, MemoryCategory::Params);
  void* acts = alloc.allocate(3 * kMiB + 5, MemoryCategory::Activations);
  MemoryStats s = alloc.stats();
  EXPECT_EQ(s.in_use, 1000 + 3 * kMiB + 5);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Params)], 1000u);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Activations)], 3 * kMiB + 5);
  EXPECT_EQ(s.peak, s.in_use);
  // Reserved counts the rounded blocks: 1024 B and 4 MiB.
  EXPECT_EQ(alloc.reserved_bytes(), 1024 + 4 * kMiB);
  EXPECT_EQ(s.reserved, 1024 + 4 * kMiB);
  EXPECT_EQ(s.peak_reserved, 1024 + 4 * kMiB);

  alloc.release(acts, 3 * kMiB + 5, MemoryCategory::Activations);
  s = alloc.stats();
  EXPECT_EQ(s.in_use, 1000u);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Activations)], 0u);
  EXPECT_EQ(s.peak, 1000 + 3 * kMiB + 5);
  EXPECT_EQ(s.peak_by[static_cast<int>(MemoryCategory::Activations)], 3 * kMiB + 5);
  // The freed block stays reserved, in the cache, until the cache is emptied.
  EXPECT_EQ(alloc.reserved_bytes(), 1024 + 4 * kMiB);
  EXPECT_EQ(alloc.cached_bytes(), 4 * kMiB);
  alloc.empty_cache();
  EXPECT_EQ(alloc.reserved_bytes(), 1024u);
  EXPECT_EQ(alloc.stats().reserved, 1024u);
  EXPECT_EQ(alloc.stats().peak_reserved, 1024 + 4 * kMiB);
  EXPECT_EQ(alloc.cached_bytes(), 0u);

  alloc.reset_peak();
  s = alloc.stats();
  EXPECT_EQ(s.peak, 1000u);
  EXPECT_EQ(s.peak_by[static_cast<int>(MemoryCategory::Activations)], 0u);
  alloc.release(params, 1000, MemoryCategory::Params);
  EXPECT_EQ(alloc.stats().in_use, 0u);
}

TEST_F(CudaCachingAllocatorTest, BlocksAreAlignedAndZeroBytesIsNull) {
  CudaCachingAllocator alloc(0);
  EXPECT_EQ(alloc.allocate(0, MemoryCategory::Other), nullptr);
  alloc.release(nullptr, 0, MemoryCategory::Other);
  void* ptrs[4];
  for (int i = 0; i < 4; ++i) {
    ptrs[i] = alloc.allocate(static_cast<size_t>(1 + 37 * i), MemoryCategory::Other);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(ptrs[i]) % 256, 0u);
  }
  for (void* p : ptrs) alloc.release(p, 0, MemoryCategory::Other);
}

TEST_F(CudaCachingAllocatorTest, NamesTheDeviceAndReportsItsMemory) {
  CudaCachingAllocator alloc(0);
  EXPECT_EQ(alloc.device_name().rfind("cuda:0 (", 0), 0u) << alloc.device_name();
  EXPECT_EQ(alloc.device_name().back(), ')');
  const DeviceMemoryInfo info = alloc.memory_info();
  EXPECT_GT(info.total, 0u);
  EXPECT_LE(info.free, info.total);
}

TEST_F(CudaCachingAllocatorTest, LimitFailsWithAnActionableMessage) {
  CudaCachingAllocator alloc(0, 8 * kMiB);
  void* p = alloc.allocate(6 * kMiB, MemoryCategory::Params);
  try {
    alloc.allocate(4 * kMiB, MemoryCategory::Activations);
    FAIL() << "expected DeviceError over the 8 MiB limit";
  } catch (const DeviceError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("out of memory on cuda:0 (", 0), 0u) << what;
    EXPECT_NE(what.find("4194304 bytes of activations requested with 6291456 in use, 6291456 "
                        "reserved of the 8388608-byte limit"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find(" free of "), std::string::npos) << what;
    EXPECT_NE(what.find("lower train.micro_batch"), std::string::npos) << what;
  }
  // The failed request left the accounting as it was.
  EXPECT_EQ(alloc.stats().in_use, 6 * kMiB);
  EXPECT_EQ(alloc.reserved_bytes(), 6 * kMiB);
  alloc.release(p, 6 * kMiB, MemoryCategory::Params);
}

// The limit counts rounded blocks: 5 MiB in use holds a 6 MiB block, and 2.5 MiB more
// needs a 4 MiB one, so 7.5 MiB of requests fail under an 8 MiB limit. The message
// names the block, so the refusal does not read as a miscount.
TEST_F(CudaCachingAllocatorTest, LimitMessageNamesTheRoundedBlock) {
  CudaCachingAllocator alloc(0, 8 * kMiB);
  void* p = alloc.allocate(5 * kMiB, MemoryCategory::Params);
  try {
    alloc.allocate(5 * kMiB / 2, MemoryCategory::Activations);
    FAIL() << "expected DeviceError: a 4 MiB block does not fit beside a 6 MiB one";
  } catch (const DeviceError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("2621440 bytes of activations requested (a 4194304-byte block) with "
                        "5242880 in use, 6291456 reserved of the 8388608-byte limit"),
              std::string::npos)
        << what;
  }
  alloc.release(p, 5 * kMiB, MemoryCategory::Params);
}

TEST_F(CudaCachingAllocatorTest, LimitFreesTheCacheBeforeGivingUp) {
  CudaCachingAllocator alloc(0, 8 * kMiB);
  void* p = alloc.allocate(6 * kMiB, MemoryCategory::Activations);
  alloc.release(p, 6 * kMiB, MemoryCategory::Activations);
  // 6 MiB cached + 4 MiB new would pass the limit; dropping the cache makes room.
  void* q = alloc.allocate(4 * kMiB, MemoryCategory::Activations);
  EXPECT_NE(q, nullptr);
  EXPECT_EQ(alloc.reserved_bytes(), 4 * kMiB);
  EXPECT_EQ(alloc.cached_bytes(), 0u);
  alloc.release(q, 4 * kMiB, MemoryCategory::Activations);
}

TEST_F(CudaCachingAllocatorTest, DeviceOutOfMemoryIsReportedAndRecoverable) {
  CudaCachingAllocator alloc(0);
  const DeviceMemoryInfo info = alloc.memory_info();
  void* cached = alloc.allocate(kMiB + 1, MemoryCategory::Other);
  alloc.release(cached, kMiB + 1, MemoryCategory::Other);
  try {
    alloc.allocate(2 * info.total, MemoryCategory::Activations);
    FAIL() << "expected DeviceError for twice the device's memory";
  } catch (const DeviceError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("out of memory on cuda:0 (", 0), 0u) << what;
    EXPECT_NE(what.find(std::to_string(2 * info.total) + " bytes of activations requested"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find(" free of " + std::to_string(info.total)), std::string::npos) << what;
    EXPECT_NE(what.find("lower train.micro_batch"), std::string::npos) << what;
  }
  // The retry emptied the cache, and the failure left no CUDA error behind.
  EXPECT_EQ(alloc.cached_bytes(), 0u);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  void* p = alloc.allocate(1000, MemoryCategory::Other);
  EXPECT_NE(p, nullptr);
  alloc.release(p, 1000, MemoryCategory::Other);
}

}  // namespace
}  // namespace dtrain
