// The rule that keeps one of cuBLASLt's candidate algorithms from their measured times
// (kernels/gemm_autotune.h; Note [GEMM autotuning], kernels/cuda/linear_lt.h). Each list
// is written so that the rule's reason picks exactly one candidate, and the test names it.
#include <gtest/gtest.h>

#include <vector>

#include "kernels/errors.h"
#include "kernels/gemm_autotune.h"

namespace dtrain {
namespace {

constexpr double kMargin = 0.03;
constexpr double kRefused = -1.0;

TEST(GemmAutotune, TheHeuristicsChoiceStaysWhenNoneBeatsItByTheMargin) {
  // 1.98 is within 3% of 2.0: noise, not a faster algorithm.
  const std::vector<double> ms = {2.0, 1.98, 2.5, 1.99};
  EXPECT_EQ(choose_gemm_candidate(ms, kMargin), 0);
}

TEST(GemmAutotune, TheFastestOfThoseBeyondTheMarginIsKept) {
  const std::vector<double> ms = {2.0, 1.8, 1.5, 1.9, 1.7};
  EXPECT_EQ(choose_gemm_candidate(ms, kMargin), 2);
}

TEST(GemmAutotune, TheEarliestOfEqualFastestIsKept) {
  const std::vector<double> ms = {2.0, 1.5, 1.5};
  EXPECT_EQ(choose_gemm_candidate(ms, kMargin), 1);
}

TEST(GemmAutotune, ZeroMarginTakesAnyStrictlyFasterCandidate) {
  const std::vector<double> ms = {2.0, 1.999};
  EXPECT_EQ(choose_gemm_candidate(ms, 0.0), 1);
  const std::vector<double> equal = {2.0, 2.0};
  EXPECT_EQ(choose_gemm_candidate(equal, 0.0), 0);
}

TEST(GemmAutotune, RefusedCandidatesAreNeverKeptHoweverFastTheirEntry) {
  const std::vector<double> ms = {2.0, kRefused, 1.9};
  EXPECT_EQ(choose_gemm_candidate(ms, kMargin), 2);  // 1.9 < 0.97 * 2.0
}

TEST(GemmAutotune, WhenTheFirstChoiceRefusedTheFastestUsableOneIsKeptWithoutMargin) {
  const std::vector<double> ms = {kRefused, 1.9, 1.89, 3.0};
  EXPECT_EQ(choose_gemm_candidate(ms, kMargin), 2);
}

TEST(GemmAutotune, NoneUsableOrNoCandidatesGivesMinusOne) {
  const std::vector<double> refused = {kRefused, kRefused};
  EXPECT_EQ(choose_gemm_candidate(refused, kMargin), -1);
  EXPECT_EQ(choose_gemm_candidate(std::vector<double>{}, kMargin), -1);
}

TEST(GemmAutotune, AMarginOutsideZeroToOneIsAnError) {
  const std::vector<double> ms = {1.0};
  EXPECT_THROW(choose_gemm_candidate(ms, 1.0), Error);
  EXPECT_THROW(choose_gemm_candidate(ms, -0.1), Error);
}

}  // namespace
}  // namespace dtrain
