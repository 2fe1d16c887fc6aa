#include "runtime/batch_plan.h"

#include <numeric>
#include <sstream>

#include "kernels/errors.h"

namespace dtrain {

int64_t BatchPlan::samples_per_micro_step() const {
  return std::accumulate(micro_batch.begin(), micro_batch.end(), int64_t{0});
}

int64_t BatchPlan::slice_offset(int64_t micro, int rank) const {
  int64_t offset = micro * samples_per_micro_step();
  for (int q = 0; q < rank; ++q) offset += micro_batch[static_cast<size_t>(q)];
  return offset;
}

namespace {

std::string list(const std::vector<int64_t>& v) {
  std::ostringstream s;
  for (size_t i = 0; i < v.size(); ++i) s << (i ? ", " : "") << v[i];
  return v.empty() ? std::string("none") : s.str();
}

}  // namespace

BatchPlan make_uniform_plan(int64_t global_batch, int64_t micro_batch, int world_size,
                            const std::string& where) {
  const int64_t per_micro_step = micro_batch * world_size;
  if (global_batch < world_size) {
    std::ostringstream msg;
    msg << where << ": train.global_batch = " << global_batch << " is smaller than the "
        << world_size << " ranks: every rank needs at least one sample per step; raise "
        << "train.global_batch to at least " << world_size << " or run on fewer ranks";
    throw ConfigError(msg.str());
  }
  if (global_batch % per_micro_step != 0) {
    std::vector<int64_t> micro_ok, ranks_ok;
    if (global_batch % world_size == 0) {
      const int64_t per_rank = global_batch / world_size;
      for (int64_t b = 1; b <= per_rank && micro_ok.size() < 16; ++b) {
        if (per_rank % b == 0) micro_ok.push_back(b);
      }
    }
    for (int64_t n = 1; n <= 64; ++n) {
      if (global_batch % (n * micro_batch) == 0) ranks_ok.push_back(n);
    }
    std::ostringstream msg;
    msg << where << ": train.global_batch = " << global_batch << " does not divide into "
        << world_size << " rank(s) x train.micro_batch = " << micro_batch << " (" << per_micro_step
        << " samples per micro-step). Micro-batches that work on " << world_size
        << " rank(s): " << list(micro_ok) << ". Rank counts that work with micro-batch "
        << micro_batch << ": " << list(ranks_ok) << ".";
    throw ConfigError(msg.str());
  }
  BatchPlan plan;
  plan.micro_batch.assign(static_cast<size_t>(world_size), micro_batch);
  plan.accumulation_steps = global_batch / per_micro_step;
  plan.global_batch = global_batch;
  return plan;
}

}  // namespace dtrain
