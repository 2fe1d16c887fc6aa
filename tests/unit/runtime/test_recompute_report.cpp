// The plan says what activation recomputation (memory.recompute) does: the bytes per
// sample it saves and the FLOPs it adds, in the text and in plan.json; nothing in the
// text for a model without blocks.
#include <gtest/gtest.h>

#include <string>

#include "runtime/plan_report.h"

namespace dtrain {
namespace {

// The plan of one rank, as text (json false) or plan.json, with `recompute`.
std::string plan_with(const RecomputeReport& recompute, bool json) {
  PlanOutcome o;
  o.plan.global_batch = 8;
  o.plan.accumulation_steps = 1;
  o.plan.micro_batch = {8};
  o.ranks.resize(1);
  PlanSummary s{o, 0.1, 0.1, "none", 8, 10, 0};
  s.recompute = recompute;
  return json ? plan_json(s) : plan_text(s);
}

// 3 MiB per sample kept, 1 MiB with recompute; recompute adds 100 FLOPs to 400.
RecomputeReport gpt_report(const std::string& setting) {
  RecomputeReport r;
  r.available = true;
  r.setting = setting;
  r.bytes_per_sample_none = 3 << 20;
  r.bytes_per_sample_blocks = 1 << 20;
  r.flops_per_sample_blocks = 100;
  r.training_flops_per_sample = 400;
  return r;
}

TEST(RecomputeReport, PlanSaysWhatRecomputeSavesAndCosts) {
  const std::string text = plan_with(gpt_report("blocks"), false);
  EXPECT_NE(text.find("plan: recompute: blocks (each block keeps its input and recomputes its forward in backward): "
                      "activations 1.0 MiB per sample instead of 3.0 MiB (saves 2.0 MiB), for +25% FLOPs per step "
                      "(not counted in the throughput)\n"),
            std::string::npos)
      << text;
  const std::string json = plan_with(gpt_report("blocks"), true);
  EXPECT_NE(json.find("\"recompute\": {\"setting\": \"blocks\", \"available\": true, "
                      "\"activation_bytes_per_sample_none\": 3145728, \"activation_bytes_per_sample_blocks\": 1048576, "
                      "\"flops_per_sample_blocks\": 100, \"training_flops_per_sample\": 400}"),
            std::string::npos)
      << json;
}

TEST(RecomputeReport, PlanWithoutRecomputeSaysWhatItWouldSave) {
  const std::string text = plan_with(gpt_report("none"), false);
  EXPECT_NE(text.find("plan: recompute: none (memory.recompute: blocks would keep 1.0 MiB of activations per sample "
                      "instead of 3.0 MiB, for +25% FLOPs per step)\n"),
            std::string::npos)
      << text;
}

TEST(RecomputeReport, AModelWithoutBlocksGetsNoLine) {
  EXPECT_EQ(plan_with(RecomputeReport{}, false).find("recompute"), std::string::npos);
  EXPECT_NE(plan_with(RecomputeReport{}, true).find("\"recompute\": {\"setting\": \"none\", \"available\": false"),
            std::string::npos);
}

}  // namespace
}  // namespace dtrain
