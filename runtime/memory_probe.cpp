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
  // Adaptive: rounds of the two micro-batches in turn, each figure the median of its
  // rounds' means, so that a moment of other load on the machine moves one round and
  // not the line.
  int rounds = 1;
  if (reps <= 0) {
    const double once = time_micro_step(model, ctx, data, line.large, 1);
    reps = static_cast<int>(std::clamp(0.25 / std::max(once, 1e-6), 3.0, 100.0));
    rounds = 5;
    reps = std::max(1, reps / rounds);
  }
  auto median = [](std::vector<double> v) {
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
    return v[v.size() / 2];
  };
  std::vector<double> large_s, small_s;
  for (int r = 0; r < rounds; ++r) {
    large_s.push_back(time_micro_step(model, ctx, data, line.large, reps));
    if (line.small != line.large) small_s.push_back(time_micro_step(model, ctx, data, line.small, reps));
  }
  const double t_large = median(large_s);
  if (line.small == line.large) {
    line.per_sample_s = t_large / static_cast<double>(line.large);
    return line;
  }
  const double t_small = median(small_s);
  line.per_sample_s = std::max(0.0, (t_large - t_small) / static_cast<double>(line.large - line.small));
  line.fixed_s = std::max(0.0, t_large - line.per_sample_s * static_cast<double>(line.large));
  return line;
}

StepOverheads time_step_overheads(Model& model, Context& ctx, const Dataset& data, int64_t micro_batch, int reps) {
  reps = std::max(1, reps);
  const int64_t b = std::max<int64_t>(1, micro_batch);
  StepBuffers step(ctx, data.layout(), b);
  // Training gathers shuffled samples from all over the dataset: each gather here
  // takes the next b of a stride through it, so that the caches see what they would.
  std::vector<int64_t> indices(static_cast<size_t>(b));
  int64_t next = 0;
  auto next_indices = [&]() -> const std::vector<int64_t>& {
    constexpr int64_t kStride = 7919;  // a prime: every sample before one repeats
    for (int64_t& i : indices) i = (next++ * kStride) % data.size();
    return indices;
  };
  auto seconds_of = [&](auto&& once) {
    once();
    ctx.synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) once();
    ctx.synchronize();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  };
  StepOverheads o;
  o.data_per_sample_s = seconds_of([&] {
                          step.batch.prefetch(data, 0, next_indices());
                          step.batch.take();
                        }) /
                        static_cast<double>(b);
  o.gradient_pass_s = seconds_of(
      [&] { ops::sum_squares(ctx, model.grads(), model.param_count(), 1.0, step.stats.as<double>()); });
  o.zero_s = seconds_of([&] { model.zero_grads(); });
  return o;
}

double time_optimizer_step(Model& model, Optimizer& optimizer, Context& ctx, int reps) {
  constexpr double kLr = 1e-3;
  auto once = [&] { optimizer.step(ctx, model.params(), model.grads(), kLr, 1.0f, model.param_copy()); };
  once();
  ctx.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) once();
  ctx.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / std::max(1, reps);
}

}  // namespace dtrain
