// A rank's device and the communicator for its device buffers, chosen at start-up
// from the config (device.kind, device.share, precision.tf32, memory.limit,
// memory.limit_per_rank, comm.backend) and what
// every rank found: NCCL when every rank has a GPU of its own (comm.backend: auto),
// MPI otherwise (device pointers to a CUDA-aware MPI, or staged through host memory).
#pragma once

#include <memory>
#include <string>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "launch/process.h"
#include "runtime/config.h"

namespace dtrain::launch {

struct DeviceSetup {
  std::unique_ptr<Context> ctx;
  std::unique_ptr<Communicator> host;  // what `comm` stages through, when it owns one
  std::unique_ptr<Communicator> staged;  // one process on a device: `host` staged for `comm`
  std::unique_ptr<Communicator> comm;  // takes buffers in ctx's memory
  int ranks_sharing_device = 1;        // ranks whose memory comes from this rank's device
};

// Collective over process.comm(): every rank calls it. A failure on any rank (no such
// device, too many ranks for the GPUs) ends every rank (Note [Setup agreement]).
DeviceSetup setup_device(const Config& config, Process& process);

}  // namespace dtrain::launch
