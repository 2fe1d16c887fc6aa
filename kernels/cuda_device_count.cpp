#include "kernels/cuda_device_count.h"

#include "kernels/errors.h"

namespace dtrain {

namespace {

std::string driver_text(int version) {
  return version == 0 ? std::string("no CUDA driver found") : "driver for CUDA " + cuda_version_text(version);
}

}  // namespace

std::string cuda_version_text(int version) {
  return std::to_string(version / 1000) + "." + std::to_string(version % 1000 / 10);
}

int cuda_device_count_from(const CudaDeviceQuery& q) {
  if (q.error == kCudaSuccess) return q.count;
  if (q.error == kCudaErrorNoDevice) return 0;
  if (q.error == kCudaErrorInsufficientDriver && q.driver_version == 0) return 0;

  const std::string runtime = cuda_version_text(q.runtime_version);
  std::string msg = "cannot use the GPU: cudaGetDeviceCount failed with " + q.error_name + " (" + q.error_text +
                    "); " + driver_text(q.driver_version) + ", dtrain built with the CUDA " + runtime + " runtime. ";
  if (q.error == kCudaErrorInsufficientDriver) {
    msg += "The NVIDIA driver is older than this build needs: install a driver that supports CUDA " + runtime +
           " (nvidia-smi shows the CUDA version the driver supports), or rebuild dtrain with a CUDA toolkit "
           "no newer than CUDA " + cuda_version_text(q.driver_version);
  } else if (q.error == kCudaErrorStubLibrary) {
    msg += "The libcuda found is the toolkit's stub, not the driver: take the CUDA stubs folder out of "
           "LD_LIBRARY_PATH (or the linker cache) so the driver's libcuda.so.1 is found";
  } else {
    msg += "Check the GPU and the driver with nvidia-smi (a driver updated without a reboot, or a GPU in "
           "exclusive-process mode held by another process, are common causes)";
  }
  throw DeviceError(msg + "; or, to train on the CPU instead, set device.kind: cpu");
}

}  // namespace dtrain
