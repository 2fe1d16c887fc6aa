#include "runtime/plan_report.h"

#include <algorithm>
#include <array>
#include <map>
#include <sstream>
#include <utility>

#include "runtime/byte_size.h"
#include "runtime/json_string.h"

namespace dtrain {

namespace {

int64_t category(const MemoryEstimate& e, MemoryCategory c) { return e.by_category[static_cast<size_t>(c)]; }

constexpr std::array<const char*, 3> kPassNames = {"forward pass", "input gradient", "parameter gradient"};

// The passes that are not deterministic, in kPassNames' order.
std::vector<size_t> nondeterministic_passes(const PassDeterminism& d) {
  std::vector<size_t> out;
  if (!d.forward) out.push_back(0);
  if (!d.input_gradient) out.push_back(1);
  if (!d.param_gradient) out.push_back(2);
  return out;
}

// "a", "a and b", "a, b and c".
std::string join_list(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += i + 1 == items.size() ? " and " : ", ";
    out += items[i];
  }
  return out;
}

// One line on activation recomputation, or none for a model without blocks: the
// bytes it saves per sample and the FLOPs it adds, said both when it is on and when a
// user could turn it on.
std::string recompute_line(const RecomputeReport& r) {
  if (!r.available) return "";
  const int64_t none = r.bytes_per_sample_none, blocks = r.bytes_per_sample_blocks;
  const double extra = 100.0 * static_cast<double>(r.flops_per_sample_blocks) /
                       static_cast<double>(std::max<int64_t>(1, r.training_flops_per_sample));
  std::ostringstream out;
  out.precision(3);
  out << "plan: recompute: " << r.setting;
  if (r.setting == "blocks") {
    out << " (each block keeps its input and recomputes its forward in backward): activations "
        << format_bytes(double(blocks)) << " per sample instead of " << format_bytes(double(none)) << " (saves "
        << format_bytes(double(none - blocks)) << "), for +" << extra
        << "% FLOPs per step (not counted in the throughput)";
  } else {
    out << " (memory.recompute: blocks would keep " << format_bytes(double(blocks)) << " of activations per sample "
        << "instead of " << format_bytes(double(none)) << ", for +" << extra << "% FLOPs per step)";
  }
  return out.str() + "\n";
}

std::string fixed(double v, int digits) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(digits);
  out << v;
  return out.str();
}

std::string joined(const std::vector<int64_t>& v, const char* sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) out += (i ? sep : "") + std::to_string(v[i]);
  return out;
}

// The levers' lines: every candidate, the one taken and why, and the shard ranges.
std::string levers_text(const LeverChoice& c, int64_t params_state_bytes_per_param) {
  std::ostringstream out;
  out << "plan: memory levers (optimizer.shard " << c.shard_setting << ", memory.recompute " << c.recompute_setting
      << "): " << lever_name(c.chosen) << "; " << c.reason << "\n";
  if (c.candidates.size() > 1) {
    for (const LeverCandidate& k : c.candidates) {
      out << "plan:   " << (lever_name(k.setting) == lever_name(c.chosen) ? "* " : "  ") << lever_name(k.setting)
          << ": up to " << joined(k.capacity, " + ") << " per micro-batch; ";
      if (!k.fits) {
        out << "no plan fits\n";
        continue;
      }
      out << "micro-batch " << joined(k.plan.micro_batch, " + ") << ", k " << k.plan.accumulation_steps
          << ", global batch " << k.plan.global_batch;
      if (k.step_seconds > 0) {
        out << ", predicted " << fixed(1e3 * k.step_seconds, 2) << " ms per step";
        if (c.times.ranks >= 2) out << " (" << fixed(1e3 * k.comm_seconds, 2) << " ms of it communication)";
      }
      out << "\n";
    }
  }
  if (!c.times.empty()) {
    out << "plan:   measured forward and backward:";
    for (size_t r = 0; r < c.times.fixed_s.size(); ++r) {
      out << (r ? ";" : "") << " rank " << r << " " << fixed(1e3 * c.times.fixed_s[r], 2) << " ms + "
          << fixed(1e3 * c.times.per_sample_s[r], 2) << " ms per sample";
    }
    out << "\n";
    if (c.times.ranks >= 2) {
      const LinkProbe& l = c.times.link;
      out << "plan:   gradient link: " << fixed(1e6 * l.link.latency_s, 2) << " us a step, "
          << fixed(l.link.bandwidth_Bps / 1e9, 3) << " GB/s, buckets "
          << (l.overlap ? "overlap backward" : "travel after backward") << " (" << l.source << ")\n";
    }
  }
  for (size_t r = 0; r < c.shards.size(); ++r) {
    out << "plan:   rank " << r << " owns parameters [" << c.shards[r].offset << ", "
        << c.shards[r].offset + c.shards[r].count << "): " << c.shards[r].count << " ("
        << format_bytes(double(c.shards[r].count * params_state_bytes_per_param)) << " of optimizer state)\n";
  }
  for (const std::string& note : c.notes) out << "plan: note: " << note << "\n";
  return out.str();
}

}  // namespace

std::vector<std::string> determinism_notes(const PlanOutcome& outcome) {
  // layer -> (name, the ranks of each pass)
  std::map<int, std::pair<std::string, std::array<std::vector<size_t>, 3>>> layers;
  for (size_t r = 0; r < outcome.ranks.size(); ++r) {
    for (const NondeterministicLayer& l : outcome.ranks[r].nondeterministic) {
      auto& entry = layers[l.layer];
      entry.first = l.name;
      for (size_t pass : nondeterministic_passes(l.passes)) entry.second[pass].push_back(r);
    }
  }
  std::vector<std::string> notes;
  if (outcome.gemm_algorithms_timed) {
    notes.push_back("precision.gemm_autotune: each process times the GEMMs' algorithms and may keep others than "
                    "a resumed run does; resume matches within float rounding, not bit for bit");
  }
  // A run of consecutive layers with the same passes on the same ranks (a GPT's blocks)
  // is one sentence: "layers 0 to 11 (transformer.h.0 to transformer.h.11): ...".
  struct Run {
    int first, last;
    std::string first_name, last_name, passes;
  };
  std::vector<Run> runs;
  for (const auto& [layer, entry] : layers) {
    std::vector<std::string> parts;
    for (size_t pass = 0; pass < kPassNames.size(); ++pass) {
      const std::vector<size_t>& ranks = entry.second[pass];
      if (ranks.empty()) continue;
      std::string part = std::string("the ") + kPassNames[pass] + (ranks.size() == 1 ? " on rank " : " on ranks ");
      for (size_t i = 0; i < ranks.size(); ++i) part += (i ? ", " : "") + std::to_string(ranks[i]);
      parts.push_back(part);
    }
    const std::string passes = join_list(parts);
    if (!runs.empty() && runs.back().last + 1 == layer && runs.back().passes == passes) {
      runs.back().last = layer;
      runs.back().last_name = entry.first;
    } else {
      runs.push_back(Run{layer, layer, entry.first, entry.first, passes});
    }
  }
  const std::string cause = outcome.deterministic_preferred ? "" : " (precision.deterministic: false)";
  for (const Run& run : runs) {
    const std::string where = run.first == run.last ? "layer " + std::to_string(run.first) + " " + run.first_name
                                                    : "layers " + std::to_string(run.first) + " to " +
                                                          std::to_string(run.last) + " (" + run.first_name + " to " +
                                                          run.last_name + ")";
    notes.push_back(where + ": a non-deterministic algorithm" + cause + " for " + run.passes +
                    "; resume matches within float rounding, not bit for bit");
  }
  return notes;
}

std::string plan_text(const PlanSummary& s) {
  const BatchPlan& plan = s.outcome.plan;
  std::ostringstream out;
  out << "plan: global batch " << plan.global_batch << " = " << plan.accumulation_steps << " accumulation step(s) x (";
  for (int r = 0; r < plan.world_size(); ++r) out << (r ? " + " : "") << plan.micro_batch[static_cast<size_t>(r)];
  out << ") micro-batch(es) on " << plan.world_size() << " rank(s); " << s.steps_per_epoch << " steps per epoch\n";
  out << "plan: learning rate " << s.effective_lr;
  if (s.lr_scaling != "none") {
    out << " (optimizer.lr " << s.base_lr << " scaled " << s.lr_scaling << " from base batch " << s.base_batch;
    if (s.max_lr > 0.0) out << ", capped at optimizer.max_lr " << s.max_lr;
    out << ")";
  }
  if (s.warmup_steps > 0) out << ", warmup " << s.warmup_steps << " steps";
  out << "\n";
  out << "plan: precision: " << s.compute << " compute";
  if (s.compute == "bf16") out << " (bf16 activations and GEMM inputs, fp32 master weights and optimizer state)";
  out << "; gradients reduced in " << s.reduce_dtype;
  if (s.reduce_dtype == "bf16") out << " (half the bytes of fp32 on the wire)";
  out << "\n";
  out << recompute_line(s.recompute);
  if (s.levers != nullptr) out << levers_text(*s.levers, s.optimizer_state_bytes_per_param);
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
    if (k.fp32_capacity >= 0) {
      out << "plan:   bf16 fits up to " << k.capacity << " per micro-batch in this budget; fp32 would fit "
          << k.fp32_capacity << " (memory model)\n";
    }
  }
  for (const std::string& note : determinism_notes(s.outcome)) out << "plan: " << note << "\n";
  return out.str();
}

std::string plan_json(const PlanSummary& s) {
  const BatchPlan& plan = s.outcome.plan;
  std::ostringstream out;
  out.precision(12);
  out << "{\n  \"global_batch\": " << plan.global_batch << ",\n  \"accumulation_steps\": " << plan.accumulation_steps
      << ",\n  \"world_size\": " << plan.world_size() << ",\n  \"steps_per_epoch\": " << s.steps_per_epoch
      << ",\n  \"lr\": " << s.base_lr << ",\n  \"effective_lr\": " << s.effective_lr
      << ",\n  \"lr_scaling\": " << json_string(s.lr_scaling) << ",\n  \"base_batch\": " << s.base_batch << ",\n  \"max_lr\": " << s.max_lr
      << ",\n  \"warmup_steps\": " << s.warmup_steps << ",\n  \"compute\": " << json_string(s.compute)
      << ",\n  \"reduce_dtype\": " << json_string(s.reduce_dtype);
  const RecomputeReport& r = s.recompute;
  out << ",\n  \"recompute\": {\"setting\": " << json_string(r.setting)
      << ", \"available\": " << (r.available ? "true" : "false")
      << ", \"activation_bytes_per_sample_none\": " << r.bytes_per_sample_none
      << ", \"activation_bytes_per_sample_blocks\": " << r.bytes_per_sample_blocks
      << ", \"flops_per_sample_blocks\": " << r.flops_per_sample_blocks
      << ", \"training_flops_per_sample\": " << r.training_flops_per_sample << "}";
  if (s.levers != nullptr) {
    const LeverChoice& c = *s.levers;
    out << ",\n  \"levers\": {\"shard_setting\": " << json_string(c.shard_setting)
        << ", \"recompute_setting\": " << json_string(c.recompute_setting)
        << ", \"chosen\": " << json_string(lever_name(c.chosen)) << ", \"shard\": " << (c.chosen.shard ? "true" : "false")
        << ", \"recompute\": " << json_string(c.chosen.recompute == Recompute::kBlocks ? "blocks" : "none")
        << ", \"reason\": " << json_string(c.reason) << ", \"recompute_extra_flops\": " << c.recompute_extra
        << ", \"notes\": [";
    for (size_t i = 0; i < c.notes.size(); ++i) out << (i ? ", " : "") << json_string(c.notes[i]);
    out << "], \"step_times\": [";
    for (size_t r = 0; r < c.times.fixed_s.size(); ++r) {
      out << (r ? ", " : "") << "{\"fixed_s\": " << c.times.fixed_s[r] << ", \"per_sample_s\": " << c.times.per_sample_s[r]
          << "}";
    }
    out << "]";
    if (c.times.ranks >= 2) {
      const LinkProbe& l = c.times.link;
      out << ", \"gradient_link\": {\"latency_s\": " << l.link.latency_s << ", \"bandwidth_Bps\": "
          << l.link.bandwidth_Bps << ", \"overlap\": " << (l.overlap ? "true" : "false")
          << ", \"source\": " << json_string(l.source) << "}";
    }
    out << ", \"candidates\": [";
    for (size_t i = 0; i < c.candidates.size(); ++i) {
      const LeverCandidate& k = c.candidates[i];
      out << (i ? ", " : "") << "{\"name\": " << json_string(lever_name(k.setting))
          << ", \"capacity\": [" << joined(k.capacity, ", ") << "], \"fits\": " << (k.fits ? "true" : "false");
      if (k.fits) {
        out << ", \"micro_batch\": [" << joined(k.plan.micro_batch, ", ") << "], \"accumulation_steps\": "
            << k.plan.accumulation_steps << ", \"global_batch\": " << k.plan.global_batch;
      }
      if (k.step_seconds > 0) {
        out << ", \"predicted_step_s\": " << k.step_seconds;
        if (c.times.ranks >= 2) out << ", \"predicted_comm_s\": " << k.comm_seconds;
      }
      out << "}";
    }
    out << "], \"shards\": [";
    for (size_t r = 0; r < c.shards.size(); ++r) {
      out << (r ? ", " : "") << "{\"offset\": " << c.shards[r].offset << ", \"count\": " << c.shards[r].count << "}";
    }
    out << "]}";
  }
  const std::vector<std::string> notes = determinism_notes(s.outcome);
  out << ",\n  \"bit_exact_resume\": " << (notes.empty() ? "true" : "false") << ",\n  \"determinism_notes\": [";
  for (size_t i = 0; i < notes.size(); ++i) out << (i ? ", " : "") << json_string(notes[i]);
  out << "],\n  \"ranks\": [";
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
        << ", \"probes\": " << k.probes << ", \"fp32_capacity\": " << k.fp32_capacity << ", \"nondeterministic\": [";
    for (size_t i = 0; i < k.nondeterministic.size(); ++i) {
      const NondeterministicLayer& l = k.nondeterministic[i];
      out << (i ? ", " : "") << "{\"layer\": " << l.layer << ", \"name\": " << json_string(l.name) << ", \"passes\": [";
      const std::vector<size_t> passes = nondeterministic_passes(l.passes);
      for (size_t p = 0; p < passes.size(); ++p) out << (p ? ", " : "") << json_string(kPassNames[passes[p]]);
      out << "]}";
    }
    out << "]}";
  }
  out << "\n  ]\n}\n";
  return out.str();
}

}  // namespace dtrain
