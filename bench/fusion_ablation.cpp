// Times the GPT's training step on a GPU with each of the CUDA backend's fused paths
// (CudaFusions, kernels/context.h) switched off in turn, and all of them off: what each
// fusion buys in the whole step, where the kernel profile (bench/profile_gpt_kernels.sh)
// says only what the remaining kernels take. A step is what the trainer runs on one
// rank without accumulation: zero the gradients, forward and backward of one
// micro-batch, and the optimizer's update (make_optimizer, as the config says), on
// random tokens the same in every run (the same batch every step). Each run builds the
// model anew from the same parameters, so the losses are printed too: the first step's
// (its forward alone) and the one after the timed steps' updates (every fused path in
// it). The fusions change results only within their ops' bounds, so the runs' losses
// agree to bf16's roundings, and a fusion that broke the step shows there. "all fused"
// runs first and again last, so that a drift of the card's clocks shows. The two runs
// after the first have every fusion and one more lever each: CudaOptions::gemm_autotune
// (Note [GEMM autotuning]), whose timing of the GEMMs falls in the untimed first step,
// and CudaOptions::deterministic off (cuDNN's attention backward by atomics, Note
// [Fused attention]). Each line ends with the run's memory peak, and its workspaces'
// (cuDNN's attention backward keeps its dP or dQ buffer there). It checks nothing (the
// GPU tests do); scripts/gpu-check.sh records its lines.
// Usage: fusion_ablation CONFIG [STEPS [KEY=VALUE...]]   (bench/gpt2_124m.yaml; the
// median of STEPS timed steps, default 10, after 3 untimed; KEY=VALUE overrides the
// config as dtrain's --set does). Exit 77 where no CUDA device is visible, 2 on
// unusable arguments, 1 on an error (a variant that fails prints FAILED in its line
// and the others still run). FUSION_ABLATION_DEVICE=cpu-async runs the same
// steps on the CPU as a device, where no switch changes anything: a smoke test of the
// bench itself on a machine without a GPU (tests/e2e/CMakeLists.txt).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/gpt.h"
#include "runtime/config.h"
#include "runtime/optimizer.h"

namespace dtrain {
namespace {

struct Variant {
  const char* name;
  CudaFusions fusions;
  bool gemm_autotune = false;
  bool deterministic = true;
};

std::vector<Variant> variants() {
  const std::pair<const char*, bool CudaFusions::*> switches[] = {
      {"gelu_epilogue off", &CudaFusions::gelu_epilogue},
      {"gelu_backward off", &CudaFusions::gelu_backward},
      {"bias_gradient off", &CudaFusions::bias_gradient},
      {"layernorm_backward off", &CudaFusions::layernorm_backward},
      {"optimizer_spans off", &CudaFusions::optimizer_spans}};
  std::vector<Variant> out{{"all fused", CudaFusions{}}};
  // Every fusion and one more lever each, next, so that a run cut short still says
  // what the levers not yet measured on a GPU buy.
  out.push_back({"gemm_autotune on", CudaFusions{}, true});           // the GEMMs timed
  out.push_back({"deterministic off", CudaFusions{}, false, false});  // atomics in attention
  CudaFusions none;
  for (const auto& [name, on] : switches) {
    CudaFusions f;
    f.*on = false;
    none.*on = false;
    out.push_back({name, f});
  }
  out.push_back({"all off", none});
  // Again, last: a drift of the card's clocks over the runs shows as a difference from
  // the first.
  out.push_back({"all fused, again", CudaFusions{}});
  return out;
}

struct Timing {
  double median_ms;
  double first_loss;  // the first step's mean loss per sample: its forward alone
  double last_loss;   // after every step's update (the same batch each step), so
                      // every fused path, backward's and the optimizer's too, is in it
  // The allocator's peak of bytes in use over the run, and of its workspaces (where
  // cuDNN's attention backward keeps its dP or dQ buffer): what a lever costs or saves
  // in memory, which the planner turns into batch.
  double peak_mib;
  double peak_workspace_mib;
};

Buffer upload(Context& ctx, const void* host, size_t bytes) {
  Buffer b(ctx.allocator(), bytes, MemoryCategory::Other);
  ops::copy_from_host(ctx, b.data(), host, bytes);
  return b;
}

std::unique_ptr<Context> make_context(const Config& config, const Variant& variant, bool cpu_async) {
  if (cpu_async) return Context::make_cpu_async(2);
  CudaOptions options;
  options.tf32 = config.precision.tf32;
  options.fusions = variant.fusions;
  options.gemm_autotune = variant.gemm_autotune;
  options.deterministic = variant.deterministic;
  return Context::make_cuda(options);
}

// `initial`: the parameters every run starts from; empty, this run initialises them from
// the seed and fills it (GPT-2 124M's host initialisation takes seconds; once is enough).
Timing time_steps(const Config& config, const Variant& variant, int steps, bool cpu_async,
                  std::vector<float>& initial) {
  auto ctx = make_context(config, variant, cpu_async);
  ModelSpec spec = config.model;
  spec.compute = config.precision.compute;
  spec.recompute = "none";
  DataFacts data;
  data.layout.input = Shape{spec.seq_len};
  data.layout.input_type = ElementType::kInt32;
  data.layout.target = Shape{spec.seq_len};
  data.classes = spec.vocab;
  auto model = build_gpt(*ctx, spec, data);
  const int64_t n = model->param_count();
  if (initial.empty()) {
    model->init(static_cast<uint64_t>(config.train.seed));
    initial.resize(static_cast<size_t>(n));
    ops::copy_to_host(*ctx, initial.data(), model->params(), initial.size() * sizeof(float));
  } else {
    model->load_params(initial.data(), n);
    model->zero_grads();
  }
  auto optimizer = make_optimizer(config.optimizer, *ctx, n,
                                  decay_spans(model->param_tensors(), n, config.optimizer.decay_filter));

  const int64_t batch_size = config.train.micro_batch;
  std::vector<int32_t> tokens(static_cast<size_t>(batch_size * spec.seq_len)), targets(tokens.size());
  Rng rng(11);
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = static_cast<int32_t>(rng.below(static_cast<uint64_t>(spec.vocab)));
    targets[i] = static_cast<int32_t>(rng.below(static_cast<uint64_t>(spec.vocab)));
  }
  std::vector<int64_t> ids(static_cast<size_t>(batch_size));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
  Buffer d_tokens = upload(*ctx, tokens.data(), tokens.size() * sizeof(int32_t));
  Buffer d_targets = upload(*ctx, targets.data(), targets.size() * sizeof(int32_t));
  Buffer d_ids = upload(*ctx, ids.data(), ids.size() * sizeof(int64_t));
  Buffer d_stats(ctx->allocator(), kModelStats * sizeof(double), MemoryCategory::Other);
  const double zeros[kModelStats] = {};

  Batch batch;
  batch.size = batch_size;
  batch.inputs = d_tokens.data();
  batch.targets = d_targets.as<int32_t>();
  batch.sample_ids = d_ids.as<int64_t>();
  const auto step = [&](int64_t s) {
    batch.step = s;
    model->zero_grads();
    model->forward(batch, Pass::kTrain, 1.0f / static_cast<float>(batch_size), d_stats.as<double>());
    model->backward();
    optimizer->step(*ctx, model->master(), model->grads(), config.optimizer.lr, 1.0f, model->param_copy());
  };

  // The mean loss of step s's forward, read after the step (untimed).
  const auto loss_of_step = [&](int64_t s) {
    ops::copy_from_host(*ctx, d_stats.data(), zeros, sizeof(zeros));
    step(s);
    double stats[kModelStats];
    ops::copy_to_host(*ctx, stats, d_stats.data(), sizeof(stats));
    return stats[kModelLossSum] / static_cast<double>(batch_size);
  };
  Timing t{};
  t.first_loss = loss_of_step(0);
  for (int64_t s = 1; s < 3; ++s) step(s);
  ctx->synchronize();
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    step(3 + i);
    ctx->synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  t.median_ms = ms[ms.size() / 2];
  t.last_loss = loss_of_step(3 + steps);
  const MemoryStats memory = ctx->allocator().stats();
  t.peak_mib = static_cast<double>(memory.peak) / (1 << 20);
  t.peak_workspace_mib =
      static_cast<double>(memory.peak_by[static_cast<int>(MemoryCategory::Workspace)]) / (1 << 20);
  return t;
}

int run(const std::string& config_file, int steps, const std::vector<std::string>& overrides) {
  const char* device = std::getenv("FUSION_ABLATION_DEVICE");
  const bool cpu_async = device != nullptr && std::string(device) == "cpu-async";
  if (device != nullptr && !cpu_async && std::string(device) != "cuda") {
    std::fprintf(stderr, "fusion_ablation: FUSION_ABLATION_DEVICE is '%s'; use cuda (the default) or cpu-async\n",
                 device);
    return 2;
  }
  if (!cpu_async && cuda_device_count() == 0) {
    std::printf("fusion_ablation: no CUDA device visible\n");
    return 77;
  }
  const Config config = load_config(config_file, overrides);
  if (config.model.name != "gpt") {
    std::fprintf(stderr,
                 "fusion_ablation: %s: model.name is '%s'; the ablation is of the GPT's step (model.name: gpt)\n",
                 config_file.c_str(), config.model.name.c_str());
    return 2;
  }
  if (config.train.micro_batch == kAuto) {
    std::fprintf(stderr, "fusion_ablation: %s: train.micro_batch is auto; the ablation times a given micro-batch: "
                 "set a number\n", config_file.c_str());
    return 2;
  }
  std::printf("fusion_ablation: %s on %s, %s, micro-batch %lld x %lld tokens, median of %d steps\n",
              config_file.c_str(), cpu_async ? "cpu-async (no switch applies)" : "cuda",
              config.precision.compute.c_str(), static_cast<long long>(config.train.micro_batch),
              static_cast<long long>(config.model.seq_len), steps);
  Timing base{};
  std::vector<float> initial;
  int failed = 0;
  for (const Variant& v : variants()) {
    // A lever that fails (a library refusing a configuration never run on this card)
    // costs its own line, not the lines after it: each variant builds its own context.
    Timing t{};
    try {
      t = time_steps(config, v, steps, cpu_async, initial);
    } catch (const std::exception& e) {
      std::printf("fusion_ablation %-24s FAILED: %s\n", v.name, e.what());
      std::fflush(stdout);
      ++failed;
      continue;
    }
    if (base.median_ms == 0.0) {
      base = t;
      if (failed > 0) std::printf("fusion_ablation: all fused failed; the relative figures below are to '%s'\n", v.name);
    }
    std::printf("fusion_ablation %-24s step %8.3f ms (%+7.3f ms, %5.3fx all fused's), first loss %.6f (%+.1e), "
                "last loss %.6f (%+.1e relative), peak %.1f MiB (workspaces %.1f MiB)\n",
                v.name, t.median_ms, t.median_ms - base.median_ms, t.median_ms / base.median_ms, t.first_loss,
                (t.first_loss - base.first_loss) / base.first_loss, t.last_loss,
                (t.last_loss - base.last_loss) / base.last_loss, t.peak_mib, t.peak_workspace_mib);
    std::fflush(stdout);
  }
  if (failed > 0) {
    std::fprintf(stderr, "fusion_ablation: %d of %zu variants failed (their lines say why)\n", failed,
                 variants().size());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace dtrain

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: fusion_ablation CONFIG [STEPS [KEY=VALUE...]]   (e.g. bench/gpt2_124m.yaml 10)\n");
    return 2;
  }
  const int steps = argc > 2 ? std::atoi(argv[2]) : 10;
  if (steps < 1) {
    std::fprintf(stderr, "fusion_ablation: STEPS must be a positive count, got '%s'\n", argv[2]);
    return 2;
  }
  try {
    return dtrain::run(argv[1], steps, std::vector<std::string>(argv + std::min(argc, 3), argv + argc));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fusion_ablation: %s\n", e.what());
    return 1;
  }
}
