#include "runtime/training_setup.h"

#include <algorithm>
#include <exception>
#include <filesystem>

#include "kernels/errors.h"
#include "runtime/byte_size.h"
#include "runtime/gradient_wire.h"
#include "runtime/lr_schedule.h"
#include "runtime/param_check.h"
#include "runtime/setup_agreement.h"

namespace dtrain {

namespace {

int64_t total_steps_of(const Config& c, int64_t steps_per_epoch) {
  const int64_t by_epochs = c.train.epochs * steps_per_epoch;
  if (c.train.max_steps == 0) return by_epochs;
  if (!c.epochs_given) return c.train.max_steps;
  return std::min(c.train.max_steps, by_epochs);
}

OutOfMemoryError does_not_fit(const Config& config, Context& ctx, const OutOfMemoryError& e) {
  const MemoryCapacity memory = ctx.allocator().capacity();
  return OutOfMemoryError("the model '" + config.model.name + "' does not fit on " + ctx.device_name() +
                          ": its parameters, gradients and optimizer state alone do not fit in " +
                          format_bytes(double(memory.limit ? memory.limit : memory.free)) +
                          " (before any sample); use a device with more memory, a smaller model, or raise " +
                          "memory.limit. (" + e.what() + ")");
}

// The optimizer for the chosen levers: the rank's shard of the state, or all of it.
void make_optimizer_for(TrainingSetup& s, const Config& config, Context& ctx, int rank) {
  const int64_t n = s.model->param_count();
  const FlatRange shard = s.levers.shards.empty() ? FlatRange{0, n} : s.levers.shards[static_cast<size_t>(rank)];
  s.model->set_recompute(s.levers.chosen.recompute);
  try {
    // Note [Sharded master weights]: a bf16 model keeps its range of the fp32 masters.
    if (!s.levers.shards.empty() && s.model->compute_type() == DType::kBF16) s.model->keep_master_range(shard);
    s.optimizer = make_optimizer(config.optimizer, ctx, n,
                                 decay_spans(s.model->param_tensors(), n, config.optimizer.decay_filter), shard);
  } catch (const OutOfMemoryError& e) {
    throw does_not_fit(config, ctx, e);
  }
}

// The parts built without collectives (Note [Setup agreement]).
void prepare(TrainingSetup& s, const Config& config, Context& ctx, const Communicator& control,
             const std::string& run_dir) {
  s.data = load_data(config.data, config.model, config.train.seed);
  try {
    ModelSpec spec = config.model;
    spec.seed = config.train.seed;  // dropout's masks
    spec.compute = config.precision.compute;
    // memory.recompute: auto builds without; the planner may set blocks (Note [Memory levers]).
    spec.recompute = config.memory.recompute == "auto" ? "none" : config.memory.recompute;
    s.model = build_model(ctx, spec, s.data.train->facts());
    s.model->init(config.train.seed);
    s.reduce_staging = allocate_gradient_wire_staging(ctx, config.comm.reduce_dtype, s.model->param_count());
  } catch (const OutOfMemoryError& e) {
    throw does_not_fit(config, ctx, e);
  }
  if (control.rank() == 0 && !run_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(run_dir, ec);
    if (ec) throw DataError("cannot create run directory '" + run_dir + "': " + ec.message() + "; pass a writable --run-dir");
  }
}

}  // namespace

PlanSummary TrainingSetup::summary(const Config& config) const {
  PlanSummary s{planned, 0.0, 0.0, "", 0, 0, 0};
  s.base_lr = config.optimizer.lr;
  s.effective_lr = lr;
  s.lr_scaling = config.optimizer.lr_scaling;
  s.max_lr = config.optimizer.max_lr;
  s.compute = config.precision.compute;
  s.reduce_dtype = config.comm.reduce_dtype;
  s.base_batch = config.optimizer.base_batch;
  s.steps_per_epoch = steps_per_epoch;
  s.warmup_steps = schedule.warmup_steps;
  s.recompute.setting = model->recompute() == Recompute::kBlocks ? "blocks" : "none";
  s.levers = &levers;
  s.optimizer_state_bytes_per_param = optimizer_state_bytes_per_param(config.optimizer);
  s.recompute.available = model->can_recompute();
  if (s.recompute.available) {
    const DType compute = model->compute_type();
    s.recompute.bytes_per_sample_none = model->activation_bytes_per_sample_in(compute, Recompute::kNone);
    s.recompute.bytes_per_sample_blocks = model->activation_bytes_per_sample_in(compute, Recompute::kBlocks);
    s.recompute.flops_per_sample_blocks = model->recompute_flops_per_sample_in(Recompute::kBlocks);
    s.recompute.training_flops_per_sample = model->training_flops_per_sample();
  }
  return s;
}

TrainingSetup setup_training(const Config& config, Context& ctx, Communicator& control, int ranks_sharing_device,
                             const std::string& run_dir, bool probe_step, Communicator* gradients) {
  TrainingSetup s;
  std::exception_ptr error;
  try {
    prepare(s, config, ctx, control, run_dir);
  } catch (...) {
    error = std::current_exception();
  }
  agree_on_setup(control, error);
  try {
    verify_identical_params(*s.model, ctx, control);
  } catch (Error& e) {
    e.set_agreed(control.rank() == 0);  // every rank gathered the same checksums and throws alike
    throw;
  }

  const PlannerInputs inputs{ctx.allocator().capacity(), ranks_sharing_device};
  s.levers = choose_memory_levers(config, *s.model, optimizer_state_bytes_per_param(config.optimizer), ctx,
                                  *s.data.train, control, inputs, gradients);
  try {
    make_optimizer_for(s, config, ctx, control.rank());
  } catch (...) {
    error = std::current_exception();
  }
  agree_on_setup(control, error);
  s.planned = plan_training(config, *s.model, *s.optimizer, ctx, *s.data.train, control,
                            PlannerInputs{ctx.allocator().capacity(), ranks_sharing_device, probe_step});
  const int64_t global_batch = s.planned.plan.global_batch;
  s.sampler = std::make_unique<GlobalSampler>(s.data.train->size(), config.train.seed);
  s.steps_per_epoch = s.sampler->batches_per_epoch(global_batch);
  if (s.steps_per_epoch == 0) {
    // Every rank holds the same plan, so every rank fails here alike.
    ConfigError e(config.where("train.global_batch") + ": the global batch " + std::to_string(global_batch) +
                  " is larger than the " + std::to_string(s.data.train->size()) + " training samples of " +
                  s.data.train->name() + "; lower train.global_batch");
    e.set_agreed(control.rank() == 0);
    throw e;
  }
  s.total_steps = total_steps_of(config, s.steps_per_epoch);
  s.schedule = schedule_for_plan(config.schedule, s.steps_per_epoch);
  s.lr = scaled_lr(config.optimizer, global_batch);
  return s;
}

}  // namespace dtrain
