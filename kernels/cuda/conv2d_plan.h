// The cuDNN state of one convolution shape: its descriptors and the algorithm chosen
// for each direction. Private to kernels/cuda/ (conv2d.cpp fills it, CudaBackend
// owns the cache).
//
// Note [cuDNN algorithm choice]
// Each direction's algorithm is chosen once per shape, the first time it runs, by
// measuring: cudnnFind*AlgorithmEx times every candidate on the real input with a
// search workspace from the device allocator, sized by what the _v7 heuristics say the
// candidates need and capped at kConvSearchWorkspaceLimit (if even that much cannot be
// had, the search runs with none). Of the measured candidates the fastest is taken
// that succeeded, fits the workspace, is deterministic (so a run repeats bit for bit,
// as on the CPU) and respects the TF32 setting; a non-deterministic one only when no
// deterministic one exists. The forward and backward-data searches write into the
// op's own output, which the op overwrites anyway; backward-filter searches into a
// scratch buffer, because its output is accumulated into.
//
// Math types: with TF32 off the descriptor is CUDNN_FMA_MATH, which keeps tensor
// cores out entirely (CUDNN_DEFAULT_MATH allows TF32 on Ampere and later); with it on,
// the algorithm runs with the math type it was measured with (tensor cores allowed,
// but never CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, which would round inputs to FP16).
#pragma once

#include <cudnn.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>

#include "kernels/cuda/cuda_check.h"
#include "kernels/ops.h"

namespace dtrain {

// The most device memory an algorithm search may borrow for its workspace.
inline constexpr size_t kConvSearchWorkspaceLimit = size_t{256} << 20;

// Owns one cuDNN descriptor; the library's create/destroy pair as template arguments.
template <class Handle, cudnnStatus_t (*Create)(Handle*), cudnnStatus_t (*Destroy)(Handle)>
class CudnnDescriptor {
 public:
  CudnnDescriptor() { DTRAIN_CUDNN_CHECK(Create(&handle_)); }
  ~CudnnDescriptor() { DTRAIN_CUDNN_REPORT(Destroy(handle_)); }
  CudnnDescriptor(const CudnnDescriptor&) = delete;
  CudnnDescriptor& operator=(const CudnnDescriptor&) = delete;
  Handle get() const { return handle_; }

 private:
  Handle handle_ = nullptr;
};

using CudnnTensorDescriptor =
    CudnnDescriptor<cudnnTensorDescriptor_t, cudnnCreateTensorDescriptor,
                    cudnnDestroyTensorDescriptor>;
using CudnnFilterDescriptor =
    CudnnDescriptor<cudnnFilterDescriptor_t, cudnnCreateFilterDescriptor,
                    cudnnDestroyFilterDescriptor>;
using CudnnConvolutionDescriptor =
    CudnnDescriptor<cudnnConvolutionDescriptor_t, cudnnCreateConvolutionDescriptor,
                    cudnnDestroyConvolutionDescriptor>;

template <class Algo>
struct ConvAlgoChoice {
  Algo algo;
  size_t workspace_bytes;
  cudnnMathType_t math;
};

struct ConvPlan {
  // Describes x (N, Ci, H, W), w (Co, Ci, K, K), y (N, Co, Ho, Wo) and the convolution
  // (cross-correlation, as PyTorch's conv2d) in float, NCHW.
  ConvPlan(const Conv2dShape& shape, bool tf32);

  Conv2dShape shape;
  bool tf32;
  CudnnTensorDescriptor x;
  CudnnTensorDescriptor y;
  CudnnFilterDescriptor w;
  CudnnConvolutionDescriptor conv;
  std::optional<ConvAlgoChoice<cudnnConvolutionFwdAlgo_t>> forward;
  std::optional<ConvAlgoChoice<cudnnConvolutionBwdDataAlgo_t>> backward_data;
  std::optional<ConvAlgoChoice<cudnnConvolutionBwdFilterAlgo_t>> backward_filter;
};

// Plans by shape; a backend's TF32 setting is fixed, so the shape is the whole key.
class ConvPlanCache {
 public:
  ConvPlan& get(const Conv2dShape& s, bool tf32) {
    const std::array<int64_t, 8> key{s.batch,        s.in_channels, s.height, s.width,
                                     s.out_channels, s.kernel,      s.stride, s.padding};
    auto& plan = plans_[key];
    if (!plan) plan = std::make_unique<ConvPlan>(s, tf32);
    return *plan;
  }

 private:
  std::map<std::array<int64_t, 8>, std::unique_ptr<ConvPlan>> plans_;
};

}  // namespace dtrain
