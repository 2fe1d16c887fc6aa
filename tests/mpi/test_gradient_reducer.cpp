// The gradient reducer under MPI: buckets launched as backward reports layers done
// end up holding the SUM over ranks, whatever order and bucket size.
#include <gtest/gtest.h>

#include <vector>

#include "comm/gradient_reducer.h"
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

}  // namespace
}  // namespace dtrain
