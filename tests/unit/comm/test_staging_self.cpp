// StagingCommunicator over the one-rank SelfCommunicator on a CPU context: the
// staging path without MPI (the MPI tests cover 2 and 4 ranks), and the one-rank
// communicators' variable-count collectives.
#include <gtest/gtest.h>

#include <span>
#include <string>
#include <vector>

#include "comm/self_communicator.h"
#include "comm/single_rank_communicator.h"
#include "comm/staging_communicator.h"
#include "comm/typed_collectives.h"
#include "kernels/errors.h"
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

// One rank owns the one block: both v-forms leave the buffer's values. Through staging
// the result is the staged copy, so a buffer overwritten after the call gets the
// values it had when the collective was issued back on wait().
TEST(StagingOverSelf, VariableCountCollectivesOfOneRankReturnTheStagedValues) {
  auto ctx = Context::make_cpu(1);
  SelfCommunicator self;
  StagingCommunicator comm(self, *ctx);
  const std::vector<float> values = {4.0f, -1.5f, 0.25f, 7.0f, 3.0f};
  const std::vector<size_t> counts = {values.size()};
  Buffer a(ctx->allocator(), values.size() * sizeof(float), MemoryCategory::Other);
  const std::span<float> flat(a.as<float>(), values.size());

  ops::copy_from_host(*ctx, a.data(), values.data(), values.size() * sizeof(float));
  auto reduce = reduce_scatter_v(comm, flat, std::span<const size_t>(counts));
  ops::fill(*ctx, a.as<float>(), static_cast<int64_t>(values.size()), -9.0f);
  reduce->wait();
  EXPECT_EQ(download(*ctx, a, values.size()), values) << "reduce_scatter_v";

  auto gather = all_gather_v(comm, flat, std::span<const size_t>(counts));
  ops::fill(*ctx, a.as<float>(), static_cast<int64_t>(values.size()), -9.0f);
  gather->wait();
  EXPECT_EQ(download(*ctx, a, values.size()), values) << "all_gather_v";

  // An empty buffer (the one block empty) completes too.
  const std::vector<size_t> empty = {0};
  comm.reduce_scatter_v(a.data(), empty, DataType::Float32, ReduceOp::Sum)->wait();
  comm.all_gather_v(a.data(), empty, DataType::Float32)->wait();
  EXPECT_EQ(download(*ctx, a, values.size()), values);
}

TEST(OneRankCommunicators, VariableCountCollectivesAreTheIdentity) {
  auto ctx = Context::make_cpu(1);
  SelfCommunicator self;
  StagingCommunicator staged(self, *ctx);
  SingleRankCommunicator single(staged);
  std::vector<double> values = {1.0, 2.0, -3.0};
  const std::vector<size_t> counts = {values.size()};
  for (Communicator* comm : {static_cast<Communicator*>(&self), static_cast<Communicator*>(&single)}) {
    std::vector<double> buf = values;
    EXPECT_TRUE(reduce_scatter_v(*comm, std::span<double>(buf), std::span<const size_t>(counts))->done());
    EXPECT_TRUE(all_gather_v(*comm, std::span<double>(buf), std::span<const size_t>(counts))->done());
    EXPECT_EQ(buf, values) << comm->backend_name();
  }
}

TEST(OneRankCommunicators, VariableCountsThatDoNotFitAreRefused) {
  SelfCommunicator self;
  std::vector<float> buf(4, 1.0f);
  const std::vector<size_t> two_ranks = {2, 2};
  try {
    self.reduce_scatter_v(buf.data(), two_ranks, DataType::Float32, ReduceOp::Sum);
    ADD_FAILURE() << "counts for two ranks on one were accepted";
  } catch (const CommError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("reduce_scatter_v"), std::string::npos) << message;
    EXPECT_NE(message.find("self"), std::string::npos) << message;
    EXPECT_NE(message.find("2 block counts for 1 ranks"), std::string::npos) << message;
  }
  EXPECT_THROW(self.all_gather_v(buf.data(), two_ranks, DataType::Float32), CommError);
  // The typed forms check that the span holds sum(counts) elements.
  const std::vector<size_t> five = {5};
  EXPECT_THROW(reduce_scatter_v(self, std::span<float>(buf), std::span<const size_t>(five)), Error);
  EXPECT_THROW(all_gather_v(self, std::span<float>(buf), std::span<const size_t>(five)), Error);
}

}  // namespace
}  // namespace dtrain
