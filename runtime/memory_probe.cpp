#include "runtime/memory_probe.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <vector>

#include "kernels/errors.h"
#include "kernels/ops.h"
#include "runtime/device_batch.h"
#include "runtime/step_buffers.h"

namespace dtrain {

namespace {

std::vector<int64_t> first_samples(const Dataset& data, int64_t count) {
  std::vector<int64_t> indices(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) indices[static_cast<size_t>(i)] = i % data.size();
  return indices;
}

void run_probe(Model& model, Context& ctx, const Dataset& data, int64_t micro_batch, int64_t eval_chunk) {
  StepBuffers step(ctx, data.layout(), micro_batch);
  const std::vector<int64_t> train_indices = first_samples(data, micro_batch);
  step.batch.prefetch(data, 0, train_indices);
  const Batch batch = step.batch.take();
  // Training prefetches its next micro-batch while this one computes: fill the other slot.
  step.batch.prefetch(data, 0, train_indices);
  ops::fill(ctx, step.stats.as<float>(), static_cast<int64_t>(step.stats.bytes() / sizeof(float)), 0.0f);
  model.forward(batch, Pass::kTrain, 1.0f, step.stats.as<double>());
  model.backward();

  // Evaluation runs while the training buffers are held (and a batch is in flight).
  DeviceBatch eval_batch(ctx, data.layout(), eval_chunk);
  Buffer eval_stats(ctx.allocator(), kModelStats * sizeof(double), MemoryCategory::Workspace);
  ops::fill(ctx, eval_stats.as<float>(), 2 * kModelStats, 0.0f);
  model.forward(eval_batch.load(data, 0, first_samples(data, eval_chunk)), Pass::kEval, 0.0f,
                eval_stats.as<double>());
  step.batch.take();  // orders the in-flight upload before the slot is freed
  ctx.synchronize();
}

}  // namespace

int64_t probe_micro_batch(Model& model, Context& ctx, const Dataset& data, int64_t micro_batch,
                          int64_t eval_chunk) {
  ctx.synchronize();
  ctx.allocator().reset_peak();
  try {
    run_probe(model, ctx, data, micro_batch, eval_chunk);
  } catch (const OutOfMemoryError&) {
    model.release_activations();
    ctx.release_workspace();
    model.zero_grads();
    throw;
  }
  model.zero_grads();
  return static_cast<int64_t>(ctx.allocator().stats().peak);
}

double time_micro_step(Model& model, Context& ctx, const Dataset& data, int64_t micro_batch, int reps) {
  StepBuffers step(ctx, data.layout(), micro_batch);
  step.batch.prefetch(data, 0, first_samples(data, micro_batch));
  const Batch batch = step.batch.take();
  ops::fill(ctx, step.stats.as<float>(), static_cast<int64_t>(step.stats.bytes() / sizeof(float)), 0.0f);
  auto once = [&] {
    model.forward(batch, Pass::kTrain, 1.0f, step.stats.as<double>());
    model.backward();
  };
  once();
  ctx.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) once();
  ctx.synchronize();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  model.zero_grads();
  return seconds / std::max(1, reps);
}

StepTimeLine time_step_line(Model& model, Context& ctx, const Dataset& data, int64_t largest, int reps) {
  StepTimeLine line;
  line.large = std::max<int64_t>(1, largest);
  line.small = std::max<int64_t>(1, line.large / 4);
  if (reps <= 0) {
    const double once = time_micro_step(model, ctx, data, line.large, 1);
    reps = static_cast<int>(std::clamp(0.25 / std::max(once, 1e-6), 3.0, 100.0));
  }
  const double t_large = time_micro_step(model, ctx, data, line.large, reps);
  if (line.small == line.large) {
    line.per_sample_s = t_large / static_cast<double>(line.large);
    return line;
  }
  const double t_small = time_micro_step(model, ctx, data, line.small, reps);
  line.per_sample_s = std::max(0.0, (t_large - t_small) / static_cast<double>(line.large - line.small));
  line.fixed_s = std::max(0.0, t_large - line.per_sample_s * static_cast<double>(line.large));
  return line;
}

double time_optimizer_step(Model& model, Optimizer& optimizer, Context& ctx, int reps) {
  constexpr double kLr = 1e-3;
  auto once = [&] { optimizer.step(ctx, model.params(), model.grads(), kLr, model.param_copy()); };
  once();
  ctx.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) once();
  ctx.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / std::max(1, reps);
}

}  // namespace dtrain
