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
#include "kernels/cuda_device_count.h"
#include "kernels/errors.h"

namespace dtrain {

namespace {

std::string visible_devices_note() {
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  return visible == nullptr ? std::string("CUDA_VISIBLE_DEVICES is not set")
                            : "CUDA_VISIBLE_DEVICES=" + std::string(visible);
}

}  // namespace

// The pure decision lives in kernels/cuda_device_count.cpp, built without CUDA; its
// constants must be CUDA's own.
static_assert(kCudaSuccess == cudaSuccess && kCudaErrorStubLibrary == cudaErrorStubLibrary &&
              kCudaErrorInsufficientDriver == cudaErrorInsufficientDriver &&
              kCudaErrorNoDevice == cudaErrorNoDevice);

int cuda_device_count() {
  CudaDeviceQuery query;
  const cudaError_t status = cudaGetDeviceCount(&query.count);
  if (status == cudaSuccess) return query.count;
  // The failure is also the thread's last error: clear it, or it would surface at the
  // next unrelated check.
  (void)cudaGetLastError();
  query.error = status;
  query.error_name = cudaGetErrorName(status);
  query.error_text = cudaGetErrorString(status);
  // Both work without a driver: the driver's version is then 0 (Note [No GPU versus a
  // broken GPU], kernels/cuda_device_count.h).
  if (cudaDriverGetVersion(&query.driver_version) != cudaSuccess) query.driver_version = 0;
  if (cudaRuntimeGetVersion(&query.runtime_version) != cudaSuccess) query.runtime_version = CUDART_VERSION;
  (void)cudaGetLastError();
  return cuda_device_count_from(query);
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
  auto backend = std::make_unique<CudaBackend>(*allocator, options);
  return std::make_unique<Context>(DeviceKind::Cuda, std::move(allocator), std::move(backend),
                                   options.num_threads);
}

}  // namespace dtrain
