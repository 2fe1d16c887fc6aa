// Reductions over flat buffers, accumulated in double.
#include <algorithm>
#include <vector>

#include "kernels/cpu/cpu_ops.h"

namespace dtrain::cpu {

namespace {

// Elements summed by one task. Fixed, so the order of the additions (and the result)
// does not depend on the number of threads.
constexpr int64_t kReduceBlock = 4096;

// Lanes of independent partial sums inside a block, added in a fixed order at its
// end. One running sum makes every addition wait for the last (four cycles each, a
// third of a millisecond for a 235k-parameter gradient); eight lanes let the compiler
// keep them in vector registers. The order is fixed, so the result stays the same
// whatever the threads.
constexpr int kLanes = 8;

double block_sum_squares(const float* x, int64_t n) {
  double lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += static_cast<double>(x[i + l]) * x[i + l];
  }
  for (; i < n; ++i) lane[0] += static_cast<double>(x[i]) * x[i];
  double sum = 0.0;
  for (double v : lane) sum += v;
  return sum;
}

}  // namespace

void sum_squares(Context& ctx, const float* x, int64_t n, double scale, double* out) {
  if (n <= 0) return;
  const int64_t blocks = (n + kReduceBlock - 1) / kReduceBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
#pragma omp parallel for num_threads(ctx.num_threads()) if (n >= kParallelMinWork)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t begin = b * kReduceBlock;
    partial[static_cast<size_t>(b)] = block_sum_squares(x + begin, std::min(n, begin + kReduceBlock) - begin);
  }
  double total = 0.0;
  for (double p : partial) total += p;
  out[0] += scale * total;
}

}  // namespace dtrain::cpu
