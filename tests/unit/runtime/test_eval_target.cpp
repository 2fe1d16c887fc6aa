// The target a sweep's runs stop at (runtime/eval_target.h).
#include <cmath>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "kernels/errors.h"
#include "runtime/eval_target.h"

namespace dtrain {
namespace {

const std::vector<std::string> kClassifierKeys = {"eval_loss", "eval_accuracy"};

TEST(EvalTarget, ParsesKeyAndValueWithTheDirectionOfTheMetric) {
  const EvalTarget acc = parse_eval_target("eval_accuracy=0.88", kClassifierKeys);
  EXPECT_EQ(acc.key, "eval_accuracy");
  EXPECT_DOUBLE_EQ(acc.value, 0.88);
  EXPECT_TRUE(acc.higher_is_better);
  EXPECT_TRUE(target_reached(acc, 9.0, {{"accuracy", 0.88}}));
  EXPECT_FALSE(target_reached(acc, 0.0, {{"accuracy", 0.8799}}));
  const EvalTarget loss = parse_eval_target("eval_loss=1.6", kClassifierKeys);
  EXPECT_FALSE(loss.higher_is_better);
  EXPECT_TRUE(target_reached(loss, 1.6, {{"accuracy", 0.0}}));
  EXPECT_FALSE(target_reached(loss, 1.61, {{"accuracy", 1.0}}));
}

TEST(EvalTarget, AnUnknownKeyIsAnErrorListingTheKeysTheModelReports) {
  try {
    parse_eval_target("eval_acuracy=0.9", kClassifierKeys);
    FAIL() << "no error";
  } catch (const UsageError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("eval_acuracy"), std::string::npos) << what;
    EXPECT_NE(what.find("eval_loss, eval_accuracy"), std::string::npos) << what;
  }
  EXPECT_THROW(parse_eval_target("eval_loss", kClassifierKeys), UsageError);
  EXPECT_THROW(parse_eval_target("eval_loss=abc", kClassifierKeys), UsageError);
  EXPECT_THROW(parse_eval_target("eval_loss=", kClassifierKeys), UsageError);
}

TEST(EvalTarget, MetricKeysFollowTheModelsMetrics) {
  EXPECT_EQ(eval_metric_keys({{"bits_per_byte", 0.0}}), (std::vector<std::string>{"eval_loss", "eval_bits_per_byte"}));
  EXPECT_EQ(eval_metric_keys({}), (std::vector<std::string>{"eval_loss"}));
}

// Note [Target evaluation schedule]: every step up to 1/r, then each evaluation at most
// a factor (1 + r) and one step after the one before, and about (1/r)(1 + ln(S r))
// evaluations in S steps.
TEST(EvalTarget, ScheduleResolvesStepsToTheResolution) {
  const double r = 0.05;
  for (int64_t s = 1; s <= 20; ++s) EXPECT_TRUE(target_evaluation_due(s, r)) << s;
  int64_t last = 20, count = 20;
  const int64_t total = 100000;
  for (int64_t s = 21; s <= total; ++s) {
    if (!target_evaluation_due(s, r)) continue;
    EXPECT_LE(static_cast<double>(s), (1.0 + r) * static_cast<double>(last) + 1.0) << "gap after " << last;
    last = s;
    ++count;
  }
  EXPECT_GE(last, static_cast<int64_t>(total / (1.0 + r)));
  const double expected = (1.0 / r) * (1.0 + std::log(total * r));
  EXPECT_NEAR(static_cast<double>(count), expected, 0.1 * expected);
}

}  // namespace
}  // namespace dtrain
