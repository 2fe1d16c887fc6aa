#include "runtime/trainer.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "comm/gradient_reducer.h"
#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "models/model.h"
#include "runtime/batch_plan.h"
#include "runtime/dataset.h"
#include "runtime/device_batch.h"
#include "runtime/evaluator.h"
#include "runtime/global_sampler.h"
#include "runtime/lr_schedule.h"
#include "runtime/metrics_writer.h"
#include "runtime/optimizer.h"
#include "runtime/param_check.h"
#include "runtime/setup_agreement.h"

namespace dtrain {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int64_t total_steps_of(const Config& c, int64_t steps_per_epoch) {
  const int64_t by_epochs = c.train.epochs * steps_per_epoch;
  if (c.train.max_steps == 0) return by_epochs;
  if (!c.epochs_given) return c.train.max_steps;
  return std::min(c.train.max_steps, by_epochs);
}

double mib(size_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0); }

std::string format(const char* fmt, double a) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), fmt, a);
  return buf;
}

// Everything a run needs, built without collectives (Note [Setup agreement]).
struct TrainingSetup {
  BatchPlan plan;
  DataSplits data;
  std::unique_ptr<GlobalSampler> sampler;
  int64_t steps_per_epoch = 0;
  int64_t total_steps = 0;
  std::unique_ptr<Model> model;
  std::unique_ptr<Optimizer> optimizer;
};

TrainingSetup prepare(const Config& config, Context& ctx, const Communicator& comm, const std::string& run_dir) {
  TrainingSetup s;
  s.plan = make_uniform_plan(config.train.global_batch, config.train.micro_batch, comm.size(),
                             config.where("train.global_batch"));
  s.data = load_data(config.data, config.train.seed);
  s.sampler = std::make_unique<GlobalSampler>(s.data.train->size(), config.train.seed);
  s.steps_per_epoch = s.sampler->batches_per_epoch(s.plan.global_batch);
  if (s.steps_per_epoch == 0) {
    throw ConfigError(config.where("train.global_batch") + ": train.global_batch = " +
                      std::to_string(s.plan.global_batch) + " is larger than the " +
                      std::to_string(s.data.train->size()) + " training samples of " + s.data.train->name() +
                      "; lower it");
  }
  s.total_steps = total_steps_of(config, s.steps_per_epoch);
  s.model = build_model(ctx, config.model, s.data.train->sample_shape(), s.data.train->num_classes());
  s.model->init(config.train.seed);
  s.optimizer = make_optimizer(config.optimizer, ctx, s.model->param_count());
  if (comm.rank() == 0) {
    std::error_code ec;
    std::filesystem::create_directories(run_dir, ec);
    if (ec) throw DataError("cannot create run directory '" + run_dir + "': " + ec.message() + "; pass a writable --run-dir");
  }
  return s;
}

}  // namespace

TrainResult train(const Config& config, Context& ctx, Communicator& comm, Communicator& control,
                  const std::string& run_dir, std::ostream& log) {
  const bool leader = comm.rank() == 0;
  TrainingSetup setup;
  std::exception_ptr setup_error;
  try {
    setup = prepare(config, ctx, comm, run_dir);
  } catch (...) {
    setup_error = std::current_exception();
  }
  agree_on_setup(control, setup_error);
  try {
    verify_identical_params(*setup.model, ctx, control);
  } catch (Error& e) {
    e.set_agreed(leader);  // every rank gathered the same checksums and throws alike
    throw;
  }

  const BatchPlan& plan = setup.plan;
  const DataSplits& data = setup.data;
  GlobalSampler& sampler = *setup.sampler;
  const int64_t steps_per_epoch = setup.steps_per_epoch;
  const int64_t total_steps = setup.total_steps;
  Model* model = setup.model.get();
  Optimizer* optimizer = setup.optimizer.get();

  std::vector<FlatRange> layer_ranges;
  for (const ParamRange& r : model->layer_params()) layer_ranges.push_back({r.offset, r.count});
  const auto bucket_cap = static_cast<int64_t>(config.comm.bucket_mb * 1024 * 1024 / sizeof(float));
  GradientReducer reducer(comm, model->grads(), layer_ranges, std::max<int64_t>(1, bucket_cap));

  const int64_t my_micro = plan.micro_batch[static_cast<size_t>(comm.rank())];
  DeviceBatch batch(ctx, data.train->sample_shape(), my_micro);
  const int64_t classes = data.train->num_classes();
  Buffer loss_stats(ctx.allocator(), 2 * sizeof(double), MemoryCategory::Workspace);
  Buffer dlogits_buffer(ctx.allocator(), static_cast<size_t>(my_micro * classes) * sizeof(float),
                        MemoryCategory::Activations);
  const double zeros[2] = {0.0, 0.0};
  // Contract 2: every sample's loss is divided by the global batch, never by k or n.
  const float grad_scale = static_cast<float>(1.0 / static_cast<double>(plan.global_batch));

  std::optional<MetricsWriter> metrics;
  if (leader) {
    std::ofstream(run_dir + "/config.yaml")
        << config_to_yaml(config, {"world_size: " + std::to_string(comm.size()) + " (" + comm.backend_name() + ")",
                                   "micro_batch per rank: " + std::to_string(my_micro),
                                   "accumulation_steps: " + std::to_string(plan.accumulation_steps),
                                   "global_batch: " + std::to_string(plan.global_batch),
                                   "steps: " + std::to_string(total_steps)});
    std::ofstream(run_dir + "/metrics.jsonl", std::ios::trunc);
    metrics.emplace(run_dir + "/metrics.jsonl");
    log << "dtrain: " << comm.size() << " rank(s) over " << comm.backend_name() << ", device "
        << ctx.device_name() << " with " << ctx.num_threads() << " thread(s) per rank\n"
        << "dtrain: model " << config.model.name << " (" << model->param_count() << " parameters), data "
        << data.train->name() << " (" << data.train->size() << " train, " << data.test->size() << " test)\n"
        << "dtrain: global batch " << plan.global_batch << " = " << comm.size() << " rank(s) x micro-batch "
        << my_micro << " x " << plan.accumulation_steps << " accumulation step(s); " << steps_per_epoch
        << " steps per epoch, " << total_steps << " steps; run directory " << run_dir << "\n";
    log.flush();
  }

  TrainResult result;
  const auto t_start = Clock::now();
  auto t_log = t_start;
  int64_t samples = 0, samples_at_log = 0;
  auto run_eval = [&](int64_t step) {
    const EvalResult e = evaluate(*model, *data.test, ctx, comm, config.eval.batch);
    result.eval_loss = e.loss;
    result.eval_accuracy = e.accuracy;
    if (leader) {
      metrics->write("eval", {{"step", double(step)}, {"eval_loss", e.loss}, {"eval_accuracy", e.accuracy}});
      log << "eval  step " << step << " | test loss " << format("%.4f", e.loss) << " | test accuracy "
          << format("%.4f", e.accuracy) << "\n";
      log.flush();
    }
  };

  // This rank's samples for micro-step `micro` of optimizer step `step`.
  auto prefetch = [&](int64_t step, int64_t micro) {
    batch.prefetch(*data.train, sampler.slice(plan, step / steps_per_epoch, step % steps_per_epoch, micro,
                                              comm.rank()));
  };
  if (total_steps > 0) prefetch(0, 0);

  for (int64_t step = 0; step < total_steps; ++step) {
    const auto t_step = Clock::now();
    const double lr = lr_at(config.schedule, config.optimizer.lr, step, total_steps);

    ops::copy_from_host(ctx, loss_stats.data(), zeros, sizeof(zeros));
    for (int64_t micro = 0; micro < plan.accumulation_steps; ++micro) {
      const bool last = micro + 1 == plan.accumulation_steps;
      ConstTensor x = batch.take();
      // The next micro-batch is gathered and uploaded while this one computes.
      if (!last) {
        prefetch(step, micro + 1);
      } else if (step + 1 < total_steps) {
        prefetch(step + 1, 0);
      }
      ConstTensor logits = model->forward(x);
      Tensor dlogits(dlogits_buffer.as<float>(), logits.shape);
      ops::softmax_cross_entropy(ctx, logits.data, batch.labels(), x.dim(0), classes, grad_scale,
                                 dlogits.data, loss_stats.as<double>());
      if (last) {
        model->backward(dlogits, [&](int layer) { reducer.on_layer_done(layer); });
      } else {
        model->backward(dlogits);
      }
    }
    reducer.finish();
    all_reduce(comm, std::span<double>(loss_stats.as<double>(), 1))->wait();
    double loss_sum[2];
    ops::copy_to_host(ctx, loss_sum, loss_stats.data(), sizeof(loss_sum));
    const double loss = loss_sum[0] / static_cast<double>(plan.global_batch);

    optimizer->step(ctx, model->params(), model->grads(), lr);
    model->zero_grads();
    samples += plan.global_batch;
    result.steps = step + 1;
    result.final_loss = loss;

    if (leader) {
      const double step_s = seconds_since(t_step);
      const MemoryStats memory = ctx.allocator().stats();
      metrics->write("train", {{"step", double(step + 1)},
                               {"epoch", double(step) / double(steps_per_epoch)},
                               {"loss", loss},
                               {"lr", lr},
                               {"samples", double(samples)},
                               {"samples_per_s", double(plan.global_batch) / step_s},
                               {"time_s", seconds_since(t_start)},
                               {"mem_in_use_mib", mib(memory.in_use)},
                               {"mem_peak_mib", mib(memory.peak)}});
      if ((step + 1) % config.log.every_steps == 0 || step + 1 == total_steps) {
        const double interval = seconds_since(t_log);
        log << "step " << step + 1 << "/" << total_steps << " | epoch " << step / steps_per_epoch << " | loss "
            << format("%.4f", loss) << " | lr " << format("%.4g", lr) << " | "
            << format("%.0f", double(samples - samples_at_log) / interval) << " samples/s | mem "
            << format("%.1f", mib(memory.in_use)) << " MiB, peak " << format("%.1f", mib(memory.peak))
            << " MiB\n";
        log.flush();
        t_log = Clock::now();
        samples_at_log = samples;
      }
    }
    if (config.eval.every_steps > 0 && (step + 1) % config.eval.every_steps == 0 && step + 1 < total_steps) {
      run_eval(step + 1);
    }
  }
  run_eval(total_steps);
  if (leader) {
    log << "dtrain: done: " << total_steps << " steps in " << format("%.1f", seconds_since(t_start))
        << " s; final test accuracy " << format("%.4f", result.eval_accuracy) << " (test loss "
        << format("%.4f", result.eval_loss) << ")\n";
    log.flush();
  }
  return result;
}

}  // namespace dtrain
