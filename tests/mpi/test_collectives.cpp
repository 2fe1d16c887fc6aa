// Collectives under 1, 2 and 4 ranks; every expected value comes from a formula in
// the rank and the world size.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <numeric>
#include <span>
#include <vector>

#include "comm/gather_strings.h"
#include "comm/mpi_communicator.h"
#include "comm/self_communicator.h"
#include "comm/typed_collectives.h"
#include "kernels/dtype.h"
#include "tests/mpi/mpi_env.h"

namespace dtrain {
namespace {

using testing_mpi::world;

template <class T>
class AllReduceTyped : public ::testing::Test {};
using ReduceTypes = ::testing::Types<float, double, int32_t, int64_t, uint64_t>;
TYPED_TEST_SUITE(AllReduceTyped, ReduceTypes);

TYPED_TEST(AllReduceTyped, SumEqualsFormula) {
  Communicator& comm = world();
  const int n = comm.size(), r = comm.rank();
  std::vector<TypeParam> buf(1000);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<TypeParam>(r * 3 + static_cast<int>(i % 7));
  all_reduce(comm, std::span<TypeParam>(buf))->wait();
  for (size_t i = 0; i < buf.size(); ++i) {
    // sum over ranks q of (3q + i%7) = 3 n(n-1)/2 + n (i%7)
    const auto expected = static_cast<TypeParam>(3 * n * (n - 1) / 2 + n * static_cast<int>(i % 7));
    ASSERT_EQ(buf[i], expected) << "element " << i;
  }
}

TEST(Collectives, AllReduceLargeFloatBufferIsExactForIntegers) {
  Communicator& comm = world();
  std::vector<float> buf(1 << 20, static_cast<float>(comm.rank() + 1));
  all_reduce(comm, std::span<float>(buf))->wait();
  const float expected = static_cast<float>(comm.size() * (comm.size() + 1) / 2);
  for (float v : buf) ASSERT_EQ(v, expected);
}

TEST(Collectives, WorkReportsDoneAfterWait) {
  Communicator& comm = world();
  double v = 1.0;
  auto work = all_reduce(comm, std::span<double>(&v, 1));
  work->wait();
  EXPECT_TRUE(work->done());
  EXPECT_EQ(v, static_cast<double>(comm.size()));
}

TEST(Collectives, SeveralInFlightCompleteInOrder) {
  Communicator& comm = world();
  std::vector<std::vector<int64_t>> bufs(5, std::vector<int64_t>(257));
  std::vector<std::unique_ptr<Work>> works;
  for (size_t b = 0; b < bufs.size(); ++b) {
    std::fill(bufs[b].begin(), bufs[b].end(), static_cast<int64_t>(comm.rank() * 10 + b));
    works.push_back(all_reduce(comm, std::span<int64_t>(bufs[b])));
  }
  for (auto& w : works) w->wait();
  const int64_t n = comm.size();
  for (size_t b = 0; b < bufs.size(); ++b) {
    for (int64_t v : bufs[b]) ASSERT_EQ(v, 10 * n * (n - 1) / 2 + n * static_cast<int64_t>(b));
  }
}

TEST(Collectives, ReduceScatterGivesEachRankItsBlockSum) {
  Communicator& comm = world();
  const int n = comm.size(), r = comm.rank();
  const size_t block = 33;
  std::vector<double> send(block * static_cast<size_t>(n));
  for (int j = 0; j < n; ++j) {
    for (size_t i = 0; i < block; ++i) send[static_cast<size_t>(j) * block + i] = 100.0 * j + r + static_cast<double>(i);
  }
  std::vector<double> recv(block);
  reduce_scatter(comm, std::span<const double>(send), std::span<double>(recv))->wait();
  for (size_t i = 0; i < block; ++i) {
    // sum over ranks q of (100 r + q + i) = n (100 r + i) + n(n-1)/2
    EXPECT_EQ(recv[i], n * (100.0 * r + static_cast<double>(i)) + n * (n - 1) / 2.0);
  }
}

// The blocking forms (for device buffers under CUDA-aware MPI) give the same sums.
TEST(Collectives, BlockingReductionsMatchTheFormulas) {
  MpiCommunicator& comm = world();
  const int n = comm.size(), r = comm.rank();
  std::vector<float> buf(777);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<float>(r * 3 + static_cast<int>(i % 7));
  comm.all_reduce_blocking(buf.data(), buf.size(), DataType::Float32, ReduceOp::Sum);
  for (size_t i = 0; i < buf.size(); ++i) {
    ASSERT_EQ(buf[i], static_cast<float>(3 * n * (n - 1) / 2 + n * static_cast<int>(i % 7))) << i;
  }
  const size_t block = 19;
  std::vector<double> send(block * static_cast<size_t>(n)), recv(block);
  for (int j = 0; j < n; ++j) {
    for (size_t i = 0; i < block; ++i) send[static_cast<size_t>(j) * block + i] = 100.0 * j + r + static_cast<double>(i);
  }
  comm.reduce_scatter_blocking(send.data(), recv.data(), block, DataType::Float64, ReduceOp::Sum);
  for (size_t i = 0; i < block; ++i) EXPECT_EQ(recv[i], n * (100.0 * r + static_cast<double>(i)) + n * (n - 1) / 2.0);
}

// bf16 (Note [bf16 sum]): sums of small integers are exact in bf16 (8 significant
// bits hold every integer up to 256), whatever order MPI combines the ranks in.
TEST(Bf16Collectives, AllReduceSumOfSmallIntegersEqualsFormula) {
  MpiCommunicator& comm = world();
  const int n = comm.size(), r = comm.rank();
  std::vector<bf16> buf(1001);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = float_to_bf16(static_cast<float>(r * 3 + static_cast<int>(i % 7)));
  std::vector<bf16> blocking = buf;
  all_reduce(comm, std::span<bf16>(buf))->wait();
  comm.all_reduce_blocking(blocking.data(), blocking.size(), DataType::BFloat16, ReduceOp::Sum);
  int wrong = 0;
  for (size_t i = 0; i < buf.size(); ++i) {
    // sum over ranks q of (3q + i%7) = 3 n(n-1)/2 + n (i%7) <= 18 + 24
    const float expected = static_cast<float>(3 * n * (n - 1) / 2 + n * static_cast<int>(i % 7));
    wrong += bf16_to_float(buf[i]) != expected;
    wrong += bf16_to_float(blocking[i]) != expected;
  }
  EXPECT_EQ(wrong, 0);
}

// Every combination rounds to bf16: 1 + 2^-8 is a tie between 1 and 1 + 2^-7 and goes
// to the even 1, where an fp32 sum would keep 1.00390625; 1 + 2^-7 plus 2^-8 goes up to
// 1 + 2^-6. Rank 0 holds the 1s, rank 1 the 2^-8s, the others zeros, which every
// combination keeps exactly, so the result is the same in any order.
TEST(Bf16Collectives, EachSumRoundsToNearestEven) {
  MpiCommunicator& comm = world();
  const float half_ulp = std::ldexp(1.0f, -8), ulp = std::ldexp(1.0f, -7);
  const std::vector<float> mine = comm.rank() == 0   ? std::vector<float>{1.0f, 1.0f + ulp}
                                  : comm.rank() == 1 ? std::vector<float>{half_ulp, half_ulp}
                                                     : std::vector<float>{0.0f, 0.0f};
  std::vector<bf16> buf = {float_to_bf16(mine[0]), float_to_bf16(mine[1])};
  all_reduce(comm, std::span<bf16>(buf))->wait();
  const bool summed = comm.size() >= 2;  // one rank: nothing to add
  EXPECT_EQ(bf16_to_float(buf[0]), 1.0f);
  EXPECT_EQ(bf16_to_float(buf[1]), summed ? 1.0f + 2 * ulp : 1.0f + ulp);
}

// The gradient reducer needs every rank to hold the same sum (the parameters must stay
// identical): rank-dependent values that need rounding, gathered and compared bitwise.
TEST(Bf16Collectives, EveryRankHoldsTheSameRoundedSum) {
  MpiCommunicator& comm = world();
  const int n = comm.size(), r = comm.rank();
  const size_t count = 4099;
  std::vector<bf16> buf(count);
  for (size_t i = 0; i < count; ++i) {
    const float x = 0.1f * static_cast<float>(i) + static_cast<float>(r);
    buf[i] = float_to_bf16(std::sin(x) * (1.0f + 0.3f * static_cast<float>(r)));
  }
  all_reduce(comm, std::span<bf16>(buf))->wait();
  std::vector<bf16> all(count * static_cast<size_t>(n));
  all_gather(comm, std::span<const bf16>(buf), std::span<bf16>(all))->wait();
  int differ = 0;
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < count; ++i) differ += all[static_cast<size_t>(q) * count + i].bits != buf[i].bits;
  }
  EXPECT_EQ(differ, 0);
}

// Strings of different lengths, one of them empty, in rank order (the node's GPU lists).
TEST(Collectives, AllGatherStringsGivesEveryRankEveryString) {
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  auto of = [](int r) { return r == 1 ? std::string() : "GPU-" + std::string(static_cast<size_t>(r * 7 + 1), 'a' + r); };
  const std::vector<std::string> all = all_gather_strings(MPI_COMM_WORLD, of(rank));
  ASSERT_EQ(all.size(), static_cast<size_t>(size));
  for (int r = 0; r < size; ++r) EXPECT_EQ(all[static_cast<size_t>(r)], of(r)) << "rank " << r;
}

TEST(Collectives, AllGatherPlacesBlocksInRankOrder) {
  Communicator& comm = world();
  const int n = comm.size();
  std::vector<int32_t> send(5);
  for (int i = 0; i < 5; ++i) send[static_cast<size_t>(i)] = comm.rank() * 10 + i;
  std::vector<int32_t> recv(5 * static_cast<size_t>(n));
  all_gather(comm, std::span<const int32_t>(send), std::span<int32_t>(recv))->wait();
  for (int q = 0; q < n; ++q) {
    for (int i = 0; i < 5; ++i) EXPECT_EQ(recv[static_cast<size_t>(q * 5 + i)], q * 10 + i);
  }
}

TEST(Collectives, BroadcastFromEveryRoot) {
  Communicator& comm = world();
  // Count mismatches instead of ASSERTing in the loop: leaving the loop early would
  // skip collectives the other ranks still issue, and hang the job.
  int wrong = 0;
  for (int root = 0; root < comm.size(); ++root) {
    std::vector<float> buf(17, comm.rank() == root ? 1.5f * root + 2.0f : -1.0f);
    broadcast(comm, std::span<float>(buf), root)->wait();
    for (float v : buf) wrong += v != 1.5f * root + 2.0f;
  }
  EXPECT_EQ(wrong, 0);
}

TEST(Collectives, BarrierCompletes) {
  auto work = world().barrier();
  work->wait();
  EXPECT_TRUE(work->done());
}

TEST(Collectives, AllReduceValueSumsScalars) {
  EXPECT_EQ(all_reduce_value<int64_t>(world(), 2), 2 * world().size());
}

TEST(SelfCommunicator, CollectivesAreIdentityOnOneRank) {
  SelfCommunicator self;
  std::vector<float> buf{1.0f, 2.0f};
  all_reduce(self, std::span<float>(buf))->wait();
  EXPECT_EQ(buf, (std::vector<float>{1.0f, 2.0f}));
  std::vector<float> out(2);
  all_gather(self, std::span<const float>(buf), std::span<float>(out))->wait();
  EXPECT_EQ(out, buf);
  reduce_scatter(self, std::span<const float>(buf), std::span<float>(out))->wait();
  EXPECT_EQ(out, buf);
  EXPECT_EQ(self.size(), 1);
  EXPECT_EQ(self.rank(), 0);
}

}  // namespace
}  // namespace dtrain
