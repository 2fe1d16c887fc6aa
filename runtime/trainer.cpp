#include "runtime/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <utility>
#include <span>
#include <thread>
#include <sstream>
#include <vector>

#include "comm/gradient_reducer.h"
#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "models/model.h"
#include "models/sampling.h"
#include "runtime/checkpoint_dir_check.h"
#include "runtime/checkpointing.h"
#include "runtime/eval_target.h"
#include "runtime/evaluator.h"
#include "runtime/gradient_buckets.h"
#include "runtime/gradient_clipping.h"
#include "runtime/gradient_wire.h"
#include "runtime/lr_schedule.h"
#include "runtime/metrics_writer.h"
#include "runtime/noise_scale.h"
#include "runtime/progress.h"
#include "runtime/trace_writer.h"
#include "runtime/step_buffers.h"
#include "runtime/training_setup.h"

namespace dtrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// "bits_per_byte" -> "bits per byte", for the progress lines.
std::string spaced(std::string name) {
  for (char& c : name) {
    if (c == '_') c = ' ';
  }
  return name;
}

double mib(size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

std::string format(const char* fmt, double a) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, a);
  return buf;
}

// Note [Abort before unwinding]
// An error that leaves train() while collectives are in flight (a peer that died, seen
// as an NCCL asynchronous error in reducer.finish()) must abort the data communicator
// before anything on the way out waits for the device. The collectives in flight will
// never complete; freeing the batch's pinned memory (DeviceBatch, cudaFreeHost)
// synchronises the device, and a Work destroyed unwaited orders the compute stream
// after its collective, so either would wait for ever, and the job's own abort
// (launch/job.cpp) would come too late. This guard is declared after the buffers that
// wait, so it is destroyed, and aborts, before them. Every error aborts: an error the
// ranks agreed on is thrown by every rank at the same point, so they all abort alike
// and none waits in a finalize for a peer that aborted. The NCCL communicator also
// aborts itself before throwing the errors it detects (nccl_communicator.h); this
// guard covers every other way out and every backend.
class AbortCommunicatorOnError {
 public:
  explicit AbortCommunicatorOnError(Communicator& comm) : comm_(comm), exceptions_(std::uncaught_exceptions()) {}
  ~AbortCommunicatorOnError() {
    if (std::uncaught_exceptions() <= exceptions_) return;  // a normal return
    try {
      comm_.abort();
    } catch (...) {
      // Nothing may escape during unwinding; launch/job.cpp aborts again on the way out.
    }
  }
  AbortCommunicatorOnError(const AbortCommunicatorOnError&) = delete;
  AbortCommunicatorOnError& operator=(const AbortCommunicatorOnError&) = delete;

 private:
  Communicator& comm_;
  const int exceptions_;
};

// How this run measures the gradient at a small batch (Note [Gradient noise scale]).
struct NoiseProbe {
  enum Mode { kOff, kPerRank, kFirstMicroStep } mode = kOff;
  SmallBatchWeights mine;       // this rank's weights
  double gradient_sq_sum = 0;   // sum over the small batches of their to_gradient_sq
  double trace_sum = 0;         // sum over the small batches of their to_trace
  double small_batches = 0;     // how many small-batch estimates are averaged
};

NoiseProbe noise_probe_for(const Config& config, const BatchPlan& plan, int rank) {
  NoiseProbe p;
  const int n = plan.world_size();
  const auto big = static_cast<double>(plan.global_batch);
  if (!config.log.noise_scale) return p;
  if (n >= 2) {
    p.mode = NoiseProbe::kPerRank;
    for (int r = 0; r < n; ++r) {
      const double small = static_cast<double>(plan.accumulation_steps * plan.micro_batch[static_cast<size_t>(r)]);
      const SmallBatchWeights w = small_batch_weights(small, big);
      if (r == rank) p.mine = w;
      p.gradient_sq_sum += w.to_gradient_sq;
      p.trace_sum += w.to_trace;
    }
    p.small_batches = n;
  } else if (plan.accumulation_steps >= 2) {
    p.mode = NoiseProbe::kFirstMicroStep;
    p.mine = small_batch_weights(static_cast<double>(plan.micro_batch[0]), big);
    p.gradient_sq_sum = p.mine.to_gradient_sq;
    p.trace_sum = p.mine.to_trace;
    p.small_batches = 1;
  }
  return p;
}


// What a language model of bytes says after training, as llm.c shows: a short text
// from a newline, the model's own distribution (temperature 1), the run's seed. Rank
// 0 alone, after the last collective; about a hundred batch-of-one forwards.
void print_sample(Model& model, uint64_t seed, std::ostream& log) {
  constexpr int64_t kSampleBytes = 100;
  SamplingOptions options;
  options.temperature = 1.0;
  const std::vector<int32_t> text = generate_tokens(model, {'\n'}, kSampleBytes, options, seed);
  log << "dtrain: a sample (" << kSampleBytes << " bytes after a newline, temperature 1, seed " << seed
      << "):\n";
  for (const int32_t byte : text) log.put(static_cast<char>(byte));
  log << "\n";
}

// A resumed run keeps the checkpoint's global batch; the planner re-plans k for this
// run's ranks and memory. Any other global batch is another training run: refused.
Config reconcile_with_checkpoint(const Config& requested, const ResumePoint& resume, bool leader) {
  Config config = requested;
  if (!resume.found) return config;
  if (config.train.global_batch == kAuto) {
    config.train.global_batch = resume.global_batch;
  } else if (config.train.global_batch != resume.global_batch) {
    ConfigError e(config.where("train.global_batch") + ": train.global_batch = " +
                  std::to_string(config.train.global_batch) + " but checkpoint " + resume.path +
                  " was written at global batch " + std::to_string(resume.global_batch) +
                  "; a different global batch is a different training run. Set train.global_batch: " +
                  std::to_string(resume.global_batch) + " (or auto) to resume it");
    e.set_agreed(leader);
    throw e;
  }
  return config;
}

// Rank 0's run directory: the effective config, the plan, and the metrics file (a
// resumed run appends to the metrics of the run it continues); then the start-up lines.
MetricsWriter open_run_directory(const std::string& run_dir, const Config& config, const TrainingSetup& setup,
                                 const Communicator& comm, Context& ctx, int64_t first_step, bool resumed,
                                 std::ostream& log) {
  const BatchPlan& plan = setup.plan();
  std::filesystem::create_directories(run_dir);
  std::ofstream(run_dir + "/config.yaml")
      << config_to_yaml(config, {"world_size: " + std::to_string(comm.size()) + " (" + comm.backend_name() + ")",
                                 "micro_batch per rank: " + std::to_string(plan.micro_batch[0]) +
                                     " (rank 0; plan.json has all)",
                                 "accumulation_steps: " + std::to_string(plan.accumulation_steps),
                                 "global_batch: " + std::to_string(plan.global_batch),
                                 "effective lr: " + format("%.6g", setup.lr),
                                 "steps: " + std::to_string(setup.total_steps)});
  std::ofstream(run_dir + "/plan.json") << plan_json(setup.summary(config));
  if (resumed) {
    MetricsWriter::keep_up_to_step(run_dir + "/metrics.jsonl", first_step);
  } else {
    std::ofstream(run_dir + "/metrics.jsonl", std::ios::trunc);
  }
  const Dataset& train = *setup.data.train;
  log << "dtrain: " << comm.size() << " rank(s) over " << comm.backend_name() << ", device " << ctx.device_name()
      << " with " << ctx.num_threads() << " thread(s) per rank\n"
      << "dtrain: model " << setup.model->describe() << " (" << setup.model->param_count() << " parameters), data "
      << train.name() << " (" << train.size() << " train, " << setup.data.test->size() << " held out)\n"
      << plan_text(setup.summary(config)) << "dtrain: " << setup.total_steps << " steps; run directory " << run_dir
      << "\n";
  log.flush();
  return MetricsWriter(run_dir + "/metrics.jsonl");
}

// One rank's training run after setup: the steps, checkpoints, evaluations and the
// summary. Every rank runs the same steps and collectives; rank 0 alone writes.
class TrainingRun {
 public:
  TrainingRun(const Config& config, TrainingSetup& setup, ResumePoint& resume, Context& ctx, Communicator& comm,
              Communicator& control, const std::string& run_dir, std::ostream& log, const TrainOptions& options);
  TrainResult run();

 private:
  // The sums of one step, on the host after the step's all-reduce.
  struct StepSums {
    double values[kStepStats];
    double loss = 0.0;  // the mean per-sample loss of the global batch
    int64_t host_syncs = -1;  // the host's waits for the device in the step (OpsBackend::host_syncs)
  };

  void prefetch(int64_t step, int64_t micro);
  // `next_step`: the step whose first micro-batch to prefetch during the last one; -1: none.
  StepSums accumulate_gradients(int64_t step, int64_t next_step);
  void apply_update(int64_t step, const StepSums& sums, double lr);
  void record(int64_t step, const StepSums& sums, double lr, Clock::time_point t_step);
  void checkpoint(int64_t steps_done);
  void evaluate_at(int64_t step);
  void summarize();
  // TrainOptions::target (dtrain sweep).
  bool target_reached_at(int64_t step);
  TrainResult finish_at_target(int64_t step);
  void device_mark(const char* name, int64_t step);
  void write_device_spans();
  void flush_device_timeline();
  // Note [Noise scale at the end of a run]: B_simple at the final weights, from the
  // batches of the steps after `step`; nullopt when off or without memory for it.
  std::optional<NoiseScaleMeasurement> measure_noise_scale_at_end(int64_t step);

  const Config& config_;
  TrainingSetup& setup_;
  const BatchPlan& plan_;
  Context& ctx_;
  Communicator& comm_;
  Communicator& control_;
  const std::string& run_dir_;
  std::ostream& log_;
  const TrainOptions& options_;
  const bool leader_;
  FaultInjector& faults_;
  const std::string checkpoint_dir_;
  std::ostringstream quiet_;  // ranks other than 0 say nothing
  std::ostream& say_;
  Model& model_;
  Optimizer& optimizer_;
  // What the held-out split is called: a classifier's test set, a text's validation split.
  const std::string held_out_;

  // Sharded (optimizer.shard): every rank's range of the flat buffers, and this
  // rank's, which it reduces, clips and updates; empty shards_: unsharded.
  const std::vector<FlatRange> shards_;
  const FlatRange shard_;
  std::vector<size_t> shard_counts_;  // the all-gather's block counts
  GradientReducer reducer_;
  StepBuffers step_buffers_;
  // Destroyed before the reducer's Works and the batch (Note [Abort before unwinding]).
  AbortCommunicatorOnError abort_on_error_;
  double* stats_;
  // Contract 2: every sample's loss is divided by the global batch, never by k or n.
  const float grad_scale_;
  const NoiseProbe noise_;
  NoiseScaleEstimator noise_scale_;
  std::optional<NoiseScaleMeasurement> noise_at_end_;  // a run that reached its target
  int64_t first_step_ = 0, samples_ = 0;
  std::optional<MetricsWriter> metrics_;
  TrainResult result_;
  const Clock::time_point t_start_ = Clock::now();
  Clock::time_point t_log_ = t_start_;
  int64_t samples_at_log_ = 0;
  std::optional<ProgressReporter> progress_;
  std::unique_ptr<TraceWriter> trace_;  // log.trace: one file per rank, written off the training thread
  // log.trace on a queued device (a GPU, cpu-async): its marks (Note [Device timeline]).
  std::unique_ptr<DeviceTimeline> timeline_;
  int64_t evaluated_at_ = -1;  // the step of the last evaluation
};

// Buckets of comm.bucket_mb of fp32 gradients, whatever type they travel in
// (comm.reduce_dtype: Note [Narrow gradient reduction]).
// Sharded, buckets are reduce-scattered to the ranks that own them (Note [Sharded
// gradient reduction]).
GradientReducer make_reducer(Communicator& comm, Context& ctx, Model& model, const Buffer& reduce_staging,
                             const Config& config, const std::vector<FlatRange>& shards) {
  return GradientReducer(comm, model.grads(), gradient_layer_ranges(model), bucket_cap_elements(config.comm.bucket_mb),
                         gradient_wire(ctx, config.comm.reduce_dtype, reduce_staging), shards);
}

TrainingRun::TrainingRun(const Config& config, TrainingSetup& setup, ResumePoint& resume, Context& ctx,
                         Communicator& comm, Communicator& control, const std::string& run_dir, std::ostream& log,
                         const TrainOptions& options)
    : config_(config), setup_(setup), plan_(setup.plan()), ctx_(ctx), comm_(comm), control_(control),
      run_dir_(run_dir), log_(log), options_(options), leader_(comm.rank() == 0),
      faults_(options.faults != nullptr ? *options.faults : no_faults()),
      checkpoint_dir_(checkpoint_dir_of(config, run_dir)), say_(leader_ ? log : quiet_), model_(*setup.model),
      optimizer_(*setup.optimizer),
      held_out_(setup.data.train->layout().input_type == ElementType::kInt32 ? "validation" : "test"),
      shards_(setup.levers.shards), shard_(optimizer_.shard()),
      reducer_(make_reducer(comm, ctx, model_, setup.reduce_staging, config, shards_)),
      step_buffers_(ctx, setup.data.train->layout(), plan_.micro_batch[static_cast<size_t>(comm.rank())]),
      abort_on_error_(comm), stats_(step_buffers_.stats.as<double>()),
      grad_scale_(static_cast<float>(1.0 / static_cast<double>(plan_.global_batch))),
      noise_(noise_probe_for(config, plan_, comm.rank())), noise_scale_(config.log.noise_ema) {
  if (resume.found) {
    restore_from(resume, config, plan_.global_batch, model_, optimizer_, noise_scale_, ctx, control);
    first_step_ = std::min(resume.state.step, setup.total_steps);
    samples_ = resume.state.samples;
  }
  for (const FlatRange& r : shards_) shard_counts_.push_back(static_cast<size_t>(r.count));
  samples_at_log_ = samples_;
  result_.first_step = first_step_;
  result_.steps = first_step_;
  if (noise_.mode == NoiseProbe::kPerRank) {
    // This rank's own fp32 gradients: the hook runs before a bucket is narrowed to
    // comm.reduce_dtype (Note [Narrow gradient reduction]).
    reducer_.set_before_launch([this](const GradientBucket& b) {
      ops::sum_squares(ctx_, model_.grads() + b.offset, b.count, noise_.mine.a, stats_ + kSmallGradA);
      ops::sum_squares(ctx_, model_.grads() + b.offset, b.count, noise_.mine.b, stats_ + kSmallGradB);
    });
  }
  if (leader_) metrics_.emplace(open_run_directory(run_dir, config, setup, comm, ctx, first_step_, resume.found, log));
  progress_.emplace(say_, options.terminal, first_step_, setup.total_steps, config.log.every_steps);
  if (config.log.trace) {
    std::filesystem::create_directories(run_dir + "/trace");
    trace_ = std::make_unique<TraceWriter>(run_dir + "/trace/rank-" + std::to_string(comm.rank()) + ".json", comm.rank());
    reducer_.set_on_reduced([this](size_t bucket, GradientReducer::Clock::time_point launched,
                                   GradientReducer::Clock::time_point done) {
      trace_->complete("all-reduce bucket " + std::to_string(bucket), "comm", launched, done, result_.steps + 1);
    });
    timeline_ = ctx.backend().make_timeline(ctx);
  }
}

// A device span opens with a mark named after it and closes with one named "end".
void TrainingRun::device_mark(const char* name, int64_t step) {
  if (timeline_) timeline_->mark(name, step);
}

// The spans whose marks the device has passed, onto the trace's device row; called
// right after a synchronisation (DeviceTimeline::collect).
void TrainingRun::write_device_spans() {
  if (!timeline_) return;
  const std::vector<DeviceTimeline::Mark> marks = timeline_->collect();
  for (size_t i = 0; i + 1 < marks.size(); i += 2) {
    const DeviceTimeline::Mark& open = marks[i];
    const DeviceTimeline::Mark& close = marks[i + 1];
    DTRAIN_ASSERT(std::string(close.name) == "end", "device timeline: span '" << open.name << "' closed by '"
                                                                               << close.name << "'");
    const double lead_ms = std::chrono::duration<double, std::milli>(close.reached - close.queued).count();
    trace_->device_span(open.name, open.reached, close.reached, open.step, lead_ms);
  }
}

// The last step's update, whose marks no later step's read-back collects.
void TrainingRun::flush_device_timeline() {
  if (!timeline_) return;
  ctx_.synchronize();
  write_device_spans();
}

// This rank's samples for micro-step `micro` of optimizer step `step`.
void TrainingRun::prefetch(int64_t step, int64_t micro) {
  TraceScope scope(trace_.get(), "data", "data", step + 1);
  const int64_t epoch = step / setup_.steps_per_epoch;
  step_buffers_.batch.prefetch(*setup_.data.train, epoch,
                               setup_.sampler->slice(plan_, epoch, step % setup_.steps_per_epoch, micro, comm_.rank()));
}

// The k micro-steps: forward and backward ADD into the gradients; on the last one the
// reducer all-reduces (SUM) buckets as backward finishes them. Then the step's sums.
TrainingRun::StepSums TrainingRun::accumulate_gradients(int64_t step, int64_t next_step) {
  TraceWriter* timeline = trace_.get();
  double initial[kStepStats] = {};
  const bool signalled = options_.stop_requested != nullptr && *options_.stop_requested != 0;
  initial[kStopRequests] = signalled || faults_.stop_requested(step + 1, comm_.rank()) ? 1.0 : 0.0;
  ops::copy_from_host(ctx_, stats_, initial, sizeof(initial));
  for (int64_t micro = 0; micro < plan_.accumulation_steps; ++micro) {
    const bool last = micro + 1 == plan_.accumulation_steps;
    Batch batch = [&] {
      TraceScope scope(timeline, "data wait", "data", step + 1);
      return step_buffers_.batch.take();
    }();
    batch.step = step;
    device_mark("micro-step", step + 1);
    {
      TraceScope scope(timeline, "forward", "compute", step + 1);
      model_.forward(batch, Pass::kTrain, grad_scale_, stats_ + kLossSum);
    }
    {
      TraceScope scope(timeline, "backward", "compute", step + 1);
      if (last) {
        faults_.before_last_backward(step + 1, comm_.rank(), ctx_, model_.grads(), model_.param_count());
        model_.backward([this](int range) { reducer_.on_layer_done(range); });
      } else {
        model_.backward();
      }
      if (micro == 0 && noise_.mode == NoiseProbe::kFirstMicroStep) {
        ops::sum_squares(ctx_, model_.grads(), model_.param_count(), noise_.mine.a, stats_ + kSmallGradA);
        ops::sum_squares(ctx_, model_.grads(), model_.param_count(), noise_.mine.b, stats_ + kSmallGradB);
      }
    }
    device_mark("end", step + 1);
    // The next micro-batch is gathered on the host while the device runs the work
    // just queued (on a GPU), and uploaded alongside it (Note [Batch prefetch]).
    if (!last) {
      prefetch(step, micro + 1);
    } else if (next_step >= 0) {
      prefetch(next_step, 0);
    }
  }
  {
    TraceScope scope(timeline, "all-reduce wait", "comm", step + 1);
    reducer_.finish();
  }
  // |G|^2 of the reduced gradient: the same on every rank, so a NaN or Inf in any
  // rank's gradient is seen by all alike, as is one in the all-reduced loss sum.
  // Sharded, each rank holds its range of it reduced: the ranges' sums of squares
  // travel in the step's all-reduce of the sums, so the norm costs no collective.
  if (shards_.empty()) {
    ops::sum_squares(ctx_, model_.grads(), model_.param_count(), 1.0, stats_ + kGradSqNorm);
    all_reduce(comm_, std::span<double>(stats_, kGradSqNorm))->wait();
  } else {
    ops::sum_squares(ctx_, model_.grads() + shard_.offset, shard_.count, 1.0, stats_ + kGradSqNorm);
    all_reduce(comm_, std::span<double>(stats_, kStepStats))->wait();
  }
  StepSums sums;
  ops::copy_to_host(ctx_, sums.values, stats_, sizeof(sums.values));
  write_device_spans();
  sums.loss = sums.values[kLossSum] / static_cast<double>(plan_.global_batch);
  return sums;
}

// The non-finite policy (train.on_nonfinite), then clipping and the optimizer step.
void TrainingRun::apply_update(int64_t step, const StepSums& sums, double lr) {
  const double grad_sq = sums.values[kGradSqNorm];
  if (!std::isfinite(sums.loss) || !std::isfinite(grad_sq)) {
    const std::string what = "step " + std::to_string(step + 1) + " has a non-finite " +
                             (std::isfinite(sums.loss) ? "gradient (|G|^2 = " + format("%g", grad_sq) + ")"
                                                       : "loss (" + format("%g", sums.loss) + ")");
    if (config_.train.on_nonfinite == "stop") {
      NonFiniteError e(what + "; stopping (train.on_nonfinite: stop). Lower optimizer.lr or check the data; " +
                       "the last checkpoint, if any, is in " + checkpoint_dir_);
      e.set_agreed(leader_);  // every rank computed the same sums
      throw e;
    }
    progress_->line("dtrain: " + what + "; its update is skipped (train.on_nonfinite: skip)");
    ++result_.skipped_steps;
    return;
  }
  if (noise_.mode != NoiseProbe::kOff) {
    noise_scale_.add_weighted(sums.values[kSmallGradA], sums.values[kSmallGradB], grad_sq, noise_.gradient_sq_sum,
                              noise_.trace_sum, noise_.small_batches);
  }
  TraceScope scope(trace_.get(), "optimizer step", "compute", step + 1);
  // Clipping rides in the update's own pass (Optimizer::step's grad_scale).
  const auto clip = static_cast<float>(clip_coefficient(std::sqrt(grad_sq), config_.optimizer.clip_grad_norm));
  if (shards_.empty()) {
    optimizer_.step(ctx_, model_.params(), model_.grads(), lr, clip, model_.param_copy());
    return;
  }
  // Sharded: this rank updates its range, and the all-gather brings every rank's. A
  // bf16 model keeps only its range of the fp32 master weights (Note [Sharded master
  // weights]): the update rounds the range into the bf16 copy, and the copy travels
  // (2 bytes a parameter). An fp32 model computes with the fp32 parameters: they travel.
  TraceScope gather(trace_.get(), "all-gather parameters", "comm", step + 1);
  if (model_.master_is_sharded()) {
    optimizer_.step(ctx_, model_.master(), model_.grads(), lr, clip, model_.param_copy());
    comm_.all_gather_v(model_.param_copy(), shard_counts_, DataType::BFloat16)->wait();
    return;
  }
  optimizer_.step(ctx_, model_.params() + shard_.offset, model_.grads(), lr, clip);
  comm_.all_gather_v(model_.params(), shard_counts_, DataType::Float32)->wait();
  model_.params_changed();
}

// Rank 0: the step's metrics line and progress.
void TrainingRun::record(int64_t step, const StepSums& sums, double lr, Clock::time_point t_step) {
  if (!leader_) return;
  const double step_s = seconds_since(t_step);
  const MemoryStats memory = ctx_.allocator().stats();
  // Achieved FLOP/s counts the model's training FLOPs (3x forward), all ranks together;
  // not the forward work memory.recompute repeats (Model::forward_flops_per_sample).
  const double flops_per_sample = static_cast<double>(model_.training_flops_per_sample());
  std::vector<std::pair<std::string, double>> fields = {
      {"step", double(step + 1)},
      {"epoch", double(step) / double(setup_.steps_per_epoch)},
      {"loss", sums.loss},
      {"lr", lr},
      {"grad_norm", std::sqrt(sums.values[kGradSqNorm])},
      {"samples", double(samples_)},
      {"samples_per_s", double(plan_.global_batch) / step_s},
      {"flops_per_s", flops_per_sample * double(plan_.global_batch) / step_s},
      {"time_s", seconds_since(t_start_)},
      {"mem_in_use_mib", mib(memory.in_use)},
      {"mem_peak_mib", mib(memory.peak)},
      {"mem_reserved_mib", mib(memory.reserved)},
      {"mem_peak_reserved_mib", mib(memory.peak_reserved)}};
  if (sums.host_syncs >= 0) fields.push_back({"host_syncs", double(sums.host_syncs)});
  if (noise_scale_.ready()) {
    fields.push_back({"grad_sq", noise_scale_.gradient_sq()});
    fields.push_back({"trace_sigma", noise_scale_.trace_sigma()});
    fields.push_back({"noise_scale", noise_scale_.b_simple()});
  }
  metrics_->write("train", fields);
  // samples/s over the current log window (log.every_steps steps).
  progress_->step(StepProgress{step + 1, step / setup_.steps_per_epoch, sums.loss, lr,
                               double(samples_ - samples_at_log_) / std::max(1e-9, seconds_since(t_log_)),
                               mib(memory.in_use), mib(memory.peak), mib(memory.reserved)});
  if ((step + 1) % config_.log.every_steps == 0) {
    t_log_ = Clock::now();
    samples_at_log_ = samples_;
  }
}

void TrainingRun::checkpoint(int64_t steps_done) {
  TraceScope scope(trace_.get(), "checkpoint", "io", steps_done);
  progress_->finish();  // the checkpoint's own line goes below the bar
  faults_.in_checkpoint(comm_.rank());
  GatheredState whole = gather_training_state(model_, optimizer_, shards_, ctx_, control_);
  std::optional<CheckpointState> state;
  if (leader_) {
    state = capture_state(config_, plan_, steps_done, samples_, setup_.steps_per_epoch, optimizer_, std::move(whole),
                          noise_scale_);
  }
  save_checkpoint(config_, checkpoint_dir_, state ? &*state : nullptr, steps_done, control_, log_);
}

void TrainingRun::evaluate_at(int64_t step) {
  TraceScope scope(trace_.get(), "evaluation", "eval", step);
  const int64_t my_micro = plan_.micro_batch[static_cast<size_t>(comm_.rank())];
  const EvalResult e = evaluate(model_, *setup_.data.test, ctx_, comm_, std::min(my_micro, config_.eval.batch));
  evaluated_at_ = step;
  result_.eval_loss = e.loss;
  result_.eval_accuracy = e.metric("accuracy");
  result_.eval_metrics = e.metrics;
  if (!leader_) return;
  std::vector<std::pair<std::string, double>> fields = {{"step", double(step)}, {"eval_loss", e.loss}};
  std::string line = "eval  step " + std::to_string(step) + " | " + held_out_ + " loss " + format("%.4f", e.loss);
  for (const Metric& m : e.metrics) {
    fields.push_back({"eval_" + m.name, m.value});
    line += " | " + held_out_ + " " + spaced(m.name) + " " + format("%.4f", m.value);
  }
  metrics_->write("eval", fields);
  progress_->line(line);
}

// Rank 0: throughput, the final evaluation, determinism and the noise scale's verdict.
void TrainingRun::summarize() {
  if (!leader_) return;
  const double flops_per_sample = static_cast<double>(model_.training_flops_per_sample());
  const double peak_flops = ctx_.backend().peak_flops() * comm_.size();
  const double trained = static_cast<double>(result_.steps - first_step_) * static_cast<double>(plan_.global_batch);
  const double flops = flops_per_sample * trained / std::max(1e-9, seconds_since(t_start_));
  log_ << "dtrain: throughput " << format("%.3g", flops / 1e9) << " GFLOP/s over all ranks ("
       << format("%.3g", flops_per_sample / 1e6) << " MFLOP per training sample)";
  if (peak_flops > 0) log_ << ", " << format("%.2f", 100.0 * flops / peak_flops) << "% of the GPUs' fp32 peak";
  log_ << "\n";
  // The model's first metric leads (a classifier's accuracy), the loss follows.
  log_ << "dtrain: done: " << result_.steps << " steps in " << format("%.1f", seconds_since(t_start_))
       << " s; final ";
  if (result_.eval_metrics.empty()) {
    log_ << held_out_ << " loss " << format("%.4f", result_.eval_loss) << "\n";
  } else {
    const Metric& lead = result_.eval_metrics.front();
    log_ << held_out_ << " " << spaced(lead.name) << " " << format("%.4f", lead.value) << " (" << held_out_
         << " loss " << format("%.4f", result_.eval_loss);
    for (size_t i = 1; i < result_.eval_metrics.size(); ++i) {
      log_ << ", " << spaced(result_.eval_metrics[i].name) << " " << format("%.4f", result_.eval_metrics[i].value);
    }
    log_ << ")\n";
  }
  // Said in the plan at start-up too; repeated where a reader of the results looks.
  for (const std::string& note : determinism_notes(setup_.planned)) log_ << "dtrain: " << note << "\n";
  if (noise_at_end_) {
    log_ << noise_scale_verdict(noise_at_end_->b_simple, "at the final weights", plan_.global_batch, true,
                                config_.log.noise_scale);
  } else {
    log_ << noise_scale_verdict(noise_scale_.b_simple(), "moving average", plan_.global_batch,
                                noise_.mode != NoiseProbe::kOff, config_.log.noise_scale);
  }
  if (model_.can_generate() && setup_.data.train->tokens_are_bytes()) print_sample(model_, config_.train.seed, log_);
  log_.flush();
}

// TrainOptions::target: evaluates after `step` when Note [Target evaluation schedule]
// says so (unless that step was just evaluated); whether the evaluation reaches it.
bool TrainingRun::target_reached_at(int64_t step) {
  const EvalTarget* target = options_.target;
  if (target == nullptr) return false;
  if (evaluated_at_ != step) {
    if (!target_evaluation_due(step, target->resolution)) return false;
    evaluate_at(step);
  }
  result_.reached_target = target_reached(*target, result_.eval_loss, result_.eval_metrics);
  return result_.reached_target;
}

TrainResult TrainingRun::finish_at_target(int64_t step) {
  flush_device_timeline();
  progress_->line("dtrain: target " + options_.target->describe() + " reached at step " + std::to_string(step));
  result_.noise_scale = noise_scale_.b_simple();
  noise_at_end_ = measure_noise_scale_at_end(step);
  if (const std::optional<NoiseScaleMeasurement>& end = noise_at_end_) {
    result_.noise_scale = end->b_simple;
    progress_->line("dtrain: gradient noise scale at the final weights (" +
                    std::to_string(noise_scale_end_batches(config_.log.noise_end_samples, plan_.global_batch)) +
                    " batches of " + std::to_string(plan_.global_batch) + "): B_simple ~ " +
                    format("%.0f", end->b_simple) + " (|G|^2 " + format("%.4g", end->gradient_sq) + ", tr Sigma " +
                    format("%.4g", end->trace_sigma) + ")");
  }
  progress_->finish();
  summarize();
  return result_;
}

std::optional<NoiseScaleMeasurement> TrainingRun::measure_noise_scale_at_end(int64_t step) {
  if (!config_.log.noise_scale || config_.log.noise_end_samples <= 0) return std::nullopt;
  const int64_t batches = noise_scale_end_batches(config_.log.noise_end_samples, plan_.global_batch);
  // This rank's range of the reduced gradient: all of it, or its shard.
  const int64_t offset = shards_.empty() ? 0 : shard_.offset;
  const int64_t count = shards_.empty() ? model_.param_count() : shard_.count;
  // The sum of the P gradients takes one more gradient's memory; where a rank has none
  // left, every rank skips the measurement alike (a sum of the ranks' refusals).
  Buffer gradient_sum;
  double refused = 0.0;
  try {
    gradient_sum = Buffer(ctx_.allocator(), static_cast<size_t>(count) * sizeof(float), MemoryCategory::Workspace);
  } catch (const OutOfMemoryError&) {
    refused = 1.0;
  }
  // The step's stop slot as scratch: the training steps are over.
  ops::copy_from_host(ctx_, stats_ + kStopRequests, &refused, sizeof(refused));
  all_reduce(comm_, std::span<double>(stats_ + kStopRequests, 1))->wait();
  ops::copy_to_host(ctx_, &refused, stats_ + kStopRequests, sizeof(refused));
  if (refused > 0) {
    progress_->line("dtrain: gradient noise scale not measured at the final weights: no memory for one more "
                    "gradient; B_simple is the moving average");
    return std::nullopt;
  }
  TraceScope scope(trace_.get(), "noise scale at the end", "compute", step);
  float* sum = gradient_sum.as<float>();
  ops::fill(ctx_, sum, count, 0.0f);
  // The batches the run would have trained on next (from the first, past the last step).
  const int64_t total = setup_.total_steps;
  prefetch(step % total, 0);
  double batch_sq_sum = 0.0;
  for (int64_t p = 0; p < batches; ++p) {
    const StepSums sums = accumulate_gradients((step + p) % total, p + 1 < batches ? (step + p + 1) % total : -1);
    batch_sq_sum += sums.values[kGradSqNorm];
    ops::add(ctx_, sum, model_.grads() + offset, sum, count);
    model_.zero_grads();
  }
  const double zero = 0.0;
  ops::copy_from_host(ctx_, stats_ + kGradSqNorm, &zero, sizeof(zero));
  const double p = static_cast<double>(batches);
  ops::sum_squares(ctx_, sum, count, 1.0 / (p * p), stats_ + kGradSqNorm);
  if (!shards_.empty()) all_reduce(comm_, std::span<double>(stats_ + kGradSqNorm, 1))->wait();
  double mean_gradient_sq = 0.0;
  ops::copy_to_host(ctx_, &mean_gradient_sq, stats_ + kGradSqNorm, sizeof(mean_gradient_sq));
  if (!std::isfinite(batch_sq_sum) || !std::isfinite(mean_gradient_sq)) {  // the same on every rank
    progress_->line("dtrain: gradient noise scale not measured at the final weights: a gradient there is not "
                    "finite; B_simple is the moving average");
    return std::nullopt;
  }
  return noise_scale_from_repeated_batches(batch_sq_sum / p, mean_gradient_sq,
                                           static_cast<double>(plan_.global_batch), batches);
}

TrainResult TrainingRun::run() {
  const int64_t total_steps = setup_.total_steps;
  // A resumed run with a target may have reached it at the checkpoint's step.
  if (options_.target != nullptr && first_step_ > 0 && first_step_ < total_steps) {
    evaluate_at(first_step_);
    if (target_reached_at(first_step_)) return finish_at_target(first_step_);
  }
  if (first_step_ < total_steps) prefetch(first_step_, 0);
  for (int64_t step = first_step_; step < total_steps; ++step) {
    const auto t_step = Clock::now();
    if (options_.on_step) options_.on_step(step + 1);
    faults_.at_step_start(step + 1, comm_.rank());
    const double lr = lr_at(setup_.schedule, setup_.lr, step, total_steps);
    const int64_t syncs_before = ctx_.backend().host_syncs();
    StepSums sums = accumulate_gradients(step, step + 1 < total_steps ? step + 1 : -1);
    device_mark("update", step + 1);
    apply_update(step, sums, lr);
    model_.zero_grads();
    device_mark("end", step + 1);
    if (syncs_before >= 0) sums.host_syncs = ctx_.backend().host_syncs() - syncs_before;
    samples_ += plan_.global_batch;
    result_.steps = step + 1;
    result_.final_loss = sums.loss;
    record(step, sums, lr, t_step);
    if (sums.values[kStopRequests] > 0) {  // every rank sees the same sum and stops here
      progress_->line("dtrain: stop requested (a signal) after step " + std::to_string(step + 1) +
                      "; writing a checkpoint");
      if (step + 1 < total_steps) step_buffers_.batch.take();  // the prefetched batch is not needed
      checkpoint(step + 1);
      flush_device_timeline();
      result_.stopped = true;
      return result_;
    }
    const bool periodic = config_.checkpoint.every_steps > 0 && (step + 1) % config_.checkpoint.every_steps == 0;
    if (periodic && step + 1 < total_steps) checkpoint(step + 1);
    if (config_.eval.every_steps > 0 && (step + 1) % config_.eval.every_steps == 0 && step + 1 < total_steps) {
      evaluate_at(step + 1);
    }
    if (step + 1 < total_steps && target_reached_at(step + 1)) {
      step_buffers_.batch.take();  // the prefetched batch is not needed
      return finish_at_target(step + 1);
    }
  }
  if (config_.checkpoint.every_steps > 0 && total_steps > first_step_) checkpoint(total_steps);
  evaluate_at(total_steps);
  if (options_.target != nullptr) target_reached_at(total_steps);
  flush_device_timeline();
  result_.noise_scale = noise_scale_.b_simple();
  progress_->finish();
  summarize();
  return result_;
}

}  // namespace

TrainResult train(const Config& requested, Context& ctx, Communicator& comm, Communicator& control,
                  const std::string& run_dir, std::ostream& log, const TrainOptions& options) {
  const bool leader = comm.rank() == 0;
  std::ostringstream quiet;
  const std::string checkpoint_dir = checkpoint_dir_of(requested, run_dir);
  // See Note [Checkpoint directory seen by every node]; one rank sees its own writes.
  if (control.size() > 1) check_checkpoint_dir_shared(checkpoint_dir, this_host_name(), control);
  ResumePoint resume = find_resume_point(options.resume, checkpoint_dir, control, leader ? log : quiet);
  const Config config = reconcile_with_checkpoint(requested, resume, leader);
  TrainingSetup setup =
      setup_training(config, ctx, control, options.ranks_sharing_device, run_dir, /*probe_step=*/true, &comm);
  TrainingRun run(config, setup, resume, ctx, comm, control, run_dir, log, options);
  return run.run();
}

}  // namespace dtrain
