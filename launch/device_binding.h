// Which device a rank uses (DESIGN "Processes and devices"). Every rank of a node
// tells the others which GPUs it sees (their UUIDs, in its own order:
// CUDA_VISIBLE_DEVICES applies per process), so both ways of handing out GPUs work:
//  - all ranks see the node's GPUs (mpirun, or srun without GPU binding): local rank k
//    takes the k-th of them;
//  - each rank sees its own GPU (srun --gpus-per-task or --gpu-bind, or a wrapper that
//    sets CUDA_VISIBLE_DEVICES per rank): each takes its own.
// In general, the ranks that see the same list take its GPUs in local-rank order. A
// GPU taken by more than one rank is an error unless device.share allows it. A pure
// function, so every rule is unit-tested without devices.
#pragma once

#include <string>
#include <vector>

#include "kernels/context.h"

namespace dtrain::launch {

struct DeviceChoice {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;         // among the CUDA devices this rank sees
  int ranks_sharing = 1;  // ranks of the node using the same device (CPU: the whole node)
};

// kind: "auto" (CUDA when this rank sees a GPU, else CPU), "cpu" or "cuda".
// visible_by_local_rank[r]: the ids of the GPUs local rank r sees, in its order (empty:
// none); every rank of the node passes the same table. Throws ConfigError naming the
// node, the GPU and the ranks when ranks would share a GPU and `share` is false, and
// when "cuda" is asked for by a rank that sees no GPU.
DeviceChoice choose_device(const std::string& kind, bool share, int local_rank,
                           const std::vector<std::vector<std::string>>& visible_by_local_rank,
                           const std::string& node);

// A rank's GPU ids as one comma-separated string, for the gather over the node's
// ranks, and back ("" is no GPU).
std::string join_device_ids(const std::vector<std::string>& ids);
std::vector<std::string> split_device_ids(const std::string& joined);

}  // namespace dtrain::launch
