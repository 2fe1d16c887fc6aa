#include "runtime/plan_report.h"

#include <sstream>

#include "runtime/byte_size.h"

namespace dtrain {

namespace {

int64_t category(const MemoryEstimate& e, MemoryCategory c) { return e.by_category[static_cast<size_t>(c)]; }

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string plan_text(const PlanSummary& s) {
  const BatchPlan& plan = s.outcome.plan;
  std::ostringstream out;
  out << "plan: global batch " << plan.global_batch << " = " << plan.accumulation_steps << " accumulation step(s) x (";
  for (int r = 0; r < plan.world_size(); ++r) out << (r ? " + " : "") << plan.micro_batch[static_cast<size_t>(r)];
  out << ") micro-batch(es) on " << plan.world_size() << " rank(s); " << s.steps_per_epoch << " steps per epoch\n";
  out << "plan: learning rate " << s.effective_lr;
  if (s.lr_scaling != "none") {
    out << " (optimizer.lr " << s.base_lr << " scaled " << s.lr_scaling << " from base batch " << s.base_batch << ")";
  }
  if (s.warmup_steps > 0) out << ", warmup " << s.warmup_steps << " steps";
  out << "\n";
  for (size_t r = 0; r < s.outcome.ranks.size(); ++r) {
    const RankPlanReport& k = s.outcome.ranks[r];
    out << "plan: rank " << r << " " << k.device << ": memory " << format_bytes(double(k.memory.total)) << " total, "
        << format_bytes(double(k.memory.free)) << " free, limit "
        << (k.memory.limit ? format_bytes(double(k.memory.limit)) : std::string("none")) << "; budget "
        << format_bytes(double(k.budget_bytes)) << "\n";
    out << "plan:   micro-batch " << k.micro_batch << " (up to " << k.capacity << " fit); predicted peak "
        << format_bytes(double(k.predicted.total())) << " = parameters "
        << format_bytes(double(category(k.predicted, MemoryCategory::Params))) << " + gradients "
        << format_bytes(double(category(k.predicted, MemoryCategory::Grads))) << " + optimizer "
        << format_bytes(double(category(k.predicted, MemoryCategory::Optimizer))) << " + activations "
        << format_bytes(double(category(k.predicted, MemoryCategory::Activations))) << " + workspace "
        << format_bytes(double(category(k.predicted, MemoryCategory::Workspace))) << "; probe step peak "
        << format_bytes(double(k.probe_peak_bytes)) << " in use, " << format_bytes(double(k.probe_peak_reserved_bytes))
        << " reserved (" << k.probes << " probe step(s))\n";
  }
  return out.str();
}

std::string plan_json(const PlanSummary& s) {
  const BatchPlan& plan = s.outcome.plan;
  std::ostringstream out;
  out.precision(12);
  out << "{\n  \"global_batch\": " << plan.global_batch << ",\n  \"accumulation_steps\": " << plan.accumulation_steps
      << ",\n  \"world_size\": " << plan.world_size() << ",\n  \"steps_per_epoch\": " << s.steps_per_epoch
      << ",\n  \"lr\": " << s.base_lr << ",\n  \"effective_lr\": " << s.effective_lr
      << ",\n  \"lr_scaling\": " << json_string(s.lr_scaling) << ",\n  \"base_batch\": " << s.base_batch
      << ",\n  \"warmup_steps\": " << s.warmup_steps << ",\n  \"ranks\": [";
  for (size_t r = 0; r < s.outcome.ranks.size(); ++r) {
    const RankPlanReport& k = s.outcome.ranks[r];
    out << (r ? "," : "") << "\n    {\"rank\": " << r << ", \"device\": " << json_string(k.device)
        << ", \"memory_total\": " << k.memory.total << ", \"memory_free\": " << k.memory.free
        << ", \"memory_limit\": " << k.memory.limit << ", \"memory_available\": " << k.memory.available
        << ", \"budget\": " << k.budget_bytes << ", \"capacity\": " << k.capacity
        << ", \"micro_batch\": " << k.micro_batch << ", \"predicted\": {";
    for (int c = 0; c < kMemoryCategories; ++c) {
      out << (c ? ", " : "") << json_string(memory_category_name(static_cast<MemoryCategory>(c))) << ": "
          << k.predicted.by_category[static_cast<size_t>(c)];
    }
    out << "}, \"predicted_peak\": " << k.predicted.total() << ", \"probe_peak\": " << k.probe_peak_bytes
        << ", \"probe_peak_reserved\": " << k.probe_peak_reserved_bytes
        << ", \"probes\": " << k.probes << "}";
  }
  out << "\n  ]\n}\n";
  return out.str();
}

}  // namespace dtrain
