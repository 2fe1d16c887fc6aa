// The NCCL entry point of a build without the CUDA backend (DTRAIN_CUDA=OFF, or no
// nvcc at configure time). CMake compiles this file instead of nccl_communicator.cpp.
#include "comm/device_communicator.h"
#include "kernels/errors.h"

namespace dtrain {

std::unique_ptr<Communicator> make_nccl_communicator(Communicator&, Context&, double) {
  throw CommError("this dtrain was built without the CUDA backend, so without NCCL; rebuild on a "
                  "machine with the CUDA toolkit and NCCL (cmake -DDTRAIN_CUDA=ON) or set "
                  "comm.backend: mpi");
}

}  // namespace dtrain
