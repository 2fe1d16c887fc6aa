// The alpha-beta costs of collectives (runtime/collective_cost.h), against the
// formulas of Note [Alpha-beta collectives] worked by hand, and the link fit on
// times drawn from a known link.
#include <cmath>
#include <stdexcept>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/rng.h"
#include "runtime/collective_cost.h"

namespace dtrain {
namespace {

const Link kIntra{1e-6, 100e9};  // 1 us a step, 100 GB/s
const Link kInter{10e-6, 25e9};  // 10 us a step, 25 GB/s

TEST(CollectiveCost, OneRankCostsNothing) {
  const RankLayout one{1, 1};
  EXPECT_EQ(ring_all_reduce_s(1e9, one, kIntra, kInter), 0.0);
  EXPECT_EQ(tree_all_reduce_s(1e9, one, kIntra, kInter), 0.0);
  EXPECT_EQ(reduce_scatter_s(1e9, one, kIntra, kInter), 0.0);
  EXPECT_EQ(all_gather_s(1e9, one, kIntra, kInter), 0.0);
}

TEST(CollectiveCost, RingAllReduceInsideOneNode) {
  // 4 ranks: 2 (4 - 1) = 6 steps of 1 us; 2 * 3/4 * 1 MB at 100 GB/s = 15 us.
  EXPECT_NEAR(ring_all_reduce_s(1e6, {4, 1}, kIntra, kInter), 6e-6 + 15e-6, 1e-12);
}

TEST(CollectiveCost, RingAcrossNodesPaysTheSlowerLinkForCrossingStepsAndBytes) {
  // 2 nodes x 2 ranks: 6 steps, 2 (2 - 1) = 2 cross at 10 us, 4 stay at 1 us;
  // the bytes move at the slower 25 GB/s: 2 * 3/4 * 1 MB / 25 GB/s = 60 us.
  EXPECT_NEAR(ring_all_reduce_s(1e6, {4, 2}, kIntra, kInter), 4e-6 + 20e-6 + 60e-6, 1e-12);
  // 1 rank a node: every step crosses.
  EXPECT_NEAR(ring_all_reduce_s(0.0, {3, 3}, kIntra, kInter), 4 * 10e-6, 1e-12);
}

TEST(CollectiveCost, TreeAllReduceLatencyGrowsWithTheLogOfTheNodes) {
  // 8 nodes x 8 ranks: 2 ((8 - 1) * 1 us + log2(8) * 10 us) = 74 us; 2 S / 25 GB/s.
  EXPECT_NEAR(tree_all_reduce_s(0.0, {64, 8}, kIntra, kInter), 74e-6, 1e-12);
  EXPECT_NEAR(tree_all_reduce_s(1e6, {64, 8}, kIntra, kInter), 74e-6 + 80e-6, 1e-12);
  // 5 nodes: ceil(log2 5) = 3 levels.
  EXPECT_NEAR(tree_all_reduce_s(0.0, {5, 5}, kIntra, kInter), 2 * 3 * 10e-6, 1e-12);
}

TEST(CollectiveCost, AllReduceTakesRingForBandwidthAndTreeForLatency) {
  // 1024 ranks on 128 nodes, a small message: ring's 2046 steps lose to the tree.
  const RankLayout big{1024, 128};
  const CollectiveCost small = all_reduce_cost(1e3, big, kIntra, kInter);
  EXPECT_EQ(small.algorithm, AllReduceAlgorithm::kTree);
  EXPECT_DOUBLE_EQ(small.seconds, tree_all_reduce_s(1e3, big, kIntra, kInter));
  // 8 ranks on one node, 1 GB: ring moves 2 * 7/8 S against the tree's 2 S.
  const CollectiveCost large = all_reduce_cost(1e9, {8, 1}, kIntra, kInter);
  EXPECT_EQ(large.algorithm, AllReduceAlgorithm::kRing);
  EXPECT_DOUBLE_EQ(large.seconds, ring_all_reduce_s(1e9, {8, 1}, kIntra, kInter));
}

TEST(CollectiveCost, ReduceScatterAndAllGatherAreHalfARing) {
  // 4 ranks on one node: 3 steps, 3/4 S.
  EXPECT_NEAR(reduce_scatter_s(1e6, {4, 1}, kIntra, kInter), 3e-6 + 7.5e-6, 1e-12);
  EXPECT_NEAR(all_gather_s(1e6, {4, 1}, kIntra, kInter), 3e-6 + 7.5e-6, 1e-12);
  // Their sum is the ring all-reduce.
  EXPECT_NEAR(reduce_scatter_s(1e6, {8, 2}, kIntra, kInter) + all_gather_s(1e6, {8, 2}, kIntra, kInter),
              ring_all_reduce_s(1e6, {8, 2}, kIntra, kInter), 1e-12);
}

TEST(CollectiveCost, FitRecoversAKnownLinkFromNoisyTimes) {
  const double alpha = 20e-6, beta = 2e9;
  Rng rng(7);
  std::vector<double> bytes, seconds;
  for (double s = 8; s <= 64e6; s *= 4) {
    for (int rep = 0; rep < 3; ++rep) {
      bytes.push_back(s);
      seconds.push_back((2 * alpha + s / beta) * (1.0 + 0.02 * rng.normal()));
    }
  }
  const LinkFit fit = fit_ring_link(2, bytes, seconds);
  EXPECT_NEAR(fit.link.latency_s, alpha, 0.05 * alpha);
  EXPECT_NEAR(fit.link.bandwidth_Bps, beta, 0.05 * beta);
  EXPECT_LT(fit.residual, 0.05);
  EXPECT_GT(fit.residual, 0.005);  // the 2% noise shows
}

TEST(CollectiveCost, FitOnFourRanksUndoesTheRingsStepsAndBytes) {
  // 4 ranks: t(S) = 6 alpha + 1.5 S / beta. Exact times recover the link exactly.
  const double alpha = 5e-6, beta = 3e9;
  const std::vector<double> bytes = {1e3, 1e5, 1e7};
  std::vector<double> seconds;
  for (double s : bytes) seconds.push_back(6 * alpha + 1.5 * s / beta);
  const LinkFit fit = fit_ring_link(4, bytes, seconds);
  EXPECT_NEAR(fit.link.latency_s, alpha, 1e-9 * alpha);
  EXPECT_NEAR(fit.link.bandwidth_Bps, beta, 1e-9 * beta);
  EXPECT_LT(fit.residual, 1e-12);
  // The fitted link predicts what it was fitted to: the model's own ring all-reduce.
  for (size_t i = 0; i < bytes.size(); ++i) {
    EXPECT_NEAR(ring_all_reduce_s(bytes[i], {4, 1}, fit.link, fit.link), seconds[i], 1e-9 * seconds[i]);
  }
}

TEST(CollectiveCost, ALinkFromTwoEndsReproducesBothTimes) {
  // 3 ranks: 4 steps of latency, 4/3 S at the bus bandwidth.
  const Link l = ring_link_from_ends(3, 20e-6, 1e6, 1e-3);
  EXPECT_NEAR(l.latency_s, 5e-6, 1e-18);
  EXPECT_NEAR(l.bandwidth_Bps, 4.0 / 3.0 * 1e6 / (1e-3 - 20e-6), 1e-3);
  EXPECT_NEAR(ring_all_reduce_s(0.0, {3, 1}, l, l), 20e-6, 1e-15);
  EXPECT_NEAR(ring_all_reduce_s(1e6, {3, 1}, l, l), 1e-3, 1e-15);
  EXPECT_THROW(ring_link_from_ends(1, 1e-6, 1e6, 1e-3), std::invalid_argument);
  EXPECT_THROW(ring_link_from_ends(2, 1e-3, 1e6, 1e-3), std::invalid_argument) << "no slower with more bytes";
}

TEST(CollectiveCost, FitRefusesTooFewSizesAndTimesThatDoNotGrow) {
  EXPECT_THROW(fit_ring_link(1, {1e3, 1e6}, {1e-5, 1e-3}), std::invalid_argument);
  EXPECT_THROW(fit_ring_link(2, {1e3, 1e3}, {1e-5, 1.1e-5}), std::invalid_argument);
  EXPECT_THROW(fit_ring_link(2, {1e3, 1e6}, {1e-3, 1e-5}), std::invalid_argument);
  EXPECT_THROW(fit_ring_link(2, {1e3}, {1e-3, 1e-5}), std::invalid_argument);
}

}  // namespace
}  // namespace dtrain
