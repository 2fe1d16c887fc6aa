// Which device a rank uses (DESIGN "Processes and devices"): the node-local rank's
// among the devices this process sees (CUDA_VISIBLE_DEVICES applies). A pure
// function, so every rule is unit-tested without devices.
#pragma once

#include <string>

#include "kernels/context.h"

namespace dtrain::launch {

struct DeviceChoice {
  DeviceKind kind = DeviceKind::Cpu;
  int index = 0;  // among the visible CUDA devices
};

// kind: "auto" (CUDA when the node has a visible GPU, else CPU), "cpu" or "cuda".
// Throws ConfigError naming the node and the counts when a node runs more ranks than
// it has GPUs and `share` is false, and when "cuda" is asked for on a node without one.
DeviceChoice choose_device(const std::string& kind, bool share, int local_rank, int local_size,
                           int visible_gpus, const std::string& node);

}  // namespace dtrain::launch
