// Convolution on cuDNN: NCHW float, cross-correlation (PyTorch's conv2d), one plan per
// shape with the algorithm of each direction measured once (Note [cuDNN algorithm
// choice], kernels/cuda/conv2d_plan.h). Forward adds the bias with add_bias;
// backward-filter accumulates into dw (beta = 1) and into dbias with bias_backward, as
// the op set's += contract asks; backward-data overwrites dx (beta = 0).
#include <algorithm>
#include <limits>
#include <sstream>
#include <vector>

#include "kernels/check.h"
#include "kernels/context.h"
#include "kernels/cuda/conv2d_plan.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/errors.h"

namespace dtrain {

namespace {

std::string describe(const Conv2dShape& s) {
  std::ostringstream out;
  out << "N=" << s.batch << " Ci=" << s.in_channels << " H=" << s.height << " W=" << s.width
      << " Co=" << s.out_channels << " K=" << s.kernel << " stride=" << s.stride
      << " pad=" << s.padding;
  return out.str();
}

void check_shape(const Conv2dShape& s, const char* op) {
  DTRAIN_ASSERT(s.batch >= 0 && s.in_channels > 0 && s.out_channels > 0 && s.height > 0 &&
                    s.width > 0 && s.kernel > 0 && s.stride > 0 && s.padding >= 0,
                op << ": invalid shape " << describe(s));
  DTRAIN_ASSERT(s.out_height() > 0 && s.out_width() > 0,
                op << ": kernel " << s.kernel << " with padding " << s.padding
                   << " does not fit the " << s.height << "x" << s.width << " input");
  // cuDNN's 4-d descriptors take int sizes and int strides.
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  DTRAIN_ASSERT(s.batch * s.in_channels * s.height * s.width <= kMax &&
                    s.batch * s.out_channels * s.out_height() * s.out_width() <= kMax &&
                    s.out_channels * s.in_channels * s.kernel * s.kernel <= kMax,
                op << ": " << describe(s) << " has a tensor of more than 2^31 elements");
}

cudnnMathType_t base_math(bool tf32) { return tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH; }

bool math_allowed(cudnnMathType_t math, bool tf32) {
  if (math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;  // FP16 rounding
  return tf32 || math != CUDNN_TENSOR_OP_MATH;
}

// The search workspace: what the heuristics' successful candidates need, capped.
template <class Perf>
size_t search_workspace_bytes(const std::vector<Perf>& candidates, int count) {
  size_t bytes = 0;
  for (int i = 0; i < count; ++i) {
    if (candidates[i].status == CUDNN_STATUS_SUCCESS && candidates[i].memory > bytes) {
      bytes = candidates[i].memory;
    }
  }
  return bytes < kConvSearchWorkspaceLimit ? bytes : kConvSearchWorkspaceLimit;
}

// Borrows the search workspace; when memory is short the search goes on without one
// (bytes becomes 0), since algorithms that need none are still worth measuring.
Buffer borrow_search_workspace(Allocator& allocator, size_t& bytes) {
  if (bytes == 0) return Buffer();
  try {
    return Buffer(allocator, bytes, MemoryCategory::Workspace);
  } catch (const DeviceError&) {
    bytes = 0;
    return Buffer();
  }
}

// The fastest measured candidate that succeeded, fits, respects TF32 and is
// deterministic; failing that, the fastest non-deterministic one. Find returns the
// candidates sorted by time.
template <class Perf>
const Perf* pick_measured(const std::vector<Perf>& results, int count, size_t workspace_bytes,
                          bool tf32) {
  for (const bool need_deterministic : {true, false}) {
    for (int i = 0; i < count; ++i) {
      const Perf& r = results[i];
      if (r.status != CUDNN_STATUS_SUCCESS || r.memory > workspace_bytes ||
          !math_allowed(r.mathType, tf32)) {
        continue;
      }
      if (need_deterministic && r.determinism != CUDNN_DETERMINISTIC) continue;
      return &r;
    }
  }
  return nullptr;
}

// The heuristics' candidates of each direction (descriptors only, no memory touched),
// with the descriptor's math reset to the base: the search measures these.
std::vector<cudnnConvolutionFwdAlgoPerf_t> forward_heuristics(cudnnHandle_t handle,
                                                              const ConvPlan& plan) {
  DTRAIN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv.get(), base_math(plan.tf32)));
  int max_count = 0;
  DTRAIN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(handle, &max_count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> results(static_cast<size_t>(max_count));
  int count = 0;
  DTRAIN_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(handle, plan.x.get(), plan.w.get(),
                                                            plan.conv.get(), plan.y.get(),
                                                            max_count, &count, results.data()));
  results.resize(static_cast<size_t>(count));
  return results;
}

std::vector<cudnnConvolutionBwdDataAlgoPerf_t> backward_data_heuristics(cudnnHandle_t handle,
                                                                        const ConvPlan& plan) {
  DTRAIN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv.get(), base_math(plan.tf32)));
  int max_count = 0;
  DTRAIN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(handle, &max_count));
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> results(static_cast<size_t>(max_count));
  int count = 0;
  DTRAIN_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      handle, plan.w.get(), plan.y.get(), plan.conv.get(), plan.x.get(), max_count, &count,
      results.data()));
  results.resize(static_cast<size_t>(count));
  return results;
}

std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> backward_filter_heuristics(
    cudnnHandle_t handle, const ConvPlan& plan) {
  DTRAIN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv.get(), base_math(plan.tf32)));
  int max_count = 0;
  DTRAIN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(handle, &max_count));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> results(static_cast<size_t>(max_count));
  int count = 0;
  DTRAIN_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      handle, plan.x.get(), plan.y.get(), plan.conv.get(), plan.w.get(), max_count, &count,
      results.data()));
  results.resize(static_cast<size_t>(count));
  return results;
}

template <class Algo, class Perf>
ConvAlgoChoice<Algo> to_choice(const Perf* r, const ConvPlan& plan, const char* op) {
  if (r == nullptr) {
    std::ostringstream msg;
    msg << op << ": cuDNN has no usable algorithm for " << describe(plan.shape)
        << (plan.tf32 ? " with TF32" : " without TF32")
        << "; try other convolution sizes or precision.tf32";
    throw DeviceError(msg.str());
  }
  // Without TF32 the descriptor stays FMA-only whatever the result reports.
  return {r->algo, r->memory, plan.tf32 ? r->mathType : CUDNN_FMA_MATH};
}

ConvAlgoChoice<cudnnConvolutionFwdAlgo_t> choose_forward(cudnnHandle_t handle,
                                                         Allocator& allocator,
                                                         const ConvPlan& plan, const float* x,
                                                         const float* w, float* y) {
  std::vector<cudnnConvolutionFwdAlgoPerf_t> results = forward_heuristics(handle, plan);
  const int max_count = static_cast<int>(results.size());
  int count = max_count;
  size_t ws_bytes = search_workspace_bytes(results, count);
  Buffer ws = borrow_search_workspace(allocator, ws_bytes);
  DTRAIN_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(
      handle, plan.x.get(), x, plan.w.get(), w, plan.conv.get(), plan.y.get(), y, max_count,
      &count, results.data(), ws.data(), ws_bytes));
  return to_choice<cudnnConvolutionFwdAlgo_t>(pick_measured(results, count, ws_bytes, plan.tf32),
                                              plan, "conv2d_forward");
}

ConvAlgoChoice<cudnnConvolutionBwdDataAlgo_t> choose_backward_data(cudnnHandle_t handle,
                                                                   Allocator& allocator,
                                                                   const ConvPlan& plan,
                                                                   const float* dy,
                                                                   const float* w, float* dx) {
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> results = backward_data_heuristics(handle, plan);
  const int max_count = static_cast<int>(results.size());
  int count = max_count;
  size_t ws_bytes = search_workspace_bytes(results, count);
  Buffer ws = borrow_search_workspace(allocator, ws_bytes);
  DTRAIN_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
      handle, plan.w.get(), w, plan.y.get(), dy, plan.conv.get(), plan.x.get(), dx, max_count,
      &count, results.data(), ws.data(), ws_bytes));
  return to_choice<cudnnConvolutionBwdDataAlgo_t>(
      pick_measured(results, count, ws_bytes, plan.tf32), plan, "conv2d_backward_data");
}

ConvAlgoChoice<cudnnConvolutionBwdFilterAlgo_t> choose_backward_filter(cudnnHandle_t handle,
                                                                       Allocator& allocator,
                                                                       const ConvPlan& plan,
                                                                       const float* x,
                                                                       const float* dy) {
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> results =
      backward_filter_heuristics(handle, plan);
  const int max_count = static_cast<int>(results.size());
  int count = max_count;
  size_t ws_bytes = search_workspace_bytes(results, count);
  // The search overwrites its output; dw is accumulated into, so it gets a scratch one.
  const Conv2dShape& s = plan.shape;
  Buffer scratch_dw(allocator,
                    static_cast<size_t>(s.out_channels * s.in_channels * s.kernel * s.kernel) *
                        sizeof(float),
                    MemoryCategory::Workspace);
  Buffer ws = borrow_search_workspace(allocator, ws_bytes);
  DTRAIN_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
      handle, plan.x.get(), x, plan.y.get(), dy, plan.conv.get(), plan.w.get(), scratch_dw.data(),
      max_count, &count, results.data(), ws.data(), ws_bytes));
  return to_choice<cudnnConvolutionBwdFilterAlgo_t>(
      pick_measured(results, count, ws_bytes, plan.tf32), plan, "conv2d_backward_filter");
}

}  // namespace

ConvPlan::ConvPlan(const Conv2dShape& s, bool use_tf32) : shape(s), tf32(use_tf32) {
  const auto i = [](int64_t v) { return static_cast<int>(v); };  // bounds: check_shape
  DTRAIN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT,
                                                i(s.batch), i(s.in_channels), i(s.height),
                                                i(s.width)));
  DTRAIN_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w.get(), CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW,
                                                i(s.out_channels), i(s.in_channels),
                                                i(s.kernel), i(s.kernel)));
  DTRAIN_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv.get(), i(s.padding), i(s.padding),
                                                     i(s.stride), i(s.stride), 1, 1,
                                                     CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  DTRAIN_CUDNN_CHECK(cudnnSetConvolutionMathType(conv.get(), base_math(tf32)));
  int n = 0, c = 0, h = 0, wd = 0;
  DTRAIN_CUDNN_CHECK(
      cudnnGetConvolution2dForwardOutputDim(conv.get(), x.get(), w.get(), &n, &c, &h, &wd));
  DTRAIN_ASSERT(n == s.batch && c == s.out_channels && h == s.out_height() && wd == s.out_width(),
                "cuDNN's output " << n << "x" << c << "x" << h << "x" << wd << " differs from "
                                  << describe(s));
  DTRAIN_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n,
                                                c, h, wd));
}

size_t CudaBackend::conv2d_workspace_bytes(Context& /*ctx*/, const Conv2dShape& s) {
  check_shape(s, "conv2d_workspace_bytes");
  if (s.batch == 0) return 0;
  ConvPlan& plan = conv_plans_->get(s, tf32_);
  size_t held = 0;  // the largest chosen workspace: what the context keeps
  if (plan.forward) held = std::max(held, plan.forward->workspace_bytes);
  if (plan.backward_data) held = std::max(held, plan.backward_data->workspace_bytes);
  if (plan.backward_filter) held = std::max(held, plan.backward_filter->workspace_bytes);
  if (plan.forward && plan.backward_data && plan.backward_filter) return held;
  // Before its first use a direction is searched: the search borrows what its
  // candidates need (capped), on top of the workspace the context already holds, and
  // backward-filter's search a scratch dw. A chosen workspace is at most its search's.
  const size_t dw_bytes =
      static_cast<size_t>(s.out_channels * s.in_channels * s.kernel * s.kernel) * sizeof(float);
  const auto fwd = forward_heuristics(cudnn_.get(), plan);
  const auto bwd_data = backward_data_heuristics(cudnn_.get(), plan);
  const auto bwd_filter = backward_filter_heuristics(cudnn_.get(), plan);
  const size_t search = std::max({search_workspace_bytes(fwd, static_cast<int>(fwd.size())),
                                  search_workspace_bytes(bwd_data, static_cast<int>(bwd_data.size())),
                                  search_workspace_bytes(bwd_filter, static_cast<int>(bwd_filter.size())) +
                                      dw_bytes});
  return std::max(held, search) + search;
}

void CudaBackend::conv2d_forward(Context& ctx, const Conv2dShape& s, const float* x,
                                 const float* w, const float* bias, float* y) {
  check_shape(s, "conv2d_forward");
  if (s.batch == 0) return;
  ConvPlan& plan = conv_plans_->get(s, tf32_);
  if (!plan.forward) plan.forward = choose_forward(cudnn_.get(), allocator_, plan, x, w, y);
  const auto& choice = *plan.forward;
  DTRAIN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv.get(), choice.math));
  void* ws = ctx.workspace(choice.workspace_bytes);
  const float one = 1.0f, zero = 0.0f;
  DTRAIN_CUDNN_CHECK(cudnnConvolutionForward(cudnn_.get(), &one, plan.x.get(), x, plan.w.get(), w,
                                             plan.conv.get(), choice.algo, ws,
                                             choice.workspace_bytes, &zero, plan.y.get(), y));
  if (bias != nullptr) {
    add_bias(ctx, y, bias, s.batch, s.out_channels, s.out_height() * s.out_width());
  }
}

void CudaBackend::conv2d_backward_data(Context& ctx, const Conv2dShape& s, const float* dy,
                                       const float* w, float* dx) {
  check_shape(s, "conv2d_backward_data");
  if (s.batch == 0) return;
  ConvPlan& plan = conv_plans_->get(s, tf32_);
  if (!plan.backward_data) {
    plan.backward_data = choose_backward_data(cudnn_.get(), allocator_, plan, dy, w, dx);
  }
  const auto& choice = *plan.backward_data;
  DTRAIN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv.get(), choice.math));
  void* ws = ctx.workspace(choice.workspace_bytes);
  const float one = 1.0f, zero = 0.0f;
  DTRAIN_CUDNN_CHECK(cudnnConvolutionBackwardData(cudnn_.get(), &one, plan.w.get(), w,
                                                  plan.y.get(), dy, plan.conv.get(), choice.algo,
                                                  ws, choice.workspace_bytes, &zero, plan.x.get(),
                                                  dx));
}

void CudaBackend::conv2d_backward_filter(Context& ctx, const Conv2dShape& s, const float* x,
                                         const float* dy, float* dw, float* dbias) {
  check_shape(s, "conv2d_backward_filter");
  if (s.batch == 0) return;
  ConvPlan& plan = conv_plans_->get(s, tf32_);
  if (!plan.backward_filter) {
    plan.backward_filter = choose_backward_filter(cudnn_.get(), allocator_, plan, x, dy);
  }
  const auto& choice = *plan.backward_filter;
  DTRAIN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv.get(), choice.math));
  void* ws = ctx.workspace(choice.workspace_bytes);
  const float one = 1.0f;  // beta = 1: dw += the gradient of this batch
  DTRAIN_CUDNN_CHECK(cudnnConvolutionBackwardFilter(cudnn_.get(), &one, plan.x.get(), x,
                                                    plan.y.get(), dy, plan.conv.get(),
                                                    choice.algo, ws, choice.workspace_bytes, &one,
                                                    plan.w.get(), dw));
  if (dbias != nullptr) {
    bias_backward(ctx, dy, dbias, s.batch, s.out_channels, s.out_height() * s.out_width());
  }
}

}  // namespace dtrain
