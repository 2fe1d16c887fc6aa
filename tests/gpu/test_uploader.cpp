// The CUDA Uploader's ordering (Note [Batch prefetch]) on a real device: an upload into
// a buffer that queued work still reads must wait for those reads, whether they were
// marked by release() or (before any release) are simply all the work queued. The
// reads are many passes over a large buffer, so an upload that started early would
// overwrite the buffer while they run and the readers' output would show it.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "kernels/context.h"
#include "kernels/host_buffer.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test.h"

namespace dtrain {
namespace {

constexpr size_t kFloats = size_t{64} << 20;  // 256 MiB
constexpr int kReadPasses = 32;               // each reads all of it: milliseconds in all

class UploaderOrdering : public testing::GpuTest, public ::testing::WithParamInterface<bool> {};

TEST_P(UploaderOrdering, AnUploadWaitsForTheReadsQueuedBeforeIt) {
  const bool with_release = GetParam();
  auto ctx = Context::make_cuda(CudaOptions{});
  const size_t bytes = kFloats * sizeof(float);
  Buffer dst(ctx->allocator(), bytes, MemoryCategory::Other);
  Buffer out(ctx->allocator(), bytes, MemoryCategory::Other);
  HostBuffer first(*ctx, bytes), second(*ctx, bytes);
  std::fill(first.as<float>(), first.as<float>() + kFloats, 1.0f);
  std::fill(second.as<float>(), second.as<float>() + kFloats, 2.0f);
  auto uploader = ctx->backend().make_uploader(*ctx);

  uploader->upload(dst.data(), first.data(), bytes);
  uploader->make_visible();
  for (int pass = 0; pass < kReadPasses; ++pass) {
    ops::relu_forward(*ctx, dst.as<float>(), out.as<float>(), static_cast<int64_t>(kFloats));
  }
  if (with_release) uploader->release();
  uploader->upload(dst.data(), second.data(), bytes);

  std::vector<float> got(kFloats);
  ops::copy_to_host(*ctx, got.data(), out.data(), bytes);
  const auto wrong = std::count_if(got.begin(), got.end(), [](float v) { return v != 1.0f; });
  EXPECT_EQ(wrong, 0) << "the readers saw the second upload: it did not wait for them";

  uploader->make_visible();
  ops::copy_to_host(*ctx, got.data(), dst.data(), bytes);
  EXPECT_EQ(std::count_if(got.begin(), got.end(), [](float v) { return v != 2.0f; }), 0)
      << "the second upload did not arrive";
}

INSTANTIATE_TEST_SUITE_P(ReleasedOrNot, UploaderOrdering, ::testing::Bool());

}  // namespace
}  // namespace dtrain
