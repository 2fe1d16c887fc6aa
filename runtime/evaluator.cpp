#include "runtime/evaluator.h"

#include <algorithm>
#include <numeric>
#include <span>
#include <vector>

#include "comm/typed_collectives.h"
#include "kernels/ops.h"
#include "runtime/device_batch.h"

namespace dtrain {

EvalResult evaluate(Model& model, const Dataset& data, Context& ctx, Communicator& comm, int64_t batch) {
  const int64_t n = data.size();
  const int64_t begin = n * comm.rank() / comm.size();
  const int64_t end = n * (comm.rank() + 1) / comm.size();
  const int64_t classes = model.output_shape().numel();

  DeviceBatch device_batch(ctx, data.sample_shape(), std::max<int64_t>(1, std::min(batch, end - begin)));
  Buffer stats(ctx.allocator(), 2 * sizeof(double), MemoryCategory::Workspace);
  const double zeros[2] = {0.0, 0.0};
  ops::copy_from_host(ctx, stats.data(), zeros, sizeof(zeros));

  std::vector<int64_t> indices;
  for (int64_t lo = begin; lo < end; lo += batch) {
    const int64_t hi = std::min(end, lo + batch);
    indices.resize(static_cast<size_t>(hi - lo));
    std::iota(indices.begin(), indices.end(), lo);
    ConstTensor x = device_batch.load(data, indices);
    ConstTensor logits = model.forward(x);
    ops::softmax_cross_entropy(ctx, logits.data, device_batch.labels(), hi - lo, classes, 0.0f,
                               nullptr, stats.as<double>());
  }
  all_reduce(comm, std::span<double>(stats.as<double>(), 2))->wait();
  double sums[2];
  ops::copy_to_host(ctx, sums, stats.data(), sizeof(sums));
  return EvalResult{sums[0] / static_cast<double>(n), sums[1] / static_cast<double>(n), n};
}

}  // namespace dtrain
