#include "launch/device_setup.h"

#include <exception>
#include <span>
#include <string>
#include <vector>

#include "comm/device_communicator.h"
#include "comm/self_communicator.h"
#include "comm/single_rank_communicator.h"
#include "comm/staging_communicator.h"
#include "comm/typed_collectives.h"
#include "kernels/errors.h"
#include "launch/device_binding.h"
#include "runtime/setup_agreement.h"

namespace dtrain::launch {
DeviceSetup setup_device(const Config& config, Process& process) {
  Communicator& control = process.comm();
  DeviceSetup setup;
  // This rank has a GPU; this rank's node shares its GPUs; this rank has a GPU and a
  // CUDA-aware MPI.
  int32_t flags[3] = {0, 0, 0};
  std::exception_ptr error;
  // Which GPUs each rank of this node sees (device_binding.h). Every rank reaches the
  // gather, also one whose query failed: the failure is agreed on below.
  std::string seen;
  try {
    if (config.device.kind == "auto" || config.device.kind == "cuda") seen = join_device_ids(cuda_device_ids());
  } catch (...) {
    error = std::current_exception();
  }
  std::vector<std::vector<std::string>> visible;
  for (const std::string& ids : process.gather_on_node(seen)) visible.push_back(split_device_ids(ids));
  try {
    if (error) std::rethrow_exception(error);
    const DeviceChoice choice = choose_device(config.device.kind, config.device.share, process.local_rank(),
                                              visible, process.node_name());
    const int threads = process.cpu_threads(static_cast<int>(config.device.threads));
    const auto limit = static_cast<size_t>(config.memory_limit_of(control.rank(), control.size()));
    if (choice.kind == DeviceKind::Cuda) {
      CudaOptions options;
      options.device = choice.index;
      options.tf32 = config.precision.tf32;
      options.gemm_autotune = config.precision.gemm_autotune;
      options.deterministic = config.precision.deterministic;
      options.num_threads = threads;
      options.memory_limit_bytes = limit;
      setup.ctx = Context::make_cuda(options);
      flags[0] = 1;
      flags[2] = process.mpi() != nullptr && mpi_accepts_cuda_buffers() ? 1 : 0;
      flags[1] = choice.ranks_sharing > 1 ? 1 : 0;
    } else if (choice.kind == DeviceKind::CpuAsync) {
      setup.ctx = Context::make_cpu_async(threads, limit);
    } else {
      setup.ctx = Context::make_cpu(threads, limit);
    }
    setup.ranks_sharing_device = choice.ranks_sharing;
    // A per-rank limit is this rank's own memory: nothing to share.
    if (limit != 0) setup.ranks_sharing_device = 1;
  } catch (...) {
    error = std::current_exception();
  }
  agree_on_setup(control, error);

  all_reduce(control, std::span<int32_t>(flags, 3))->wait();
  const bool all_gpus = flags[0] == control.size();
  const bool shared = flags[1] > 0;
  const std::string& backend = config.comm.backend;
  if (backend == "nccl" && (!all_gpus || shared)) {
    ConfigError e(config.where("comm.backend") + ": comm.backend is 'nccl' but " +
                  (all_gpus ? std::string("ranks share GPUs (device.share), which NCCL refuses")
                            : std::to_string(flags[0]) + " of " + std::to_string(control.size()) +
                                  " ranks have a GPU") +
                  "; use comm.backend: auto or mpi");
    e.set_agreed(control.rank() == 0);  // every rank reduced the same flags
    throw e;
  }
  if (backend == "nccl" || (backend == "auto" && all_gpus && !shared)) {
    setup.comm = make_nccl_communicator(control, *setup.ctx, config.comm.timeout_s);
  } else if (process.mpi() != nullptr) {
    setup.comm = make_mpi_device_communicator(*process.mpi(), *setup.ctx, flags[2] == control.size());
  } else if (setup.ctx->device_kind() != DeviceKind::Cpu) {
    // One process without MPI: the collectives with an output buffer still need their
    // copies; the others are nothing (comm/single_rank_communicator.h).
    setup.host = std::make_unique<SelfCommunicator>();
    setup.staged = std::make_unique<StagingCommunicator>(*setup.host, *setup.ctx);
    setup.comm = std::make_unique<SingleRankCommunicator>(*setup.staged);
  } else {
    setup.comm = std::make_unique<SelfCommunicator>();
  }
  return setup;
}

}  // namespace dtrain::launch
