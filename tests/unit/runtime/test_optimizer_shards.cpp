// The ranges of the flat parameter buffer that sharded ranks own (Note [Shard ranges]):
// a pure function, checked against the exact proportional shares.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "runtime/optimizer_shards.h"

namespace dtrain {
namespace {

// Every element owned once, in rank order, boundaries aligned or at the end, and each
// count within one alignment unit of n * w_r / sum(w).
void expect_valid_split(int64_t n, const std::vector<int64_t>& weights, int64_t align) {
  const std::vector<FlatRange> ranges = shard_ranges(n, weights, align);
  ASSERT_EQ(ranges.size(), weights.size());
  long double total = 0;
  for (int64_t w : weights) total += static_cast<long double>(w);
  int64_t at = 0;
  for (size_t r = 0; r < ranges.size(); ++r) {
    EXPECT_EQ(ranges[r].offset, at) << "rank " << r << " does not start where rank " << r - 1 << " ends";
    EXPECT_GE(ranges[r].count, 0);
    const int64_t end = ranges[r].offset + ranges[r].count;
    EXPECT_TRUE(end % align == 0 || end == n) << "rank " << r << " ends at " << end;
    const long double share = static_cast<long double>(n) * static_cast<long double>(weights[r]) / total;
    EXPECT_LE(std::fabs(static_cast<long double>(ranges[r].count) - share), static_cast<long double>(align))
        << "rank " << r << " of n " << n;
    at += ranges[r].count;
  }
  EXPECT_EQ(at, n) << "the ranges cover " << at << " of " << n;
}

TEST(ShardRanges, SplitInProportionToTheWeights) {
  // 1 : 3 of 6400 in units of 64: the boundary 1600 is a multiple of 64.
  const std::vector<FlatRange> r = shard_ranges(6400, std::vector<int64_t>{1, 3}, 64);
  EXPECT_EQ(r[0].offset, 0);
  EXPECT_EQ(r[0].count, 1600);
  EXPECT_EQ(r[1].offset, 1600);
  EXPECT_EQ(r[1].count, 4800);
}

TEST(ShardRanges, BoundariesRoundToTheNearestAlignedElement) {
  // Thirds of 10 with align 1: boundaries round(10/3) = 3 and round(20/3) = 7.
  const std::vector<FlatRange> r = shard_ranges(10, std::vector<int64_t>{5, 5, 5}, 1);
  EXPECT_EQ(r[0].count, 3);
  EXPECT_EQ(r[1].count, 4);
  EXPECT_EQ(r[2].count, 3);
  // Halves of 1000 in units of 64: 500 is nearest 512.
  const std::vector<FlatRange> h = shard_ranges(1000, std::vector<int64_t>{1, 1}, 64);
  EXPECT_EQ(h[0].count, 512);
  EXPECT_EQ(h[1].count, 488);
}

TEST(ShardRanges, ARankWithTinyMemoryOwnsAnEmptyRange) {
  // Rank 1's share is 1000 * 1 / 2000001 elements, far below half a unit of 64.
  const std::vector<FlatRange> r = shard_ranges(1000, std::vector<int64_t>{1000000, 1, 1000000}, 64);
  EXPECT_EQ(r[1].count, 0);
  EXPECT_EQ(r[0].count + r[2].count, 1000);
  // Last and first ranks too.
  EXPECT_EQ(shard_ranges(1000, std::vector<int64_t>{1000000, 1}, 64)[1].count, 0);
  EXPECT_EQ(shard_ranges(1000, std::vector<int64_t>{1, 1000000}, 64)[0].count, 0);
  expect_valid_split(1000, {1000000, 1, 1000000}, 64);
}

TEST(ShardRanges, AllZeroWeightsSplitEqually) {
  const std::vector<FlatRange> r = shard_ranges(256, std::vector<int64_t>{0, 0, 0, 0}, 64);
  for (const FlatRange& f : r) EXPECT_EQ(f.count, 64);
}

TEST(ShardRanges, OneRankOwnsEverythingAndNothingSplitsToEmptyRanges) {
  const std::vector<FlatRange> one = shard_ranges(12345, std::vector<int64_t>{7}, 64);
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].offset, 0);
  EXPECT_EQ(one[0].count, 12345);
  for (const FlatRange& f : shard_ranges(0, std::vector<int64_t>{1, 2, 3}, 64)) EXPECT_EQ(f.count, 0);
}

TEST(ShardRanges, ByteSizedWeightsOfLargeModelsDoNotOverflow) {
  // 100 billion elements over weights of 80 GB and 40 GB: n * w is far beyond int64.
  const int64_t gb = int64_t{1} << 30;
  const std::vector<FlatRange> r = shard_ranges(100'000'000'000, std::vector<int64_t>{80 * gb, 40 * gb}, 64);
  EXPECT_NEAR(static_cast<double>(r[0].count), 2.0 * 100e9 / 3.0, 64.0);
  expect_valid_split(100'000'000'000, {80 * gb, 40 * gb}, 64);
}

TEST(ShardRanges, ManyRandomSplitsAreValid) {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 2000; ++trial) {
    const size_t ranks = 1 + rng() % 9;
    std::vector<int64_t> weights(ranks);
    for (auto& w : weights) w = trial % 5 == 0 ? 1000 : static_cast<int64_t>(rng() % 100000);
    if (trial % 7 == 0) weights[rng() % ranks] = 0;
    bool any = false;
    for (int64_t w : weights) any = any || w > 0;
    if (!any) continue;
    const int64_t n = static_cast<int64_t>(rng() % 200000);
    const int64_t align = trial % 3 == 0 ? 1 : 64;
    expect_valid_split(n, weights, align);
  }
}

TEST(ShardRanges, IntersectionsOfRanges) {
  EXPECT_EQ(intersect({0, 10}, {5, 10}).offset, 5);
  EXPECT_EQ(intersect({0, 10}, {5, 10}).count, 5);
  EXPECT_EQ(intersect({0, 10}, {10, 5}).count, 0);
  EXPECT_EQ(intersect({3, 4}, {0, 100}).count, 4);
  EXPECT_EQ(intersect({20, 4}, {0, 10}).count, 0);
}

}  // namespace
}  // namespace dtrain
