#include <gtest/gtest.h>

#include <cmath>

#include "runtime/lr_schedule.h"

namespace dtrain {
namespace {

TEST(LrSchedule, ConstantWithWarmup) {
  ScheduleConfig s;
  s.warmup_steps = 4;
  EXPECT_DOUBLE_EQ(lr_at(s, 0.1, 0, 100), 0.025);
  EXPECT_DOUBLE_EQ(lr_at(s, 0.1, 3, 100), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(s, 0.1, 50, 100), 0.1);
}

TEST(LrSchedule, CosineFromLrToMinLr) {
  ScheduleConfig s;
  s.decay = "cosine";
  s.warmup_steps = 10;
  s.min_lr = 0.01;
  EXPECT_DOUBLE_EQ(lr_at(s, 0.1, 10, 111), 0.1);
  EXPECT_NEAR(lr_at(s, 0.1, 60, 111), 0.01 + 0.09 * 0.5, 1e-12);  // halfway: cos(pi/2) = 0
  EXPECT_NEAR(lr_at(s, 0.1, 110, 111), 0.01, 1e-12);
}

TEST(LrSchedule, StepDecay) {
  ScheduleConfig s;
  s.decay = "step";
  s.step_size = 10;
  s.gamma = 0.5;
  EXPECT_DOUBLE_EQ(lr_at(s, 0.2, 9, 100), 0.2);
  EXPECT_DOUBLE_EQ(lr_at(s, 0.2, 10, 100), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(s, 0.2, 25, 100), 0.05);
}

}  // namespace
}  // namespace dtrain
