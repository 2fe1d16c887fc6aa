// The CUDA entry points of a build without the CUDA backend (DTRAIN_CUDA=OFF, or no
// nvcc at configure time). CMake compiles this file instead of kernels/cuda/.
#include "kernels/context.h"
#include "kernels/errors.h"

namespace dtrain {

// This build cannot use a GPU even where one is present, so it sees none: device.kind:
// auto trains on the CPU and make_cuda below says how to get a CUDA build. (The GPU
// tests are only built with CUDA, so scripts/gpu-check.sh cannot pass with this file.)
int cuda_device_count() { return 0; }

std::vector<std::string> cuda_device_ids() { return {}; }

std::unique_ptr<Context> Context::make_cuda(const CudaOptions&) {
  throw DeviceError("this dtrain was built without the CUDA backend; rebuild on a machine with "
                    "the CUDA toolkit (cmake -DDTRAIN_CUDA=ON) or set device.kind: cpu");
}

}  // namespace dtrain
