// The staging buffers' pool: reuse instead of a fresh (pinned, slow) allocation for
// each collective, and no more buffers than were ever in use at once.
#include <gtest/gtest.h>

#include <memory>

#include "comm/host_buffer_pool.h"

namespace dtrain {
namespace {

TEST(HostBufferPool, ReleasedBufferIsReusedForASmallerRequest) {
  auto ctx = Context::make_cpu(1);
  HostBufferPool pool(*ctx);
  HostBuffer a = pool.acquire(10000);
  ASSERT_NE(a.data(), nullptr);
  EXPECT_GE(a.bytes(), 10000u);
  void* const memory = a.data();
  pool.release(std::move(a));
  EXPECT_EQ(pool.free_buffers(), 1u);
  HostBuffer b = pool.acquire(300);
  EXPECT_EQ(b.data(), memory) << "a free buffer that fits must be reused";
  EXPECT_EQ(pool.free_buffers(), 0u);
}

TEST(HostBufferPool, PicksTheSmallestFreeBufferThatFits) {
  auto ctx = Context::make_cpu(1);
  HostBufferPool pool(*ctx);
  HostBuffer big = pool.acquire(1 << 20);
  HostBuffer small = pool.acquire(5000);
  void* const small_memory = small.data();
  pool.release(std::move(big));
  pool.release(std::move(small));
  HostBuffer got = pool.acquire(4000);
  EXPECT_EQ(got.data(), small_memory);
  EXPECT_EQ(pool.free_buffers(), 1u);
}

TEST(HostBufferPool, GrowingReplacesTheLargestTooSmallBuffer) {
  auto ctx = Context::make_cpu(1);
  HostBufferPool pool(*ctx);
  pool.release(pool.acquire(100));
  pool.release(pool.acquire(100));  // the same buffer again: still one
  EXPECT_EQ(pool.free_buffers(), 1u);
  HostBuffer grown = pool.acquire(1 << 16);
  EXPECT_GE(grown.bytes(), size_t{1} << 16);
  EXPECT_EQ(pool.free_buffers(), 0u) << "the too-small buffer is freed, not kept";
  pool.release(std::move(grown));
  EXPECT_EQ(pool.free_buffers(), 1u);
  EXPECT_GE(pool.free_bytes(), size_t{1} << 16);
}

TEST(HostBufferPool, ZeroBytesNeedNoBuffer) {
  auto ctx = Context::make_cpu(1);
  HostBufferPool pool(*ctx);
  HostBuffer empty = pool.acquire(0);
  EXPECT_EQ(empty.data(), nullptr);
  pool.release(std::move(empty));
  EXPECT_EQ(pool.free_buffers(), 0u);
}

}  // namespace
}  // namespace dtrain
