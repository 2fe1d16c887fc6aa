#include "runtime/batch_planner.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <span>
#include <sstream>

#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "runtime/byte_size.h"
#include "runtime/device_batch.h"
#include "runtime/gradient_wire.h"
#include "runtime/memory_probe.h"
#include "runtime/setup_agreement.h"
#include "runtime/step_buffers.h"

namespace dtrain {

namespace {

// The most rounds of plan-and-probe before giving up: each failed round lowers a
// capacity by 10%, so 200 rounds cover any real batch.
constexpr int kMaxRounds = 200;
constexpr size_t kDeviceNameBytes = 64;

// One rank's state in a planning round, gathered as int64s.
struct RoundRecord {
  int64_t capacity;      // samples; 0: nothing fits
  int64_t budget;        // bytes
  int64_t free_bytes;    // what the budget is a fraction of
  int64_t need_at_one;   // predicted bytes at micro-batch 1
  int64_t failed_micro;  // the micro-batch whose probe did not fit; 0: none
};
constexpr size_t kRoundFields = sizeof(RoundRecord) / sizeof(int64_t);

std::vector<RoundRecord> gather_records(Communicator& control, const RoundRecord& mine) {
  std::vector<int64_t> all(static_cast<size_t>(control.size()) * kRoundFields);
  all_gather(control, std::span<const int64_t>(&mine.capacity, kRoundFields), std::span<int64_t>(all))->wait();
  std::vector<RoundRecord> records(static_cast<size_t>(control.size()));
  std::memcpy(records.data(), all.data(), all.size() * sizeof(int64_t));
  return records;
}

std::vector<std::string> gather_device_names(Communicator& control, const std::string& mine) {
  std::array<uint8_t, kDeviceNameBytes> name{};
  std::memcpy(name.data(), mine.data(), std::min(mine.size(), kDeviceNameBytes - 1));
  std::vector<uint8_t> all(static_cast<size_t>(control.size()) * kDeviceNameBytes);
  all_gather(control, std::span<const uint8_t>(name), std::span<uint8_t>(all))->wait();
  std::vector<std::string> names;
  for (int r = 0; r < control.size(); ++r) {
    names.emplace_back(reinterpret_cast<const char*>(all.data() + static_cast<size_t>(r) * kDeviceNameBytes));
  }
  return names;
}

std::string breakdown(const MemoryEstimate& e) {
  auto at = [&](MemoryCategory c) { return format_bytes(double(e.by_category[static_cast<size_t>(c)])); };
  return "parameters " + at(MemoryCategory::Params) + ", gradients " + at(MemoryCategory::Grads) +
         ", optimizer " + at(MemoryCategory::Optimizer) + ", activations " + at(MemoryCategory::Activations) +
         ", workspace " + at(MemoryCategory::Workspace);
}

// Every rank throws the same error from the same gathered records; rank 0 says it.
template <class E>
[[noreturn]] void throw_agreed(E e, const Communicator& control) {
  e.set_agreed(control.rank() == 0);
  throw e;
}

void check_every_rank_fits(const std::vector<RoundRecord>& records, const std::vector<std::string>& devices,
                           const Config& config, const MemoryModel& model, const Communicator& control) {
  for (size_t r = 0; r < records.size(); ++r) {
    const RoundRecord& rec = records[r];
    if (rec.capacity > 0) continue;
    std::ostringstream msg;
    msg << "rank " << r << " (" << devices[r] << "): ";
    if (config.train.micro_batch != kAuto) {
      msg << config.where("train.micro_batch") << ": train.micro_batch = " << config.train.micro_batch
          << " does not fit: the probe step ran out of memory (memory.fraction " << config.memory.fraction
          << " of " << format_bytes(double(rec.free_bytes)) << " free is " << format_bytes(double(rec.budget))
          << "); lower train.micro_batch or set it to auto";
    } else {
      msg << "the model does not fit even at micro-batch 1: it needs about "
          << format_bytes(double(rec.need_at_one)) << " (" << breakdown(model.predict(1)) << ")";
      if (rec.failed_micro > 0) {
        msg << ", and the probe step at micro-batch " << rec.failed_micro
            << " did not fit (out of memory, or more reserved than the budget)";
      }
      msg << ", but memory.fraction " << config.memory.fraction << " of its "
          << format_bytes(double(rec.free_bytes)) << " free memory is " << format_bytes(double(rec.budget))
          << ". Use a device with more memory or a smaller model, or raise memory.limit or memory.fraction";
    }
    throw_agreed(OutOfMemoryError(msg.str()), control);
  }
}

BatchPlan plan_of(const Config& config, const std::vector<RoundRecord>& records, const Communicator& control) {
  const int n = control.size();
  const std::string where = config.where("train.global_batch");
  try {
    if (config.train.micro_batch != kAuto) {
      if (config.train.global_batch == kAuto) {
        return make_uniform_plan(config.train.micro_batch * n, config.train.micro_batch, n, where);
      }
      return make_uniform_plan(config.train.global_batch, config.train.micro_batch, n, where);
    }
    std::vector<int64_t> capacity;
    for (const RoundRecord& r : records) capacity.push_back(r.capacity);
    return plan_from_capacities(capacity, config.train.global_batch, where);
  } catch (ConfigError& e) {
    throw_agreed(std::move(e), control);
  }
}

// Three bits per layer for the gather: set where a pass is not deterministic.
int64_t nondeterminism_bits(const PassDeterminism& d) {
  return (d.forward ? 0 : 1) | (d.input_gradient ? 0 : 2) | (d.param_gradient ? 0 : 4);
}

std::vector<NondeterministicLayer> nondeterministic_layers(const std::vector<PartDeterminism>& parts,
                                                          const int64_t* bits) {
  std::vector<NondeterministicLayer> out;
  for (size_t i = 0; i < parts.size(); ++i) {
    const int64_t b = bits[i];
    if (b == 0) continue;
    out.push_back({static_cast<int>(i), parts[i].name, PassDeterminism{(b & 1) == 0, (b & 2) == 0, (b & 4) == 0}});
  }
  return out;
}

}  // namespace

MemoryModel memory_model_of(Model& model, int64_t optimizer_bytes, Context& ctx, const SampleLayout& layout,
                            int64_t eval_batch, const std::string& reduce_dtype) {
  model.release_activations();
  ctx.release_workspace();
  MemoryModel m;
  const int64_t params = model.param_count();
  m.params_bytes = model.param_bytes();
  m.grads_bytes = params * static_cast<int64_t>(sizeof(float));
  m.optimizer_bytes = optimizer_bytes;
  m.reduce_staging_bytes = gradient_wire_staging_bytes(reduce_dtype, params);
  const auto in_use = static_cast<int64_t>(ctx.allocator().stats().in_use);
  m.library_workspace_bytes = std::max<int64_t>(
      0, in_use - m.params_bytes - m.grads_bytes - m.reduce_staging_bytes - m.optimizer_bytes);
  m.activation_bytes_per_sample = model.activation_bytes_per_sample();
  m.batch_bytes_per_sample = StepBuffers::bytes_per_sample(layout);
  m.eval_bytes_per_sample = DeviceBatch::bytes_per_sample(layout);
  m.eval_batch = eval_batch;
  m.fixed_workspace_bytes = (int64_t{kStepStats} + int64_t{kModelStats}) * static_cast<int64_t>(sizeof(double));
  // The context keeps one workspace, grown to the largest request (the model's ops and loss).
  m.workspace_bytes = [&model](int64_t b) { return static_cast<int64_t>(model.workspace_bytes(b)); };
  return m;
}

MemoryModel memory_model_in(const MemoryModel& measured, const Model& model, DType compute) {
  MemoryModel m = measured;
  m.params_bytes = model.param_bytes_in(compute);
  m.activation_bytes_per_sample = model.activation_bytes_per_sample_in(compute, model.recompute());
  m.workspace_bytes = [&model, compute](int64_t b) { return static_cast<int64_t>(model.workspace_bytes_in(b, compute)); };
  return m;
}

TrainingBudget training_budget(const Config& config, Context& ctx, const PlannerInputs& inputs) {
  // Emptied, the cache is part of neither: held is the live buffers' blocks, and
  // available counts its bytes as free.
  ctx.allocator().empty_cache();
  const auto held = static_cast<int64_t>(ctx.allocator().stats().reserved);
  const int64_t share = static_cast<int64_t>(inputs.device.available) / std::max(1, inputs.ranks_sharing_device);
  TrainingBudget b;
  b.free_bytes = held + share;
  b.budget = static_cast<int64_t>(config.memory.fraction * static_cast<double>(b.free_bytes));
  return b;
}

PlanOutcome plan_training(const Config& config, Model& model, const Optimizer& optimizer, Context& ctx,
                          const Dataset& train, Communicator& control, const PlannerInputs& inputs) {
  // The backend's per-shape plans of every batch size tried (the bisection's and the
  // probes') go when planning ends, however it ends.
  struct ReleasePlans {
    OpsBackend& backend;
    ~ReleasePlans() { backend.release_plans(); }
  } release_plans{ctx.backend()};
  const int n = control.size();
  const bool auto_micro = config.train.micro_batch == kAuto;
  const MemoryModel memory =
      memory_model_of(model, optimizer.state_bytes(), ctx, train.layout(), config.eval.batch, config.comm.reduce_dtype);
  const std::vector<std::string> devices = gather_device_names(control, ctx.device_name());

  const TrainingBudget budget = training_budget(config, ctx, inputs);
  RoundRecord mine{};
  mine.free_bytes = budget.free_bytes;
  mine.budget = budget.budget;
  mine.need_at_one = memory.predict(1).total();
  // A rank never needs more than its share of the training set per micro-step.
  const int64_t most = std::max<int64_t>(1, train.size() / n);
  mine.capacity = auto_micro ? largest_fitting_micro_batch(memory, mine.budget, most) : config.train.micro_batch;
  const int64_t fp32_capacity =
      model.compute_type() == DType::kF32
          ? -1
          : largest_fitting_micro_batch(memory_model_in(memory, model, DType::kF32), mine.budget, most);

  int64_t probes = 0, peak = 0, peak_reserved = 0;
  for (int round = 0; round < kMaxRounds; ++round) {
    const std::vector<RoundRecord> records = gather_records(control, mine);
    check_every_rank_fits(records, devices, config, memory, control);
    const BatchPlan plan = plan_of(config, records, control);
    const int64_t micro = plan.micro_batch[static_cast<size_t>(control.rank())];

    int64_t fits = 1;
    bool over_budget = false;
    std::vector<PartDeterminism> determinism;
    std::exception_ptr error;
    try {
      model.release_activations();  // a plan smaller than the last probe starts clean
      ctx.release_workspace();
      ctx.allocator().empty_cache();  // and its reserved peak is its own blocks only
      if (inputs.probe_step) {
        ++probes;
        peak = probe_micro_batch(model, ctx, train, micro, std::min(micro, config.eval.batch));
        peak_reserved = static_cast<int64_t>(ctx.allocator().stats().peak_reserved);
      } else {
        peak = peak_reserved = memory.predict(micro).total();
      }
      // A chosen micro-batch must fit the budget as the device counts it; a given one
      // only has to run.
      if (auto_micro && peak_reserved > mine.budget) {
        fits = 0;
        over_budget = true;
      }
      // Asked here, before the agreement, so that a failure of the query reaches every
      // rank through it instead of leaving the others in the report's all-gather.
      determinism = model.determinism(micro);
    } catch (const OutOfMemoryError&) {
      fits = 0;
    } catch (...) {
      error = std::current_exception();
    }
    agree_on_setup(control, error);
    std::vector<int64_t> all_fit(static_cast<size_t>(n));
    all_gather(control, std::span<const int64_t>(&fits, 1), std::span<int64_t>(all_fit))->wait();
    if (!fits) {
      mine.failed_micro = micro;
      mine.capacity = auto_micro ? micro * 9 / 10 : 0;
      // Over the budget by a known amount: at least that share less (the fixed part
      // does not shrink, so this may still be too much; the next probe tells).
      if (over_budget) {
        const auto scaled = static_cast<int64_t>(double(micro) * double(mine.budget) / double(peak_reserved));
        mine.capacity = std::min(mine.capacity, scaled);
      }
    }
    if (std::find(all_fit.begin(), all_fit.end(), int64_t{0}) != all_fit.end()) continue;

    // Everyone fits: gather the reports.
    const MemoryEstimate predicted = memory.predict(micro);
    std::vector<int64_t> fields = {static_cast<int64_t>(inputs.device.total), static_cast<int64_t>(inputs.device.free),
                                   static_cast<int64_t>(inputs.device.limit), static_cast<int64_t>(inputs.device.available),
                                   mine.budget, mine.capacity, micro, peak, probes, peak_reserved,
                                   fp32_capacity};
    fields.insert(fields.end(), predicted.by_category.begin(), predicted.by_category.end());
    // Every rank has the same layers, so the records have the same length.
    for (const PartDeterminism& d : determinism) fields.push_back(nondeterminism_bits(d.passes));
    std::vector<int64_t> all(fields.size() * static_cast<size_t>(n));
    all_gather(control, std::span<const int64_t>(fields), std::span<int64_t>(all))->wait();
    PlanOutcome outcome;
    outcome.plan = plan;
    // Only bf16 GEMMs are timed (Note [GEMM autotuning]).
    outcome.gemm_algorithms_timed = ctx.backend().gemm_algorithms_timed() && model.compute_type() == DType::kBF16;
    outcome.deterministic_preferred = config.precision.deterministic;
    for (int r = 0; r < n; ++r) {
      const int64_t* f = all.data() + static_cast<size_t>(r) * fields.size();
      RankPlanReport report;
      report.device = devices[static_cast<size_t>(r)];
      report.memory = MemoryCapacity{static_cast<size_t>(f[0]), static_cast<size_t>(f[1]), static_cast<size_t>(f[2]),
                                     static_cast<size_t>(f[3])};
      report.budget_bytes = f[4];
      report.capacity = f[5];
      report.micro_batch = f[6];
      report.probe_peak_bytes = f[7];
      report.probes = f[8];
      report.probe_peak_reserved_bytes = f[9];
      report.fp32_capacity = f[10];
      std::copy(f + 11, f + 11 + kMemoryCategories, report.predicted.by_category.begin());
      report.nondeterministic = nondeterministic_layers(determinism, f + 11 + kMemoryCategories);
      outcome.ranks.push_back(report);
    }
    return outcome;
  }
  throw_agreed(Error("the batch planner found no plan in " + std::to_string(kMaxRounds) +
                     " rounds of probe steps; this is a bug, please report it"),
               control);
}

}  // namespace dtrain
