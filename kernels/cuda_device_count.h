// What cudaGetDeviceCount's answer means: a number of GPUs, or a DeviceError that says
// what is wrong and what to do. A pure function of the answer, so the decision is
// tested on machines without a GPU (tests/unit/kernels/test_cuda_device_count.cpp);
// kernels/cuda/cuda_context.cpp asks CUDA and passes the answer here.
//
// Note [No GPU versus a broken GPU]
// Only two answers mean "this machine has no GPU for us", and there dtrain runs on
// the CPU (device.kind: auto) and the GPU tests skip:
//   cudaErrorNoDevice               a driver is loaded but shows no device (none
//                                   installed, or CUDA_VISIBLE_DEVICES hides them all)
//   cudaErrorInsufficientDriver     with cudaDriverGetVersion = 0: no driver is
//                                   installed at all (no libcuda.so.1). CUDA documents
//                                   0 as "no driver installed"; a CUDA 13 runtime on a
//                                   machine without libcuda answers exactly this pair
//                                   (seen on the development machines).
// Every other answer is a GPU machine that cannot run this build, and is an error
// rather than a silent CPU run: above all cudaErrorInsufficientDriver with a nonzero
// driver version (a driver older than the runtime dtrain was built with), but also a
// stub libcuda on the library path (cudaErrorStubLibrary, which hides the real
// driver), a driver/kernel-module mismatch, a device in use by an exclusive process.
#pragma once

#include <string>

namespace dtrain {

// cudaGetDeviceCount's answer and the versions that explain it. The codes are
// cudaError_t values (kernels/cuda/cuda_context.cpp checks that the constants below
// match CUDA's enum); versions as CUDA encodes them, 1000 * major + 10 * minor.
struct CudaDeviceQuery {
  int error = 0;            // cudaError_t of cudaGetDeviceCount
  std::string error_name;   // cudaGetErrorName
  std::string error_text;   // cudaGetErrorString
  int count = 0;            // the count, when error is cudaSuccess
  int driver_version = 0;   // cudaDriverGetVersion; 0: no driver installed
  int runtime_version = 0;  // cudaRuntimeGetVersion: the runtime dtrain was built with
};

inline constexpr int kCudaSuccess = 0;
inline constexpr int kCudaErrorStubLibrary = 34;
inline constexpr int kCudaErrorInsufficientDriver = 35;
inline constexpr int kCudaErrorNoDevice = 100;

// The number of usable GPUs for `query` (Note [No GPU versus a broken GPU]); throws
// DeviceError naming the CUDA error, both versions and what to do otherwise.
int cuda_device_count_from(const CudaDeviceQuery& query);

// "13.0" for 13000, "12.2" for 12020.
std::string cuda_version_text(int version);

}  // namespace dtrain
