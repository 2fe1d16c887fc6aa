// The sweep's ladder, its batch checks and its records (runtime/sweep_ladder.h).
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/errors.h"
#include "runtime/sweep_ladder.h"

namespace dtrain {
namespace {

TEST(SweepLadder, AutoDoublesUpToTheLargestPlainBatchThenTwoRungsPast) {
  EXPECT_EQ(auto_batch_ladder(512, 2), (std::vector<int64_t>{8, 16, 32, 64, 128, 256, 512, 1024, 2048}));
  // Not a power of two: it is a rung of its own; the rungs past it double it.
  EXPECT_EQ(auto_batch_ladder(600, 2), (std::vector<int64_t>{8, 16, 32, 64, 128, 256, 512, 600, 1200, 2400}));
  // The smallest rung holds a sample per rank.
  EXPECT_EQ(auto_batch_ladder(16, 4), (std::vector<int64_t>{4, 8, 16, 32, 64}));
}

TEST(SweepLadder, BatchListErrorsNameTheEntry) {
  EXPECT_EQ(parse_batch_list("32,64,128"), (std::vector<int64_t>{32, 64, 128}));
  try {
    parse_batch_list("32,6x4");
    FAIL() << "no error";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("'6x4'"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_batch_list("32,32"), UsageError);
  EXPECT_THROW(parse_batch_list("0"), UsageError);
  EXPECT_THROW(parse_batch_list(""), UsageError);
}

TEST(SweepLadder, UnplannableBatchesSayWhy) {
  // Two ranks holding 3 and 5: 8 is their sum (k = 1); more than an epoch, or fewer
  // samples than ranks, cannot be planned.
  EXPECT_FALSE(batch_unplannable(8, {3, 5}, 0, 2, 1000).has_value());
  const auto too_big = batch_unplannable(2000, {3, 5}, 0, 2, 1000);
  ASSERT_TRUE(too_big.has_value());
  EXPECT_NE(too_big->find("1000 training samples"), std::string::npos) << *too_big;
  EXPECT_TRUE(batch_unplannable(1, {3, 5}, 0, 2, 1000).has_value());  // fewer samples than ranks
  // A given micro-batch: G must be a multiple of ranks x micro-batch.
  EXPECT_FALSE(batch_unplannable(64, {}, 8, 2, 1000).has_value());
  EXPECT_TRUE(batch_unplannable(24, {}, 8, 2, 1000).has_value());
}

TEST(SweepLadder, RecordsReadBackAsWritten) {
  SweepRecord r;
  r.batch = 64;
  r.seed = 2;
  r.accumulation = 4;
  r.reached = true;
  r.steps = 123;
  r.samples = 123 * 64;
  r.epochs = 0.96;
  r.wall_s = 12.5;
  r.final_metric = 0.8812;
  r.b_simple = 310.0;
  r.target = "eval_accuracy >= 0.88";
  const SweepRecord back = parse_sweep_record(sweep_record_json(r), "point.json");
  EXPECT_EQ(back.batch, 64);
  EXPECT_EQ(back.seed, 2);
  EXPECT_EQ(back.accumulation, 4);
  EXPECT_TRUE(back.reached);
  EXPECT_EQ(back.steps, 123);
  EXPECT_EQ(back.samples, 123 * 64);
  EXPECT_DOUBLE_EQ(back.epochs, 0.96);
  EXPECT_DOUBLE_EQ(back.wall_s, 12.5);
  EXPECT_DOUBLE_EQ(back.final_metric, 0.8812);
  EXPECT_DOUBLE_EQ(back.b_simple, 310.0);
  EXPECT_EQ(back.target, "eval_accuracy >= 0.88");
  EXPECT_EQ(sweep_point_dir(64, 2), "b000064-seed2");
  EXPECT_THROW(parse_sweep_record("{\"batch\":1}", "x/point.json"), DataError);
}

}  // namespace
}  // namespace dtrain
