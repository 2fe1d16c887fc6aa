// NcclCommunicator with one rank (bootstrap SelfCommunicator) on a CUDA context, and
// StagingCommunicator on a CUDA context: values by formula (one rank: every reduction
// is the rank's own data, every gather a copy), the mapping of each DataType (an
// out-of-place collective with the wrong element size copies the wrong number of
// bytes), and the stream ordering between the compute stream and NCCL's.
//
// The ordering tests queue long device work on the compute stream (fills of a large
// buffer) right before the collective, and read the result right after wait() with
// copy_to_host on the compute stream: if the NCCL stream did not wait for the fills,
// it would copy stale data; if wait() did not order the compute stream after the
// collective, copy_to_host would read the output before NCCL wrote it.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "comm/device_communicator.h"
#include "comm/nccl_communicator.h"
#include "comm/self_communicator.h"
#include "comm/staging_communicator.h"
#include "comm/typed_collectives.h"
#include "kernels/context.h"
#include "kernels/dtype.h"
#include "kernels/errors.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "tests/gpu/gpu_test.h"

namespace dtrain {
namespace {

// An uninitialised device array of n elements (the large ones are filled on the device,
// not copied from a host vector of the same size).
template <class T>
class DeviceVector {
 public:
  DeviceVector(Context& ctx, size_t n)
      : ctx_(ctx), n_(n), buf_(ctx.allocator(), n * sizeof(T), MemoryCategory::Other) {}
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), n_);
    ops::copy_from_host(ctx_, buf_.data(), host.data(), n_ * sizeof(T));
  }
  // copy_to_host runs on the compute stream and returns once the bytes are here.
  std::vector<T> download() {
    std::vector<T> host(n_);
    ops::copy_to_host(ctx_, host.data(), buf_.data(), n_ * sizeof(T));
    return host;
  }
  T* data() { return buf_.as<T>(); }
  size_t size() const { return n_; }

 private:
  Context& ctx_;
  size_t n_;
  Buffer buf_;
};

// 64 Mi floats (256 MiB): each fill of it keeps an H100 busy for a good fraction of a
// millisecond, far longer than it takes the host to issue the collective.
constexpr size_t kLarge = size_t{64} << 20;

// Queues `rounds` fills of `buf` on the compute stream, the last one with `value`.
void queue_slow_fill(Context& ctx, float* buf, size_t n, float value, int rounds = 8) {
  for (int i = 0; i < rounds - 1; ++i) ops::fill(ctx, buf, static_cast<int64_t>(n), -100.0f - i);
  ops::fill(ctx, buf, static_cast<int64_t>(n), value);
}

void expect_all(const std::vector<float>& v, float expected, const char* what) {
  size_t wrong = 0, first = v.size();
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] != expected) {
      if (wrong++ == 0) first = i;
    }
  }
  EXPECT_EQ(wrong, 0u) << what << ": " << wrong << " of " << v.size() << " elements differ from "
                       << expected << ", first at " << first << " (" << (first < v.size() ? v[first] : 0.0f) << ")";
}

class NcclOneRank : public testing::GpuTest {
 protected:
  void SetUp() override {
    testing::GpuTest::SetUp();
    if (IsSkipped()) return;
    ctx = Context::make_cuda(CudaOptions{});
    comm = std::make_unique<NcclCommunicator>(self, *ctx, /*timeout_s=*/60.0);
  }
  void TearDown() override {
    comm.reset();  // before the context whose stream and memory it uses
    ctx.reset();
  }

  SelfCommunicator self;
  std::unique_ptr<Context> ctx;
  std::unique_ptr<NcclCommunicator> comm;
};

TEST_F(NcclOneRank, RankAndSizeComeFromTheBootstrap) {
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->backend_name(), "nccl");
  EXPECT_NE(comm->stream(), nullptr);
}

TEST_F(NcclOneRank, AllReduceSumOfOneRankIsItsOwnData) {
  std::vector<float> input(4099);
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<float>(i % 13) - 6.0f;
  DeviceVector<float> dev(*ctx, input.size());
  dev.upload(input);
  all_reduce(*comm, std::span<float>(dev.data(), dev.size()))->wait();
  EXPECT_EQ(dev.download(), input);  // sum over the one rank
}

TEST_F(NcclOneRank, AllGatherCopiesAfterComputeAndBeforeLaterCopies) {
  // Out of place, so a missing wait on either side shows as stale data in `recv`.
  DeviceVector<float> send(*ctx, kLarge), recv(*ctx, kLarge);
  ops::fill(*ctx, recv.data(), static_cast<int64_t>(recv.size()), -1.0f);
  ctx->synchronize();
  queue_slow_fill(*ctx, send.data(), send.size(), 7.0f);
  auto work = comm->all_gather(send.data(), recv.data(), send.size(), DataType::Float32);
  work->wait();
  expect_all(recv.download(), 7.0f, "all_gather output");
}

TEST_F(NcclOneRank, ReduceScatterCopiesAfterCompute) {
  DeviceVector<float> send(*ctx, kLarge), recv(*ctx, kLarge);
  ops::fill(*ctx, recv.data(), static_cast<int64_t>(recv.size()), -1.0f);
  ctx->synchronize();
  queue_slow_fill(*ctx, send.data(), send.size(), 3.0f);
  comm->reduce_scatter(send.data(), recv.data(), recv.size(), DataType::Float32, ReduceOp::Sum)->wait();
  expect_all(recv.download(), 3.0f, "reduce_scatter output");
}

template <class T>
class NcclTyped : public NcclOneRank {};
using NcclTypes = ::testing::Types<float, double, int32_t, int64_t, uint64_t, uint8_t>;
TYPED_TEST_SUITE(NcclTyped, NcclTypes);

TYPED_TEST(NcclTyped, OutOfPlaceCollectivesMoveWholeElements) {
  // With a wrong element type NCCL would move a different number of bytes, leaving
  // sentinels behind or running past the block.
  const size_t n = 1000;
  std::vector<TypeParam> input(n), sentinel(n + 8, static_cast<TypeParam>(99));
  for (size_t i = 0; i < n; ++i) input[i] = static_cast<TypeParam>(i % 50 + 1);
  DeviceVector<TypeParam> send(*this->ctx, n), recv(*this->ctx, n + 8);
  send.upload(input);

  recv.upload(sentinel);
  all_gather(*this->comm, std::span<const TypeParam>(send.data(), n), std::span<TypeParam>(recv.data(), n))->wait();
  std::vector<TypeParam> expected = input;
  expected.resize(n + 8, static_cast<TypeParam>(99));
  EXPECT_EQ(recv.download(), expected) << "all_gather";

  recv.upload(sentinel);
  reduce_scatter(*this->comm, std::span<const TypeParam>(send.data(), n), std::span<TypeParam>(recv.data(), n))->wait();
  EXPECT_EQ(recv.download(), expected) << "reduce_scatter";

  all_reduce(*this->comm, std::span<TypeParam>(send.data(), n))->wait();
  EXPECT_EQ(send.download(), input) << "all_reduce";
  broadcast(*this->comm, std::span<TypeParam>(send.data(), n), 0)->wait();
  EXPECT_EQ(send.download(), input) << "broadcast";
}

// One rank owns the one block, so both v-forms (Note [Variable-count collectives over
// NCCL]) leave it as it is and touch nothing past it (sentinels); an empty block is
// skipped; and each grouped call closes its group, so the next collective runs.
TYPED_TEST(NcclTyped, VariableCountCollectivesKeepTheBlockAndCloseTheirGroup) {
  const size_t n = 1000;
  std::vector<TypeParam> input(n + 8, static_cast<TypeParam>(99));
  for (size_t i = 0; i < n; ++i) input[i] = static_cast<TypeParam>(i % 50 + 1);
  DeviceVector<TypeParam> buf(*this->ctx, n + 8);
  buf.upload(input);
  const std::span<TypeParam> block(buf.data(), n);
  const std::vector<size_t> counts = {n}, empty = {0};

  reduce_scatter_v(*this->comm, block, std::span<const size_t>(counts))->wait();
  EXPECT_EQ(buf.download(), input) << "reduce_scatter_v";
  all_gather_v(*this->comm, block, std::span<const size_t>(counts))->wait();
  EXPECT_EQ(buf.download(), input) << "all_gather_v";
  reduce_scatter_v(*this->comm, block.first(0), std::span<const size_t>(empty))->wait();
  all_gather_v(*this->comm, block.first(0), std::span<const size_t>(empty))->wait();
  all_reduce(*this->comm, block)->wait();
  EXPECT_EQ(buf.download(), input) << "all_reduce after the v-forms";
}

// DataType::BFloat16 is ncclBfloat16 (comm.reduce_dtype bf16): 2-byte elements, so a
// wrong mapping moves the wrong number of bytes and leaves the sentinels wrong.
TEST_F(NcclOneRank, Bf16CollectivesMoveTwoByteElements) {
  const size_t n = 1001;
  auto bits_of = [](const std::vector<bf16>& v) {
    std::vector<uint16_t> bits;
    for (bf16 b : v) bits.push_back(b.bits);
    return bits;
  };
  std::vector<bf16> input(n), sentinel(n + 8, float_to_bf16(99.0f));
  for (size_t i = 0; i < n; ++i) input[i] = float_to_bf16(static_cast<float>(i % 50) * 0.375f - 3.0f);
  DeviceVector<bf16> send(*ctx, n), recv(*ctx, n + 8);
  send.upload(input);
  std::vector<bf16> expected = input;
  expected.resize(n + 8, float_to_bf16(99.0f));

  recv.upload(sentinel);
  all_gather(*comm, std::span<const bf16>(send.data(), n), std::span<bf16>(recv.data(), n))->wait();
  EXPECT_EQ(bits_of(recv.download()), bits_of(expected)) << "all_gather";
  recv.upload(sentinel);
  reduce_scatter(*comm, std::span<const bf16>(send.data(), n), std::span<bf16>(recv.data(), n))->wait();
  EXPECT_EQ(bits_of(recv.download()), bits_of(expected)) << "reduce_scatter";
  all_reduce(*comm, std::span<bf16>(send.data(), n))->wait();
  EXPECT_EQ(bits_of(send.download()), bits_of(input)) << "all_reduce";

  // The v-forms in place on the first n elements of `recv`; the sentinels stay.
  const std::vector<size_t> counts = {n};
  recv.upload(expected);
  reduce_scatter_v(*comm, std::span<bf16>(recv.data(), n), std::span<const size_t>(counts))->wait();
  EXPECT_EQ(bits_of(recv.download()), bits_of(expected)) << "reduce_scatter_v";
  all_gather_v(*comm, std::span<bf16>(recv.data(), n), std::span<const size_t>(counts))->wait();
  EXPECT_EQ(bits_of(recv.download()), bits_of(expected)) << "all_gather_v";
}

TEST_F(NcclOneRank, VariableCountCollectivesInFlightCompleteInReverseAndByPolling) {
  const size_t n = size_t{1} << 20;
  std::vector<std::unique_ptr<DeviceVector<float>>> bufs;
  std::vector<std::unique_ptr<Work>> works;
  const std::vector<size_t> counts = {n};
  for (int b = 0; b < 4; ++b) {
    bufs.push_back(std::make_unique<DeviceVector<float>>(*ctx, n));
    queue_slow_fill(*ctx, bufs.back()->data(), n, 20.0f + static_cast<float>(b), 2);
    const std::span<float> flat(bufs.back()->data(), n);
    works.push_back(b % 2 == 0 ? reduce_scatter_v(*comm, flat, std::span<const size_t>(counts))
                               : all_gather_v(*comm, flat, std::span<const size_t>(counts)));
  }
  while (!works[0]->done()) {
  }
  for (int b = 3; b >= 0; --b) works[static_cast<size_t>(b)]->wait();
  for (int b = 0; b < 4; ++b) {
    expect_all(bufs[static_cast<size_t>(b)]->download(), 20.0f + static_cast<float>(b), "in-flight v-form");
  }
}

TEST_F(NcclOneRank, VariableCountsForAnotherWorldSizeAreRefusedAndTheCommunicatorStaysUsable) {
  DeviceVector<float> dev(*ctx, 4);
  const std::vector<size_t> two_ranks = {2, 2};
  EXPECT_THROW(comm->reduce_scatter_v(dev.data(), two_ranks, DataType::Float32, ReduceOp::Sum), CommError);
  EXPECT_THROW(comm->all_gather_v(dev.data(), two_ranks, DataType::Float32), CommError);
  ops::fill(*ctx, dev.data(), 4, 1.0f);
  comm->all_reduce(dev.data(), dev.size(), DataType::Float32, ReduceOp::Sum)->wait();
  expect_all(dev.download(), 1.0f, "all_reduce after refused v-forms");
}

TEST_F(NcclOneRank, BroadcastFromRootZeroKeepsTheData) {
  DeviceVector<float> dev(*ctx, 333);
  queue_slow_fill(*ctx, dev.data(), dev.size(), 2.5f, 2);
  comm->broadcast(dev.data(), dev.size(), DataType::Float32, 0)->wait();
  expect_all(dev.download(), 2.5f, "broadcast");
}

TEST_F(NcclOneRank, BroadcastFromAMissingRootIsRefusedAndTheCommunicatorStaysUsable) {
  DeviceVector<float> dev(*ctx, 4);
  EXPECT_THROW(comm->broadcast(dev.data(), dev.size(), DataType::Float32, 1), Error);
  ops::fill(*ctx, dev.data(), 4, 1.0f);
  comm->all_reduce(dev.data(), dev.size(), DataType::Float32, ReduceOp::Sum)->wait();
  expect_all(dev.download(), 1.0f, "all_reduce after a refused broadcast");
}

TEST_F(NcclOneRank, BarrierBlocksUntilDoneAndReportsDone) {
  DeviceVector<float> dev(*ctx, kLarge);
  queue_slow_fill(*ctx, dev.data(), dev.size(), 1.0f);
  auto work = comm->barrier();
  work->wait();  // blocks the host: the fills before the barrier have finished
  EXPECT_TRUE(work->done());
}

TEST_F(NcclOneRank, DonePollingEndsAndTheResultIsThere) {
  DeviceVector<float> send(*ctx, kLarge), recv(*ctx, kLarge);
  queue_slow_fill(*ctx, send.data(), send.size(), 4.0f);
  auto work = comm->all_gather(send.data(), recv.data(), send.size(), DataType::Float32);
  while (!work->done()) {
  }
  // Finished on the device: the result is visible even without wait().
  expect_all(recv.download(), 4.0f, "all_gather after done()");
  work->wait();
  EXPECT_TRUE(work->done());
}

TEST_F(NcclOneRank, SeveralInFlightCompleteInAnyWaitOrder) {
  const int k = 4;
  std::vector<std::unique_ptr<DeviceVector<float>>> sends, recvs;
  std::vector<std::unique_ptr<Work>> works;
  for (int b = 0; b < k; ++b) {
    const size_t n = (size_t{1} << 20) * static_cast<size_t>(b + 1);
    sends.push_back(std::make_unique<DeviceVector<float>>(*ctx, n));
    recvs.push_back(std::make_unique<DeviceVector<float>>(*ctx, n));
    queue_slow_fill(*ctx, sends.back()->data(), n, 10.0f + static_cast<float>(b), 2);
    works.push_back(comm->all_gather(sends.back()->data(), recvs.back()->data(), n, DataType::Float32));
  }
  for (int b = k - 1; b >= 0; --b) works[static_cast<size_t>(b)]->wait();
  for (int b = 0; b < k; ++b) {
    expect_all(recvs[static_cast<size_t>(b)]->download(), 10.0f + static_cast<float>(b), "in-flight gather");
  }
}

TEST_F(NcclOneRank, AWorkDroppedWithoutWaitStillOrdersTheComputeStream) {
  DeviceVector<float> send(*ctx, kLarge), recv(*ctx, kLarge);
  queue_slow_fill(*ctx, send.data(), send.size(), 6.0f);
  comm->all_gather(send.data(), recv.data(), send.size(), DataType::Float32).reset();
  expect_all(recv.download(), 6.0f, "all_gather whose Work was dropped");
}

// Rank 0 of a job of 2 whose rank 1 never arrives: the bootstrap says so, and passes
// the unique id to nobody (a broadcast on one rank keeps the root's data).
struct HalfOfTwo final : Communicator {
  SelfCommunicator self;
  int rank() const override { return 0; }
  int size() const override { return 2; }
  std::string backend_name() const override { return "half of two"; }
  std::unique_ptr<Work> all_reduce(void* buf, size_t n, DataType t, ReduceOp op) override {
    return self.all_reduce(buf, n, t, op);
  }
  std::unique_ptr<Work> reduce_scatter(const void* send, void* recv, size_t n, DataType t, ReduceOp op) override {
    return self.reduce_scatter(send, recv, n, t, op);
  }
  std::unique_ptr<Work> all_gather(const void* send, void* recv, size_t n, DataType t) override {
    return self.all_gather(send, recv, n, t);
  }
  std::unique_ptr<Work> broadcast(void* buf, size_t n, DataType t, int root) override {
    return self.broadcast(buf, n, t, root);
  }
  std::unique_ptr<Work> barrier() override { return self.barrier(); }
};

class NcclInitialisation : public testing::GpuTest {};

// Issue 13, item 2.3 on the device: NCCL's own initialisation waits for the missing
// rank, so only the timeout ends it; and ncclCommAbort of a communicator still
// initialising must itself return (a hang here is what the item is about). The
// constructor runs on a thread of its own; if it has not ended 30 s after its 3 s
// limit, the test reports a hang and ends the process, so the check ends too.
TEST_F(NcclInitialisation, AMissingRankEndsTheInitialisationAtTheTimeout) {
  auto ctx = Context::make_cuda(CudaOptions{});
  HalfOfTwo bootstrap;
  const double timeout_s = 3.0;
  const auto start = std::chrono::steady_clock::now();
  auto result = std::async(std::launch::async, [&]() -> std::string {
    try {
      NcclCommunicator comm(bootstrap, *ctx, timeout_s);
      return "constructed";
    } catch (const CommError& e) {
      return e.what();
    }
  });
  if (result.wait_for(std::chrono::seconds(33)) != std::future_status::ready) {
    std::fprintf(stderr, "FAILED: NcclInitialisation: the constructor has not returned 30 s after its 3 s limit: "
                         "ncclCommAbort of an initialising communicator hangs\n");
    std::_Exit(1);
  }
  const std::string message = result.get();
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_NE(message, "constructed");
  EXPECT_NE(message.find("rank 0"), std::string::npos) << message;
  EXPECT_NE(message.find("3"), std::string::npos) << message;
  // The limit, plus a poll period, plus the abort's own teardown (seconds at most).
  EXPECT_GE(took, timeout_s) << message;
  EXPECT_LT(took, timeout_s + 10.0) << message;
}

class NcclFactory : public testing::GpuTest {};
class StagingOnCuda : public testing::GpuTest {};

TEST_F(NcclFactory, MakesAnNcclCommunicatorOnACudaContext) {
  auto ctx = Context::make_cuda(CudaOptions{});
  SelfCommunicator self;
  auto comm = make_nccl_communicator(self, *ctx, /*timeout_s=*/60.0);
  EXPECT_EQ(comm->backend_name(), "nccl");
  comm->barrier()->wait();
}

TEST_F(StagingOnCuda, CollectivesOverSelfStageThroughPinnedMemory) {
  auto ctx = Context::make_cuda(CudaOptions{});
  SelfCommunicator self;
  StagingCommunicator comm(self, *ctx);
  const size_t n = size_t{8} << 20;
  DeviceVector<float> a(*ctx, n), b(*ctx, n);

  // The copy to the host is queued after these fills, so it must see the last one.
  queue_slow_fill(*ctx, a.data(), n, 2.0f, 4);
  comm.all_reduce(a.data(), n, DataType::Float32, ReduceOp::Sum)->wait();
  expect_all(a.download(), 2.0f, "staged all_reduce");

  ops::fill(*ctx, b.data(), static_cast<int64_t>(n), -1.0f);
  comm.all_gather(a.data(), b.data(), n, DataType::Float32)->wait();
  expect_all(b.download(), 2.0f, "staged all_gather");

  queue_slow_fill(*ctx, a.data(), n, 9.0f, 4);
  comm.reduce_scatter(a.data(), b.data(), n, DataType::Float32, ReduceOp::Sum)->wait();
  expect_all(b.download(), 9.0f, "staged reduce_scatter");

  comm.broadcast(b.data(), n, DataType::Float32, 0)->wait();
  expect_all(b.download(), 9.0f, "staged broadcast");
  comm.barrier()->wait();
}

// The staged copy is taken after the compute queued before the call, and the copy
// back is queued after the compute queued before wait(): the buffer ends with the
// value it had when the collective was issued.
TEST_F(StagingOnCuda, VariableCountCollectivesOverSelfStageAfterComputeAndCopyBack) {
  auto ctx = Context::make_cuda(CudaOptions{});
  SelfCommunicator self;
  StagingCommunicator comm(self, *ctx);
  const size_t n = size_t{8} << 20;
  DeviceVector<float> a(*ctx, n);
  const std::vector<size_t> counts = {n};

  queue_slow_fill(*ctx, a.data(), n, 5.0f, 4);
  auto reduce = comm.reduce_scatter_v(a.data(), counts, DataType::Float32, ReduceOp::Sum);
  ops::fill(*ctx, a.data(), static_cast<int64_t>(n), -2.0f);
  reduce->wait();
  expect_all(a.download(), 5.0f, "staged reduce_scatter_v");

  queue_slow_fill(*ctx, a.data(), n, 6.0f, 4);
  auto gather = comm.all_gather_v(a.data(), counts, DataType::Float32);
  ops::fill(*ctx, a.data(), static_cast<int64_t>(n), -2.0f);
  gather->wait();
  expect_all(a.download(), 6.0f, "staged all_gather_v");
}

TEST_F(StagingOnCuda, CopyBackIsOrderedBeforeLaterComputeAndBuffersAreReused) {
  auto ctx = Context::make_cuda(CudaOptions{});
  SelfCommunicator self;
  StagingCommunicator comm(self, *ctx);
  const size_t n = size_t{4} << 20;
  DeviceVector<float> a(*ctx, n), b(*ctx, n);
  for (int step = 1; step <= 3; ++step) {
    ops::fill(*ctx, a.data(), static_cast<int64_t>(n), static_cast<float>(step));
    ops::fill(*ctx, b.data(), static_cast<int64_t>(n), static_cast<float>(-step));
    auto wa = comm.all_reduce(a.data(), n, DataType::Float32, ReduceOp::Sum);
    auto wb = comm.all_reduce(b.data(), n, DataType::Float32, ReduceOp::Sum);
    wb->wait();
    wa->wait();
    // The copies back are queued on the compute stream; a later fill must land after them.
    ops::fill(*ctx, a.data(), 1, 100.0f);
    std::vector<float> got = a.download();
    EXPECT_EQ(got[0], 100.0f) << "step " << step;
    EXPECT_EQ(got[n - 1], static_cast<float>(step)) << "step " << step;
    expect_all(b.download(), static_cast<float>(-step), "second staged all_reduce");
  }
  EXPECT_EQ(comm.pool().free_buffers(), 2u) << "each step reuses the two staging buffers of the first";
}

}  // namespace
}  // namespace dtrain
