// Communicators for the buffers of a device context, as the runtime chooses them at
// start-up: MPI (device pointers straight to a CUDA-aware MPI, or staged through host
// memory) and NCCL. Both entry points exist in every build; which files implement them
// is the build's choice (nccl_communicator.cpp with CUDA, nccl_unavailable.cpp without).
#pragma once

#include <memory>

#include "comm/communicator.h"
#include "comm/mpi_communicator.h"
#include "kernels/context.h"

namespace dtrain {

// True when the MPI library in this process accepts CUDA device pointers, as it says at
// run time (Open MPI's MPIX_Query_cuda_support). False for MPI libraries that cannot
// tell (no mpi-ext.h, or no CUDA extension in it).
bool mpi_accepts_cuda_buffers();

// A Communicator whose collectives take buffers in `ctx`'s memory, over `mpi`:
//  - CPU context: the buffers are host memory, so the collectives go to `mpi` as they
//    are (a non-owning forwarder, so callers hold a Communicator whatever the device);
//  - CUDA context, when every rank of the job has one and a CUDA-aware MPI
//    (`cuda_aware_on_every_rank`, which the ranks agree on): device pointers go to `mpi`
//    directly, after the context's queued work has finished (MPI does not know the
//    compute stream), as blocking collectives (CUDA-aware Open MPI handles device
//    memory only in those);
//  - CUDA context otherwise: a StagingCommunicator (copies through pinned host memory).
// The condition is the same on every rank, so all use the same (blocking or
// non-blocking) form of each collective. `mpi` and `ctx` must outlive the returned
// communicator; its contract is the Communicator one (same collectives in the same
// order on every rank; buffers belong to a collective until its Work's wait()).
std::unique_ptr<Communicator> make_mpi_device_communicator(MpiCommunicator& mpi, Context& ctx,
                                                          bool cuda_aware_on_every_rank);

// An NcclCommunicator (comm/nccl_communicator.h) over `bootstrap`'s ranks on the CUDA
// context `ctx`; collective over `bootstrap`, which must take host buffers (MPI, or
// SelfCommunicator for one rank). A rank whose NCCL initialisation has not completed
// within `timeout_s` (comm.timeout_s; 0: no limit) throws CommError naming it. Throws
// CommError in builds without CUDA.
std::unique_ptr<Communicator> make_nccl_communicator(Communicator& bootstrap, Context& ctx, double timeout_s);

}  // namespace dtrain
