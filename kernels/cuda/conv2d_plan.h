// The cuDNN state of one convolution shape: its descriptors and the algorithm chosen
// for each direction. Private to kernels/cuda/ (conv2d.cpp fills it, CudaBackend
// owns the cache).
//
// Note [cuDNN algorithm choice]
// Each direction's algorithm is chosen once per shape, when the shape's plan is made,
// from cuDNN's _v7 heuristics, without measuring, by conv_select_algorithm
// (kernels/conv_algorithm.h) over the candidates that are supported and respect the
// TF32 setting: the first (the heuristics rank them by expected speed) deterministic
// one needing at most kConvWorkspacePreferred of workspace; else the deterministic one
// needing the least workspace, up to a quarter of the device's memory (the cap: beyond
// it a model that ran before could no longer fit at all); a non-deterministic one only
// when no deterministic one is within the cap. Timing the candidates (cudnnFind*) would pick by
// measurements that differ between processes, so a resumed run or another rank could
// take another algorithm and its results would differ in the last bits; the heuristics
// depend only on the shape, the GPU model and the cuDNN version, so a run resumed on
// the same kind of card repeats bit for bit, as on the CPU. The workspace of a choice is
// what cudnnGet*WorkspaceSize reports for it with the math type it runs with (or the
// heuristics' figure, if larger); conv2d_workspace_bytes reports it, so the memory
// model charges it before the first step and a deterministic algorithm with a large
// workspace costs micro-batch, not determinism. Where cuDNN has no deterministic
// algorithm for a direction, conv2d_determinism says so, and the runtime reports it in
// the plan and the run's summary (Note [Determinism report], runtime/plan_report.h):
// such a run, resumed, matches within float rounding, not bit for bit. With
// CudaOptions::deterministic off (precision.deterministic: false) the rule is
// conv_select_fastest: the heuristics' first usable candidate within the preferred
// workspace, deterministic or not (what PyTorch's cuDNN calls take by default); the
// report then names the directions whose choice is not deterministic.
//
// Math types: with TF32 off the descriptor is CUDNN_FMA_MATH, which keeps tensor
// cores out entirely (CUDNN_DEFAULT_MATH allows TF32 on Ampere and later); with it on,
// the algorithm runs with the math type the heuristics gave it (tensor cores allowed,
// but never CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION, which would round inputs to FP16).
#pragma once

#include <cudnn.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

#include "kernels/cuda/cuda_check.h"
#include "kernels/ops.h"

namespace dtrain {

// The workspace below which the fastest deterministic algorithm is taken; beyond it,
// the one needing the least (Note [cuDNN algorithm choice]).
inline constexpr size_t kConvWorkspacePreferred = size_t{256} << 20;

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
  bool deterministic;  // false when cuDNN offers no deterministic algorithm, or when
                       // determinism is not preferred and the fastest is not
};

struct ConvPlan {
  // Describes x (N, Ci, H, W), w (Co, Ci, K, K), y (N, Co, Ho, Wo) and the convolution
  // (cross-correlation, as PyTorch's conv2d) in float, NCHW, and chooses the algorithm
  // of each direction (Note [cuDNN algorithm choice]). The shape must fit cuDNN's int
  // sizes (conv2d.cpp checks).
  // prefer_deterministic false: conv_select_fastest's rule.
  ConvPlan(cudnnHandle_t handle, const Conv2dShape& shape, bool tf32, size_t deterministic_cap_bytes,
           bool prefer_deterministic);

  Conv2dShape shape;
  bool tf32;
  CudnnTensorDescriptor x;
  CudnnTensorDescriptor y;
  CudnnFilterDescriptor w;
  CudnnConvolutionDescriptor conv;
  ConvAlgoChoice<cudnnConvolutionFwdAlgo_t> forward{};
  ConvAlgoChoice<cudnnConvolutionBwdDataAlgo_t> backward_data{};
  ConvAlgoChoice<cudnnConvolutionBwdFilterAlgo_t> backward_filter{};
};

// Plans by shape; a backend's TF32 setting is fixed, so the shape is the whole key.
class ConvPlanCache {
 public:
  // deterministic_cap_bytes: the most workspace a deterministic algorithm may take;
  // prefer_deterministic false: the fastest algorithms (Note [cuDNN algorithm choice]).
  ConvPlanCache(size_t deterministic_cap_bytes, bool prefer_deterministic)
      : deterministic_cap_bytes_(deterministic_cap_bytes), prefer_deterministic_(prefer_deterministic) {}
  ConvPlan& get(cudnnHandle_t handle, const Conv2dShape& s, bool tf32) {
    const std::array<int64_t, 8> key{s.batch,        s.in_channels, s.height, s.width,
                                     s.out_channels, s.kernel,      s.stride, s.padding};
    auto& plan = plans_[key];
    if (!plan) plan = std::make_unique<ConvPlan>(handle, s, tf32, deterministic_cap_bytes_, prefer_deterministic_);
    return *plan;
  }
  size_t size() const { return plans_.size(); }
  void clear() { plans_.clear(); }

 private:
  size_t deterministic_cap_bytes_;
  bool prefer_deterministic_;
  std::map<std::array<int64_t, 8>, std::unique_ptr<ConvPlan>> plans_;
};

}  // namespace dtrain
