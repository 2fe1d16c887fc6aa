// StagingCommunicator over the one-rank SelfCommunicator on a CPU context: the
// staging path without MPI (the MPI tests cover 2 and 4 ranks).
#include <gtest/gtest.h>

#include <vector>

#include "comm/self_communicator.h"
#include "comm/staging_communicator.h"
#include "kernels/memory.h"
#include "kernels/ops.h"

namespace dtrain {
namespace {

std::vector<float> download(Context& ctx, const Buffer& b, size_t n) {
  std::vector<float> host(n);
  ops::copy_to_host(ctx, host.data(), b.data(), n * sizeof(float));
  return host;
}

TEST(StagingOverSelf, OneRankCollectivesCopyOrKeepTheData) {
  auto ctx = Context::make_cpu(1);
  SelfCommunicator self;
  StagingCommunicator comm(self, *ctx);
  EXPECT_EQ(comm.backend_name(), "self+staging");
  const std::vector<float> values = {1.0f, -2.0f, 3.5f, 8.0f};
  Buffer a(ctx->allocator(), values.size() * sizeof(float), MemoryCategory::Other);
  Buffer b(ctx->allocator(), values.size() * sizeof(float), MemoryCategory::Other);
  ops::copy_from_host(*ctx, a.data(), values.data(), values.size() * sizeof(float));

  comm.all_reduce(a.data(), values.size(), DataType::Float32, ReduceOp::Sum)->wait();
  EXPECT_EQ(download(*ctx, a, values.size()), values);
  comm.all_gather(a.data(), b.data(), values.size(), DataType::Float32)->wait();
  EXPECT_EQ(download(*ctx, b, values.size()), values);
  ops::fill(*ctx, b.as<float>(), static_cast<int64_t>(values.size()), 0.0f);
  comm.reduce_scatter(a.data(), b.data(), values.size(), DataType::Float32, ReduceOp::Sum)->wait();
  EXPECT_EQ(download(*ctx, b, values.size()), values);
  comm.broadcast(a.data(), values.size(), DataType::Float32, 0)->wait();
  EXPECT_EQ(download(*ctx, a, values.size()), values);
  comm.barrier()->wait();
}

}  // namespace
}  // namespace dtrain
