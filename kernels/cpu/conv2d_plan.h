// The oneDNN state of one convolution shape (one group of samples, Note [oneDNN
// convolutions] in conv2d.cpp): the primitive of each direction and the reorders
// around it. Private to kernels/cpu/ and its tests (conv2d.cpp runs the plans; the CPU
// backend owns the cache).
//
// Note [oneDNN layout choice]
// oneDNN's fast convolutions (jit:avx512_core, jit:avx2, ...) take activations with
// the channels in blocks of the vector width (nChw16c or nChw8c) and weights blocked
// likewise; the ops hold NCHW and OIHW, so each call reorders into those layouts and
// back (a copy, bit for bit). A tensor with fewer channels than a block is padded to a
// whole block, and the padding is computed as if it were data: a first layer's 1-channel
// input gradient takes 16x the work in nChw16c. So each direction whose blocked
// activations would have channels padded to twice or more runs on the plain layouts
// instead (NCHW, OIHW: oneDNN then takes its im2col + GEMM convolution, "gemm:jit"),
// without the reorders. The rule looks at the layouts alone, never at timings, so every
// process of a job makes the same choice and a run repeats bit for bit.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/ops.h"

namespace dtrain::cpu {

// Which layouts a direction runs on (Note [oneDNN layout choice]).
enum class ConvLayout { Blocked, Plain };

// An operand as the ops hold it (`user`: NCHW, OIHW) and as the primitive takes it
// (`internal`), with the reorder between them where they differ: toward the primitive
// for an input, back from it for an output.
struct OnednnOperand {
  dnnl::memory::desc user, internal;
  dnnl::reorder reorder;          // empty where user == internal
  dnnl::memory::desc scratchpad;  // the reorder's (zero bytes for most)

  bool reordered() const { return user != internal; }
  // The bytes of the internal copy a call keeps in its workspace (0 without a reorder).
  size_t internal_bytes() const { return reordered() ? internal.get_size() : 0; }
};

struct ConvForwardPlan {
  ConvLayout layout = ConvLayout::Blocked;
  dnnl::convolution_forward primitive;
  OnednnOperand src, weights, dst;
  dnnl::memory::desc bias;
  dnnl::memory::desc scratchpad;
};

struct ConvBackwardDataPlan {
  ConvLayout layout = ConvLayout::Blocked;
  dnnl::convolution_backward_data primitive;
  OnednnOperand diff_dst, weights, diff_src;
  dnnl::memory::desc scratchpad;
};

// No bias: the bias gradient is bias_backward's (elementwise.cpp).
struct ConvBackwardWeightsPlan {
  ConvLayout layout = ConvLayout::Blocked;
  dnnl::convolution_backward_weights primitive;
  OnednnOperand src, diff_dst, diff_weights;
  dnnl::memory::desc scratchpad;
};

// The primitives of the three directions for one group shape (`shape.batch` is the
// group's samples), made for one thread. Scratchpads are the caller's (scratchpad mode
// "user"), so every byte a call takes comes from the context's workspace.
struct ConvPlan {
  explicit ConvPlan(const Conv2dShape& group);

  Conv2dShape shape;
  ConvForwardPlan forward;
  ConvBackwardDataPlan backward_data;
  ConvBackwardWeightsPlan backward_weights;
  std::vector<float> zero_bias;  // (Co): forward without a bias runs the same primitive
};

// The plans of the process, one per group shape, made on first use and kept until
// clear() (OpsBackend::release_plans). Safe to use from several threads: a plan is
// immutable once made, and a caller keeps the one it got alive while it runs.
class ConvPlanCache {
 public:
  std::shared_ptr<const ConvPlan> get(const Conv2dShape& group);
  void clear();
  size_t size() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::array<int64_t, 8>, std::shared_ptr<const ConvPlan>> plans_;
};

}  // namespace dtrain::cpu
