// The gradient reducer under MPI: buckets launched as backward reports layers done
// end up holding the SUM over ranks, whatever order and bucket size.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "comm/gradient_reducer.h"
#include "comm/staging_communicator.h"
#include "comm/typed_collectives.h"
#include "kernels/context.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "runtime/gradient_wire.h"
#include "tests/mpi/mpi_env.h"

namespace dtrain {
namespace {

TEST(GradientReducer, BucketsHoldTheSumOverRanks) {
  Communicator& comm = testing_mpi::world();
  // Five layers, one without parameters (an activation).
  const std::vector<FlatRange> layers = {{0, 100}, {100, 0}, {100, 50}, {150, 300}, {450, 7}};
  for (int64_t cap : {1, 60, 200, 1000}) {
    std::vector<float> grads(457);
    for (size_t i = 0; i < grads.size(); ++i) grads[i] = static_cast<float>(comm.rank() + 1) * static_cast<float>(i % 13);
    GradientReducer reducer(comm, grads.data(), layers, cap);
    for (int layer = 4; layer >= 0; --layer) reducer.on_layer_done(layer);
    reducer.finish();
    const float ranks_sum = static_cast<float>(comm.size() * (comm.size() + 1) / 2);
    int wrong = 0;  // counted, not ASSERTed: the next cap's collectives must still run
    for (size_t i = 0; i < grads.size(); ++i) wrong += grads[i] != ranks_sum * static_cast<float>(i % 13);
    EXPECT_EQ(wrong, 0) << "cap " << cap;
  }
}

TEST(GradientReducer, FinishAloneReducesEverything) {
  Communicator& comm = testing_mpi::world();
  std::vector<float> grads(64, 1.0f);
  GradientReducer reducer(comm, grads.data(), {{0, 32}, {32, 32}}, 16);
  reducer.finish();  // no on_layer_done calls: nothing may be left out
  for (float g : grads) EXPECT_EQ(g, static_cast<float>(comm.size()));
  reducer.finish();  // re-armed: a second step reduces again
  for (float g : grads) ASSERT_EQ(g, static_cast<float>(comm.size() * comm.size()));
}

// comm.reduce_dtype bf16 (Note [Narrow gradient reduction]) through the runtime's wire
// (ops::convert), on the CPU over MPI and on the asynchronous CPU device over staged
// collectives, where the device runs behind the host as a GPU does: a narrowing or
// widening out of order with its collective would read the wrong values.
class NarrowReducer : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "cpu") {
      ctx = Context::make_cpu(1);
    } else {
      ctx = Context::make_cpu_async(1);
      staged = std::make_unique<StagingCommunicator>(testing_mpi::world(), *ctx);
    }
  }
  Communicator& comm() { return staged ? static_cast<Communicator&>(*staged) : testing_mpi::world(); }

  // Runs one reduction of `values(rank, i)` and returns the result on the host.
  template <class Values>
  std::vector<float> reduce(int64_t cap, Values values) {
    const std::vector<FlatRange> layers = {{0, 100}, {100, 0}, {100, 50}, {150, 300}, {450, 7}};
    const size_t n = 457;
    std::vector<float> host(n);
    for (size_t i = 0; i < n; ++i) host[i] = values(comm().rank(), i);
    Buffer grads(ctx->allocator(), n * sizeof(float), MemoryCategory::Grads);
    const Buffer staging = allocate_gradient_wire_staging(*ctx, "bf16", static_cast<int64_t>(n));
    ops::copy_from_host(*ctx, grads.data(), host.data(), n * sizeof(float));
    GradientReducer reducer(comm(), grads.as<float>(), layers, cap, gradient_wire(*ctx, "bf16", staging));
    for (int layer = 4; layer >= 0; --layer) reducer.on_layer_done(layer);
    reducer.finish();
    ops::copy_to_host(*ctx, host.data(), grads.data(), n * sizeof(float));
    ctx->synchronize();
    return host;
  }

  std::unique_ptr<Context> ctx;
  std::unique_ptr<StagingCommunicator> staged;
};

TEST_P(NarrowReducer, SmallIntegersSumExactly) {
  const int n = comm().size();
  for (int64_t cap : {1, 60, 1000}) {
    // (r + 1) (i % 13) summed over ranks: n(n+1)/2 (i % 13) <= 120, exact in bf16.
    const auto out = reduce(cap, [](int r, size_t i) { return static_cast<float>((r + 1) * int(i % 13)); });
    int wrong = 0;  // counted, not ASSERTed: the next cap's collectives must still run
    for (size_t i = 0; i < out.size(); ++i) wrong += out[i] != static_cast<float>(n * (n + 1) / 2 * int(i % 13));
    EXPECT_EQ(wrong, 0) << "cap " << cap;
  }
}

// Values that need rounding: each gradient goes through at most n roundings of
// relative size 2^-8 (its narrowing, then up to n - 1 combinations), so the result is
// within gamma_n = n u / (1 - n u), u = 2^-8, of the sum of the magnitudes (recursive
// summation's bound, Higham, whatever order MPI combines in); one rank gets exactly the
// rounded gradient; and every rank gets the same bits.
TEST_P(NarrowReducer, RoundedSumsAreWithinTheSummationBoundAndEqualOnEveryRank) {
  const int n = comm().size();
  auto value = [](int r, size_t i) {
    const float x = 0.37f * static_cast<float>(i) + 1.3f * static_cast<float>(r);
    return std::sin(x) * std::ldexp(1.0f, static_cast<int>(i % 5) - 2);
  };
  const auto out = reduce(60, value);
  const double u = std::ldexp(1.0, -8), gamma = n * u / (1 - n * u);
  int outside = 0, not_rounded = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    double sum = 0, magnitudes = 0;
    for (int r = 0; r < n; ++r) sum += value(r, i), magnitudes += std::fabs(value(r, i));
    outside += std::fabs(out[i] - sum) > gamma * magnitudes;
    not_rounded += n == 1 && out[i] != round_bf16(value(0, i));
  }
  EXPECT_EQ(outside, 0);
  EXPECT_EQ(not_rounded, 0);
  std::vector<float> all(out.size() * static_cast<size_t>(n));
  all_gather(testing_mpi::world(), std::span<const float>(out), std::span<float>(all))->wait();
  int differ = 0;
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < out.size(); ++i) differ += all[static_cast<size_t>(q) * out.size() + i] != out[i];
  }
  EXPECT_EQ(differ, 0);
}

INSTANTIATE_TEST_SUITE_P(Devices, NarrowReducer, ::testing::Values("cpu", "cpu_async"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace dtrain
