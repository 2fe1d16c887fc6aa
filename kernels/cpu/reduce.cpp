// Reductions over flat buffers, accumulated in double.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace dtrain::cpu {

namespace {

// Elements summed by one task. Fixed, so the order of the additions (and the result)
// does not depend on the number of threads.
constexpr int64_t kReduceBlock = 4096;

}  // namespace

void sum_squares(Context& ctx, const float* x, int64_t n, double scale, double* out) {
  if (n <= 0) return;
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for num_threads(ctx.num_threads()) if (n >= kParallelMinWork)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t end = std::min(n, (b + 1) * kReduceBlock);
    double sum = 0.0;
    for (int64_t i = b * kReduceBlock; i < end; ++i) sum += static_cast<double>(x[i]) * x[i];
    partial[static_cast<size_t>(b)] = sum;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  out[0] += scale * total;
}

}  // namespace dtrain::cpu
