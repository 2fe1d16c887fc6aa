// GELU in its tanh form (GPT-2's; torch.nn.GELU(approximate='tanh')):
//   gelu(x) = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3),
// over runs of elements in the loops of gelu_rows.cpp (Note [Arithmetic clones]).
#include <algorithm>
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/gelu_rows.h"
#include "kernels/cpu/storage.h"

namespace dtrain::cpu {

namespace {

// Runs of this many elements, one at a time per thread: fixed by n alone (the ops are
// elementwise, so only speed depends on it).
constexpr int64_t kRun = 4096;

template <class T>
void gelu_forward_typed(Context& ctx, const T* x, T* y, int64_t n) {
  const int64_t runs = (n + kRun - 1) / kRun;
#pragma omp parallel for num_threads(ctx.num_threads()) if (n >= kParallelMinWork)
  for (int64_t r = 0; r < runs; ++r) gelu_forward_run(x + r * kRun, y + r * kRun, std::min(kRun, n - r * kRun));
}

template <class T>
void gelu_backward_typed(Context& ctx, const T* x, const T* dy, T* dx, int64_t n) {
  const int64_t runs = (n + kRun - 1) / kRun;
#pragma omp parallel for num_threads(ctx.num_threads()) if (n >= kParallelMinWork)
  for (int64_t r = 0; r < runs; ++r) {
    gelu_backward_run(x + r * kRun, dy + r * kRun, dx + r * kRun, std::min(kRun, n - r * kRun));
  }
}

}  // namespace

void gelu_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) {
  with_storage(common_type("gelu_forward", {{"x", x}, {"y", y}}), [&](auto tag) {
    using T = decltype(tag);
    gelu_forward_typed(ctx, typed<T>(x), typed<T>(y), n);
  });
}

void gelu_backward(Context& ctx, ConstTypedPtr x, ConstTypedPtr dy, TypedPtr dx, int64_t n) {
  with_storage(common_type("gelu_backward", {{"x", x}, {"dy", dy}, {"dx", dx}}), [&](auto tag) {
    using T = decltype(tag);
    gelu_backward_typed(ctx, typed<T>(x), typed<T>(dy), typed<T>(dx), n);
  });
}

}  // namespace dtrain::cpu
