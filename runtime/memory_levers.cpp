#include "runtime/memory_levers.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <span>

#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "runtime/gradient_buckets.h"
#include "runtime/memory_probe.h"
#include "runtime/optimizer_shards.h"
#include "runtime/setup_agreement.h"

namespace dtrain {

namespace {

bool recomputes(const LeverSetting& s) { return s.recompute == Recompute::kBlocks; }

// How much faster a candidate with more levers must be predicted to be than one with
// fewer, to be taken (Note [Memory levers]): the timings it rests on move by a few
// percent between runs (more where ranks share cores), and a choice that flips
// between runs of the same job would change its plan.
constexpr double kLeverMargin = 0.05;

// The index of the fitting candidate that `better` prefers, scanning in preference
// order so that ties keep the earlier (fewer levers); -1 when none fits.
template <class Better>
int best_of(const std::vector<LeverCandidate>& c, Better better) {
  int best = -1;
  for (size_t i = 0; i < c.size(); ++i) {
    if (!c[i].fits) continue;
    if (best < 0 || better(c[i], c[static_cast<size_t>(best)])) best = static_cast<int>(i);
  }
  return best;
}

int best_k_where(const std::vector<LeverCandidate>& c, bool with_recompute) {
  int best = -1;
  for (size_t i = 0; i < c.size(); ++i) {
    if (!c[i].fits || recomputes(c[i].setting) != with_recompute) continue;
    if (best < 0 || c[i].plan.accumulation_steps < c[static_cast<size_t>(best)].plan.accumulation_steps) {
      best = static_cast<int>(i);
    }
  }
  return best;
}

// Fills the candidate's predicted step and its communication (Note [Memory levers]).
void predict_step(LeverCandidate& c, const StepTimes& t, double recompute_extra) {
  const double work = 1.0 + (recomputes(c.setting) ? recompute_extra : 0.0);
  double slowest = 0.0;
  for (size_t r = 0; r < c.plan.micro_batch.size(); ++r) {
    slowest = std::max(slowest, t.fixed_s[r] + t.per_sample_s[r] * static_cast<double>(c.plan.micro_batch[r]) * work);
  }
  c.comm_seconds = 0.0;
  if (t.ranks >= 2) {
    // One node of `ranks` ranks joined by the measured link.
    ClusterSpec link;
    link.ranks_per_node = link.devices_per_node = t.ranks;
    link.overlap = t.link.overlap;
    link.intra_node = link.inter_node = t.link.link;
    GradientTraffic traffic = t.traffic;
    traffic.shard = c.setting.shard;
    c.comm_seconds = step_communication(traffic, RankLayout{t.ranks, 1}, link, slowest).exposed_s;
  }
  c.step_seconds = static_cast<double>(c.plan.accumulation_steps) * slowest + c.comm_seconds;
}

std::string micro_list(const BatchPlan& p) {
  std::string out;
  for (size_t r = 0; r < p.micro_batch.size(); ++r) out += (r ? " + " : "") + std::to_string(p.micro_batch[r]);
  return out;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

// "shard: micro-batch 8 -> 24 and k 3 -> 1" against the setting without levers (or
// the best one without recompute), with the cost and the predicted speed-up.
std::string reason_for(const LeverChoice& c, int chosen, int base, int64_t global_batch) {
  const LeverCandidate& took = c.candidates[static_cast<size_t>(chosen)];
  if (chosen == 0) {
    if (c.candidates.size() == 1) return "nothing to choose: " + lever_name(took.setting) + " as configured";
    // A lever lowered k and lost on the predicted step.
    int fewer = -1;
    for (size_t i = 1; i < c.candidates.size(); ++i) {
      const LeverCandidate& k = c.candidates[i];
      if (k.fits && k.plan.accumulation_steps < took.plan.accumulation_steps &&
          (fewer < 0 || k.plan.accumulation_steps < c.candidates[static_cast<size_t>(fewer)].plan.accumulation_steps)) {
        fewer = static_cast<int>(i);
      }
    }
    if (fewer >= 0 && global_batch != kAuto) {
      const LeverCandidate& other = c.candidates[static_cast<size_t>(fewer)];
      std::string out = "no lever taken: " + lever_name(other.setting) + " would lower k " +
                        std::to_string(took.plan.accumulation_steps) + " -> " +
                        std::to_string(other.plan.accumulation_steps);
      if (other.step_seconds > 0 && took.step_seconds > 0) {
        out += other.step_seconds >= took.step_seconds ? ", but its predicted step is slower ("
                                                       : ", but its predicted step is less than " +
                                                             fmt("%.0f", 100.0 * kLeverMargin) + "% faster (";
        out += fmt("%.2f", 1e3 * other.step_seconds) + " ms against " + fmt("%.2f", 1e3 * took.step_seconds) + " ms)";
      } else {
        out += ", but not for speed unmeasured";
      }
      return out;
    }
    if (global_batch == kAuto) {
      return "no lever needed: " + lever_name(took.setting) + " plans global batch " +
             std::to_string(took.plan.global_batch) + ", which no lever raises";
    }
    return "no lever needed: " + lever_name(took.setting) + " plans micro-batch " + micro_list(took.plan) + " and k " +
           std::to_string(took.plan.accumulation_steps) + ", which no lever lowers";
  }
  if (base < 0) return lever_name(took.setting) + ": nothing fits without it";
  const LeverCandidate& from = c.candidates[static_cast<size_t>(base)];
  std::string out = lever_name(took.setting) + ": micro-batch " + micro_list(from.plan) + " -> " + micro_list(took.plan);
  if (global_batch == kAuto) {
    out += ", global batch " + std::to_string(from.plan.global_batch) + " -> " + std::to_string(took.plan.global_batch);
  } else {
    out += " and k " + std::to_string(from.plan.accumulation_steps) + " -> " + std::to_string(took.plan.accumulation_steps);
  }
  out += recomputes(took.setting) ? " for +" + fmt("%.0f", 100.0 * c.recompute_extra) + "% FLOPs"
                                  : " at no extra FLOPs";
  if (took.comm_seconds - from.comm_seconds >= 0.005e-3) {  // shows as 0.01 ms or more
    out += " and " + fmt("%.2f", 1e3 * (took.comm_seconds - from.comm_seconds)) + " ms more communication waited for";
  }
  if (took.step_seconds > 0 && from.step_seconds > 0) {
    out += ": " + fmt("%.2f", from.step_seconds / took.step_seconds) + "x faster per step (predicted)";
  }
  return out;
}

}  // namespace

std::string lever_name(const LeverSetting& s) {
  if (s.shard && recomputes(s)) return "shard + recompute";
  if (s.shard) return "shard";
  if (recomputes(s)) return "recompute";
  return "none";
}

std::vector<LeverSetting> lever_candidates(const Config& config, int world_size, bool can_recompute) {
  std::vector<bool> shard = {false, true};
  if (config.optimizer.shard == "false" || world_size < 2) shard = {false};
  if (config.optimizer.shard == "true" && world_size >= 2) shard = {true};
  std::vector<Recompute> recompute = {Recompute::kNone, Recompute::kBlocks};
  if (config.memory.recompute == "none" || !can_recompute) recompute = {Recompute::kNone};
  if (config.memory.recompute == "blocks") recompute = {Recompute::kBlocks};
  // Preference order: fewer levers first, sharding (no FLOPs) before recompute.
  std::vector<LeverSetting> out;
  for (Recompute r : recompute) {
    for (bool s : shard) out.push_back(LeverSetting{s, r});
  }
  return out;
}

void plan_candidates(std::vector<LeverCandidate>& candidates, int64_t global_batch, int64_t micro_batch) {
  for (LeverCandidate& c : candidates) {
    const int n = static_cast<int>(c.capacity.size());
    const int64_t least = *std::min_element(c.capacity.begin(), c.capacity.end());
    c.fits = false;
    try {
      if (micro_batch != kAuto) {
        if (least < micro_batch) continue;
        c.plan = make_uniform_plan(global_batch == kAuto ? micro_batch * n : global_batch, micro_batch, n, "");
      } else {
        if (least < 1) continue;
        c.plan = plan_from_capacities(c.capacity, global_batch, "");
      }
      c.fits = true;
    } catch (const ConfigError&) {
      // No plan for this global batch: the planner says why for the chosen setting.
    }
  }
}

bool needs_step_times(const std::vector<LeverCandidate>& candidates, int64_t global_batch, bool overlap) {
  if (global_batch == kAuto) return false;
  const int with = best_k_where(candidates, true), without = best_k_where(candidates, false);
  if (with >= 0 && without >= 0 &&
      candidates[static_cast<size_t>(with)].plan.accumulation_steps <
          candidates[static_cast<size_t>(without)].plan.accumulation_steps) {
    return true;  // recompute lowers k, for its FLOPs
  }
  if (!overlap) return false;
  // Overlapped buckets: sharding that lowers k pays an all-gather that nothing hides.
  int64_t k = 0;
  for (const LeverCandidate& c : candidates) {
    if (!c.fits) continue;
    if (k != 0 && c.plan.accumulation_steps != k) return true;
    k = c.plan.accumulation_steps;
  }
  return false;
}

LeverChoice choose_levers(std::vector<LeverCandidate> candidates, int64_t global_batch, const StepTimes& times,
                          double recompute_extra) {
  LeverChoice choice;
  choice.recompute_extra = recompute_extra;
  choice.times = times;
  if (!times.empty()) {
    for (LeverCandidate& c : candidates) {
      if (c.fits) predict_step(c, times, recompute_extra);
    }
  }
  choice.candidates = std::move(candidates);
  const std::vector<LeverCandidate>& c = choice.candidates;
  int chosen = -1;
  const int with = best_k_where(c, true), without = best_k_where(c, false);
  if (global_batch == kAuto) {
    chosen = best_of(c, [](const LeverCandidate& a, const LeverCandidate& b) {
      return a.plan.global_batch > b.plan.global_batch;
    });
  } else if (!times.empty()) {
    // Measured: the fastest predicted step, where more levers must win by a margin.
    // Without overlap, sharding that lowers k is never slower (fewer micro-steps, and
    // its collectives cost what the all-reduce does), so only the smallest k of each
    // side of recompute competes (Note [Memory levers]).
    const bool overlap = times.ranks >= 2 && times.link.overlap;
    auto eligible = [&](int i) { return overlap || i == with || i == without; };
    for (int i = 0; i < static_cast<int>(c.size()); ++i) {
      if (!c[static_cast<size_t>(i)].fits || !eligible(i)) continue;
      if (chosen < 0 || c[static_cast<size_t>(i)].step_seconds <
                            (1.0 - kLeverMargin) * c[static_cast<size_t>(chosen)].step_seconds) {
        chosen = i;
      }
    }
  } else {
    // Unmeasured: the smallest k without recompute; recompute only where nothing
    // fits without it.
    chosen = without >= 0 ? without : with;
  }
  if (chosen < 0) {
    choice.chosen = c.back().setting;
    choice.reason = "nothing fits, not even with " + lever_name(choice.chosen);
    return choice;
  }
  // What the choice is compared with: the best without recompute when recompute won
  // over it, else the first candidate (fewest levers); -1 when that does not fit.
  int base = c.front().fits ? 0 : -1;
  if (recomputes(c[static_cast<size_t>(chosen)].setting) && without >= 0) base = without;
  choice.chosen = c[static_cast<size_t>(chosen)].setting;
  choice.reason = reason_for(choice, chosen, base, global_batch);
  return choice;
}

LeverChoice choose_memory_levers(const Config& config, Model& model, int64_t optimizer_bytes_per_param, Context& ctx,
                                 const Dataset& train, Communicator& control, const PlannerInputs& inputs,
                                 Communicator* gradients) {
  const int n = control.size();
  const int rank = control.rank();
  const int64_t params = model.param_count();
  const std::vector<LeverSetting> settings = lever_candidates(config, n, model.can_recompute());

  // Every rank's budget, and so the shard ranges (Note [Shard ranges]).
  const TrainingBudget budget = training_budget(config, ctx, inputs);
  std::vector<int64_t> budgets(static_cast<size_t>(n));
  all_gather(control, std::span<const int64_t>(&budget.budget, 1), std::span<int64_t>(budgets))->wait();
  const std::vector<FlatRange> ranges = shard_ranges(params, budgets, kShardAlign);

  // This rank's capacity under each candidate, then everyone's.
  MemoryModel measured = memory_model_of(model, 0, ctx, train.layout(), config.eval.batch, config.comm.reduce_dtype);
  const int64_t most = std::max<int64_t>(1, train.size() / n);
  std::vector<int64_t> mine;
  for (const LeverSetting& s : settings) {
    MemoryModel m = measured;
    const int64_t owned = s.shard ? ranges[static_cast<size_t>(rank)].count : params;
    m.optimizer_bytes = optimizer_bytes_per_param * owned;
    // Note [Sharded master weights]: a bf16 model keeps its range of the fp32 masters.
    if (model.compute_type() == DType::kBF16) {
      m.params_bytes -= (params - owned) * static_cast<int64_t>(sizeof(float));
    }
    m.activation_bytes_per_sample = model.activation_bytes_per_sample_in(model.compute_type(), s.recompute);
    mine.push_back(largest_fitting_micro_batch(m, budget.budget, most));
  }
  std::vector<int64_t> all(settings.size() * static_cast<size_t>(n));
  all_gather(control, std::span<const int64_t>(mine), std::span<int64_t>(all))->wait();
  std::vector<LeverCandidate> candidates;
  for (size_t i = 0; i < settings.size(); ++i) {
    LeverCandidate c;
    c.setting = settings[i];
    for (int r = 0; r < n; ++r) c.capacity.push_back(all[static_cast<size_t>(r) * settings.size() + i]);
    candidates.push_back(std::move(c));
  }
  plan_candidates(candidates, config.train.global_batch, config.train.micro_batch);

  const double training_flops = static_cast<double>(std::max<int64_t>(1, model.training_flops_per_sample()));
  const double extra = static_cast<double>(model.recompute_flops_per_sample_in(Recompute::kBlocks)) / training_flops;
  StepTimes times;
  if (needs_step_times(candidates, config.train.global_batch,
                       gradients != nullptr && n >= 2 && buckets_overlap_backward(*gradients))) {
    // Timed where the choice is made: this rank's micro-batch of the best setting
    // without recompute (else of the first that fits), and a quarter of it.
    int timed = best_k_where(candidates, false);
    if (timed < 0) timed = best_of(candidates, [](const LeverCandidate&, const LeverCandidate&) { return false; });
    const LeverCandidate& timed_at = candidates[static_cast<size_t>(timed)];
    double mine_times[2] = {-1.0, -1.0};
    std::exception_ptr error;
    try {
      const StepTimeLine line =
          time_step_line(model, ctx, train, timed_at.plan.micro_batch[static_cast<size_t>(rank)], 2);
      mine_times[0] = line.fixed_s;
      mine_times[1] = line.per_sample_s;
    } catch (const OutOfMemoryError&) {
      // Unmeasured on this rank: no rank predicts, and recompute is not taken for speed.
    } catch (...) {
      error = std::current_exception();
    }
    model.release_activations();
    ctx.release_workspace();
    // Any other failure ends every rank alike, none left in the gather below.
    agree_on_setup(control, error);
    std::vector<double> gathered(2 * static_cast<size_t>(n));
    all_gather(control, std::span<const double>(mine_times, 2), std::span<double>(gathered))->wait();
    bool all_measured = true;
    for (int r = 0; r < n; ++r) {
      times.fixed_s.push_back(gathered[2 * static_cast<size_t>(r)]);
      times.per_sample_s.push_back(gathered[2 * static_cast<size_t>(r) + 1]);
      all_measured = all_measured && times.per_sample_s.back() >= 0;
    }
    if (!all_measured) {
      times = StepTimes{};
    } else if (gradients != nullptr && n >= 2) {
      // The gradients' traffic as the trainer sends it, over the link it sends it on.
      int64_t largest = 1;
      for (const GradientBucket& b :
           assign_gradient_buckets(gradient_layer_ranges(model), bucket_cap_elements(config.comm.bucket_mb))) {
        times.traffic.bucket_elements.push_back(b.count);
        largest = std::max(largest, b.count);
      }
      times.traffic.wire_bytes = config.comm.reduce_dtype == "bf16" ? 2.0 : 4.0;
      // A sharded bf16 model all-gathers its bf16 copy (Note [Sharded master weights]).
      times.traffic.gather_bytes = model.compute_type() == DType::kBF16 ? 2.0 : 4.0;
      times.link = probe_gradient_link(*gradients, control, ctx, model.grads(), params, largest);
      times.ranks = n;
    }
  }
  LeverChoice choice = choose_levers(std::move(candidates), config.train.global_batch, times, extra);
  choice.shard_setting = config.optimizer.shard;
  choice.recompute_setting = config.memory.recompute;
  if (choice.chosen.shard) choice.shards = ranges;
  if (config.optimizer.shard == "true" && n < 2) {
    choice.notes.push_back("optimizer.shard: true on one rank shards nothing (one rank owns all the state)");
  }
  return choice;
}

}  // namespace dtrain
