#include <algorithm>
#include <cstdio>
#include <span>
#include <vector>
#include <iostream>
#include <iterator>

#include "comm/gradient_reducer.h"
#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "launch/job.h"
#include "runtime/cluster_spec.h"
#include "runtime/gradient_buckets.h"
#include "runtime/memory_probe.h"
#include "runtime/plan_report.h"
#include "runtime/scaling_model.h"
#include "runtime/training_setup.h"

namespace dtrain::launch {

namespace {

// What the scaling prediction needs from this plan (Note [Scaling model]). Rank 0
// times the compute here unless the cluster table gives the device's FLOP/s.
ScalingInputs scaling_inputs(const Config& config, TrainingSetup& setup, Context& ctx, const ClusterSpec& cluster,
                             int rank) {
  ScalingInputs in;
  Model& model = *setup.model;
  for (const GradientBucket& b :
       assign_gradient_buckets(gradient_layer_ranges(model), bucket_cap_elements(config.comm.bucket_mb))) {
    in.bucket_elements.push_back(b.count);
  }
  in.wire_bytes = config.comm.reduce_dtype == "bf16" ? 2.0 : 4.0;
  in.shard = config.optimizer.shard == "true" || setup.levers.chosen.shard;
  // A sharded bf16 model all-gathers its bf16 copy (Note [Sharded master weights]).
  in.gather_bytes = config.precision.compute == "bf16" ? 2.0 : 4.0;
  in.capacity = config.train.micro_batch != kAuto ? config.train.micro_batch : setup.planned.ranks[rank].capacity;
  in.global_batch = config.train.global_batch;
  in.noise_scale = config.log.noise_scale;
  in.data_overlaps = ctx.device_kind() != DeviceKind::Cpu;
  if (cluster.device_flops > 0.0) {
    const double flops = static_cast<double>(model.training_flops_per_sample() + model.recompute_flops_per_sample());
    in.per_sample_s = flops / cluster.device_flops;
    char tflops[32];
    std::snprintf(tflops, sizeof(tflops), "%.4g", cluster.device_flops / 1e12);
    in.compute_source = "the cluster table's " + std::string(tflops) + " TFLOP/s a device: " + cluster.device_source;
    return in;
  }
  // Timed at the largest micro-batch a rank runs: its capacity, or the whole global
  // batch where that is smaller.
  constexpr int kAdaptiveReps = 0;  // about a quarter of a second at each micro-batch
  constexpr int kOverheadReps = 20;
  const int64_t largest = in.global_batch != kAuto ? std::min(in.capacity, in.global_batch) : in.capacity;
  const StepTimeLine line = time_step_line(model, ctx, *setup.data.train, largest, kAdaptiveReps);
  in.fixed_s = line.fixed_s;
  in.per_sample_s = line.per_sample_s;
  const StepOverheads rest = time_step_overheads(model, ctx, *setup.data.train, largest, kOverheadReps);
  in.data_per_sample_s = rest.data_per_sample_s;
  in.gradient_pass_s = rest.gradient_pass_s;
  in.zero_s = rest.zero_s;
  // Last: it changes the parameters, which a plan never trains on.
  constexpr int kOptimizerReps = 20;
  in.optimizer_s = time_optimizer_step(model, *setup.optimizer, ctx, kOptimizerReps);
  in.compute_source = "timed on rank " + std::to_string(rank) + " (" + ctx.device_name() + ") at micro-batches " +
                      std::to_string(line.small) + " and " + std::to_string(line.large);
  return in;
}

// Each timed figure, the largest over the ranks (collective).
void slowest_of_ranks(ScalingInputs& in, Communicator& comm) {
  double* timed[] = {&in.fixed_s, &in.per_sample_s, &in.optimizer_s, &in.data_per_sample_s, &in.gradient_pass_s,
                     &in.zero_s};
  constexpr size_t kTimed = std::size(timed);
  double mine[kTimed];
  for (size_t i = 0; i < kTimed; ++i) mine[i] = *timed[i];
  std::vector<double> all(kTimed * static_cast<size_t>(comm.size()));
  all_gather(comm, std::span<const double>(mine, kTimed), std::span<double>(all))->wait();
  for (int r = 0; r < comm.size(); ++r) {
    for (size_t i = 0; i < kTimed; ++i) *timed[i] = std::max(*timed[i], all[kTimed * static_cast<size_t>(r) + i]);
  }
  if (comm.size() > 1) in.compute_source += ", the slowest of " + std::to_string(comm.size()) + " ranks timing at once";
}

}  // namespace

int run_plan(const CliCommand& cmd) {
  // Bad --predict-ranks or --cluster: an error before any rank plans.
  // (Before MPI starts, so every rank says it: the same words, from each process.)
  std::vector<int> predict_ranks;
  ClusterSpec cluster;
  if (!cmd.predict_ranks.empty()) {
    try {
      predict_ranks = parse_rank_list(cmd.predict_ranks);
      cluster = cmd.cluster.empty() ? default_cluster_spec() : load_cluster_spec(cmd.cluster);
    } catch (const Error& e) {
      std::cerr << "dtrain: " << e.kind() << ": " << e.what() << std::endl;
      return e.exit_code();
    }
  }
  return run_job(cmd, [&](const Config& config, Process& process, DeviceSetup& device) {
    TrainingSetup setup =
        setup_training(config, *device.ctx, process.comm(), device.ranks_sharing_device, /*run_dir=*/"",
                       /*probe_step=*/true, device.comm.get());
    if (predict_ranks.empty()) {
      if (process.rank() != 0) return;
      const PlanSummary summary = setup.summary(config);
      std::cout << (cmd.json ? plan_json(summary) : plan_text(summary));
      std::cout.flush();
      return;
    }
    // Every rank times its compute at once, as a node's ranks compute during training
    // (they share memory bandwidth, caches, power), and the slowest one sets the step.
    ScalingReport report{scaling_inputs(config, setup, *device.ctx, cluster, process.rank()), cluster, {}};
    slowest_of_ranks(report.inputs, process.comm());
    if (process.rank() != 0) return;
    const PlanSummary summary = setup.summary(config);
    for (int n : predict_ranks) report.points.push_back(predict_scaling(report.inputs, cluster, n));
    if (cmd.json) {
      // The plan's object with one more key.
      std::string plan = plan_json(summary);
      plan.erase(plan.find_last_of('}'));
      std::cout << plan << ",\n  \"scaling\": " << scaling_json(report) << "\n}\n";
    } else {
      std::cout << plan_text(summary) << "\n" << scaling_text(report);
    }
    std::cout.flush();
  });
}

}  // namespace dtrain::launch
