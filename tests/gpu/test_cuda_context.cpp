// Making a CUDA context, and the entry points other parts use (cuda_stream,
// cuda_device). The first two tests run everywhere: what a CPU context says, and what
// make_cuda gives on this machine.
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "kernels/context.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test.h"

namespace dtrain {
namespace {

TEST(CudaContextAnywhere, StreamOfACpuContextIsADeviceError) {
  auto cpu = Context::make_cpu(1);
  EXPECT_THROW(cuda_stream(*cpu), DeviceError);
  EXPECT_THROW(cuda_device(*cpu), DeviceError);
}

// It runs on both kinds of machine rather than skipping on one: scripts/gpu-check.sh
// counts any skipped GPU test as a failure where a GPU is present.
TEST(CudaContextAnywhere, MakeCudaGivesADeviceOrSaysWhyNotAndHowToFixIt) {
  if (cuda_device_count() != 0) {
    EXPECT_EQ(Context::make_cuda(CudaOptions{})->device_kind(), DeviceKind::Cuda);
    return;
  }
  try {
    Context::make_cuda(CudaOptions{});
    FAIL() << "expected DeviceError";
  } catch (const DeviceError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("no CUDA device is visible"), std::string::npos) << what;
    EXPECT_NE(what.find("CUDA_VISIBLE_DEVICES"), std::string::npos) << what;
    EXPECT_NE(what.find("device.kind: cpu"), std::string::npos) << what;
  }
}

class CudaContext : public testing::GpuTest {};

TEST_F(CudaContext, OwnsAStreamACachingAllocatorAndTheCudaBackend) {
  auto ctx = Context::make_cuda(CudaOptions{});
  EXPECT_EQ(ctx->device_kind(), DeviceKind::Cuda);
  EXPECT_EQ(ctx->device_name().rfind("cuda:0 (", 0), 0u) << ctx->device_name();
  EXPECT_STREQ(ctx->backend().name(), "cuda");
  EXPECT_NE(cuda_stream(*ctx), nullptr);
  EXPECT_EQ(cuda_device(*ctx), 0);
  EXPECT_NE(dynamic_cast<CudaCachingAllocator*>(&ctx->allocator()), nullptr);

  // The op workspace is device memory accounted as Workspace.
  const int workspace = static_cast<int>(MemoryCategory::Workspace);
  const size_t before = ctx->allocator().stats().in_use_by[workspace];
  ctx->workspace(12345);
  const size_t after = ctx->allocator().stats().in_use_by[workspace];
  EXPECT_EQ(after - before, 12345u);
  ctx->synchronize();
}

TEST_F(CudaContext, DeviceIndexOutOfRangeNamesTheCount) {
  const int count = cuda_device_count();
  CudaOptions options;
  options.device = count;
  try {
    Context::make_cuda(options);
    FAIL() << "expected DeviceError for device " << count;
  } catch (const DeviceError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("CUDA device " + std::to_string(count)), std::string::npos) << what;
    EXPECT_NE(what.find("sees " + std::to_string(count)), std::string::npos) << what;
    EXPECT_NE(what.find("CUDA_VISIBLE_DEVICES"), std::string::npos) << what;
  }
}

// The batch planner asks for the workspace of many batch sizes; each makes a cuDNN
// plan, and release_plans() must drop them all.
TEST_F(CudaContext, ConvolutionPlansOfEachBatchSizeAreReleasedOnRequest) {
  auto ctx = Context::make_cuda(CudaOptions{});
  OpsBackend& backend = ctx->backend();
  backend.release_plans();
  for (int64_t batch : {1, 7, 64}) {
    backend.conv2d_workspace_bytes(*ctx, Conv2dShape{batch, 3, 28, 28, 16, 3, 1, 1});
  }
  EXPECT_EQ(backend.plan_count(), 3u);
  backend.release_plans();
  EXPECT_EQ(backend.plan_count(), 0u);
}

TEST_F(CudaContext, MemoryLimitMakesLargeRequestsFail) {
  CudaOptions options;
  options.memory_limit_bytes = size_t{96} << 20;  // room for the handles' workspace
  auto ctx = Context::make_cuda(options);
  EXPECT_THROW(Buffer too_big(ctx->allocator(), size_t{128} << 20, MemoryCategory::Activations),
               DeviceError);
  Buffer fits(ctx->allocator(), size_t{16} << 20, MemoryCategory::Activations);
  EXPECT_NE(fits.data(), nullptr);
}

}  // namespace
}  // namespace dtrain
