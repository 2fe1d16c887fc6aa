// Convolution on oneDNN: cross-correlation on NCHW floats (PyTorch's conv2d), the
// primitives of each shape made once and kept in the backend's plan cache
// (conv2d_plan.h). Forward adds the bias inside the primitive; backward-filter adds its
// weight gradient into dw and the bias gradient into dbias with bias_backward, as the
// op set's += contract asks; backward-data overwrites dx. The im2col convolution that
// came before (conv2d_im2col.h) is the oracle the tests hold these to.
//
// Note [oneDNN convolutions]
// A call splits its batch into groups of consecutive samples (conv2d_sample_groups:
// min(batch, kConvMaxGroups) groups whose sizes differ by at most one, a function of the
// batch alone) and runs each group through primitives made for one thread, the groups
// spread over an OpenMP team of the context's threads, each thread with OpenMP's thread
// count set to one so that oneDNN, inside, runs on it alone (oneDNN's GEMM included).
// So every sample's output and input gradient, and every group's weight-gradient
// partial, come from the same single-threaded code whatever the number of threads, and
// the weight gradient is dw += partial_0 + partial_1 + ... in group order, element by
// element: all three ops give the same bits on any number of threads, and on every run.
// (oneDNN's own threading would not: its backward-weights splits the reduction over
// the batch between its threads, and 1 and 2 threads differ in the last bits on the
// Fashion-MNIST CNN's layers.)
//
// Sizes. More groups cost single-thread speed (each group is a primitive call, and a
// backward-weights partial to add); fewer leave threads idle. On one thread, against
// one group of 64, the CNN's 16->32 layer took 1.02x (forward) and 1.08x (backward
// weights) as long in 16 groups of 4, and 1.13x and 1.39x in 64 groups of 1 (a
// stand-alone oneDNN harness of this scheme, on the 2-core machine of bench/RESULTS.md).
// A rank with more than kConvMaxGroups threads uses that many in a convolution.
//
// Workspace (ConvScratch): the operand all groups share (the weights in the primitive's
// layout, reordered once per call), the backward-weights partials in flight (at most
// kConvPartialBytes: a layer with large weights runs its groups in waves, each wave's
// partials added before the next starts), and one area per thread of the team for its
// group's reordered operands and the scratchpad of its primitive and reorders.
// conv2d_workspace_bytes is what a call takes, to the byte.
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <exception>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "kernels/check.h"
#include "kernels/cpu/conv2d_plan.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/onednn.h"

namespace dtrain::cpu {

void conv2d_check_shape(const Conv2dShape& s, const char* op) {
  DTRAIN_ASSERT(s.batch >= 0 && s.in_channels > 0 && s.out_channels > 0 && s.height > 0 &&
                    s.width > 0 && s.kernel > 0 && s.stride > 0 && s.padding >= 0,
                op << ": invalid shape");
  DTRAIN_ASSERT(s.out_height() > 0 && s.out_width() > 0,
                op << ": kernel " << s.kernel << " with padding " << s.padding
                   << " does not fit the " << s.height << "x" << s.width << " input");
}

ConvSampleGroups conv2d_sample_groups(int64_t batch) {
  ConvSampleGroups g;
  if (batch <= 0) return g;
  g.count = std::min(batch, kConvMaxGroups);
  g.size = batch / g.count;
  g.larger = batch % g.count;
  return g;
}

namespace {

constexpr size_t kAlignBytes = 64;

using Args = std::unordered_map<int, dnnl::memory>;  // a primitive's arguments

size_t aligned(size_t bytes) { return (bytes + kAlignBytes - 1) / kAlignBytes * kAlignBytes; }

// The plans a call runs: one per group size, at most two (Note [oneDNN convolutions]).
struct CallPlans {
  ConvSampleGroups groups;
  std::shared_ptr<const ConvPlan> larger, smaller;  // null where no group has that size

  const ConvPlan& of(int64_t g) const { return g < groups.larger ? *larger : *smaller; }
  std::vector<const ConvPlan*> present() const {
    std::vector<const ConvPlan*> plans;
    for (const auto& p : {larger, smaller}) {
      if (p) plans.push_back(p.get());
    }
    return plans;
  }
};

CallPlans call_plans(ConvPlanCache& cache, const Conv2dShape& s) {
  CallPlans p;
  p.groups = conv2d_sample_groups(s.batch);
  Conv2dShape group = s;
  if (p.groups.larger > 0) {
    group.batch = p.groups.size + 1;
    p.larger = cache.get(group);
  }
  if (p.groups.larger < p.groups.count) {
    group.batch = p.groups.size;
    p.smaller = cache.get(group);
  }
  return p;
}

// A direction's operands for the workspace layout: the one all groups share, reordered
// once per call (the weights of forward and backward-data), and each group's own.
struct Operands {
  const OnednnOperand* shared = nullptr;
  std::array<const OnednnOperand*, 3> group{};
  const dnnl::memory::desc* scratchpad = nullptr;
};

Operands operands_of(const ConvForwardPlan& p) {
  return {&p.weights, {&p.src, &p.dst, nullptr}, &p.scratchpad};
}
Operands operands_of(const ConvBackwardDataPlan& p) {
  return {&p.weights, {&p.diff_dst, &p.diff_src, nullptr}, &p.scratchpad};
}
Operands operands_of(const ConvBackwardWeightsPlan& p) {
  return {nullptr, {&p.src, &p.diff_dst, &p.diff_weights}, &p.scratchpad};
}

// Where a call's scratch lies in its workspace: byte offsets, each 64-byte aligned.
struct ConvScratch {
  int team = 1;                       // threads working on the groups
  std::array<size_t, 2> shared{};     // the shared operand for plan 0 and plan 1 (the same
                                      // offset where their layouts are equal)
  size_t partials = 0;                // backward weights: partial p at partials + p * partial_bytes
  size_t partial_bytes = 0;
  int64_t partial_slots = 0;          // partials in flight: groups per wave
  size_t areas = 0, area_bytes = 0;   // thread t's area at areas + t * area_bytes
  std::array<size_t, 3> group{};      // a group's reordered operands, within an area
  size_t scratchpad = 0;              // the primitive's and reorders' scratchpad, within an area
  size_t bytes = 0;                   // the whole workspace
};

int team_size(const Context& ctx, const Conv2dShape& s, int64_t groups) {
  const int64_t macs = s.batch * s.out_channels * s.out_height() * s.out_width() *
                       s.in_channels * s.kernel * s.kernel;
  if (macs < kConvParallelMinMacs) return 1;
  return static_cast<int>(std::min<int64_t>(ctx.num_threads(), groups));
}

// partial_bytes: the size of one backward-weights partial, 0 for the other directions.
template <class Direction>
ConvScratch scratch_layout(const Context& ctx, const Conv2dShape& s, const CallPlans& plans,
                           Direction ConvPlan::*direction, size_t partial_bytes) {
  ConvScratch at;
  const std::vector<const ConvPlan*> present = plans.present();
  size_t end = 0;
  auto take = [&end](size_t bytes) {
    const size_t offset = end;
    end += aligned(bytes);
    return offset;
  };
  for (size_t i = 0; i < present.size(); ++i) {
    const OnednnOperand* shared = operands_of((*present[i]).*direction).shared;
    if (shared == nullptr) break;
    const OnednnOperand* first = operands_of((*present[0]).*direction).shared;
    const bool same_as_first = i > 0 && shared->internal == first->internal;
    at.shared[i] = same_as_first ? at.shared[0] : take(shared->internal_bytes());
  }
  int64_t in_flight = plans.groups.count;
  if (partial_bytes > 0) {
    at.partial_bytes = aligned(partial_bytes);
    at.partial_slots = std::clamp<int64_t>(static_cast<int64_t>(kConvPartialBytes / at.partial_bytes),
                                           1, plans.groups.count);
    at.partials = take(static_cast<size_t>(at.partial_slots) * at.partial_bytes);
    in_flight = at.partial_slots;
  }
  at.team = team_size(ctx, s, in_flight);
  // A thread's area holds what the larger of the plans needs of each part.
  std::array<size_t, 3> group_bytes{};
  size_t scratchpad_bytes = 0;
  for (const ConvPlan* plan : present) {
    const Operands operands = operands_of(plan->*direction);
    for (size_t k = 0; k < operands.group.size(); ++k) {
      if (operands.group[k] == nullptr) continue;
      group_bytes[k] = std::max(group_bytes[k], operands.group[k]->internal_bytes());
      scratchpad_bytes = std::max(scratchpad_bytes, operands.group[k]->scratchpad.get_size());
    }
    if (operands.shared != nullptr) {
      scratchpad_bytes = std::max(scratchpad_bytes, operands.shared->scratchpad.get_size());
    }
    scratchpad_bytes = std::max(scratchpad_bytes, operands.scratchpad->get_size());
  }
  size_t area_end = 0;
  for (size_t k = 0; k < group_bytes.size(); ++k) {
    at.group[k] = area_end;
    area_end += aligned(group_bytes[k]);
  }
  at.scratchpad = area_end;
  at.area_bytes = area_end + aligned(scratchpad_bytes);
  at.areas = take(static_cast<size_t>(at.team) * at.area_bytes);
  at.bytes = end;
  return at;
}

// The memory a primitive reads or writes for `op`: the user's own where no reorder is
// needed, else the internal copy at `internal`.
dnnl::memory internal_memory(const OnednnOperand& op, const dnnl::memory& user, void* internal) {
  return op.reordered() ? dnnl::memory(op.internal, onednn_engine(), internal) : user;
}

dnnl::memory user_memory(const OnednnOperand& op, const void* data) {
  return dnnl::memory(op.user, onednn_engine(), const_cast<void*>(data));
}

void execute(const dnnl::primitive& primitive, dnnl::stream& stream, Args args,
             const dnnl::memory::desc& scratchpad, char* scratchpad_at, const char* op) {
  if (scratchpad.get_size() > 0) {
    args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(scratchpad, onednn_engine(), scratchpad_at));
  }
  DTRAIN_ONEDNN_CHECK(primitive.execute(stream, args), op);
}

// Copies `from` to `to` through op's reorder, where it has one.
void reorder(const OnednnOperand& op, dnnl::stream& stream, const dnnl::memory& from,
             const dnnl::memory& to, char* scratchpad_at, const char* name) {
  if (!op.reordered()) return;
  execute(op.reorder, stream, {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}}, op.scratchpad,
          scratchpad_at, name);
}

// Runs once(stream, area) on one thread, then body(stream, g, area) for the groups [first, last),
// spread over a team of `team` threads, each on its own scratch area and with OpenMP's
// thread count set to one (Note [oneDNN convolutions]). An error is carried out of
// the parallel region and rethrown.
template <class Once, class Body>
void run_groups(int team, int64_t first, int64_t last, char* areas, size_t area_bytes, Once once,
                Body body) {
  std::exception_ptr error;
  std::atomic<bool> failed{false};
  auto keep = [&](std::exception_ptr e) {
    failed = true;
#pragma omp critical(dtrain_conv2d_error)
    if (!error) error = std::move(e);
  };
#pragma omp parallel num_threads(team)
  {
    omp_set_num_threads(1);  // this thread's count, for oneDNN inside; the caller's is untouched
    char* area = areas + static_cast<size_t>(omp_get_thread_num()) * area_bytes;
    std::optional<dnnl::stream> stream;
    try {
      stream.emplace(onednn_engine());
    } catch (...) {
      keep(std::current_exception());
    }
#pragma omp single
    {
      try {
        if (stream) once(*stream, area);
      } catch (...) {
        keep(std::current_exception());
      }
    }
#pragma omp for schedule(static)
    for (int64_t g = first; g < last; ++g) {
      if (!stream || failed) continue;
      try {
        body(*stream, g, area);
      } catch (...) {
        keep(std::current_exception());
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

char* take_workspace(Context& ctx, const ConvScratch& at) {
  return at.bytes == 0 ? nullptr : static_cast<char*>(ctx.workspace(at.bytes));
}

// Reorders the shared operand (the weights) into each plan's layout: once per layout.
template <class Direction>
std::array<dnnl::memory, 2> shared_weights(const CallPlans& plans, Direction ConvPlan::*direction,
                                           const ConvScratch& at, char* ws, const float* w,
                                           dnnl::stream& stream, char* scratchpad_at,
                                           const char* name) {
  std::array<dnnl::memory, 2> out;
  const std::vector<const ConvPlan*> present = plans.present();
  for (size_t i = 0; i < present.size(); ++i) {
    const OnednnOperand& op = *operands_of((*present[i]).*direction).shared;
    const dnnl::memory user = user_memory(op, w);
    out[i] = internal_memory(op, user, ws + at.shared[i]);
    if (i == 0 || at.shared[i] != at.shared[0]) reorder(op, stream, user, out[i], scratchpad_at, name);
  }
  return out;
}

// The index into CallPlans::present() of group g's plan.
size_t plan_index(const CallPlans& plans, int64_t g) {
  return plans.larger && g >= plans.groups.larger ? 1 : 0;
}

// Elements per sample of the tensor a group operand holds (its user layout, NCHW).
int64_t sample_elements(const OnednnOperand& op) {
  const dnnl::memory::dims d = op.user.dims();
  return d[1] * d[2] * d[3];
}

// Forward and backward data: per group, one input (x; dy) and one output (y; dx), and
// the weights all groups share. args(plan, input, weights, output) names the
// primitive's arguments.
template <class Direction, class MakeArgs>
void run_with_weights(Context& ctx, ConvPlanCache& cache, const Conv2dShape& s,
                      Direction ConvPlan::*direction, const char* op, const float* in,
                      const float* w, float* out, MakeArgs args) {
  conv2d_check_shape(s, op);
  if (s.batch == 0) return;
  const CallPlans plans = call_plans(cache, s);
  const ConvScratch at = scratch_layout(ctx, s, plans, direction, 0);
  char* ws = take_workspace(ctx, at);
  std::array<dnnl::memory, 2> weights;
  run_groups(
      at.team, 0, plans.groups.count, ws + at.areas, at.area_bytes,
      [&](dnnl::stream& stream, char* area) {
        weights = shared_weights(plans, direction, at, ws, w, stream, area + at.scratchpad, op);
      },
      [&](dnnl::stream& stream, int64_t g, char* area) {
        const ConvPlan& plan = plans.of(g);
        const Direction& p = plan.*direction;
        const OnednnOperand& input = *operands_of(p).group[0];
        const OnednnOperand& output = *operands_of(p).group[1];
        const int64_t n0 = plans.groups.first(g);
        const dnnl::memory in_user = user_memory(input, in + n0 * sample_elements(input));
        const dnnl::memory out_user = user_memory(output, out + n0 * sample_elements(output));
        const dnnl::memory in_mem = internal_memory(input, in_user, area + at.group[0]);
        const dnnl::memory out_mem = internal_memory(output, out_user, area + at.group[1]);
        char* scratchpad = area + at.scratchpad;
        reorder(input, stream, in_user, in_mem, scratchpad, op);
        execute(p.primitive, stream, args(plan, in_mem, weights[plan_index(plans, g)], out_mem),
                p.scratchpad, scratchpad, op);
        reorder(output, stream, out_mem, out_user, scratchpad, op);
      });
}

}  // namespace

size_t conv2d_workspace_bytes(Context& ctx, ConvPlanCache& cache, const Conv2dShape& s) {
  conv2d_check_shape(s, "conv2d_workspace_bytes");  // a bad shape is no workspace size (as on CUDA)
  if (s.batch == 0) return 0;
  const CallPlans plans = call_plans(cache, s);
  const size_t partial =
      static_cast<size_t>(s.out_channels * s.in_channels * s.kernel * s.kernel) * sizeof(float);
  return std::max({scratch_layout(ctx, s, plans, &ConvPlan::forward, 0).bytes,
                   scratch_layout(ctx, s, plans, &ConvPlan::backward_data, 0).bytes,
                   scratch_layout(ctx, s, plans, &ConvPlan::backward_weights, partial).bytes});
}

void conv2d_forward(Context& ctx, ConvPlanCache& cache, const Conv2dShape& s, const float* x,
                    const float* w, const float* bias, float* y) {
  run_with_weights(ctx, cache, s, &ConvPlan::forward, "conv2d_forward", x, w, y,
                   [&](const ConvPlan& plan, const dnnl::memory& src, const dnnl::memory& weights,
                       const dnnl::memory& dst) -> Args {
                     const float* b = bias != nullptr ? bias : plan.zero_bias.data();
                     return {{DNNL_ARG_SRC, src},
                             {DNNL_ARG_WEIGHTS, weights},
                             {DNNL_ARG_BIAS, dnnl::memory(plan.forward.bias, onednn_engine(),
                                                          const_cast<float*>(b))},
                             {DNNL_ARG_DST, dst}};
                   });
}

void conv2d_backward_data(Context& ctx, ConvPlanCache& cache, const Conv2dShape& s,
                          const float* dy, const float* w, float* dx) {
  run_with_weights(ctx, cache, s, &ConvPlan::backward_data, "conv2d_backward_data", dy, w, dx,
                   [](const ConvPlan&, const dnnl::memory& diff_dst, const dnnl::memory& weights,
                      const dnnl::memory& diff_src) -> Args {
                     return {{DNNL_ARG_DIFF_DST, diff_dst},
                             {DNNL_ARG_WEIGHTS, weights},
                             {DNNL_ARG_DIFF_SRC, diff_src}};
                   });
}

void conv2d_backward_filter(Context& ctx, ConvPlanCache& cache, const Conv2dShape& s,
                            const float* x, const float* dy, float* dw, float* dbias) {
  conv2d_check_shape(s, "conv2d_backward_filter");
  if (s.batch == 0) return;
  const CallPlans plans = call_plans(cache, s);
  const int64_t w_count = s.out_channels * s.in_channels * s.kernel * s.kernel;
  const ConvScratch at = scratch_layout(ctx, s, plans, &ConvPlan::backward_weights,
                                        static_cast<size_t>(w_count) * sizeof(float));
  char* ws = take_workspace(ctx, at);
  auto partial = [&](int64_t slot) {
    return reinterpret_cast<float*>(ws + at.partials + static_cast<size_t>(slot) * at.partial_bytes);
  };
  const int64_t groups = plans.groups.count;
  for (int64_t wave = 0; wave < groups; wave += at.partial_slots) {
    const int64_t wave_end = std::min(groups, wave + at.partial_slots);
    run_groups(
        at.team, wave, wave_end, ws + at.areas, at.area_bytes, [](dnnl::stream&, char*) {},
        [&](dnnl::stream& stream, int64_t g, char* area) {
          const ConvBackwardWeightsPlan& p = plans.of(g).backward_weights;
          const int64_t n0 = plans.groups.first(g);
          const dnnl::memory x_user = user_memory(p.src, x + n0 * sample_elements(p.src));
          const dnnl::memory dy_user = user_memory(p.diff_dst, dy + n0 * sample_elements(p.diff_dst));
          const dnnl::memory dw_user = user_memory(p.diff_weights, partial(g - wave));
          const dnnl::memory src = internal_memory(p.src, x_user, area + at.group[0]);
          const dnnl::memory diff_dst = internal_memory(p.diff_dst, dy_user, area + at.group[1]);
          const dnnl::memory diff_weights = internal_memory(p.diff_weights, dw_user, area + at.group[2]);
          char* scratchpad = area + at.scratchpad;
          reorder(p.src, stream, x_user, src, scratchpad, "conv2d_backward_filter");
          reorder(p.diff_dst, stream, dy_user, diff_dst, scratchpad, "conv2d_backward_filter");
          execute(p.primitive, stream,
                  {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_WEIGHTS, diff_weights}},
                  p.scratchpad, scratchpad, "conv2d_backward_filter");
          reorder(p.diff_weights, stream, diff_weights, dw_user, scratchpad, "conv2d_backward_filter");
        });
    // dw += the wave's partials in group order, each element on its own.
    const int64_t in_wave = wave_end - wave;
#pragma omp parallel for num_threads(ctx.num_threads()) if (w_count * in_wave >= kParallelMinWork)
    for (int64_t i = 0; i < w_count; ++i) {
      float sum = dw[i];
      for (int64_t k = 0; k < in_wave; ++k) sum += partial(k)[i];
      dw[i] = sum;
    }
  }
  if (dbias != nullptr) {
    bias_backward(ctx, dy, dbias, s.batch, s.out_channels, s.out_height() * s.out_width());
  }
}

}  // namespace dtrain::cpu
