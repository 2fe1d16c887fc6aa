// Convolution on cuDNN: NCHW float, cross-correlation (PyTorch's conv2d), one plan per
// shape with the algorithm of each direction chosen once from cuDNN's heuristics (Note
// [cuDNN algorithm choice], kernels/cuda/conv2d_plan.h). Forward adds the bias with
// add_bias; backward-filter accumulates into dw (beta = 1) and into dbias with
// bias_backward, as the op set's += contract asks; backward-data overwrites dx (beta = 0).
#include <algorithm>
#include <limits>
#include <sstream>
#include <vector>

#include "kernels/check.h"
#include "kernels/context.h"
#include "kernels/conv_algorithm.h"
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

void check_valid(const Conv2dShape& s, const char* op) {
  DTRAIN_ASSERT(s.batch >= 0 && s.in_channels > 0 && s.out_channels > 0 && s.height > 0 &&
                    s.width > 0 && s.kernel > 0 && s.stride > 0 && s.padding >= 0,
                op << ": invalid shape " << describe(s));
  DTRAIN_ASSERT(s.out_height() > 0 && s.out_width() > 0,
                op << ": kernel " << s.kernel << " with padding " << s.padding
                   << " does not fit the " << s.height << "x" << s.width << " input");
}

// cuDNN's 4-d descriptors take int sizes and int strides.
bool fits_cudnn(const Conv2dShape& s) {
  constexpr int64_t kMax = std::numeric_limits<int>::max();
  return s.batch * s.in_channels * s.height * s.width <= kMax &&
         s.batch * s.out_channels * s.out_height() * s.out_width() <= kMax &&
         s.out_channels * s.in_channels * s.kernel * s.kernel <= kMax;
}

// A batch too large for one cuDNN call is, to the batch planner, a batch that does not
// fit: it backs off as from an allocation that failed.
void check_shape(const Conv2dShape& s, const char* op) {
  check_valid(s, op);
  if (!fits_cudnn(s)) {
    throw OutOfMemoryError(std::string(op) + ": " + describe(s) +
                           " has a tensor of more than 2^31 elements, more than cuDNN takes in "
                           "one call; use a smaller train.micro_batch (or auto)");
  }
}

cudnnMathType_t base_math(bool tf32) { return tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH; }

bool math_allowed(cudnnMathType_t math, bool tf32) {
  if (math == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;  // FP16 rounding
  return tf32 || math != CUDNN_TENSOR_OP_MATH;
}

// The cuDNN calls of each direction, so that the choice below is written once.
struct ForwardCalls {
  using Algo = cudnnConvolutionFwdAlgo_t;
  using Perf = cudnnConvolutionFwdAlgoPerf_t;
  static constexpr const char* kOp = "conv2d_forward";
  static cudnnStatus_t max_count(cudnnHandle_t h, int* n) {
    return cudnnGetConvolutionForwardAlgorithmMaxCount(h, n);
  }
  static cudnnStatus_t heuristics(cudnnHandle_t h, const ConvPlan& p, int n, int* count, Perf* r) {
    return cudnnGetConvolutionForwardAlgorithm_v7(h, p.x.get(), p.w.get(), p.conv.get(),
                                                  p.y.get(), n, count, r);
  }
  static cudnnStatus_t workspace(cudnnHandle_t h, const ConvPlan& p, Algo a, size_t* bytes) {
    return cudnnGetConvolutionForwardWorkspaceSize(h, p.x.get(), p.w.get(), p.conv.get(),
                                                   p.y.get(), a, bytes);
  }
};

struct BackwardDataCalls {
  using Algo = cudnnConvolutionBwdDataAlgo_t;
  using Perf = cudnnConvolutionBwdDataAlgoPerf_t;
  static constexpr const char* kOp = "conv2d_backward_data";
  static cudnnStatus_t max_count(cudnnHandle_t h, int* n) {
    return cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, n);
  }
  static cudnnStatus_t heuristics(cudnnHandle_t h, const ConvPlan& p, int n, int* count, Perf* r) {
    return cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p.w.get(), p.y.get(), p.conv.get(),
                                                       p.x.get(), n, count, r);
  }
  static cudnnStatus_t workspace(cudnnHandle_t h, const ConvPlan& p, Algo a, size_t* bytes) {
    return cudnnGetConvolutionBackwardDataWorkspaceSize(h, p.w.get(), p.y.get(), p.conv.get(),
                                                        p.x.get(), a, bytes);
  }
};

struct BackwardFilterCalls {
  using Algo = cudnnConvolutionBwdFilterAlgo_t;
  using Perf = cudnnConvolutionBwdFilterAlgoPerf_t;
  static constexpr const char* kOp = "conv2d_backward_filter";
  static cudnnStatus_t max_count(cudnnHandle_t h, int* n) {
    return cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, n);
  }
  static cudnnStatus_t heuristics(cudnnHandle_t h, const ConvPlan& p, int n, int* count, Perf* r) {
    return cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x.get(), p.y.get(), p.conv.get(),
                                                         p.w.get(), n, count, r);
  }
  static cudnnStatus_t workspace(cudnnHandle_t h, const ConvPlan& p, Algo a, size_t* bytes) {
    return cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p.x.get(), p.y.get(), p.conv.get(),
                                                          p.w.get(), a, bytes);
  }
};

// The heuristics' candidates described for conv_select_algorithm (Note [cuDNN
// algorithm choice]).
template <class Calls>
ConvAlgoChoice<typename Calls::Algo> choose(cudnnHandle_t handle, const ConvPlan& plan, size_t deterministic_cap,
                                            bool prefer_deterministic) {
  DTRAIN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv.get(), base_math(plan.tf32)));
  int max_count = 0;
  DTRAIN_CUDNN_CHECK(Calls::max_count(handle, &max_count));
  std::vector<typename Calls::Perf> results(static_cast<size_t>(max_count));
  int count = 0;
  DTRAIN_CUDNN_CHECK(Calls::heuristics(handle, plan, max_count, &count, results.data()));
  results.resize(static_cast<size_t>(count));
  std::vector<ConvAlgoCandidate> candidates(results.size());
  std::vector<cudnnMathType_t> maths(results.size(), base_math(plan.tf32));
  for (size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    ConvAlgoCandidate& c = candidates[i];
    c.algo = static_cast<int>(r.algo);
    c.deterministic = r.determinism == CUDNN_DETERMINISTIC;
    if (r.status != CUDNN_STATUS_SUCCESS || !math_allowed(r.mathType, plan.tf32)) continue;
    // Without TF32 the descriptor stays FMA-only whatever the heuristics report.
    maths[i] = plan.tf32 ? r.mathType : CUDNN_FMA_MATH;
    DTRAIN_CUDNN_CHECK(cudnnSetConvolutionMathType(plan.conv.get(), maths[i]));
    size_t bytes = 0;
    if (Calls::workspace(handle, plan, r.algo, &bytes) != CUDNN_STATUS_SUCCESS) continue;
    c.workspace_bytes = std::max(bytes, r.memory);
    c.usable = true;
  }
  const ConvAlgoSelection chosen = prefer_deterministic
                                       ? conv_select_algorithm(candidates, kConvWorkspacePreferred, deterministic_cap)
                                       : conv_select_fastest(candidates, kConvWorkspacePreferred);
  if (chosen.index >= 0) {
    const auto i = static_cast<size_t>(chosen.index);
    return {results[i].algo, candidates[i].workspace_bytes, maths[i], chosen.deterministic};
  }
  std::ostringstream msg;
  msg << Calls::kOp << ": cuDNN has no usable algorithm for " << describe(plan.shape)
      << (plan.tf32 ? " with TF32" : " without TF32") << "; try other convolution sizes or precision.tf32";
  throw DeviceError(msg.str());
}

}  // namespace

ConvPlan::ConvPlan(cudnnHandle_t handle, const Conv2dShape& s, bool use_tf32, size_t deterministic_cap,
                   bool prefer_deterministic)
    : shape(s), tf32(use_tf32) {
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
  forward = choose<ForwardCalls>(handle, *this, deterministic_cap, prefer_deterministic);
  backward_data = choose<BackwardDataCalls>(handle, *this, deterministic_cap, prefer_deterministic);
  backward_filter = choose<BackwardFilterCalls>(handle, *this, deterministic_cap, prefer_deterministic);
}

void CudaBackend::release_plans() { conv_plans_->clear(); }

size_t CudaBackend::plan_count() const { return conv_plans_->size(); }

size_t CudaBackend::conv2d_workspace_bytes(Context& /*ctx*/, const Conv2dShape& s) {
  check_valid(s, "conv2d_workspace_bytes");
  // More than any device holds, and small enough that sums of it do not overflow: the
  // planner sees that such a batch does not fit.
  if (!fits_cudnn(s)) return size_t{1} << 50;
  if (s.batch == 0) return 0;
  // The context keeps one workspace, as large as the largest any op asked for. (The
  // first layer never computes dx, so for it this bounds what it takes.) Backward-filter's
  // bias gradient takes one too where the output is 1 x 1 (bias_backward's rows form).
  const ConvPlan& plan = conv_plans_->get(cudnn_.get(), s, tf32_);
  return std::max({plan.forward.workspace_bytes, plan.backward_data.workspace_bytes,
                   plan.backward_filter.workspace_bytes,
                   bias_backward_workspace_bytes(s.batch, s.out_channels, s.out_height() * s.out_width())});
}

Conv2dDeterminism CudaBackend::conv2d_determinism(Context& /*ctx*/, const Conv2dShape& s) {
  check_valid(s, "conv2d_determinism");
  // Such shapes run no cuDNN algorithm at all: they fail (check_shape) or do nothing.
  if (!fits_cudnn(s) || s.batch == 0) return {};
  const ConvPlan& plan = conv_plans_->get(cudnn_.get(), s, tf32_);
  return {plan.forward.deterministic, plan.backward_data.deterministic,
          plan.backward_filter.deterministic};
}

void CudaBackend::conv2d_forward(Context& ctx, const Conv2dShape& s, const float* x,
                                 const float* w, const float* bias, float* y) {
  check_shape(s, "conv2d_forward");
  if (s.batch == 0) return;
  ConvPlan& plan = conv_plans_->get(cudnn_.get(), s, tf32_);
  const auto& choice = plan.forward;
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
  ConvPlan& plan = conv_plans_->get(cudnn_.get(), s, tf32_);
  const auto& choice = plan.backward_data;
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
  ConvPlan& plan = conv_plans_->get(cudnn_.get(), s, tf32_);
  const auto& choice = plan.backward_filter;
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
