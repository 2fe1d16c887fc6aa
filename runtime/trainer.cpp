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
#include "runtime/checkpointing.h"
#include "runtime/evaluator.h"
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

}  // namespace

TrainResult train(const Config& requested, Context& ctx, Communicator& comm, Communicator& control,
                  const std::string& run_dir, std::ostream& log, const TrainOptions& options) {
  const bool leader = comm.rank() == 0;
  FaultInjector& faults = options.faults != nullptr ? *options.faults : no_faults();
  const std::string checkpoint_dir = checkpoint_dir_of(requested, run_dir);
  std::ostringstream quiet;  // ranks other than 0 say nothing
  std::ostream& say = leader ? log : quiet;

  // A resumed run keeps the checkpoint's global batch; the planner re-plans k for
  // this run's ranks and memory.
  ResumePoint resume = find_resume_point(options.resume, checkpoint_dir, control, say);
  Config config = requested;
  if (resume.found) {
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
  }
  TrainingSetup setup = setup_training(config, ctx, control, options.ranks_sharing_device, run_dir);
  const BatchPlan& plan = setup.plan();
  const DataSplits& data = setup.data;
  GlobalSampler& sampler = *setup.sampler;
  const int64_t steps_per_epoch = setup.steps_per_epoch;
  const int64_t total_steps = setup.total_steps;
  Model* model = setup.model.get();
  Optimizer* optimizer = setup.optimizer.get();

  std::vector<FlatRange> layer_ranges;
  for (const ParamRange& r : model->param_ranges()) layer_ranges.push_back({r.offset, r.count});
  const auto bucket_cap = static_cast<int64_t>(config.comm.bucket_mb * 1024 * 1024 / sizeof(float));
  GradientReducer reducer(comm, model->grads(), layer_ranges, std::max<int64_t>(1, bucket_cap));

  const int64_t my_micro = plan.micro_batch[static_cast<size_t>(comm.rank())];
  const int64_t eval_chunk = std::min(my_micro, config.eval.batch);
  StepBuffers step_buffers(ctx, data.train->layout(), my_micro);
  DeviceBatch& batch = step_buffers.batch;
  // Destroyed before the reducer's Works and the batch (Note [Abort before unwinding]).
  const AbortCommunicatorOnError abort_on_error(comm);
  double* stats = step_buffers.stats.as<double>();
  // Contract 2: every sample's loss is divided by the global batch, never by k or n.
  const float grad_scale = static_cast<float>(1.0 / static_cast<double>(plan.global_batch));

  const NoiseProbe noise = noise_probe_for(config, plan, comm.rank());
  // What the held-out split is called: a classifier's test set, a text's validation split.
  const std::string held_out = data.train->layout().input_type == ElementType::kInt32 ? "validation" : "test";
  NoiseScaleEstimator noise_scale(config.log.noise_ema);
  int64_t first_step = 0, samples = 0;
  if (resume.found) {
    restore_from(resume, config, plan.global_batch, *model, *optimizer, noise_scale, ctx, control);
    first_step = std::min(resume.state.step, total_steps);
    samples = resume.state.samples;
  }
  if (noise.mode == NoiseProbe::kPerRank) {
    reducer.set_before_launch([&](const GradientBucket& b) {
      ops::sum_squares(ctx, model->grads() + b.offset, b.count, noise.mine.a, stats + kSmallGradA);
      ops::sum_squares(ctx, model->grads() + b.offset, b.count, noise.mine.b, stats + kSmallGradB);
    });
  }

  std::optional<MetricsWriter> metrics;
  if (leader) {
    std::filesystem::create_directories(run_dir);
    std::ofstream(run_dir + "/config.yaml")
        << config_to_yaml(config, {"world_size: " + std::to_string(comm.size()) + " (" + comm.backend_name() + ")",
                                   "micro_batch per rank: " + std::to_string(my_micro) + " (rank 0; plan.json has all)",
                                   "accumulation_steps: " + std::to_string(plan.accumulation_steps),
                                   "global_batch: " + std::to_string(plan.global_batch),
                                   "effective lr: " + format("%.6g", setup.lr),
                                   "steps: " + std::to_string(total_steps)});
    std::ofstream(run_dir + "/plan.json") << plan_json(setup.summary(config));
    // A resumed run appends to the metrics of the run it continues.
    if (resume.found) {
      MetricsWriter::keep_up_to_step(run_dir + "/metrics.jsonl", first_step);
    } else {
      std::ofstream(run_dir + "/metrics.jsonl", std::ios::trunc);
    }
    metrics.emplace(run_dir + "/metrics.jsonl");
    log << "dtrain: " << comm.size() << " rank(s) over " << comm.backend_name() << ", device "
        << ctx.device_name() << " with " << ctx.num_threads() << " thread(s) per rank\n"
        << "dtrain: model " << config.model.name << " (" << model->param_count() << " parameters), data "
        << data.train->name() << " (" << data.train->size() << " train, " << data.test->size() << " test)\n"
        << plan_text(setup.summary(config))
        << "dtrain: " << total_steps << " steps; run directory " << run_dir << "\n";
    log.flush();
  }

  // Achieved FLOP/s counts the model's training FLOPs (3x forward), all ranks together.
  const double flops_per_sample = static_cast<double>(model->training_flops_per_sample());
  const double peak_flops = ctx.backend().peak_flops() * comm.size();
  TrainResult result;
  result.first_step = first_step;
  result.steps = first_step;
  const auto t_start = Clock::now();
  auto t_log = t_start;
  int64_t samples_at_log = samples;
  ProgressReporter progress(say, options.terminal, first_step, total_steps, config.log.every_steps);
  // The timeline (log.trace): one file per rank, written off the training thread.
  std::unique_ptr<TraceWriter> trace;
  if (config.log.trace) {
    std::filesystem::create_directories(run_dir + "/trace");
    trace = std::make_unique<TraceWriter>(run_dir + "/trace/rank-" + std::to_string(comm.rank()) + ".json", comm.rank());
    reducer.set_on_reduced([&](size_t bucket, GradientReducer::Clock::time_point launched,
                               GradientReducer::Clock::time_point done) {
      trace->complete("all-reduce bucket " + std::to_string(bucket), "comm", launched, done, result.steps + 1);
    });
  }
  TraceWriter* timeline = trace.get();
  auto checkpoint = [&](int64_t steps_done) {
    TraceScope scope(timeline, "checkpoint", "io", steps_done);
    progress.finish();  // the checkpoint's own line goes below the bar
    faults.in_checkpoint(comm.rank());
    std::optional<CheckpointState> state;
    if (leader) {
      state = capture_state(config, plan, steps_done, samples, steps_per_epoch, *model, *optimizer, noise_scale, ctx);
    }
    save_checkpoint(config, checkpoint_dir, state ? &*state : nullptr, steps_done, control, log);
  };
  auto run_eval = [&](int64_t step) {
    TraceScope scope(timeline, "evaluation", "eval", step);
    const EvalResult e = evaluate(*model, *data.test, ctx, comm, eval_chunk);
    result.eval_loss = e.loss;
    result.eval_accuracy = e.metric("accuracy");
    result.eval_metrics = e.metrics;
    if (leader) {
      std::vector<std::pair<std::string, double>> fields = {{"step", double(step)}, {"eval_loss", e.loss}};
      std::string line = "eval  step " + std::to_string(step) + " | " + held_out + " loss " + format("%.4f", e.loss);
      for (const Metric& m : e.metrics) {
        fields.push_back({"eval_" + m.name, m.value});
        line += " | " + held_out + " " + spaced(m.name) + " " + format("%.4f", m.value);
      }
      metrics->write("eval", fields);
      progress.line(line);
    }
  };


  // This rank's samples for micro-step `micro` of optimizer step `step`.
  auto prefetch = [&](int64_t step, int64_t micro) {
    TraceScope scope(timeline, "data", "data", step + 1);
    const int64_t epoch = step / steps_per_epoch;
    batch.prefetch(*data.train, epoch, sampler.slice(plan, epoch, step % steps_per_epoch, micro, comm.rank()));
  };
  if (first_step < total_steps) prefetch(first_step, 0);

  for (int64_t step = first_step; step < total_steps; ++step) {
    const auto t_step = Clock::now();
    if (options.on_step) options.on_step(step + 1);
    faults.at_step_start(step + 1, comm.rank());
    const double lr = lr_at(setup.schedule, setup.lr, step, total_steps);

    double initial[kStepStats] = {};
    const bool signalled = options.stop_requested != nullptr && *options.stop_requested != 0;
    const bool hooked = faults.stop_requested(step + 1, comm.rank());
    initial[kStopRequests] = signalled || hooked ? 1.0 : 0.0;
    ops::copy_from_host(ctx, stats, initial, sizeof(initial));
    for (int64_t micro = 0; micro < plan.accumulation_steps; ++micro) {
      const bool last = micro + 1 == plan.accumulation_steps;
      Batch micro_batch = [&] {
        TraceScope scope(timeline, "data wait", "data", step + 1);
        return batch.take();
      }();
      micro_batch.step = step;
      {
        TraceScope forward_scope(timeline, "forward", "compute", step + 1);
        model->forward(micro_batch, Pass::kTrain, grad_scale, stats + kLossSum);
      }
      {
        TraceScope backward_scope(timeline, "backward", "compute", step + 1);
        if (last) faults.before_last_backward(step + 1, comm.rank(), ctx, model->grads(), model->param_count());
        if (last) {
          model->backward([&](int range) { reducer.on_layer_done(range); });
        } else {
          model->backward();
        }
        if (micro == 0 && noise.mode == NoiseProbe::kFirstMicroStep) {
          ops::sum_squares(ctx, model->grads(), model->param_count(), noise.mine.a, stats + kSmallGradA);
          ops::sum_squares(ctx, model->grads(), model->param_count(), noise.mine.b, stats + kSmallGradB);
        }
      }
      // The next micro-batch is gathered on the host while the device runs the work
      // just queued (on a GPU), and uploaded alongside it (Note [Batch prefetch]).
      if (!last) {
        prefetch(step, micro + 1);
      } else if (step + 1 < total_steps) {
        prefetch(step + 1, 0);
      }
    }
    {
      TraceScope scope(timeline, "all-reduce wait", "comm", step + 1);
      reducer.finish();
    }
    // |G|^2 of the reduced gradient: the same on every rank, so a NaN or Inf in any
    // rank's gradient is seen by all alike, as is one in the all-reduced loss sum.
    ops::sum_squares(ctx, model->grads(), model->param_count(), 1.0, stats + kGradSqNorm);
    all_reduce(comm, std::span<double>(stats, kGradSqNorm))->wait();
    double sums[kStepStats];
    ops::copy_to_host(ctx, sums, stats, sizeof(sums));
    const double loss = sums[kLossSum] / static_cast<double>(plan.global_batch);
    const bool finite = std::isfinite(loss) && std::isfinite(sums[kGradSqNorm]);
    if (!finite) {
      const std::string what = "step " + std::to_string(step + 1) + " has a non-finite " +
                               (std::isfinite(loss) ? "gradient (|G|^2 = " + format("%g", sums[kGradSqNorm]) + ")"
                                                    : "loss (" + format("%g", loss) + ")");
      if (config.train.on_nonfinite == "stop") {
        NonFiniteError e(what + "; stopping (train.on_nonfinite: stop). Lower optimizer.lr or check the data; " +
                         "the last checkpoint, if any, is in " + checkpoint_dir);
        e.set_agreed(leader);  // every rank computed the same sums
        throw e;
      }
      progress.line("dtrain: " + what + "; its update is skipped (train.on_nonfinite: skip)");
      ++result.skipped_steps;
    } else {
      if (noise.mode != NoiseProbe::kOff) {
        noise_scale.add_weighted(sums[kSmallGradA], sums[kSmallGradB], sums[kGradSqNorm], noise.gradient_sq_sum,
                                 noise.trace_sum, noise.small_batches);
      }
      TraceScope scope(timeline, "optimizer step", "compute", step + 1);
      // As torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when below 1.
      const double grad_norm = std::sqrt(sums[kGradSqNorm]);
      if (config.optimizer.clip_grad_norm > 0) {
        const double coef = config.optimizer.clip_grad_norm / (grad_norm + 1e-6);
        if (coef < 1.0) ops::scale(ctx, model->grads(), model->param_count(), static_cast<float>(coef));
      }
      optimizer->step(ctx, model->params(), model->grads(), lr);
    }
    model->zero_grads();
    samples += plan.global_batch;
    result.steps = step + 1;
    result.final_loss = loss;

    if (leader) {
      const double step_s = seconds_since(t_step);
      const MemoryStats memory = ctx.allocator().stats();
      std::vector<std::pair<std::string, double>> fields = {
          {"step", double(step + 1)},
          {"epoch", double(step) / double(steps_per_epoch)},
          {"loss", loss},
          {"lr", lr},
          {"grad_norm", std::sqrt(sums[kGradSqNorm])},
          {"samples", double(samples)},
          {"samples_per_s", double(plan.global_batch) / step_s},
          {"flops_per_s", flops_per_sample * double(plan.global_batch) / step_s},
          {"time_s", seconds_since(t_start)},
          {"mem_in_use_mib", mib(memory.in_use)},
          {"mem_peak_mib", mib(memory.peak)},
          {"mem_reserved_mib", mib(memory.reserved)},
          {"mem_peak_reserved_mib", mib(memory.peak_reserved)}};
      if (noise_scale.ready()) {
        fields.push_back({"grad_sq", noise_scale.gradient_sq()});
        fields.push_back({"trace_sigma", noise_scale.trace_sigma()});
        fields.push_back({"noise_scale", noise_scale.b_simple()});
      }
      metrics->write("train", fields);
      // samples/s over the current log window (log.every_steps steps).
      progress.step(StepProgress{step + 1, step / steps_per_epoch, loss, lr,
                                 double(samples - samples_at_log) / std::max(1e-9, seconds_since(t_log)),
                                 mib(memory.in_use), mib(memory.peak), mib(memory.reserved)});
      if ((step + 1) % config.log.every_steps == 0) {
        t_log = Clock::now();
        samples_at_log = samples;
      }
    }
    if (sums[kStopRequests] > 0) {  // every rank sees the same sum and stops here
      progress.line("dtrain: stop requested (a signal) after step " + std::to_string(step + 1) +
                    "; writing a checkpoint");
      if (step + 1 < total_steps) batch.take();  // the prefetched batch is not needed
      checkpoint(step + 1);
      result.stopped = true;
      return result;
    }
    const bool periodic = config.checkpoint.every_steps > 0 && (step + 1) % config.checkpoint.every_steps == 0;
    if (periodic && step + 1 < total_steps) checkpoint(step + 1);
    if (config.eval.every_steps > 0 && (step + 1) % config.eval.every_steps == 0 && step + 1 < total_steps) {
      run_eval(step + 1);
    }
  }
  if (config.checkpoint.every_steps > 0 && total_steps > first_step) checkpoint(total_steps);
  run_eval(total_steps);
  result.noise_scale = noise_scale.b_simple();
  progress.finish();
  if (leader) {
    const double trained = static_cast<double>(result.steps - first_step) * static_cast<double>(plan.global_batch);
    const double flops = flops_per_sample * trained / std::max(1e-9, seconds_since(t_start));
    log << "dtrain: throughput " << format("%.3g", flops / 1e9) << " GFLOP/s over all ranks ("
        << format("%.3g", flops_per_sample / 1e6) << " MFLOP per training sample)";
    if (peak_flops > 0) log << ", " << format("%.2f", 100.0 * flops / peak_flops) << "% of the GPUs' fp32 peak";
    log << "\n";
    // The model's first metric leads (a classifier's accuracy), the loss follows.
    log << "dtrain: done: " << total_steps << " steps in " << format("%.1f", seconds_since(t_start)) << " s; final ";
    if (result.eval_metrics.empty()) {
      log << held_out << " loss " << format("%.4f", result.eval_loss) << "\n";
    } else {
      const Metric& lead = result.eval_metrics.front();
      log << held_out << " " << spaced(lead.name) << " " << format("%.4f", lead.value) << " (" << held_out << " loss "
          << format("%.4f", result.eval_loss);
      for (size_t i = 1; i < result.eval_metrics.size(); ++i) {
        log << ", " << spaced(result.eval_metrics[i].name) << " " << format("%.4f", result.eval_metrics[i].value);
      }
      log << ")\n";
    }
    // Said in the plan at start-up too; repeated where a reader of the results looks.
    for (const std::string& note : determinism_notes(setup.planned)) log << "dtrain: " << note << "\n";
    log << noise_scale_verdict(noise_scale, plan.global_batch, noise.mode != NoiseProbe::kOff,
                               config.log.noise_scale);
    if (model->can_generate() && data.train->tokens_are_bytes()) print_sample(*model, config.train.seed, log);
    log.flush();
  }
  return result;
}

}  // namespace dtrain
