// The predicted step time and scaling efficiency of a config on N ranks
// (`dtrain plan CONFIG --predict-ranks N,... [--cluster FILE]`).
//
// Note [Scaling model]
// Why in `dtrain plan`: the prediction needs what the plan already knows (the model's
// parameters, FLOPs and gradient buckets, the micro-batch the memory holds, sharding
// and the wire type), and a user asks it of their own config, so it is a question to
// the planner rather than a separate tool. One step on N ranks is predicted as
//   compute:  k micro-steps of t(b) = fixed + per_sample * b each, where b and k are
//             what the planner gives N ranks of this capacity for the global batch
//             (train.global_batch auto: k = 1 and N * b, weak scaling). t(b) is
//             measured on this rank at two micro-batches (the time of the probe step,
//             runtime/memory_probe.h), or given by the cluster table as a sustained
//             FLOP/s (fixed 0, per_sample = training FLOPs / FLOP/s). Ranks beyond a
//             node's devices share them: t grows by the ranks on the busiest
//             device, ceil(ranks on a node / devices), since ranks take whole
//             devices (3 ranks on 2: two share one) and a step waits for its
//             slowest rank.
//   communication: on the last micro-step, each gradient bucket is all-reduced (or
//             reduce-scattered, sharded) when backward has produced it; backward is
//             taken as 2/3 of a micro-step (twice the forward's FLOPs), and a bucket
//             as ready when backward has produced its share of the parameters. The
//             collectives run one after another on one stream, so
//               done_0 = ready_0 + c_0,  done_i = max(done_{i-1}, ready_i) + c_i,
//             and what shows is exposed = done_last - backward. Where the collectives
//             do not overlap backward (table `overlap: false`: MPI on the host makes
//             progress only inside MPI calls, so the buckets travel at the end) every
//             ready_i is the end of backward. Then, exposed in full: the step's one
//             small all-reduce (loss, norm, counters) and, sharded, the all-gather of
//             the updated parameters. Each collective's cost is Note [Alpha-beta
//             collectives], runtime/collective_cost.h. Collectives on the host (no
//             overlap) are CPU work of every rank, as the compute is: ranks that share
//             a device share it for them too, so their cost grows by the same factor.
//   optimizer: once a step, its measured time (0 with a given FLOP/s), shared as the
//             compute is, and over 1 / N of the parameters when sharded.
//   the rest of a step, measured on this rank (time_step_overheads): on the CPU,
//             gathering each micro-batch (d per sample; a GPU computes meanwhile, so
//             there it is hidden), and once a step the passes over the gradient
//             buffer: the squared norm (over 1 / N of it when sharded), the noise
//             scale's two probes where it estimates (2+ ranks, or k >= 2), and the
//             zeroing. Shared as the compute is. Left out, these were 15% of the
//             MLP's step on one CPU rank (bench/RESULTS.md).
//   step = k (t(b) + d b) + optimizer + passes + exposed;  samples/s = global batch / step;
//   efficiency = samples/s on N ranks / (N x samples/s on one rank), one rank
//             planned for the same global batch (or its own capacity, weak scaling).
// What dominates is named: compute where the exposed communication is under a tenth
// of the step; else latency or bandwidth, by which part of the exposed collectives'
// cost is larger.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/cluster_spec.h"
#include "runtime/collective_cost.h"

namespace dtrain {

struct ScalingInputs {
  std::vector<int64_t> bucket_elements;  // the gradient buckets, in launch order
  double wire_bytes = 4.0;               // a gradient element on the wire (comm.reduce_dtype)
  bool shard = false;                    // optimizer.shard as planned
  double gather_bytes = 4.0;             // a parameter all-gathered after a sharded step
  double fixed_s = 0.0;                  // one micro-step on one device alone:
  double per_sample_s = 0.0;             //   t(b) = fixed_s + per_sample_s * b
  double optimizer_s = 0.0;              // one unsharded optimizer step on one device alone
  double data_per_sample_s = 0.0;        // gathering and uploading one sample of a micro-batch
  bool data_overlaps = false;            // the device computes while the host gathers (not the CPU)
  double gradient_pass_s = 0.0;          // one pass over the whole gradient buffer, one device alone
  double zero_s = 0.0;                   // zeroing the gradients after a step
  bool noise_scale = false;              // log.noise_scale: two more passes (on 2+ ranks or k >= 2)
  int64_t capacity = 1;                  // the micro-batch one rank holds
  int64_t global_batch = 0;              // a number, or kAuto (weak scaling)
  std::string compute_source;            // how t(b) was obtained, for the report
};

struct ScalingPoint {
  int ranks = 1;
  int nodes = 1;
  bool plannable = true;
  std::string why_not;  // when not plannable: the planner's message
  int64_t micro_batch = 0;   // the largest rank's
  int64_t accumulation = 1;
  int64_t global_batch = 0;
  double compute_s = 0.0;    // k t(b) + the optimizer step
  double comm_s = 0.0;       // every collective of the step, end to end
  double exposed_s = 0.0;    // what the step waits for
  double latency_share = 0.0;  // of the collectives' cost: the alpha part
  double step_s = 0.0;
  double samples_per_s = 0.0;
  double efficiency = 1.0;
  AllReduceAlgorithm algorithm = AllReduceAlgorithm::kRing;  // of the largest bucket
  std::string dominant;      // "compute", "latency" or "bandwidth"
};

// The gradient traffic of one optimizer step, as the trainer sends it.
struct GradientTraffic {
  std::vector<int64_t> bucket_elements;  // the gradient buckets, in launch order
  double wire_bytes = 4.0;               // a gradient element on the wire (comm.reduce_dtype)
  bool shard = false;                    // buckets reduce-scattered, parameters all-gathered
  double gather_bytes = 4.0;             // a parameter all-gathered after a sharded step
};

// What the collectives of one step cost on `at` (Note [Scaling model]), the last
// micro-step taking `micro_s`: the buckets against its backward, the step's small
// all-reduce, and, sharded, the all-gather of the parameters.
struct StepCommunication {
  double comm_s = 0.0;     // every collective, end to end
  double exposed_s = 0.0;  // what the step waits for
  double latency_s = 0.0;  // of comm_s: the alpha part
  AllReduceAlgorithm algorithm = AllReduceAlgorithm::kRing;  // of the largest bucket
};
// Pure; one rank communicates nothing.
StepCommunication step_communication(const GradientTraffic& traffic, const RankLayout& at, const ClusterSpec& cluster,
                                     double micro_s);

// The communication a step waits for after backward (Note [Scaling model]): bucket i
// becomes ready at ready_fraction[i] * backward_s (ignored, all at backward_s, without
// overlap) and takes bucket_s[i]. Pure.
double exposed_after_backward(const std::vector<double>& bucket_s, const std::vector<double>& ready_fraction,
                              double backward_s, bool overlap);

// One point; `ranks` >= 1. Pure.
ScalingPoint predict_scaling(const ScalingInputs& in, const ClusterSpec& cluster, int ranks);

struct ScalingReport {
  ScalingInputs inputs;
  ClusterSpec cluster;
  std::vector<ScalingPoint> points;
};

std::string scaling_text(const ScalingReport& r);
std::string scaling_json(const ScalingReport& r);

// "8,64,512" -> {8, 64, 512}; throws UsageError naming the bad entry.
std::vector<int> parse_rank_list(const std::string& list);

}  // namespace dtrain
