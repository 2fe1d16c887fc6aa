#include "launch/device_binding.h"

#include <cstdlib>

#include "kernels/errors.h"

namespace dtrain::launch {

DeviceChoice choose_device(const std::string& kind, bool share, int local_rank, int local_size,
                           int visible_gpus, const std::string& node) {
  if (kind == "cpu" || (kind == "auto" && visible_gpus == 0)) return {DeviceKind::Cpu, 0};
  if (visible_gpus == 0) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    throw ConfigError("device.kind is 'cuda' but node " + node + " has no visible CUDA device" +
                      (visible ? " (CUDA_VISIBLE_DEVICES=" + std::string(visible) + ")" : std::string()) +
                      "; use device.kind: auto or cpu, or run on a GPU node");
  }
  if (local_size > visible_gpus && !share) {
    throw ConfigError("node " + node + " runs " + std::to_string(local_size) + " ranks but has " +
                      std::to_string(visible_gpus) + " visible GPU(s); start at most " +
                      std::to_string(visible_gpus) + " rank(s) per node, or set device.share: true "
                      "to let ranks share GPUs (NCCL then cannot be used on that node)");
  }
  return {DeviceKind::Cuda, local_rank % visible_gpus};
}

}  // namespace dtrain::launch
