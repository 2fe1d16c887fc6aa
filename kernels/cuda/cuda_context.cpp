// The CUDA entry points of the Context (kernels/context.h); kernels/cuda_unavailable.cpp
// is their counterpart in builds without CUDA.
#include <cuda_runtime.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/cuda/caching_allocator.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/errors.h"

namespace dtrain {

namespace {

std::string visible_devices_note() {
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  return visible == nullptr ? std::string("CUDA_VISIBLE_DEVICES is not set")
                            : "CUDA_VISIBLE_DEVICES=" + std::string(visible);
}

}  // namespace

int cuda_device_count() {
  int count = 0;
  // No driver, no device, or a driver too old for this runtime all mean "no GPU here";
  // clear the error so it does not surface at the next unrelated check.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count;
}

std::vector<std::string> cuda_device_ids() {
  std::vector<std::string> ids;
  const int count = cuda_device_count();
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    DTRAIN_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
    // The 16 bytes as 8-4-4-4-12 hex digits, nvidia-smi's form.
    static const char* kHex = "0123456789abcdef";
    std::string id = "GPU-";
    for (int b = 0; b < 16; ++b) {
      if (b == 4 || b == 6 || b == 8 || b == 10) id += '-';
      const auto byte = static_cast<unsigned char>(prop.uuid.bytes[b]);
      id += kHex[byte >> 4];
      id += kHex[byte & 15];
    }
    ids.push_back(id);
  }
  return ids;
}

std::unique_ptr<Context> Context::make_cuda(const CudaOptions& options) {
  const int count = cuda_device_count();
  if (count == 0) {
    throw DeviceError("no CUDA device is visible to this process (cudaGetDeviceCount reports 0; " +
                      visible_devices_note() +
                      "); run on a GPU node, check the driver with nvidia-smi, or set "
                      "device.kind: cpu");
  }
  if (options.device < 0 || options.device >= count) {
    throw DeviceError("CUDA device " + std::to_string(options.device) +
                      " was requested but this process sees " + std::to_string(count) +
                      " (indices 0 to " + std::to_string(count - 1) + "; " +
                      visible_devices_note() +
                      "); start at most one rank per visible GPU or widen CUDA_VISIBLE_DEVICES");
  }
  DTRAIN_CUDA_CHECK(cudaSetDevice(options.device));
  auto allocator =
      std::make_unique<CudaCachingAllocator>(options.device, options.memory_limit_bytes);
  auto backend = std::make_unique<CudaBackend>(*allocator, options.device, options.tf32);
  return std::make_unique<Context>(DeviceKind::Cuda, std::move(allocator), std::move(backend),
                                   options.num_threads);
}

}  // namespace dtrain
