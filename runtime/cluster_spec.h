// The machines a scaling prediction is for (`dtrain plan --predict-ranks N,...
// --cluster FILE`): the links inside and between nodes, how many ranks a node holds,
// and optionally how fast one device trains. A small YAML table a user replaces with
// their own figures; configs/clusters/ has examples, each figure with its source.
//
//   name: 8 x H100 SXM a node, NVLink 4 inside, 8 x 400 Gb/s InfiniBand between
//   ranks_per_node: 8      # ranks fill nodes in order: 12 ranks are 8 + 4
//   devices_per_node: 8    # ranks that compute at once at full speed; more share
//   overlap: true          # gradient buckets travel during backward (NCCL's stream)
//   intra_node: {latency_us: 3.4, bandwidth_GBps: 370, source: "..."}
//   inter_node: {latency_us: 9.6, bandwidth_GBps: 368, source: "..."}
//   device: {flops: 3.7e14, source: "..."}   # optional: sustained FLOP/s of a rank
//
// Bandwidths are bus bandwidths (nccl-tests' busbw) and latencies per step (Note
// [Alpha-beta collectives], runtime/collective_cost.h). Without `device`, the compute
// is measured on this machine (Note [Scaling model], runtime/scaling_model.h).
#pragma once

#include <string>

#include "runtime/collective_cost.h"

namespace dtrain {

struct ClusterSpec {
  std::string name;
  std::string file;             // where it was read from; "built in" for the default
  int ranks_per_node = 8;
  int devices_per_node = 8;
  bool overlap = true;          // buckets overlap backward (NCCL) or follow it (host MPI)
  Link intra_node;
  Link inter_node;
  std::string intra_source, inter_source;
  double device_flops = 0.0;    // sustained training FLOP/s of one rank; 0: measure
  std::string device_source;
};

// 8 x H100 SXM a node (NVLink 4 inside, one 400 Gb/s NDR InfiniBand NIC a GPU between
// nodes), from published NCCL figures; the compute is measured unless a file says.
ClusterSpec default_cluster_spec();

// Reads a table as above. Throws ConfigError naming the file, line and key for a
// missing or unknown key or a value out of range.
ClusterSpec load_cluster_spec(const std::string& file);

}  // namespace dtrain
