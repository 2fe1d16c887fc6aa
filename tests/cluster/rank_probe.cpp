// What each rank of an MPI job finds out about its place, through the code dtrain
// itself runs at start-up (launch::Process, choose_device), printed by rank 0 as one
// line per rank in rank order, for tests/cluster/rank_discovery.sh to check against
// the layout it launched:
//   rank=R size=N node=HOST nodes=K local_rank=L local_size=M launcher=agrees
//   device=cuda:I gpu=ID  OMPI_COMM_WORLD_RANK=... (each launcher variable that is set)
// nodes is MPI's view: the ranks whose node-local rank is 0. The GPUs a rank sees are
// DTRAIN_PROBE_GPUS where set: a CUDA_VISIBLE_DEVICES-style comma list of ids, in which
// {node} stands for the node's name (so each node has GPUs of its own); else the GPUs
// CUDA shows this rank (none in a build without CUDA).
// Exit: 0, or 1 when a rank cannot tell (its line says why).
#include <mpi.h>

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "comm/gather_strings.h"
#include "comm/typed_collectives.h"
#include "kernels/context.h"
#include "kernels/errors.h"
#include "launch/device_binding.h"
#include "launch/launcher_env.h"
#include "launch/process.h"

namespace {

std::vector<std::string> visible_gpus(const std::string& node) {
  const char* listing = std::getenv("DTRAIN_PROBE_GPUS");
  if (listing == nullptr) return dtrain::cuda_device_ids();
  std::string ids = listing;
  for (size_t at = ids.find("{node}"); at != std::string::npos; at = ids.find("{node}", at + node.size())) {
    ids.replace(at, 6, node);
  }
  return dtrain::launch::split_device_ids(ids);
}

}  // namespace

int main() {
  using namespace dtrain;
  using namespace dtrain::launch;
  try {
    Process process("mpi");
    const std::string node = process.node_name();
    const int32_t node_count = all_reduce_value(process.comm(), int32_t{process.local_rank() == 0 ? 1 : 0});
    std::ostringstream line;
    line << "rank=" << process.rank() << " size=" << process.size() << " node=" << node << " nodes=" << node_count
         << " local_rank=" << process.local_rank() << " local_size=" << process.local_size();
    const std::string view = check_launcher_view(launcher_environment(), process.rank(), process.size());
    line << " launcher=" << (view.empty() ? "agrees" : "disagrees");
    bool ok = view.empty();
    // The node's table of visible GPUs, as launch/device_setup.cpp gathers it.
    std::vector<std::vector<std::string>> visible;
    for (const std::string& ids : process.gather_on_node(join_device_ids(visible_gpus(node)))) {
      visible.push_back(split_device_ids(ids));
    }
    try {
      const DeviceChoice choice = choose_device("auto", false, process.local_rank(), visible, node);
      if (choice.kind == DeviceKind::Cuda) {
        line << " device=cuda:" << choice.index << " gpu=" << visible[static_cast<size_t>(process.local_rank())]
                                                                     [static_cast<size_t>(choice.index)];
      } else {
        line << " device=cpu";
      }
    } catch (const ConfigError& e) {
      line << " device=error (" << e.what() << ")";
      ok = false;
    }
    for (const char* name : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                             "OMPI_COMM_WORLD_LOCAL_SIZE", "OMPI_COMM_WORLD_NODE_RANK", "OMPI_MCA_orte_num_nodes", "SLURM_PROCID",
                             "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NODEID", "SLURM_NNODES"}) {
      if (const char* value = std::getenv(name)) line << " " << name << "=" << value;
    }
    if (!view.empty()) line << " (" << view << ")";
    const std::vector<std::string> lines = all_gather_strings(MPI_COMM_WORLD, line.str());
    if (process.rank() == 0) {
      for (const std::string& l : lines) std::cout << l << "\n";
      std::cout.flush();
    }
    return ok ? 0 : 1;
  } catch (const Error& e) {
    std::cerr << "rank_probe: " << e.kind() << ": " << e.what() << std::endl;
    return e.exit_code();
  }
}
