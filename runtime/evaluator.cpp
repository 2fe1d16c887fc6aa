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

  DeviceBatch device_batch(ctx, data.layout(), std::max<int64_t>(1, std::min(batch, end - begin)));
  Buffer stats(ctx.allocator(), kModelStats * sizeof(double), MemoryCategory::Workspace);
  const double zeros[kModelStats] = {};
  ops::copy_from_host(ctx, stats.data(), zeros, sizeof(zeros));

  std::vector<int64_t> indices;
  for (int64_t lo = begin; lo < end; lo += batch) {
    const int64_t hi = std::min(end, lo + batch);
    indices.resize(static_cast<size_t>(hi - lo));
    std::iota(indices.begin(), indices.end(), lo);
    model.forward(device_batch.load(data, 0, indices), Pass::kEval, 0.0f, stats.as<double>());
  }
  all_reduce(comm, std::span<double>(stats.as<double>(), kModelStats))->wait();
  double sums[kModelStats];
  ops::copy_to_host(ctx, sums, stats.data(), sizeof(sums));
  return EvalResult{sums[kModelLossSum] / static_cast<double>(n),
                    model.eval_metrics(sums[kModelMetric], sums[kModelLossSum], n), n};
}

}  // namespace dtrain
