// StagingCommunicator over MPI with a CPU context: the staging path (device buffer ->
// host transfer buffer -> MPI -> copy back on wait) under 1, 2 and 4 ranks. On the CPU
// the context's memory is host memory, but every byte still goes through the staging
// buffers and the context's copies, as it does on a GPU. Expected values come from
// formulas in the rank and the world size.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "comm/device_communicator.h"
#include "comm/staging_communicator.h"
#include "comm/typed_collectives.h"
#include "kernels/dtype.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "tests/mpi/device_array.h"
#include "tests/mpi/mpi_env.h"

namespace dtrain {
namespace {

using testing_mpi::DeviceArray;
using testing_mpi::world;

class StagingTest : public ::testing::Test {
 protected:
  std::unique_ptr<Context> ctx = Context::make_cpu(1);
  StagingCommunicator comm{world(), *ctx};
  int n = world().size();
  int r = world().rank();
};

template <class T>
class StagingAllReduceTyped : public StagingTest {};
using StagingTypes = ::testing::Types<float, double, int32_t, int64_t, uint64_t, uint8_t>;
TYPED_TEST_SUITE(StagingAllReduceTyped, StagingTypes);

TYPED_TEST(StagingAllReduceTyped, SumEqualsFormula) {
  const int n = this->n, r = this->r;
  std::vector<TypeParam> input(1001);
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<TypeParam>(r + static_cast<int>(i % 5));
  DeviceArray<TypeParam> dev(*this->ctx, input.size());
  dev.upload(input);
  this->comm.all_reduce(dev.data(), dev.size(), data_type_of<TypeParam>(), ReduceOp::Sum)->wait();
  const auto out = dev.download();
  for (size_t i = 0; i < out.size(); ++i) {
    // sum over ranks q of (q + i%5) = n(n-1)/2 + n (i%5); at most 6 + 16 for uint8.
    const auto expected = static_cast<TypeParam>(n * (n - 1) / 2 + n * static_cast<int>(i % 5));
    ASSERT_EQ(out[i], expected) << "element " << i;
  }
}

// bf16 (2-byte elements, an odd count) through the staging buffers: small integers,
// whose sums bf16 holds exactly (Note [bf16 sum]).
TEST_F(StagingTest, Bf16AllReduceSumEqualsFormula) {
  std::vector<bf16> input(1001);
  for (size_t i = 0; i < input.size(); ++i) input[i] = float_to_bf16(static_cast<float>(r + static_cast<int>(i % 5)));
  DeviceArray<bf16> dev(*ctx, input.size());
  dev.upload(input);
  comm.all_reduce(dev.data(), dev.size(), DataType::BFloat16, ReduceOp::Sum)->wait();
  const auto out = dev.download();
  int wrong = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    wrong += bf16_to_float(out[i]) != static_cast<float>(n * (n - 1) / 2 + n * static_cast<int>(i % 5));
  }
  EXPECT_EQ(wrong, 0);
}

TEST_F(StagingTest, ReduceScatterGivesEachRankItsBlockSum) {
  const size_t block = 37;
  std::vector<double> send(block * static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) {
    for (size_t i = 0; i < block; ++i) send[static_cast<size_t>(j) * block + i] = 1000.0 * j + 10.0 * r + static_cast<double>(i);
  }
  DeviceArray<double> dsend(*ctx, send.size()), drecv(*ctx, block);
  dsend.upload(send);
  drecv.upload(std::vector<double>(block, -1.0));
  comm.reduce_scatter(dsend.data(), drecv.data(), block, DataType::Float64, ReduceOp::Sum)->wait();
  const auto recv = drecv.download();
  for (size_t i = 0; i < block; ++i) {
    // sum over ranks q of (1000 r + 10 q + i) = n (1000 r + i) + 10 n(n-1)/2
    EXPECT_EQ(recv[i], n * (1000.0 * r + static_cast<double>(i)) + 10.0 * n * (n - 1) / 2.0) << i;
  }
  EXPECT_EQ(dsend.download(), send) << "reduce_scatter must not change its input";
}

TEST_F(StagingTest, AllGatherPlacesBlocksInRankOrder) {
  const size_t block = 6;
  std::vector<int64_t> send(block);
  for (size_t i = 0; i < block; ++i) send[i] = 100 * r + static_cast<int64_t>(i);
  DeviceArray<int64_t> dsend(*ctx, block), drecv(*ctx, block * static_cast<size_t>(n));
  dsend.upload(send);
  comm.all_gather(dsend.data(), drecv.data(), block, DataType::Int64)->wait();
  const auto recv = drecv.download();
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < block; ++i) {
      EXPECT_EQ(recv[static_cast<size_t>(q) * block + i], 100 * q + static_cast<int64_t>(i));
    }
  }
}

TEST_F(StagingTest, BroadcastFromEveryRoot) {
  for (int root = 0; root < n; ++root) {
    DeviceArray<float> dev(*ctx, 19);
    dev.upload(std::vector<float>(19, r == root ? 2.5f * root + 1.0f : -7.0f));
    comm.broadcast(dev.data(), dev.size(), DataType::Float32, root)->wait();
    // EXPECT, not ASSERT: a rank leaving the loop early would skip the next broadcast
    // and leave the others waiting in it.
    const auto out = dev.download();
    EXPECT_EQ(out, std::vector<float>(out.size(), 2.5f * root + 1.0f)) << "root " << root;
  }
}

TEST_F(StagingTest, BarrierCompletes) {
  auto work = comm.barrier();
  work->wait();
  EXPECT_TRUE(work->done());
}

TEST_F(StagingTest, SeveralInFlightOfDifferentSizesCompleteInAnyWaitOrder) {
  const std::vector<size_t> sizes = {1, 1000, 17, 70000, 256};
  std::vector<std::unique_ptr<DeviceArray<int32_t>>> bufs;
  std::vector<std::unique_ptr<Work>> works;
  for (size_t b = 0; b < sizes.size(); ++b) {
    bufs.push_back(std::make_unique<DeviceArray<int32_t>>(*ctx, sizes[b]));
    bufs[b]->upload(std::vector<int32_t>(sizes[b], r * 10 + static_cast<int32_t>(b)));
    works.push_back(comm.all_reduce(bufs[b]->data(), sizes[b], DataType::Int32, ReduceOp::Sum));
  }
  for (size_t b = works.size(); b-- > 0;) works[b]->wait();
  for (size_t b = 0; b < sizes.size(); ++b) {
    const int32_t expected = 10 * n * (n - 1) / 2 + n * static_cast<int32_t>(b);
    for (int32_t v : bufs[b]->download()) ASSERT_EQ(v, expected) << "buffer " << b;
  }
}

TEST_F(StagingTest, HostBuffersAreReusedAcrossSteps) {
  // Two "steps" of the same bucket layout: the second must find every staging buffer
  // in the pool, so the pool neither grows nor shrinks.
  const std::vector<size_t> sizes = {5000, 300, 5000, 12};
  auto step = [&](int s) {
    std::vector<std::unique_ptr<DeviceArray<float>>> bufs;
    std::vector<std::unique_ptr<Work>> works;
    for (size_t size : sizes) {
      bufs.push_back(std::make_unique<DeviceArray<float>>(*ctx, size));
      bufs.back()->upload(std::vector<float>(size, static_cast<float>(r + s)));
      works.push_back(comm.all_reduce(bufs.back()->data(), size, DataType::Float32, ReduceOp::Sum));
    }
    for (auto& w : works) w->wait();
    // sum over ranks q of (q + s) = n(n-1)/2 + n s
    const float expected = static_cast<float>(n * (n - 1) / 2 + n * s);
    for (auto& b : bufs) {
      for (float v : b->download()) ASSERT_EQ(v, expected) << "step " << s;
    }
  };
  step(1);
  const size_t buffers = comm.pool().free_buffers();
  const size_t bytes = comm.pool().free_bytes();
  EXPECT_EQ(buffers, sizes.size()) << "one staging buffer per collective in flight";
  step(2);
  EXPECT_EQ(comm.pool().free_buffers(), buffers);
  EXPECT_EQ(comm.pool().free_bytes(), bytes);
}

TEST_F(StagingTest, DonePollingDeliversTheResultWithoutWait) {
  DeviceArray<double> dev(*ctx, 64);
  dev.upload(std::vector<double>(64, 1.0 + r));
  auto work = comm.all_reduce(dev.data(), dev.size(), DataType::Float64, ReduceOp::Sum);
  while (!work->done()) {
  }
  // sum over ranks q of (1 + q) = n(n+1)/2
  for (double v : dev.download()) ASSERT_EQ(v, n * (n + 1) / 2.0);
  work->wait();  // already finished: returns at once and copies nothing again
  for (double v : dev.download()) ASSERT_EQ(v, n * (n + 1) / 2.0);
}

TEST_F(StagingTest, InputIsReadWhenTheCollectiveIsIssued) {
  // The class comment promises that inputs are copied out when the call returns; the
  // result then lands in the device buffer on wait().
  DeviceArray<int64_t> dev(*ctx, 8);
  dev.upload(std::vector<int64_t>(8, r + 1));
  auto work = comm.all_reduce(dev.data(), dev.size(), DataType::Int64, ReduceOp::Sum);
  dev.upload(std::vector<int64_t>(8, -1000));
  work->wait();
  for (int64_t v : dev.download()) ASSERT_EQ(v, static_cast<int64_t>(n) * (n + 1) / 2);
}

TEST_F(StagingTest, AbandonedWorkLeavesTheBufferAndLaterCollectivesWork) {
  DeviceArray<float> dev(*ctx, 32);
  dev.upload(std::vector<float>(32, 3.0f));
  comm.all_reduce(dev.data(), dev.size(), DataType::Float32, ReduceOp::Sum).reset();
  // EXPECT, not ASSERT, before the next collective (see BroadcastFromEveryRoot).
  EXPECT_EQ(dev.download(), std::vector<float>(32, 3.0f));
  comm.all_reduce(dev.data(), dev.size(), DataType::Float32, ReduceOp::Sum)->wait();
  for (float v : dev.download()) ASSERT_EQ(v, 3.0f * static_cast<float>(n));
}

TEST_F(StagingTest, EmptyCollectivesComplete) {
  DeviceArray<float> dev(*ctx, 1);
  comm.all_reduce(dev.data(), 0, DataType::Float32, ReduceOp::Sum)->wait();
  comm.all_gather(dev.data(), dev.data(), 0, DataType::Float32)->wait();
  comm.reduce_scatter(dev.data(), dev.data(), 0, DataType::Float32, ReduceOp::Sum)->wait();
  comm.broadcast(dev.data(), 0, DataType::Float32, 0)->wait();
  EXPECT_EQ(comm.size(), n);
  EXPECT_EQ(comm.rank(), r);
  EXPECT_EQ(comm.backend_name(), "mpi+staging");
}

TEST(MpiDeviceCommunicator, CpuContextForwardsToMpi) {
  auto ctx = Context::make_cpu(1);
  auto comm = make_mpi_device_communicator(world(), *ctx, /*cuda_aware_on_every_rank=*/false);
  EXPECT_EQ(comm->backend_name(), "mpi");
  EXPECT_EQ(comm->size(), world().size());
  EXPECT_EQ(comm->rank(), world().rank());
  const int n = comm->size();
  DeviceArray<float> dev(*ctx, 100);
  dev.upload(std::vector<float>(100, static_cast<float>(comm->rank() + 1)));
  comm->all_reduce(dev.data(), dev.size(), DataType::Float32, ReduceOp::Sum)->wait();
  comm->barrier()->wait();
  for (float v : dev.download()) ASSERT_EQ(v, static_cast<float>(n * (n + 1) / 2));
}

}  // namespace
}  // namespace dtrain
