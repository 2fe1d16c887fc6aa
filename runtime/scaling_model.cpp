#include "runtime/scaling_model.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "kernels/errors.h"
#include "runtime/batch_plan.h"
#include "runtime/config.h"
#include "runtime/json_string.h"

namespace dtrain {

namespace {

// Backward's share of a micro-step: twice the forward's FLOPs (Note [Scaling model]).
constexpr double kBackwardFraction = 2.0 / 3.0;
// The step's one small all-reduce: loss, squared norm and counters.
constexpr double kStepSumsBytes = 64.0;

struct Timed {
  double seconds = 0.0;
  double latency = 0.0;  // the alpha part: the same collective of no bytes
};

Timed timed_all_reduce(double bytes, const RankLayout& at, const ClusterSpec& c, AllReduceAlgorithm* algorithm) {
  const CollectiveCost cost = all_reduce_cost(bytes, at, c.intra_node, c.inter_node);
  if (algorithm) *algorithm = cost.algorithm;
  const double latency = cost.algorithm == AllReduceAlgorithm::kTree
                             ? tree_all_reduce_s(0.0, at, c.intra_node, c.inter_node)
                             : ring_all_reduce_s(0.0, at, c.intra_node, c.inter_node);
  return {cost.seconds, latency};
}

Timed timed_reduce_scatter(double bytes, const RankLayout& at, const ClusterSpec& c) {
  return {reduce_scatter_s(bytes, at, c.intra_node, c.inter_node), reduce_scatter_s(0.0, at, c.intra_node, c.inter_node)};
}

Timed timed_all_gather(double bytes, const RankLayout& at, const ClusterSpec& c) {
  return {all_gather_s(bytes, at, c.intra_node, c.inter_node), all_gather_s(0.0, at, c.intra_node, c.inter_node)};
}

// The point without the efficiency, which needs the one-rank point.
ScalingPoint predict_alone(const ScalingInputs& in, const ClusterSpec& c, int ranks) {
  ScalingPoint p;
  p.ranks = ranks;
  p.nodes = (ranks + c.ranks_per_node - 1) / c.ranks_per_node;
  BatchPlan plan;
  try {
    plan = plan_from_capacities(std::vector<int64_t>(static_cast<size_t>(ranks), in.capacity), in.global_batch,
                                "train.global_batch");
  } catch (const ConfigError& e) {
    p.plannable = false;
    p.why_not = e.what();
    return p;
  }
  p.micro_batch = *std::max_element(plan.micro_batch.begin(), plan.micro_batch.end());
  p.accumulation = plan.accumulation_steps;
  p.global_batch = plan.global_batch;

  const int on_busiest_node = std::min(ranks, c.ranks_per_node);
  // The ranks on the busiest device (Note [Scaling model]).
  const double sharing = std::max(1, (on_busiest_node + c.devices_per_node - 1) / c.devices_per_node);
  const double micro_s = sharing * (in.fixed_s + in.per_sample_s * static_cast<double>(p.micro_batch));
  const double data_s = in.data_overlaps ? 0.0 : sharing * in.data_per_sample_s * static_cast<double>(p.micro_batch);
  const double optimizer_s = sharing * in.optimizer_s / (in.shard ? ranks : 1);
  const bool probes = in.noise_scale && (ranks >= 2 || p.accumulation >= 2);
  const double passes = (in.shard ? 1.0 / ranks : 1.0) + (probes ? 2.0 : 0.0);
  const double step_passes_s = sharing * (passes * in.gradient_pass_s + in.zero_s);
  p.compute_s = static_cast<double>(p.accumulation) * (micro_s + data_s) + optimizer_s + step_passes_s;

  const StepCommunication comm =
      step_communication(GradientTraffic{in.bucket_elements, in.wire_bytes, in.shard, in.gather_bytes},
                         RankLayout{ranks, p.nodes}, c, micro_s);
  // Collectives on the host (no overlap: MPI) are the host's work as the compute is,
  // so ranks sharing a device share it for them too (Note [Scaling model]).
  const double comm_sharing = c.overlap ? 1.0 : sharing;
  p.algorithm = comm.algorithm;
  p.comm_s = comm_sharing * comm.comm_s;
  p.exposed_s = comm_sharing * comm.exposed_s;
  p.latency_share = comm.comm_s > 0.0 ? comm.latency_s / comm.comm_s : 0.0;
  p.step_s = p.compute_s + p.exposed_s;
  p.samples_per_s = p.step_s > 0.0 ? static_cast<double>(p.global_batch) / p.step_s : 0.0;
  if (p.exposed_s < 0.1 * p.step_s) {
    p.dominant = "compute";
  } else {
    p.dominant = p.latency_share > 0.5 ? "latency" : "bandwidth";
  }
  return p;
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

// Right-aligned in `width`; a cell as wide as its column or wider still keeps one space
// before it, so that columns never run together (a billion samples/s is 12 characters).
std::string pad(const std::string& s, size_t width) { return std::string(s.size() < width ? width - s.size() : 1, ' ') + s; }

}  // namespace

double exposed_after_backward(const std::vector<double>& bucket_s, const std::vector<double>& ready_fraction,
                              double backward_s, bool overlap) {
  double done = 0.0;
  for (size_t i = 0; i < bucket_s.size(); ++i) {
    const double ready = overlap ? ready_fraction[i] * backward_s : backward_s;
    done = std::max(done, ready) + bucket_s[i];
  }
  return std::max(0.0, done - backward_s);
}

StepCommunication step_communication(const GradientTraffic& traffic, const RankLayout& at, const ClusterSpec& c,
                                     double micro_s) {
  StepCommunication out;
  if (at.ranks <= 1) return out;
  double total = 0.0;
  for (int64_t e : traffic.bucket_elements) total += static_cast<double>(e);
  std::vector<double> bucket_s, ready;
  double produced = 0.0, largest = -1.0;
  for (int64_t e : traffic.bucket_elements) {
    const double bytes = static_cast<double>(e) * traffic.wire_bytes;
    AllReduceAlgorithm algorithm = AllReduceAlgorithm::kRing;
    const Timed t = traffic.shard ? timed_reduce_scatter(bytes, at, c) : timed_all_reduce(bytes, at, c, &algorithm);
    if (bytes > largest) {
      largest = bytes;
      out.algorithm = algorithm;
    }
    bucket_s.push_back(t.seconds);
    produced += static_cast<double>(e);
    ready.push_back(total > 0.0 ? produced / total : 1.0);
    out.latency_s += t.latency;
    out.comm_s += t.seconds;
  }
  out.exposed_s = exposed_after_backward(bucket_s, ready, kBackwardFraction * micro_s, c.overlap);
  const Timed sums = timed_all_reduce(kStepSumsBytes, at, c, nullptr);
  out.exposed_s += sums.seconds;
  out.latency_s += sums.latency;
  out.comm_s += sums.seconds;
  if (traffic.shard) {
    const Timed gather = timed_all_gather(total * traffic.gather_bytes, at, c);
    out.exposed_s += gather.seconds;
    out.latency_s += gather.latency;
    out.comm_s += gather.seconds;
  }
  return out;
}

ScalingPoint predict_scaling(const ScalingInputs& in, const ClusterSpec& cluster, int ranks) {
  ScalingPoint p = predict_alone(in, cluster, ranks);
  if (!p.plannable) return p;
  const ScalingPoint one = predict_alone(in, cluster, 1);
  p.efficiency = one.plannable && one.samples_per_s > 0.0 ? p.samples_per_s / (ranks * one.samples_per_s) : 0.0;
  return p;
}

std::string scaling_text(const ScalingReport& r) {
  std::ostringstream o;
  const ClusterSpec& c = r.cluster;
  o << "Predicted scaling (Note [Scaling model], runtime/scaling_model.h) on: " << c.name << "\n"
    << "  cluster table: " << c.file << "; " << c.ranks_per_node << " ranks a node"
    << (c.devices_per_node < c.ranks_per_node ? " sharing " + std::to_string(c.devices_per_node) + " devices" : "")
    << "; buckets " << (c.overlap ? "overlap backward" : "travel after backward (no overlap)") << "\n"
    << "  inside a node: " << fmt("%.3g", c.intra_node.latency_s * 1e6) << " us a step, "
    << fmt("%.4g", c.intra_node.bandwidth_Bps / 1e9) << " GB/s (" << c.intra_source << ")\n"
    << "  between nodes: " << fmt("%.3g", c.inter_node.latency_s * 1e6) << " us a step, "
    << fmt("%.4g", c.inter_node.bandwidth_Bps / 1e9) << " GB/s (" << c.inter_source << ")\n"
    << "  compute: t(b) = " << fmt("%.4g", r.inputs.fixed_s * 1e3) << " ms + "
    << fmt("%.4g", r.inputs.per_sample_s * 1e3) << " ms x b a micro-step, and " << fmt("%.4g", r.inputs.optimizer_s * 1e3)
    << " ms an optimizer step (" << r.inputs.compute_source << ")\n"
    << "  the rest of a step: " << fmt("%.4g", r.inputs.data_per_sample_s * 1e3) << " ms x b gathering data"
    << (r.inputs.data_overlaps ? " (hidden: the device computes meanwhile)" : "") << ", "
    << fmt("%.4g", r.inputs.gradient_pass_s * 1e3) << " ms a pass over the gradients (1"
    << (r.inputs.noise_scale ? ", and 2 for the noise scale on 2+ ranks or k >= 2" : "") << "), "
    << fmt("%.4g", r.inputs.zero_s * 1e3) << " ms zeroing them\n"
    << "  gradients: " << r.inputs.bucket_elements.size() << " buckets, " << fmt("%.0f", r.inputs.wire_bytes)
    << " bytes an element on the wire" << (r.inputs.shard ? ", reduce-scattered, parameters all-gathered" : "")
    << "\n";
  o << "  ranks nodes  micro x k   global  compute ms  comm ms  exposed ms   step ms   samples/s  efficiency  "
       "all-reduce  dominant\n";
  for (const ScalingPoint& p : r.points) {
    o << pad(std::to_string(p.ranks), 7) << pad(std::to_string(p.nodes), 6);
    if (!p.plannable) {
      o << "  does not plan: " << p.why_not << "\n";
      continue;
    }
    o << pad(std::to_string(p.micro_batch) + " x " + std::to_string(p.accumulation), 11)
      << pad(std::to_string(p.global_batch), 9) << pad(fmt("%.2f", p.compute_s * 1e3), 12)
      << pad(fmt("%.2f", p.comm_s * 1e3), 9) << pad(fmt("%.2f", p.exposed_s * 1e3), 12)
      << pad(fmt("%.2f", p.step_s * 1e3), 10) << pad(fmt("%.1f", p.samples_per_s), 12)
      << pad(fmt("%.1f%%", p.efficiency * 100.0), 12) << pad(r.inputs.shard ? "-" : algorithm_name(p.algorithm), 12)
      << "  " << p.dominant << "\n";
  }
  return o.str();
}

std::string scaling_json(const ScalingReport& r) {
  std::ostringstream o;
  o.precision(12);
  const ClusterSpec& c = r.cluster;
  o << "{\"cluster\": {\"name\": " << json_string(c.name) << ", \"file\": " << json_string(c.file)
    << ", \"ranks_per_node\": " << c.ranks_per_node << ", \"devices_per_node\": " << c.devices_per_node
    << ", \"overlap\": " << (c.overlap ? "true" : "false") << ", \"intra_node\": {\"latency_s\": "
    << c.intra_node.latency_s << ", \"bandwidth_Bps\": " << c.intra_node.bandwidth_Bps
    << ", \"source\": " << json_string(c.intra_source) << "}, \"inter_node\": {\"latency_s\": "
    << c.inter_node.latency_s << ", \"bandwidth_Bps\": " << c.inter_node.bandwidth_Bps
    << ", \"source\": " << json_string(c.inter_source) << "}, \"device_flops\": " << c.device_flops << "}"
    << ", \"compute\": {\"fixed_s\": " << r.inputs.fixed_s << ", \"per_sample_s\": " << r.inputs.per_sample_s
    << ", \"optimizer_s\": " << r.inputs.optimizer_s << ", \"data_per_sample_s\": " << r.inputs.data_per_sample_s
    << ", \"data_overlaps\": " << (r.inputs.data_overlaps ? "true" : "false")
    << ", \"gradient_pass_s\": " << r.inputs.gradient_pass_s << ", \"zero_s\": " << r.inputs.zero_s
    << ", \"noise_scale\": " << (r.inputs.noise_scale ? "true" : "false") << ", \"source\": " << json_string(r.inputs.compute_source) << "}, \"buckets\": " << r.inputs.bucket_elements.size()
    << ", \"wire_bytes\": " << r.inputs.wire_bytes << ", \"shard\": " << (r.inputs.shard ? "true" : "false")
    << ", \"points\": [";
  for (size_t i = 0; i < r.points.size(); ++i) {
    const ScalingPoint& p = r.points[i];
    o << (i ? ", " : "") << "{\"ranks\": " << p.ranks << ", \"nodes\": " << p.nodes
      << ", \"plannable\": " << (p.plannable ? "true" : "false");
    if (!p.plannable) {
      o << ", \"why_not\": " << json_string(p.why_not) << "}";
      continue;
    }
    o << ", \"micro_batch\": " << p.micro_batch << ", \"accumulation\": " << p.accumulation
      << ", \"global_batch\": " << p.global_batch << ", \"compute_s\": " << p.compute_s << ", \"comm_s\": " << p.comm_s
      << ", \"exposed_s\": " << p.exposed_s << ", \"latency_share\": " << p.latency_share
      << ", \"step_s\": " << p.step_s << ", \"samples_per_s\": " << p.samples_per_s
      << ", \"efficiency\": " << p.efficiency << ", \"all_reduce\": " << json_string(algorithm_name(p.algorithm))
      << ", \"dominant\": " << json_string(p.dominant) << "}";
  }
  o << "]}";
  return o.str();
}

std::vector<int> parse_rank_list(const std::string& list) {
  std::vector<int> out;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    long v = 0;
    try {
      v = std::stol(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || item.empty() || v < 1 || v > 1000000) {
      throw UsageError("--predict-ranks: '" + item + "' is not a rank count; give counts of 1 or more, e.g. 8,64,512");
    }
    out.push_back(static_cast<int>(v));
  }
  if (out.empty()) throw UsageError("--predict-ranks needs rank counts, e.g. --predict-ranks 2,4,8");
  return out;
}

}  // namespace dtrain
