// The batch plan from per-rank capacities, and the largest micro-batch a memory model
// allows: pure functions, checked against brute force over many cases.
#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <vector>

#include "kernels/errors.h"
#include "runtime/batch_plan.h"
#include "runtime/config.h"
#include "runtime/memory_model.h"

namespace dtrain {
namespace {

// The smallest k for which some split exists, by brute force: G/k samples per
// micro-step, at least one per rank, at most the capacities' sum. 0: none.
int64_t smallest_valid_k(int64_t g, const std::vector<int64_t>& capacity) {
  const auto n = static_cast<int64_t>(capacity.size());
  const int64_t total = std::accumulate(capacity.begin(), capacity.end(), int64_t{0});
  for (int64_t k = 1; k <= g; ++k) {
    if (g % k == 0 && g / k >= n && g / k <= total) return k;
  }
  return 0;
}

TEST(PlanFromCapacities, ExactGlobalBatchWithinEveryCapacityForManyCases) {
  std::mt19937 rng(7);
  int planned = 0, refused = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    const int n = 1 + static_cast<int>(rng() % 8);
    std::vector<int64_t> capacity(static_cast<size_t>(n));
    const bool mixed = trial % 3 != 0;  // a third of the cases: identical devices
    const int64_t base = 1 + static_cast<int64_t>(rng() % 64);
    for (auto& c : capacity) c = mixed ? 1 + static_cast<int64_t>(rng() % 96) : base;
    const int64_t g = n + static_cast<int64_t>(rng() % 700);
    const int64_t expected_k = smallest_valid_k(g, capacity);
    if (expected_k == 0) {
      EXPECT_THROW(plan_from_capacities(capacity, g, "cfg:1"), ConfigError) << "G=" << g << " n=" << n;
      ++refused;
      continue;
    }
    const BatchPlan p = plan_from_capacities(capacity, g, "cfg:1");
    ASSERT_EQ(p.world_size(), n);
    EXPECT_EQ(p.global_batch, g);
    EXPECT_EQ(p.accumulation_steps, expected_k) << "not the fewest accumulation steps, G=" << g;
    EXPECT_EQ(p.accumulation_steps * p.samples_per_micro_step(), g);
    for (int r = 0; r < n; ++r) {
      EXPECT_GE(p.micro_batch[static_cast<size_t>(r)], 1);
      EXPECT_LE(p.micro_batch[static_cast<size_t>(r)], capacity[static_cast<size_t>(r)]) << "rank " << r;
    }
    ++planned;
  }
  EXPECT_GT(planned, 2000);  // the generator exercises both outcomes
  EXPECT_GT(refused, 0);
}

TEST(PlanFromCapacities, IdenticalDevicesSplitEvenlyWhenTheyCan) {
  const BatchPlan p = plan_from_capacities({40, 40, 40, 40}, 256, "cfg:1");
  EXPECT_EQ(p.accumulation_steps, 2);  // ceil(256 / 160) = 2 divides 256
  EXPECT_EQ(p.micro_batch, (std::vector<int64_t>{32, 32, 32, 32}));
}

TEST(PlanFromCapacities, MixedDevicesSplitInProportionToMemory) {
  // Twice the capacity takes about twice the samples.
  const BatchPlan p = plan_from_capacities({60, 30}, 60, "cfg:1");
  EXPECT_EQ(p.accumulation_steps, 1);
  EXPECT_EQ(p.samples_per_micro_step(), 60);
  EXPECT_NEAR(double(p.micro_batch[0]) / double(p.micro_batch[1]), 2.0, 0.1);
}

TEST(PlanFromCapacities, AutoGlobalBatchFillsEveryRank) {
  const BatchPlan p = plan_from_capacities({96, 48, 7}, kAuto, "cfg:1");
  EXPECT_EQ(p.accumulation_steps, 1);
  EXPECT_EQ(p.global_batch, 96 + 48 + 7);
  EXPECT_EQ(p.micro_batch, (std::vector<int64_t>{96, 48, 7}));
}

TEST(PlanFromCapacities, GlobalBatchBelowTheRanksIsRefusedWithTheNumbers) {
  try {
    plan_from_capacities({8, 8, 8, 8}, 3, "cfg.yaml:9");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cfg.yaml:9"), std::string::npos) << m;
    EXPECT_NE(m.find("train.global_batch = 3 is smaller than the 4 ranks"), std::string::npos) << m;
  }
}

TEST(PlanFromCapacities, AnUnsplittableGlobalBatchNamesNearbyOnesThatWork) {
  // 97 is prime: k = 1 needs 97 samples per micro-step (more than 2 x 10), and k = 97
  // leaves one sample for two ranks.
  try {
    plan_from_capacities({10, 10}, 97, "cfg.yaml:4");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cfg.yaml:4: train.global_batch = 97 cannot be split exactly"), std::string::npos) << m;
    EXPECT_NE(m.find("96, 98"), std::string::npos) << m;  // 96 = 6 x 16, 98 = 7 x 14
  }
}

MemoryModel linear_model(int64_t fixed, int64_t per_sample, int64_t workspace_cap) {
  MemoryModel m;
  m.params_bytes = fixed;
  m.activation_bytes_per_sample = per_sample;
  m.eval_bytes_per_sample = per_sample / 4;
  m.eval_batch = 10;
  m.workspace_bytes = [=](int64_t b) { return std::min(b * 100, workspace_cap); };
  return m;
}

TEST(LargestFittingMicroBatch, MatchesALinearScan) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    const MemoryModel m = linear_model(1000 + rng() % 5000, 1 + rng() % 900, rng() % 4000);
    const int64_t budget = static_cast<int64_t>(rng() % 200000);
    const int64_t most = 1 + static_cast<int64_t>(rng() % 600);
    int64_t expected = 0;
    for (int64_t b = 1; b <= most; ++b) {
      if (m.predict(b).total() <= budget) expected = b;
    }
    EXPECT_EQ(largest_fitting_micro_batch(m, budget, most), expected) << "trial " << trial;
  }
}

TEST(MemoryModel, PredictionAddsTheCategories) {
  MemoryModel m = linear_model(4000, 100, 250);
  m.grads_bytes = 4000;
  m.optimizer_bytes = 8000;
  m.batch_bytes_per_sample = 20;
  m.fixed_workspace_bytes = 48;
  m.library_workspace_bytes = 1000;
  const MemoryEstimate e = m.predict(32);  // eval chunk min(10, 32) = 10
  auto at = [&](MemoryCategory c) { return e.by_category[static_cast<size_t>(c)]; };
  EXPECT_EQ(at(MemoryCategory::Params), 4000);
  EXPECT_EQ(at(MemoryCategory::Grads), 4000);
  EXPECT_EQ(at(MemoryCategory::Optimizer), 8000);
  EXPECT_EQ(at(MemoryCategory::Activations), 32 * (100 + 20) + 10 * 25);
  EXPECT_EQ(at(MemoryCategory::Workspace), 1000 + 48 + 250);
  EXPECT_EQ(e.total(), 4000 + 4000 + 8000 + 32 * 120 + 250 + 1298);
}

}  // namespace
}  // namespace dtrain
