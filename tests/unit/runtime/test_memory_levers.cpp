// The planner's choice of memory levers (Note [Memory levers]) on constructed cases:
// the capacities each candidate setting would have, planned and chosen by the pure
// functions the collective one calls.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "runtime/config.h"
#include "runtime/memory_levers.h"
#include "runtime/plan_report.h"

namespace dtrain {
namespace {

const LeverSetting kNone{false, Recompute::kNone};
const LeverSetting kShard{true, Recompute::kNone};
const LeverSetting kRecompute{false, Recompute::kBlocks};
const LeverSetting kBoth{true, Recompute::kBlocks};

// The four candidates of a two-rank run with both keys on auto, in preference order,
// with the capacity each rank predicts for them.
std::vector<LeverCandidate> four(std::vector<int64_t> none, std::vector<int64_t> shard, std::vector<int64_t> recompute,
                                 std::vector<int64_t> both) {
  std::vector<LeverCandidate> c(4);
  c[0].setting = kNone;
  c[0].capacity = none;
  c[1].setting = kShard;
  c[1].capacity = shard;
  c[2].setting = kRecompute;
  c[2].capacity = recompute;
  c[3].setting = kBoth;
  c[3].capacity = both;
  return c;
}

// Measured forward and backward times, per rank; no communication counted.
StepTimes timed(std::vector<double> fixed_s, std::vector<double> per_sample_s) {
  StepTimes t;
  t.fixed_s = std::move(fixed_s);
  t.per_sample_s = std::move(per_sample_s);
  return t;
}

LeverChoice choose(std::vector<LeverCandidate> c, int64_t global_batch, const StepTimes& times = {},
                   double recompute_extra = 1.0 / 3.0, int64_t micro_batch = kAuto) {
  plan_candidates(c, global_batch, micro_batch);
  return choose_levers(std::move(c), global_batch, times, recompute_extra);
}

TEST(MemoryLevers, TheCandidatesAConfigLeavesOpenComeInPreferenceOrder) {
  Config c;
  c.optimizer.shard = "auto";
  c.memory.recompute = "auto";
  const std::vector<LeverSetting> all = lever_candidates(c, 2, true);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(lever_name(all[0]), "none");
  EXPECT_EQ(lever_name(all[1]), "shard");
  EXPECT_EQ(lever_name(all[2]), "recompute");
  EXPECT_EQ(lever_name(all[3]), "shard + recompute");
  // One rank has nothing to shard; a model without blocks nothing to recompute.
  EXPECT_EQ(lever_candidates(c, 1, true).size(), 2u);
  EXPECT_EQ(lever_candidates(c, 4, false).size(), 2u);
  c.optimizer.shard = "true";
  ASSERT_EQ(lever_candidates(c, 1, false).size(), 1u);
  EXPECT_FALSE(lever_candidates(c, 1, false)[0].shard) << "sharding on one rank is a no-op";
  EXPECT_TRUE(lever_candidates(c, 2, false)[0].shard);
  c.memory.recompute = "none";
  c.optimizer.shard = "false";
  ASSERT_EQ(lever_candidates(c, 8, true).size(), 1u);
}

TEST(MemoryLevers, NeitherIsTakenWhenNeitherLowersK) {
  // Every setting holds the 16 samples in one micro-step on two ranks.
  const LeverChoice c = choose(four({8, 8}, {9, 9}, {20, 20}, {22, 22}), 16);
  EXPECT_EQ(lever_name(c.chosen), "none");
  EXPECT_NE(c.reason.find("no lever needed"), std::string::npos) << c.reason;
  EXPECT_FALSE(needs_step_times(c.candidates, 16, false));
  EXPECT_FALSE(needs_step_times(c.candidates, 16, true));
}

TEST(MemoryLevers, OnlyShardingFits) {
  // Without sharding not one sample fits; with it 4 per rank, so k = 2 for 16.
  const LeverChoice c = choose(four({0, 0}, {4, 4}, {0, 0}, {6, 6}), 16);
  EXPECT_EQ(lever_name(c.chosen), "shard") << "shard + recompute has the same k, for more FLOPs";
  EXPECT_EQ(c.candidates[1].plan.accumulation_steps, 2);
  EXPECT_NE(c.reason.find("nothing fits without it"), std::string::npos) << c.reason;
}

TEST(MemoryLevers, OnlyRecomputeFits) {
  const LeverChoice c = choose(four({0, 0}, {0, 0}, {4, 4}, {5, 5}), 16);
  EXPECT_EQ(lever_name(c.chosen), "recompute");
  EXPECT_FALSE(needs_step_times(c.candidates, 16, false)) << "nothing without recompute fits: no comparison to time";
}

TEST(MemoryLevers, BothAreNeeded) {
  const LeverChoice c = choose(four({0, 0}, {0, 0}, {0, 0}, {3, 3}), 12);
  EXPECT_EQ(lever_name(c.chosen), "shard + recompute");
  EXPECT_EQ(c.candidates[3].plan.accumulation_steps, 2);
}

TEST(MemoryLevers, ShardingIsTakenWhenItLowersK) {
  // 16 on two ranks: 4 + 4 needs k = 2, 8 + 8 one step; sharding adds no FLOPs. Where
  // the buckets travel after backward (MPI) that needs no timing.
  std::vector<LeverCandidate> planned = four({4, 4}, {8, 8}, {0, 0}, {0, 0});
  plan_candidates(planned, 16, kAuto);
  EXPECT_FALSE(needs_step_times(planned, 16, false));
  EXPECT_TRUE(needs_step_times(planned, 16, true)) << "overlapped, its all-gather may cost more than it saves";
  const LeverChoice c = choose(four({4, 4}, {8, 8}, {8, 8}, {12, 12}), 16);
  EXPECT_EQ(lever_name(c.chosen), "shard");
  EXPECT_NE(c.reason.find("k 2 -> 1 at no extra FLOPs"), std::string::npos) << c.reason;
}

TEST(MemoryLevers, RecomputeThatLowersKIsTakenOnlyWhenThePredictionSaysItIsFaster) {
  // Without recompute 2 + 2 (k = 4); with it 8 + 8 (k = 1), for a third more FLOPs.
  const auto candidates = four({2, 2}, {2, 2}, {8, 8}, {8, 8});
  std::vector<LeverCandidate> planned = candidates;
  plan_candidates(planned, 16, kAuto);
  EXPECT_TRUE(needs_step_times(planned, 16, false));
  // A step dominated by its fixed cost: 4 x (1 + 0.02) = 4.08 s against 1 + 0.08 x 4/3.
  const StepTimes launch_bound = timed({1.0, 1.0}, {0.01, 0.01});
  const LeverChoice fast = choose(candidates, 16, launch_bound);
  EXPECT_EQ(lever_name(fast.chosen), "recompute");
  EXPECT_NEAR(fast.candidates[0].step_seconds, 4.0 * (1.0 + 0.02), 1e-12);
  EXPECT_NEAR(fast.candidates[2].step_seconds, 1.0 + 0.08 * 4.0 / 3.0, 1e-12);
  EXPECT_NE(fast.reason.find("k 4 -> 1 for +33% FLOPs"), std::string::npos) << fast.reason;
  EXPECT_NE(fast.reason.find("x faster per step"), std::string::npos) << fast.reason;
  // A step of pure per-sample work: 4 x 2 = 8 s against 8 x 4/3 s. Recompute loses.
  const StepTimes compute_bound = timed({0.0, 0.0}, {1.0, 1.0});
  EXPECT_EQ(lever_name(choose(candidates, 16, compute_bound).chosen), "none");
  // Unmeasured: recompute is not taken for speed.
  EXPECT_EQ(lever_name(choose(candidates, 16).chosen), "none");
}

// Two ranks whose gradients travel during backward (NCCL) on a link of 1 us a step
// and 10 GB/s, in 4 buckets of 1 MB (fp32), launched in order as backward (2/3 of a
// micro-step) produces each quarter of them; the sharded step all-gathers 4 MB of fp32
// parameters after the optimizer. Hand-counted (Note [Alpha-beta collectives], two
// ranks): an all-reduce of S bytes takes 2 x 1 us + S / 10 GB/s, a reduce-scatter or
// all-gather 1 us + S / 20 GB/s.
StepTimes with_nccl_link(StepTimes t) {
  t.ranks = 2;
  t.link.link = Link{1e-6, 1e10};
  t.link.overlap = true;
  t.traffic.bucket_elements = {250000, 250000, 250000, 250000};
  t.traffic.wire_bytes = 4.0;
  t.traffic.gather_bytes = 4.0;
  return t;
}

TEST(MemoryLevers, ShardingThatLowersKIsTakenOnlyWhereTheMicroStepsItSavesOutweighItsAllGather) {
  // 24 on two ranks: 4 + 4 (k = 3) without sharding, 6 + 6 (k = 2) with it.
  const auto candidates = four({4, 4}, {6, 6}, {0, 0}, {0, 0});
  std::vector<LeverCandidate> planned = candidates;
  plan_candidates(planned, 24, kAuto);
  EXPECT_TRUE(needs_step_times(planned, 24, true));
  const double bucket_all_reduce = 2e-6 + 1e6 / 1e10;  // 102 us
  const double bucket_reduce_scatter = 1e-6 + 1e6 / 2e10;  // 51 us
  const double sums = 2e-6 + 64 / 1e10;               // the step's small all-reduce
  const double all_gather = 1e-6 + 4e6 / 2e10;        // 201 us
  // Pure per-sample work: a micro-step of b samples takes b ms. Three micro-steps of 4
  // cost what two of 6 do, so sharding saves nothing, and its all-gather shows. The
  // buckets hide behind backward (each is done before the next is ready, 102 us
  // against 667 us), except the last, which is ready as backward ends.
  const LeverChoice per_sample = choose(candidates, 24, with_nccl_link(timed({0.0, 0.0}, {1e-3, 1e-3})));
  EXPECT_NEAR(per_sample.candidates[0].step_seconds, 3 * 4e-3 + bucket_all_reduce + sums, 1e-12);
  EXPECT_NEAR(per_sample.candidates[1].step_seconds, 2 * 6e-3 + bucket_reduce_scatter + sums + all_gather, 1e-12);
  EXPECT_NEAR(per_sample.candidates[1].comm_seconds, bucket_reduce_scatter + sums + all_gather, 1e-12);
  EXPECT_EQ(lever_name(per_sample.chosen), "none");
  EXPECT_NE(per_sample.reason.find("no lever taken: shard would lower k 3 -> 2, but its predicted step is slower "
                                   "(12.25 ms against 12.10 ms)"),
            std::string::npos)
      << per_sample.reason;
  // A fixed 1 ms a micro-step (launches): sharding saves one, which outweighs its
  // all-gather.
  const LeverChoice launch_bound = choose(candidates, 24, with_nccl_link(timed({1e-3, 1e-3}, {1e-3, 1e-3})));
  EXPECT_NEAR(launch_bound.candidates[0].step_seconds, 3 * 5e-3 + bucket_all_reduce + sums, 1e-12);
  EXPECT_NEAR(launch_bound.candidates[1].step_seconds, 2 * 7e-3 + bucket_reduce_scatter + sums + all_gather, 1e-12);
  EXPECT_EQ(lever_name(launch_bound.chosen), "shard");
  EXPECT_NE(launch_bound.reason.find("k 3 -> 2 at no extra FLOPs and 0.15 ms more communication waited for: 1.06x "
                                     "faster per step (predicted)"),
            std::string::npos)
      << launch_bound.reason;
  // A fixed 0.3 ms: sharding is 1.2% faster (12.85 against 13.00 ms), under the 5% a
  // lever must win by.
  const LeverChoice close = choose(candidates, 24, with_nccl_link(timed({3e-4, 3e-4}, {1e-3, 1e-3})));
  EXPECT_EQ(lever_name(close.chosen), "none");
  EXPECT_NE(close.reason.find("no lever taken: shard would lower k 3 -> 2, but its predicted step is less than 5% "
                              "faster (12.85 ms against 13.00 ms)"),
            std::string::npos)
      << close.reason;
}

TEST(MemoryLevers, WithoutOverlapShardingThatLowersKIsNeverSlowerSoItIsTaken) {
  // Host MPI: every bucket travels after backward. The reduce-scatters and the one
  // all-gather move the all-reduces' bytes, in 4 + 1 steps of latency against 4 x 2:
  // 3 us less. With all the work per sample, the fewer micro-steps save nothing, and
  // sharding is still no slower; so it is taken, timed (as when recompute is in play)
  // or not.
  StepTimes host = with_nccl_link(timed({0.0, 0.0}, {1e-3, 1e-3}));
  host.link.overlap = false;
  std::vector<LeverCandidate> planned = four({4, 4}, {6, 6}, {0, 0}, {0, 0});
  plan_candidates(planned, 24, kAuto);
  EXPECT_FALSE(needs_step_times(planned, 24, false));
  const LeverChoice c = choose(four({4, 4}, {6, 6}, {0, 0}, {0, 0}), 24, host);
  const double sums = 2e-6 + 64 / 1e10;
  EXPECT_NEAR(c.candidates[0].comm_seconds, 4 * (2e-6 + 1e6 / 1e10) + sums, 1e-12);
  EXPECT_NEAR(c.candidates[1].comm_seconds, 4 * (1e-6 + 1e6 / 2e10) + sums + (1e-6 + 4e6 / 2e10), 1e-12);
  EXPECT_NEAR(c.candidates[0].step_seconds - c.candidates[1].step_seconds, 3e-6, 1e-12);
  EXPECT_EQ(lever_name(c.chosen), "shard");
  EXPECT_EQ(lever_name(choose(four({4, 4}, {6, 6}, {0, 0}, {0, 0}), 24).chosen), "shard") << "untimed";
  // Timed because recompute lowers k further (k 1), and recompute loses on its FLOPs:
  // sharding, not none, is what recompute had to beat.
  const LeverChoice r = choose(four({4, 4}, {6, 6}, {12, 12}, {12, 12}), 24, host);
  EXPECT_EQ(lever_name(r.chosen), "shard");
}

TEST(MemoryLevers, TheSlowestRankSetsThePredictedStep) {
  // Rank 1 is twice as slow per sample: each step waits for it.
  const StepTimes times = timed({0.5, 0.5}, {0.1, 0.2});
  const LeverChoice c = choose(four({2, 2}, {2, 2}, {8, 8}, {8, 8}), 16, times, 0.25);
  EXPECT_NEAR(c.candidates[0].step_seconds, 4.0 * (0.5 + 0.2 * 2.0), 1e-12);
  EXPECT_NEAR(c.candidates[2].step_seconds, 1.0 * (0.5 + 0.2 * 8.0 * 1.25), 1e-12);
}

TEST(MemoryLevers, AnAutomaticGlobalBatchTakesTheLargest) {
  const LeverChoice c = choose(four({4, 4}, {5, 5}, {9, 9}, {10, 10}), kAuto);
  EXPECT_EQ(lever_name(c.chosen), "shard + recompute");
  EXPECT_EQ(c.candidates[3].plan.global_batch, 20);
  EXPECT_NE(c.reason.find("global batch 8 -> 20"), std::string::npos) << c.reason;
  // Ties keep fewer levers.
  EXPECT_EQ(lever_name(choose(four({4, 4}, {4, 4}, {4, 4}, {4, 4}), kAuto).chosen), "none");
}

TEST(MemoryLevers, AFixedMicroBatchFitsWhereEveryRankHoldsIt) {
  const LeverChoice c = choose(four({5, 7}, {6, 8}, {9, 9}, {10, 10}), 24, {}, 0.3, /*micro_batch=*/6);
  EXPECT_FALSE(c.candidates[0].fits) << "rank 0 holds 5 < 6";
  EXPECT_EQ(lever_name(c.chosen), "shard");
  EXPECT_EQ(c.candidates[1].plan.accumulation_steps, 2);
}

TEST(MemoryLevers, WhenNothingFitsTheMostLeversAreChosenForThePlannerToReport) {
  const LeverChoice c = choose(four({0, 0}, {0, 0}, {0, 0}, {0, 3}), 16);
  EXPECT_EQ(lever_name(c.chosen), "shard + recompute");
  EXPECT_NE(c.reason.find("nothing fits"), std::string::npos) << c.reason;
}

}  // namespace
}  // namespace dtrain

namespace dtrain {
namespace {

// The plan of two ranks with a lever choice, as text (json false) or plan.json.
std::string plan_with(const LeverChoice& levers, bool json) {
  PlanOutcome o;
  o.plan.global_batch = 16;
  o.plan.accumulation_steps = 1;
  o.plan.micro_batch = {8, 8};
  o.ranks.resize(2);
  PlanSummary s{o, 0.1, 0.1, "none", 16, 10, 0};
  s.levers = &levers;
  s.optimizer_state_bytes_per_param = 8;
  return json ? plan_json(s) : plan_text(s);
}

TEST(MemoryLeversReport, ThePlanListsEveryCandidateTheOneTakenWhyAndTheShards) {
  std::vector<LeverCandidate> c = four({4, 4}, {8, 8}, {8, 8}, {12, 12});
  plan_candidates(c, 16, kAuto);
  LeverChoice levers = choose_levers(std::move(c), 16, timed({0.5, 0.5}, {0.25, 0.25}), 0.25);
  levers.shard_setting = "auto";
  levers.recompute_setting = "auto";
  levers.shards = {FlatRange{0, 1024}, FlatRange{1024, 1000}};
  const std::string text = plan_with(levers, false);
  EXPECT_NE(text.find("plan: memory levers (optimizer.shard auto, memory.recompute auto): shard; shard: micro-batch "
                      "4 + 4 -> 8 + 8 and k 2 -> 1 at no extra FLOPs: 1.20x faster per step (predicted)\n"),
            std::string::npos)
      << text;
  // none: 2 x (0.5 + 0.25 x 4) = 3 s; shard: 1 x (0.5 + 0.25 x 8) = 2.5 s.
  EXPECT_NE(text.find("plan:     none: up to 4 + 4 per micro-batch; micro-batch 4 + 4, k 2, global batch 16, "
                      "predicted 3000.00 ms per step\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("plan:   * shard: up to 8 + 8 per micro-batch; micro-batch 8 + 8, k 1, global batch 16, "
                      "predicted 2500.00 ms per step\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("plan:   rank 1 owns parameters [1024, 2024): 1000 (7.8 KiB of optimizer state)\n"),
            std::string::npos)
      << text;
  const std::string json = plan_with(levers, true);
  EXPECT_NE(json.find("\"levers\": {\"shard_setting\": \"auto\", \"recompute_setting\": \"auto\", \"chosen\": "
                      "\"shard\", \"shard\": true, \"recompute\": \"none\""),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("{\"name\": \"none\", \"capacity\": [4, 4], \"fits\": true, \"micro_batch\": [4, 4], "
                      "\"accumulation_steps\": 2, \"global_batch\": 16, \"predicted_step_s\": 3}"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"shards\": [{\"offset\": 0, \"count\": 1024}, {\"offset\": 1024, \"count\": 1000}]"),
            std::string::npos)
      << json;
}

TEST(MemoryLeversReport, ATimedChoiceShowsTheGradientLinkAndEachCandidatesCommunication) {
  std::vector<LeverCandidate> c = four({4, 4}, {6, 6}, {0, 0}, {0, 0});
  plan_candidates(c, 24, kAuto);
  StepTimes times = with_nccl_link(timed({1e-3, 1e-3}, {1e-3, 1e-3}));
  times.link.source = "measured by hand";
  LeverChoice levers = choose_levers(std::move(c), 24, times, 0.25);
  levers.shard_setting = "auto";
  levers.recompute_setting = "auto";
  const std::string text = plan_with(levers, false);
  EXPECT_NE(text.find("plan:   gradient link: 1.00 us a step, 10.000 GB/s, buckets overlap backward (measured by "
                      "hand)\n"),
            std::string::npos)
      << text;
  // The hand counts of ShardingThatLowersKIsTakenOnlyWhere...: none 15.104 ms, 0.104 of
  // it communication; shard 14.254 ms, 0.254 of it.
  EXPECT_NE(text.find("micro-batch 4 + 4, k 3, global batch 24, predicted 15.10 ms per step (0.10 ms of it "
                      "communication)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("micro-batch 6 + 6, k 2, global batch 24, predicted 14.25 ms per step (0.25 ms of it "
                      "communication)\n"),
            std::string::npos)
      << text;
  const std::string json = plan_with(levers, true);
  EXPECT_NE(json.find("\"gradient_link\": {\"latency_s\": 1e-06, \"bandwidth_Bps\": 10000000000, \"overlap\": true, "
                      "\"source\": \"measured by hand\"}"),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"predicted_step_s\": 0.0151040064, \"predicted_comm_s\": 0.0001040064}"), std::string::npos)
      << json;
}

}  // namespace
}  // namespace dtrain
