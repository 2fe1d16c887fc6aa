// assign_gradient_buckets is a pure function: checked against hand-derived buckets
// and against the invariants any assignment must keep.
#include <gtest/gtest.h>

#include <vector>

#include "comm/gradient_reducer.h"

namespace dtrain {
namespace {

TEST(BucketAssignment, ReverseLayerOrderWithCap) {
  // Layers: 0:[0,100) 1:none 2:[100,150) 3:[150,450) 4:[450,457)
  const std::vector<FlatRange> layers = {{0, 100}, {100, 0}, {100, 50}, {150, 300}, {450, 7}};
  const auto b = assign_gradient_buckets(layers, 200);
  // From the last layer: 7 (<200), +300 = 307 closes {150..457}; then 50, +100 = 150 left open.
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].offset, 150);
  EXPECT_EQ(b[0].count, 307);
  EXPECT_EQ(b[0].first_layer, 3);
  EXPECT_EQ(b[0].last_layer, 4);
  EXPECT_EQ(b[1].offset, 0);
  EXPECT_EQ(b[1].count, 150);
  EXPECT_EQ(b[1].first_layer, 0);
  EXPECT_EQ(b[1].last_layer, 2);
}

TEST(BucketAssignment, BucketsTileTheBufferForAnyCap) {
  const std::vector<FlatRange> layers = {{0, 10}, {10, 0}, {10, 1}, {11, 64}, {75, 0}, {75, 3}, {78, 22}};
  for (int64_t cap = 1; cap <= 120; ++cap) {
    const auto buckets = assign_gradient_buckets(layers, cap);
    int64_t end = 100;
    int prev_first = 1 << 30;
    for (const auto& b : buckets) {
      EXPECT_EQ(b.offset + b.count, end) << "cap " << cap;  // contiguous, from the end backwards
      EXPECT_LT(b.first_layer, prev_first);
      EXPECT_LE(b.first_layer, b.last_layer);
      end = b.offset;
      prev_first = b.first_layer;
    }
    EXPECT_EQ(end, 0) << "cap " << cap;
  }
}

TEST(BucketAssignment, OneLayerLargerThanCapGetsItsOwnBucket) {
  const auto b = assign_gradient_buckets({{0, 5}, {5, 1000}, {1005, 5}}, 100);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0].count, 1005);  // 5 from layer 2 is below the cap, so layer 1 joins it
  EXPECT_EQ(b[1].count, 5);
}

TEST(BucketAssignment, NoParametersNoBuckets) {
  EXPECT_TRUE(assign_gradient_buckets({{0, 0}, {0, 0}}, 10).empty());
}

}  // namespace
}  // namespace dtrain
