// The batch planner on one rank: the memory model against the allocator's measured
// peak, the chosen micro-batch against the largest that really runs, and the errors
// when nothing fits. (Several ranks: tests/mpi/test_batch_planner.cpp.)
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>

#include "comm/self_communicator.h"
#include "kernels/context.h"
#include "kernels/errors.h"
#include "models/model.h"
#include "runtime/batch_planner.h"
#include "runtime/config.h"
#include "runtime/dataset.h"
#include "runtime/gradient_wire.h"
#include "runtime/lr_schedule.h"
#include "runtime/memory_probe.h"
#include "runtime/optimizer.h"

namespace dtrain {
namespace {

Config config_for(const std::string& model, const std::string& optimizer = "sgd") {
  Config c;
  c.model.name = model;
  c.model.channels = {16, 32};
  c.model.cnn_hidden = {128};
  c.data.name = "synthetic";
  c.data.train_samples = 4096;
  c.data.test_samples = 256;
  c.optimizer.name = optimizer;
  c.train.micro_batch = kAuto;
  c.train.global_batch = kAuto;
  return c;
}

struct Rank {
  explicit Rank(const Config& c, size_t limit = 0)
      : ctx(Context::make_cpu(1, limit)), data(load_data(c.data, c.model, 1)) {
    model = build_model(*ctx, c.model, data.train->facts());
    model->init(1);
    optimizer = make_optimizer(c.optimizer, *ctx, model->param_count(),
                               decay_spans(model->param_tensors(), model->param_count(), c.optimizer.decay_filter));
  }
  std::unique_ptr<Context> ctx;
  DataSplits data;
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
};

// Whether a probe step of `micro` samples runs within the rank's allocator limit.
bool runs(Rank& r, int64_t micro, int64_t eval_batch) {
  try {
    probe_micro_batch(*r.model, *r.ctx, *r.data.train, micro, std::min(micro, eval_batch));
    return true;
  } catch (const OutOfMemoryError&) {
    return false;
  }
}

// The largest micro-batch that runs, by bisection on real probe steps.
int64_t largest_runnable(Rank& r, int64_t eval_batch) {
  int64_t lo = 1, hi = 2;
  while (runs(r, hi, eval_batch)) lo = hi, hi *= 2;
  while (hi - lo > 1) {
    const int64_t mid = (lo + hi) / 2;
    (runs(r, mid, eval_batch) ? lo : hi) = mid;
  }
  return lo;
}

class PredictionVsProbe : public ::testing::TestWithParam<std::pair<std::string, std::string>> {};

// On the CPU the model is exact by construction: every op's workspace query is what its
// call takes, to the byte (kernels/cpu/conv2d.cpp), and the allocator's accounting is the
// model's. So any difference is a term the model lost or invented (the input batch's
// bytes, for one, are about 1% of the CNN's peak).
TEST_P(PredictionVsProbe, MeasuredPeakIsThePredictionToTheByteAtThreeMicroBatches) {
  const Config c = config_for(GetParam().first, GetParam().second);
  Rank r(c);
  const MemoryModel memory = memory_model_of(*r.model, r.optimizer->state_bytes(), *r.ctx, r.data.train->layout(), c.eval.batch,
                                               c.comm.reduce_dtype);
  // The fixed part by formula: 4 bytes per parameter for each of params and grads;
  // SGD with momentum keeps one mirror, AdamW two.
  const int64_t params = r.model->param_count();
  EXPECT_EQ(memory.params_bytes, 4 * params);
  EXPECT_EQ(memory.grads_bytes, 4 * params);
  EXPECT_EQ(memory.optimizer_bytes, (c.optimizer.name == "adamw" ? 8 : 4) * params);
  for (int64_t micro : {8, 100, 700}) {
    r.model->release_activations();
    r.ctx->release_workspace();
    const int64_t peak = probe_micro_batch(*r.model, *r.ctx, *r.data.train, micro, std::min<int64_t>(micro, c.eval.batch));
    const int64_t predicted = memory.predict(micro).total();
    EXPECT_EQ(predicted, peak) << "micro-batch " << micro;
    RecordProperty("peak_" + std::to_string(micro), std::to_string(peak));
    RecordProperty("predicted_" + std::to_string(micro), std::to_string(predicted));
  }
}

INSTANTIATE_TEST_SUITE_P(Models, PredictionVsProbe,
                         ::testing::Values(std::make_pair("mlp", "sgd"), std::make_pair("cnn", "sgd"),
                                           std::make_pair("mlp", "adamw")),
                         [](const auto& info) { return info.param.first + "_" + info.param.second; });

// comm.reduce_dtype bf16 keeps a bf16 copy of the gradients (runtime/gradient_wire.h):
// 2 bytes per parameter more, in the prediction and in the probe's measured peak
// alike, so the model's error stays what it is for fp32 (none on the CPU for the MLP).
TEST(BatchPlanner, Bf16ReduceStagingAddsTwoBytesPerParameterToPredictionAndPeak) {
  Config c = config_for("mlp");
  Rank r(c);
  const int64_t params = r.model->param_count();
  const int64_t micro = 100;
  auto predicted_and_peak = [&](const std::string& reduce_dtype) {
    const MemoryModel memory =
        memory_model_of(*r.model, r.optimizer->state_bytes(), *r.ctx, r.data.train->layout(), c.eval.batch, reduce_dtype);
    r.model->release_activations();
    r.ctx->release_workspace();
    const int64_t peak =
        probe_micro_batch(*r.model, *r.ctx, *r.data.train, micro, std::min<int64_t>(micro, c.eval.batch));
    return std::make_pair(memory.predict(micro), peak);
  };
  const auto [fp32, fp32_peak] = predicted_and_peak("fp32");
  const Buffer staging = allocate_gradient_wire_staging(*r.ctx, "bf16", params);  // as TrainingSetup does
  EXPECT_EQ(r.ctx->allocator().stats().in_use_by[static_cast<size_t>(MemoryCategory::Grads)],
            static_cast<size_t>(6 * params));
  const auto [bf16, bf16_peak] = predicted_and_peak("bf16");
  const auto grads = static_cast<size_t>(MemoryCategory::Grads);
  EXPECT_EQ(fp32.by_category[grads], 4 * params);
  EXPECT_EQ(bf16.by_category[grads], 6 * params);
  EXPECT_EQ(bf16.total() - fp32.total(), 2 * params);
  EXPECT_EQ(bf16_peak - fp32_peak, 2 * params);
  EXPECT_EQ(bf16.total() - bf16_peak, fp32.total() - fp32_peak);  // the model's error is unchanged
}

TEST(BatchPlanner, ProbeLeavesParametersAndZeroGradients) {
  const Config c = config_for("mlp");
  Rank r(c);
  const std::vector<float> before(r.model->params(), r.model->params() + r.model->param_count());
  probe_micro_batch(*r.model, *r.ctx, *r.data.train, 16, 16);
  for (int64_t i = 0; i < r.model->param_count(); ++i) {
    ASSERT_EQ(r.model->params()[i], before[static_cast<size_t>(i)]);
    ASSERT_EQ(r.model->grads()[i], 0.0f);
  }
}

TEST(BatchPlanner, TimingTheRestOfAStepLeavesParametersAndZeroGradients) {
  const Config c = config_for("mlp");
  Rank r(c);
  const std::vector<float> before(r.model->params(), r.model->params() + r.model->param_count());
  std::fill(r.model->grads(), r.model->grads() + r.model->param_count(), 1.0f);
  const StepOverheads o = time_step_overheads(*r.model, *r.ctx, *r.data.train, 64, 3);
  EXPECT_GT(o.data_per_sample_s, 0.0);
  EXPECT_GT(o.gradient_pass_s, 0.0);
  EXPECT_GT(o.zero_s, 0.0);
  for (int64_t i = 0; i < r.model->param_count(); ++i) {
    ASSERT_EQ(r.model->params()[i], before[static_cast<size_t>(i)]);
    ASSERT_EQ(r.model->grads()[i], 0.0f);
  }
}

class ChosenVsRunnable : public ::testing::TestWithParam<std::pair<std::string, int64_t>> {};

// With memory.fraction 1 there is no headroom, so the gap between the planner's choice
// and the largest micro-batch that really runs is the memory model's own error: none on
// the CPU (PredictionVsProbe).
TEST_P(ChosenVsRunnable, ChosenMicroBatchIsTheLargestRunnable) {
  Config c = config_for(GetParam().first);
  c.memory.fraction = 1.0;
  const auto limit = static_cast<size_t>(GetParam().second);
  Rank r(c, limit);
  SelfCommunicator self;
  const PlanOutcome out = plan_training(c, *r.model, *r.optimizer, *r.ctx, *r.data.train, self,
                                        PlannerInputs{r.ctx->allocator().capacity(), 1});
  const int64_t chosen = out.plan.micro_batch[0];
  const int64_t largest = largest_runnable(r, c.eval.batch);
  RecordProperty("chosen", std::to_string(chosen));
  RecordProperty("largest_runnable", std::to_string(largest));
  EXPECT_EQ(chosen, largest);
  EXPECT_EQ(out.plan.global_batch, chosen);  // global_batch: auto on one rank
  EXPECT_LE(out.ranks[0].probe_peak_bytes, static_cast<int64_t>(limit));
}

INSTANTIATE_TEST_SUITE_P(Models, ChosenVsRunnable,
                         ::testing::Values(std::make_pair("mlp", int64_t{8} << 20), std::make_pair("cnn", int64_t{48} << 20)),
                         [](const auto& info) { return info.param.first; });

TEST(BatchPlanner, DefaultHeadroomKeepsThePredictedPeakWithinTheFraction) {
  Config c = config_for("cnn");
  const size_t limit = size_t{48} << 20;
  Rank r(c, limit);
  SelfCommunicator self;
  const PlanOutcome out = plan_training(c, *r.model, *r.optimizer, *r.ctx, *r.data.train, self,
                                        PlannerInputs{r.ctx->allocator().capacity(), 1});
  EXPECT_LE(double(out.ranks[0].predicted.total()), 0.9 * double(limit));
  EXPECT_EQ(out.ranks[0].memory.limit, limit);
  EXPECT_EQ(out.ranks[0].probes, 1);  // the prediction held: no back-off
}

TEST(BatchPlanner, WithoutTheProbeStepItPlansTheMemoryModelsCapacityAndRunsNoStep) {
  // Where the prediction holds (the case above: one probe, no back-off), planning
  // without the probe gives the same plan, runs no step, and reports the predicted
  // peak in the probe's place.
  Config c = config_for("cnn");
  const size_t limit = size_t{48} << 20;
  SelfCommunicator self;
  Rank probed(c, limit);
  const PlanOutcome with = plan_training(c, *probed.model, *probed.optimizer, *probed.ctx, *probed.data.train, self,
                                         PlannerInputs{probed.ctx->allocator().capacity(), 1});
  ASSERT_EQ(with.ranks[0].probes, 1);
  Rank r(c, limit);
  const PlanOutcome without = plan_training(c, *r.model, *r.optimizer, *r.ctx, *r.data.train, self,
                                            PlannerInputs{r.ctx->allocator().capacity(), 1, /*probe_step=*/false});
  EXPECT_EQ(without.ranks[0].probes, 0);
  EXPECT_EQ(without.plan.micro_batch, with.plan.micro_batch);
  EXPECT_EQ(without.plan.global_batch, with.plan.global_batch);
  EXPECT_EQ(without.ranks[0].probe_peak_bytes, without.ranks[0].predicted.total());
  // No step ran: the allocator never held the activations, which are most of the
  // probed step's peak at this micro-batch.
  EXPECT_LT(2 * r.ctx->allocator().stats().peak_reserved, static_cast<size_t>(with.ranks[0].probe_peak_reserved_bytes));
}

TEST(BatchPlanner, AGivenGlobalBatchIsMetExactlyWithAccumulation) {
  Config c = config_for("cnn");
  c.train.global_batch = 1000;
  Rank r(c, size_t{48} << 20);  // about 140 samples fit
  SelfCommunicator self;
  const PlanOutcome out = plan_training(c, *r.model, *r.optimizer, *r.ctx, *r.data.train, self,
                                        PlannerInputs{r.ctx->allocator().capacity(), 1});
  EXPECT_EQ(out.plan.accumulation_steps * out.plan.micro_batch[0], 1000);
  EXPECT_GT(out.plan.accumulation_steps, 1);
  EXPECT_LE(out.plan.micro_batch[0], out.ranks[0].capacity);
}

TEST(BatchPlanner, DeviceOverstatingItsMemoryIsCaughtByTheProbeAndBackedOff) {
  Config c = config_for("mlp");
  Rank r(c, size_t{6} << 20);  // the allocator holds 6 MiB
  MemoryCapacity claimed = r.ctx->allocator().capacity();
  claimed.available *= 4;  // the device says four times more
  SelfCommunicator self;
  const PlanOutcome out = plan_training(c, *r.model, *r.optimizer, *r.ctx, *r.data.train, self,
                                        PlannerInputs{claimed, 1});
  EXPECT_GT(out.ranks[0].probes, 1);
  EXPECT_TRUE(runs(r, out.plan.micro_batch[0], c.eval.batch));
}

TEST(BatchPlanner, AFixedMicroBatchThatDoesNotFitIsRefusedNamingTheKey) {
  Config c = config_for("cnn");
  c.train.micro_batch = 5000;
  c.origins["train.micro_batch"] = "cfg.yaml:6";
  Rank r(c, size_t{32} << 20);
  SelfCommunicator self;
  try {
    plan_training(c, *r.model, *r.optimizer, *r.ctx, *r.data.train, self, PlannerInputs{r.ctx->allocator().capacity(), 1});
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cfg.yaml:6: train.micro_batch = 5000 does not fit"), std::string::npos) << m;
    EXPECT_NE(m.find("set it to auto"), std::string::npos) << m;
    EXPECT_TRUE(e.agreed());
  }
}

TEST(BatchPlanner, AModelThatDoesNotFitAtOneSampleSaysHowMuchItNeeds) {
  const Config c = config_for("cnn");
  Rank r(c);
  MemoryCapacity tiny = r.ctx->allocator().capacity();
  tiny.available = 100 * 1024;
  SelfCommunicator self;
  try {
    plan_training(c, *r.model, *r.optimizer, *r.ctx, *r.data.train, self, PlannerInputs{tiny, 1});
    FAIL() << "expected OutOfMemoryError";
  } catch (const OutOfMemoryError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("does not fit even at micro-batch 1: it needs about"), std::string::npos) << m;
    EXPECT_NE(m.find("parameters 841.3 KiB"), std::string::npos) << m;  // 215370 parameters x 4 bytes
    EXPECT_NE(m.find("raise memory.limit"), std::string::npos) << m;
  }
}

TEST(LrScaling, LinearAndSqrtFollowTheGlobalBatch) {
  OptimizerConfig o;
  o.lr = 0.1;
  o.base_batch = 256;
  EXPECT_DOUBLE_EQ(scaled_lr(o, 1024), 0.1);  // lr_scaling: none
  o.lr_scaling = "linear";
  EXPECT_DOUBLE_EQ(scaled_lr(o, 1024), 0.4);
  EXPECT_DOUBLE_EQ(scaled_lr(o, 64), 0.025);
  o.lr_scaling = "sqrt";
  EXPECT_DOUBLE_EQ(scaled_lr(o, 1024), 0.2);
}

TEST(LrScaling, MaxLrCapsTheScaledRateAndNothingBelowIt) {
  OptimizerConfig o;
  o.lr = 0.05;
  o.base_batch = 64;
  o.lr_scaling = "linear";
  o.max_lr = 0.1;
  EXPECT_DOUBLE_EQ(scaled_lr(o, 16), 0.0125);  // 0.05 x 16 / 64, under the cap
  EXPECT_DOUBLE_EQ(scaled_lr(o, 128), 0.1);    // exactly at it
  EXPECT_DOUBLE_EQ(scaled_lr(o, 4096), 0.1);   // 3.2 by the rule, capped
  o.lr_scaling = "none";
  o.lr = 0.3;
  EXPECT_DOUBLE_EQ(scaled_lr(o, 64), 0.1);     // the cap holds without scaling too
  o.max_lr = 0.0;
  EXPECT_DOUBLE_EQ(scaled_lr(o, 64), 0.3);     // 0: no cap
}

TEST(LrScaling, WarmupEpochsBecomeStepsOfThePlan) {
  ScheduleConfig s;
  s.warmup_epochs = 0.5;
  EXPECT_EQ(schedule_for_plan(s, 937).warmup_steps, 469);  // 468.5 rounds up
  s.warmup_epochs = 0;
  s.warmup_steps = 12;
  EXPECT_EQ(schedule_for_plan(s, 937).warmup_steps, 12);
}

}  // namespace
}  // namespace dtrain
