// The batch plan and the global sampler (DESIGN contracts 2 and 3).
#include <gtest/gtest.h>

#include <algorithm>
#include <set>
#include <vector>

#include "kernels/errors.h"
#include "runtime/batch_plan.h"
#include "runtime/global_sampler.h"

namespace dtrain {
namespace {

TEST(BatchPlan, AccumulationStepsFromGlobalBatch) {
  const BatchPlan p = make_uniform_plan(64, 16, 2, "cfg.yaml:3");
  EXPECT_EQ(p.accumulation_steps, 2);
  EXPECT_EQ(p.global_batch, 64);
  EXPECT_EQ(p.samples_per_micro_step(), 32);
  EXPECT_EQ(p.slice_offset(0, 0), 0);
  EXPECT_EQ(p.slice_offset(0, 1), 16);
  EXPECT_EQ(p.slice_offset(1, 0), 32);
  EXPECT_EQ(p.slice_offset(1, 1), 48);
}

TEST(BatchPlan, NonDividingGlobalBatchSaysWhatWorks) {
  try {
    make_uniform_plan(100, 16, 2, "cfg.yaml:3");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cfg.yaml:3"), std::string::npos) << m;
    EXPECT_NE(m.find("train.global_batch = 100"), std::string::npos) << m;
    // 100 / 2 ranks = 50 per rank: micro-batches 1, 2, 5, 10, 25, 50 work.
    EXPECT_NE(m.find("1, 2, 5, 10, 25, 50"), std::string::npos) << m;
    EXPECT_NE(m.find("Rank counts that work with micro-batch 16: none"), std::string::npos) << m;
  }
}

TEST(BatchPlan, GlobalBatchSmallerThanRanksIsAnError) {
  EXPECT_THROW(make_uniform_plan(2, 1, 4, "x"), ConfigError);
}

TEST(GlobalSampler, EveryEpochIsAPermutationThatDependsOnSeedAndEpoch) {
  GlobalSampler a(1000, 7), b(1000, 7), c(1000, 8);
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    std::vector<int64_t> order = a.epoch_order(epoch);
    EXPECT_EQ(order, b.epoch_order(epoch));
    EXPECT_NE(order, c.epoch_order(epoch));
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 1000; ++i) ASSERT_EQ(sorted[static_cast<size_t>(i)], i);
  }
  EXPECT_NE(a.epoch_order(0), b.epoch_order(1));
}

// For world sizes 1..4 and several micro-batch sizes: the union of every rank's
// micro-batches is exactly the global batch (the same slice of the epoch order for
// every layout), and over an epoch every kept sample is seen exactly once.
TEST(GlobalSampler, RanksAndMicroStepsPartitionEachGlobalBatch) {
  const int64_t n = 1000, global = 48;
  GlobalSampler reference(n, 3);
  const std::vector<int64_t> order = reference.epoch_order(2);
  for (int world = 1; world <= 4; ++world) {
    for (int64_t micro : {1, 2, 3, 4, 6, 12}) {
      if (global % (micro * world) != 0) continue;
      const BatchPlan plan = make_uniform_plan(global, micro, world, "test");
      GlobalSampler sampler(n, 3);
      std::multiset<int64_t> epoch_seen;
      for (int64_t batch = 0; batch < sampler.batches_per_epoch(global); ++batch) {
        std::multiset<int64_t> got;
        for (int64_t m = 0; m < plan.accumulation_steps; ++m) {
          for (int r = 0; r < world; ++r) {
            for (int64_t idx : sampler.slice(plan, 2, batch, m, r)) got.insert(idx);
          }
        }
        const std::multiset<int64_t> expected(order.begin() + batch * global, order.begin() + (batch + 1) * global);
        ASSERT_EQ(got, expected) << "world " << world << " micro " << micro << " batch " << batch;
        epoch_seen.insert(got.begin(), got.end());
      }
      // Note [Epoch remainder]: floor(1000/48) = 20 batches, 40 samples dropped, none twice.
      EXPECT_EQ(epoch_seen.size(), 960u);
      EXPECT_EQ(std::set<int64_t>(epoch_seen.begin(), epoch_seen.end()).size(), 960u);
    }
  }
}

}  // namespace
}  // namespace dtrain
