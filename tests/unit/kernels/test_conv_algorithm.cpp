// The rule that picks a convolution algorithm from the heuristics' ranked candidates
// (kernels/conv_algorithm.h; Note [cuDNN algorithm choice]). Each list is written so
// that exactly one candidate satisfies the rule's reason, and the test names it.
#include <gtest/gtest.h>

#include <cstddef>
#include <vector>

#include "kernels/conv_algorithm.h"

namespace dtrain {
namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kLimit = 256 * kMiB;  // the preferred workspace, as the CUDA backend uses
constexpr size_t kCap = 8192 * kMiB;   // a quarter of a 32 GiB device

ConvAlgoCandidate det(int algo, size_t bytes) { return {algo, true, true, bytes}; }
ConvAlgoCandidate nondet(int algo, size_t bytes) { return {algo, true, false, bytes}; }
ConvAlgoCandidate unusable_det(int algo) { return {algo, false, true, 0}; }

TEST(ConvAlgorithm, TheFastestDeterministicWithinTheLimitBeatsFasterNonDeterministicOnes) {
  const std::vector<ConvAlgoCandidate> c = {nondet(0, 0), det(1, 300 * kMiB), det(2, kLimit), det(3, 0)};
  const ConvAlgoSelection s = conv_select_algorithm(c, kLimit, kCap);
  EXPECT_EQ(s.index, 2);  // the first deterministic one at most the limit (equal counts)
  EXPECT_TRUE(s.deterministic);
}

TEST(ConvAlgorithm, ADeterministicOneOverTheLimitIsTakenRatherThanANonDeterministicOneWithin) {
  // Issue 13, item 2.4: today's rule took candidate 0 here and lost bit-exact resume.
  const std::vector<ConvAlgoCandidate> c = {nondet(0, 8 * kMiB), det(1, 512 * kMiB)};
  const ConvAlgoSelection s = conv_select_algorithm(c, kLimit, kCap);
  EXPECT_EQ(s.index, 1);
  EXPECT_TRUE(s.deterministic);
}

TEST(ConvAlgorithm, OverTheLimitTheDeterministicOneWithTheLeastWorkspaceIsTaken) {
  // Beyond the limit the workspace is what the planner pays for, so the least wins.
  const std::vector<ConvAlgoCandidate> c = {det(0, 4096 * kMiB), nondet(1, 0), det(2, 300 * kMiB),
                                            det(3, 2048 * kMiB), det(4, 300 * kMiB)};
  const ConvAlgoSelection s = conv_select_algorithm(c, kLimit, kCap);
  EXPECT_EQ(s.index, 2);  // 300 MiB, and first of the two that need it
  EXPECT_TRUE(s.deterministic);
}

TEST(ConvAlgorithm, AnUnusableDeterministicCandidateDoesNotCount) {
  const std::vector<ConvAlgoCandidate> c = {unusable_det(0), nondet(1, 300 * kMiB), nondet(2, 16 * kMiB)};
  const ConvAlgoSelection s = conv_select_algorithm(c, kLimit, kCap);
  EXPECT_EQ(s.index, 2);  // no usable deterministic one: the first non-deterministic within
  EXPECT_FALSE(s.deterministic);
}

TEST(ConvAlgorithm, WithoutADeterministicOneTheLeastWorkspaceOverTheLimitIsTaken) {
  // No candidate within the limit: the planner charges the workspace (a smaller
  // micro-batch), rather than the choice failing.
  const std::vector<ConvAlgoCandidate> c = {nondet(0, 1024 * kMiB), nondet(1, 512 * kMiB), nondet(2, 768 * kMiB)};
  const ConvAlgoSelection s = conv_select_algorithm(c, kLimit, kCap);
  EXPECT_EQ(s.index, 1);
  EXPECT_FALSE(s.deterministic);
}

TEST(ConvAlgorithm, NoUsableCandidateChoosesNone) {
  const std::vector<ConvAlgoCandidate> c = {unusable_det(0), {1, false, false, 0}};
  EXPECT_EQ(conv_select_algorithm(c, kLimit, kCap).index, -1);
  EXPECT_EQ(conv_select_algorithm({}, kLimit, kCap).index, -1);
}

TEST(ConvAlgorithm, ADeterministicOneOverTheCapGivesWayToANonDeterministicOneWithinTheLimit) {
  // Its workspace would take more than the cap (a quarter of the device): the model
  // that ran with the non-deterministic algorithm keeps running, and the plan says so.
  const std::vector<ConvAlgoCandidate> c = {det(0, kCap + kMiB), nondet(1, 300 * kMiB), nondet(2, 8 * kMiB)};
  const ConvAlgoSelection s = conv_select_algorithm(c, kLimit, kCap);
  EXPECT_EQ(s.index, 2);  // the first non-deterministic one within the preferred workspace
  EXPECT_FALSE(s.deterministic);
  // At the cap exactly, the deterministic one is still taken.
  const std::vector<ConvAlgoCandidate> at = {det(0, kCap), nondet(1, 8 * kMiB)};
  EXPECT_EQ(conv_select_algorithm(at, kLimit, kCap).index, 0);
}

TEST(ConvAlgorithm, NothingWithinTheLimitOrTheCapTakesTheLeastWorkspaceDeterministicFirstOfEquals) {
  const std::vector<ConvAlgoCandidate> c = {nondet(0, kCap * 2), det(1, kCap * 3), nondet(2, kCap * 2),
                                            det(3, kCap * 2)};
  const ConvAlgoSelection s = conv_select_algorithm(c, kLimit, kCap);
  EXPECT_EQ(s.index, 3);  // 2 caps, the least; of the three that need it, the deterministic one
  EXPECT_TRUE(s.deterministic);
}

// conv_select_fastest: precision.deterministic false.
TEST(ConvAlgorithmFastest, TheHeuristicsFirstWithinTheLimitIsTakenDeterministicOrNot) {
  const std::vector<ConvAlgoCandidate> c = {unusable_det(0), det(1, 300 * kMiB), nondet(2, kLimit), det(3, 0)};
  const ConvAlgoSelection s = conv_select_fastest(c, kLimit);
  EXPECT_EQ(s.index, 2);  // where the deterministic rule takes 3
  EXPECT_FALSE(s.deterministic);
  EXPECT_EQ(conv_select_algorithm(c, kLimit, kCap).index, 3);
  // A deterministic one first stays first.
  const std::vector<ConvAlgoCandidate> d = {det(0, 8 * kMiB), nondet(1, 0)};
  EXPECT_EQ(conv_select_fastest(d, kLimit).index, 0);
  EXPECT_TRUE(conv_select_fastest(d, kLimit).deterministic);
}

TEST(ConvAlgorithmFastest, NothingWithinTheLimitTakesTheLeastWorkspaceDeterministicFirstOfEquals) {
  const std::vector<ConvAlgoCandidate> c = {nondet(0, 600 * kMiB), nondet(1, 400 * kMiB), det(2, 400 * kMiB),
                                            det(3, 500 * kMiB)};
  const ConvAlgoSelection s = conv_select_fastest(c, kLimit);
  EXPECT_EQ(s.index, 2);
  EXPECT_TRUE(s.deterministic);
  const std::vector<ConvAlgoCandidate> none = {unusable_det(0)};
  EXPECT_EQ(conv_select_fastest(none, kLimit).index, -1);
}

}  // namespace
}  // namespace dtrain
