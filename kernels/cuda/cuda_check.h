// The CUDA, cuBLAS and cuDNN members of the CHECK family (kernels/check.h).
//
//   DTRAIN_CUDA_CHECK(cudaMemcpyAsync(...));
//   DTRAIN_CUBLAS_CHECK(cublasSgemm(...));
//   DTRAIN_CUDNN_CHECK(cudnnConvolutionForward(...));
//   kernel<<<grid, block, 0, stream>>>(...); DTRAIN_CUDA_LAUNCH_CHECK();
//
// Each throws DeviceError naming the statement, file:line, the current device and the
// library's own error string. Every CUDA, cuBLAS and cuDNN call in kernels/cuda/ goes
// through one of them, and every kernel launch is followed by DTRAIN_CUDA_LAUNCH_CHECK.
//
// Destructors must not throw, so they use the *_REPORT forms, which write the same
// message to stderr instead (and stay silent when the CUDA runtime is already being
// unloaded at process exit, where freeing is moot).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdio>
#include <string>

#include "kernels/check.h"
#include "kernels/errors.h"

namespace dtrain::cuda_detail {

inline bool cuda_ok(cudaError_t e) { return e == cudaSuccess; }
inline bool cublas_ok(cublasStatus_t s) { return s == CUBLAS_STATUS_SUCCESS; }
inline bool cudnn_ok(cudnnStatus_t s) { return s == CUDNN_STATUS_SUCCESS; }

// Errors raised by a kernel that faulted surface at whichever call comes next, and
// they poison the context; say how to find the real culprit.
inline bool is_asynchronous_fault(cudaError_t e) {
  return e == cudaErrorIllegalAddress || e == cudaErrorLaunchFailure ||
         e == cudaErrorIllegalInstruction || e == cudaErrorMisalignedAddress ||
         e == cudaErrorInvalidAddressSpace || e == cudaErrorInvalidPc ||
         e == cudaErrorHardwareStackError || e == cudaErrorAssert ||
         e == cudaErrorLaunchTimeout;
}

inline std::string cuda_error_string(cudaError_t e) {
  std::string s = std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
  if (is_asynchronous_fault(e)) {
    s += " (an earlier kernel may have caused this; rerun with CUDA_LAUNCH_BLOCKING=1 or under "
         "compute-sanitizer to find it)";
  }
  return s;
}

inline std::string cublas_error_string(cublasStatus_t s) {
  return std::string(cublasGetStatusName(s)) + ": " + cublasGetStatusString(s);
}

inline std::string cudnn_error_string(cudnnStatus_t s) {
  std::string out = cudnnGetErrorString(s);
  // cuDNN 9 keeps a more specific message about the last failure on this thread.
  char detail[512] = {};
  cudnnGetLastErrorString(detail, sizeof(detail));
  if (detail[0] != '\0') out += std::string(" (") + detail + ")";
  return out;
}

// "cuda:N" for the message; only evaluated once a call has failed.
inline std::string current_device() {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();  // the failure being reported matters, not this one
    return "cuda:?";
  }
  return "cuda:" + std::to_string(device);
}

inline void report(const char* library, const char* statement, const char* file, int line,
                   const std::string& detail) {
  std::fprintf(stderr, "dtrain: warning: %s call failed during cleanup: %s at %s:%d: %s\n",
               library, statement, file, line, detail.c_str());
}

}  // namespace dtrain::cuda_detail

#define DTRAIN_CUDA_CHECK(statement)                                                          \
  DTRAIN_CHECK_LIB(::dtrain::DeviceError, "CUDA", statement, ::dtrain::cuda_detail::cuda_ok,  \
                   ::dtrain::cuda_detail::cuda_error_string,                                  \
                   ::dtrain::cuda_detail::current_device())

#define DTRAIN_CUBLAS_CHECK(statement)                                        \
  DTRAIN_CHECK_LIB(::dtrain::DeviceError, "cuBLAS", statement,                \
                   ::dtrain::cuda_detail::cublas_ok,                          \
                   ::dtrain::cuda_detail::cublas_error_string,                \
                   ::dtrain::cuda_detail::current_device())

#define DTRAIN_CUDNN_CHECK(statement)                                                            \
  DTRAIN_CHECK_LIB(::dtrain::DeviceError, "cuDNN", statement, ::dtrain::cuda_detail::cudnn_ok,   \
                   ::dtrain::cuda_detail::cudnn_error_string,                                    \
                   ::dtrain::cuda_detail::current_device())

// After every kernel launch: catches a bad launch configuration at its source
// (a fault inside the kernel surfaces later, at the next synchronizing call).
#define DTRAIN_CUDA_LAUNCH_CHECK()                                                       \
  DTRAIN_CHECK_LIB(::dtrain::DeviceError, "CUDA kernel launch", cudaGetLastError(),      \
                   ::dtrain::cuda_detail::cuda_ok, ::dtrain::cuda_detail::cuda_error_string, \
                   ::dtrain::cuda_detail::current_device())

// Non-throwing forms, for destructors only.
#define DTRAIN_CUDA_REPORT(statement)                                                      \
  do {                                                                                     \
    const cudaError_t dtrain_status_ = (statement);                                        \
    if (dtrain_status_ != cudaSuccess) {                                                   \
      (void)cudaGetLastError();                                                            \
      if (dtrain_status_ != cudaErrorCudartUnloading) {                                    \
        ::dtrain::cuda_detail::report("CUDA", #statement, __FILE__, __LINE__,              \
                                      ::dtrain::cuda_detail::cuda_error_string(dtrain_status_)); \
      }                                                                                    \
    }                                                                                      \
  } while (0)

#define DTRAIN_CUBLAS_REPORT(statement)                                                      \
  do {                                                                                       \
    const cublasStatus_t dtrain_status_ = (statement);                                       \
    if (dtrain_status_ != CUBLAS_STATUS_SUCCESS) {                                           \
      ::dtrain::cuda_detail::report("cuBLAS", #statement, __FILE__, __LINE__,                \
                                    ::dtrain::cuda_detail::cublas_error_string(dtrain_status_)); \
    }                                                                                        \
  } while (0)

#define DTRAIN_CUDNN_REPORT(statement)                                                      \
  do {                                                                                      \
    const cudnnStatus_t dtrain_status_ = (statement);                                       \
    if (dtrain_status_ != CUDNN_STATUS_SUCCESS) {                                           \
      ::dtrain::cuda_detail::report("cuDNN", #statement, __FILE__, __LINE__,                \
                                    ::dtrain::cuda_detail::cudnn_error_string(dtrain_status_)); \
    }                                                                                       \
  } while (0)
