// The sweep's B_simple from its points (runtime/sweep_report.h): the median of the
// values measured at the runs' ends, each point weighted by its steps, over the points
// that reached the target and measured one.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "runtime/sweep_fit.h"
#include "runtime/sweep_report.h"

namespace dtrain {
namespace {

SweepRecord point(int64_t steps, double b_simple, bool reached = true) {
  SweepRecord r;
  r.steps = steps;
  r.b_simple = b_simple;
  r.reached = reached;
  return r;
}

TEST(SweepBSimple, EqualStepsGiveThePlainMedian) {
  EXPECT_DOUBLE_EQ(sweep_b_simple({point(5, 30), point(5, 10), point(5, 20)}), 20.0);
  EXPECT_DOUBLE_EQ(sweep_b_simple({point(5, 30), point(5, 10), point(5, 20), point(5, 40)}), 25.0);
}

TEST(SweepBSimple, TheRunsWithMoreStepsCountMore) {
  // Steps 17, 10, 6, 4, 3, 2 (total 42) as a ladder 8..256 to one target: the two
  // longest runs hold 27 of the 42, so the median is one of theirs, whatever the
  // short runs, which stop far past the target, measured.
  const std::vector<SweepRecord> ladder = {point(17, 63), point(10, 83), point(6, 74),
                                           point(4, 74),  point(3, 135), point(2, 196)};
  // Sorted: 63 (17), 74 (6), 74 (4), 83 (10), 135 (3), 196 (2): cumulative 17, 23 > 21.
  EXPECT_DOUBLE_EQ(sweep_b_simple(ladder), 74.0);
  // The plain median of those six would be (74 + 83) / 2; with the short runs far off,
  // the weighted one does not move.
  std::vector<SweepRecord> far = ladder;
  far[4].b_simple = 5000;
  far[5].b_simple = 9000;
  EXPECT_DOUBLE_EQ(sweep_b_simple(far), 74.0);
  // Exactly half the weight below a value: the midpoint with the next, as the plain
  // median of an even count.
  EXPECT_DOUBLE_EQ(sweep_b_simple({point(3, 10), point(1, 20), point(4, 30)}), 25.0);
}

TEST(SweepBSimple, PointsThatDidNotReachOrMeasureAreLeftOut) {
  EXPECT_DOUBLE_EQ(sweep_b_simple({point(100, 500, /*reached=*/false), point(3, 40), point(2, 0)}), 40.0);
  EXPECT_DOUBLE_EQ(sweep_b_simple({point(100, 500, /*reached=*/false)}), 0.0);
  EXPECT_DOUBLE_EQ(sweep_b_simple({}), 0.0);
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// A sweep to eval_accuracy >= target on an epoch of 60,000 samples, its points fitted.
SweepSummary fitted_accuracy_sweep(double target, int64_t largest_plain, std::vector<SweepRecord> records) {
  SweepSummary s;
  s.target.key = "eval_accuracy";
  s.target.value = target;
  s.target.higher_is_better = true;
  s.train_samples = 60000;
  s.largest_plain = largest_plain;
  s.records = std::move(records);
  std::vector<SweepPoint> points;
  for (const SweepRecord& r : s.records) points.push_back({r.batch, 1, r.reached, r.steps});
  s.fit = fit_sweep(points);
  return s;
}

TEST(SweepVerdict, WithoutAFitItSaysWhyOnce) {
  // Two points, neither reached: the fit gives its reasons, and the verdict repeats the
  // last one as a sentence of its own, not inside "There is no fit: no fit: ...".
  std::vector<SweepRecord> records = {point(234, 216, /*reached=*/false), point(14, 2.2, /*reached=*/false)};
  records[0].batch = 256;
  records[1].batch = 4096;
  const SweepSummary s = fitted_accuracy_sweep(0.99, 4096, records);
  ASSERT_FALSE(s.fit.ok);
  const std::string verdict = sweep_verdict(s);
  EXPECT_EQ(count_of(verdict, "o fit"), 1u) << verdict;
  EXPECT_NE(verdict.find(" No fit: it needs points at 3 or more batches"), std::string::npos) << verdict;
}

TEST(SweepVerdict, ManyEpochsAreWrittenAsAWholeNumber) {
  // Points on S = 180 (1 + 250 / B) exactly, so the fit is S_min 180, B_crit 250 and
  // E_min 45,000; at the largest plain batch, 60,000 (an epoch), the model says
  // 45,000 (1 + 240) / 60,000 = 180.75 epochs: "181 epochs", not "1.8e+02 epochs".
  std::vector<SweepRecord> records;
  for (int64_t b : {16, 64, 256, 1024, 4096}) {
    SweepRecord r = point(static_cast<int64_t>(std::llround(180.0 * (1.0 + 250.0 / static_cast<double>(b)))), 0);
    r.batch = b;
    r.samples = r.steps * b;
    records.push_back(r);
  }
  const SweepSummary s = fitted_accuracy_sweep(0.88, 60000, records);
  ASSERT_TRUE(s.fit.ok);
  const std::string verdict = sweep_verdict(s);
  EXPECT_NE(verdict.find("(181 epochs)"), std::string::npos) << verdict;
  EXPECT_EQ(verdict.find("e+"), std::string::npos) << verdict;
}

}  // namespace
}  // namespace dtrain
