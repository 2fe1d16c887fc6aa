#include "launch/device_binding.h"

#include <cstdlib>
#include <set>

#include "kernels/errors.h"

namespace dtrain::launch {
namespace {

// The GPU local rank r takes: its position among the ranks that see the same list,
// wrapped over the list. -1 for a rank that sees none.
int gpu_index_of(int r, const std::vector<std::vector<std::string>>& visible) {
  const auto& mine = visible[static_cast<size_t>(r)];
  if (mine.empty()) return -1;
  int position = 0;
  for (int q = 0; q < r; ++q) {
    if (visible[static_cast<size_t>(q)] == mine) ++position;
  }
  return position % static_cast<int>(mine.size());
}

std::string short_id(const std::string& id) { return id.size() > 12 ? id.substr(0, 12) + "..." : id; }

}  // namespace

std::string join_device_ids(const std::vector<std::string>& ids) {
  std::string out;
  for (const std::string& id : ids) out += (out.empty() ? "" : ",") + id;
  return out;
}

std::vector<std::string> split_device_ids(const std::string& joined) {
  std::vector<std::string> ids;
  size_t start = 0;
  while (start < joined.size()) {
    size_t end = joined.find(',', start);
    if (end == std::string::npos) end = joined.size();
    ids.push_back(joined.substr(start, end - start));
    start = end + 1;
  }
  return ids;
}

DeviceChoice choose_device(const std::string& kind, bool share, int local_rank,
                           const std::vector<std::vector<std::string>>& visible, const std::string& node) {
  const int local_size = static_cast<int>(visible.size());
  const auto& mine = visible[static_cast<size_t>(local_rank)];
  if (kind == "cpu" || (kind == "auto" && mine.empty())) return {DeviceKind::Cpu, 0, local_size};
  if (kind == "cpu-async") return {DeviceKind::CpuAsync, 0, local_size};
  if (mine.empty()) {
    const char* env = std::getenv("CUDA_VISIBLE_DEVICES");
    throw ConfigError("device.kind is 'cuda' but node " + node + " has no visible CUDA device" +
                      (env ? " (CUDA_VISIBLE_DEVICES=" + std::string(env) + ")" : std::string()) +
                      "; use device.kind: auto or cpu, or run on a GPU node");
  }
  const int index = gpu_index_of(local_rank, visible);
  const std::string& gpu = mine[static_cast<size_t>(index)];
  std::string sharers;
  int ranks_sharing = 0;
  std::set<std::string> gpus;
  for (int q = 0; q < local_size; ++q) {
    const auto& theirs = visible[static_cast<size_t>(q)];
    gpus.insert(theirs.begin(), theirs.end());
    const int i = gpu_index_of(q, visible);
    if (i >= 0 && theirs[static_cast<size_t>(i)] == gpu) {
      ++ranks_sharing;
      sharers += (sharers.empty() ? "" : ", ") + std::to_string(q);
    }
  }
  if (ranks_sharing > 1 && !share) {
    throw ConfigError("node " + node + " runs " + std::to_string(local_size) + " ranks but has " +
                      std::to_string(gpus.size()) + " visible GPU(s): local ranks " + sharers +
                      " would share GPU " + short_id(gpu) + "; start at most one rank per GPU (or give "
                      "each rank its own through CUDA_VISIBLE_DEVICES), or set device.share: true to let "
                      "ranks share GPUs (NCCL then cannot be used on that node)");
  }
  return {DeviceKind::Cuda, index, ranks_sharing};
}

}  // namespace dtrain::launch
