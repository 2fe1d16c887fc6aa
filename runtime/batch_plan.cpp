#include "runtime/batch_plan.h"

#include <algorithm>
#include <numeric>
#include <utility>
#include <sstream>

#include "kernels/check.h"
#include "kernels/errors.h"
#include "runtime/config.h"

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

namespace {

void check_not_below_ranks(int64_t global_batch, int world_size, const std::string& where) {
  if (global_batch >= world_size) return;
  std::ostringstream msg;
  msg << where << ": train.global_batch = " << global_batch << " is smaller than the " << world_size
      << " ranks: every rank needs at least one sample per step; raise train.global_batch to at least "
      << world_size << " or run on fewer ranks";
  throw ConfigError(msg.str());
}

// The accumulation steps for G over ranks holding `total` samples in all, or 0.
int64_t exact_accumulation(int64_t global_batch, int64_t total, int world_size) {
  const int64_t k0 = (global_batch + total - 1) / total;
  for (int64_t k = k0; global_batch / k >= world_size; ++k) {
    if (global_batch % k == 0) return k;
  }
  return 0;
}

// Splits `samples` (n <= samples <= sum(capacity)) over the ranks: one each, then the
// rest in proportion to the room above one, the remainders to the largest fractions.
std::vector<int64_t> split_in_proportion(int64_t samples, const std::vector<int64_t>& capacity) {
  const size_t n = capacity.size();
  std::vector<int64_t> micro(n, 1);
  int64_t room = 0;
  for (int64_t c : capacity) room += c - 1;
  const int64_t rest = samples - static_cast<int64_t>(n);
  if (rest == 0) return micro;
  std::vector<std::pair<int64_t, size_t>> remainders;  // (fraction numerator, rank)
  int64_t given = 0;
  for (size_t r = 0; r < n; ++r) {
    // rest * (c - 1) <= samples * capacity: no overflow for any real batch.
    const int64_t share = rest * (capacity[r] - 1);
    micro[r] += share / room;
    given += share / room;
    remainders.push_back({share % room, r});
  }
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  // The leftover is the sum of the fractions, so fewer than the ranks with one, and
  // a rank with a fraction is below its capacity.
  for (size_t i = 0; given < rest; ++i, ++given) ++micro[remainders[i].second];
  return micro;
}

}  // namespace

BatchPlan plan_from_capacities(const std::vector<int64_t>& capacity, int64_t global_batch,
                               const std::string& where) {
  DTRAIN_ASSERT(!capacity.empty(), "a plan needs at least one rank");
  const int n = static_cast<int>(capacity.size());
  int64_t total = 0;
  for (int64_t c : capacity) {
    DTRAIN_ASSERT(c >= 1, "a rank's capacity must be at least one sample, got " << c);
    total += c;
  }
  BatchPlan plan;
  if (global_batch == kAuto) {
    plan.micro_batch = capacity;
    plan.accumulation_steps = 1;
    plan.global_batch = total;
    return plan;
  }
  check_not_below_ranks(global_batch, n, where);
  const int64_t k = exact_accumulation(global_batch, total, n);
  if (k == 0) {
    std::vector<int64_t> near;
    for (int64_t d = 1; near.size() < 2 && d <= global_batch; ++d) {
      if (global_batch - d >= n && exact_accumulation(global_batch - d, total, n) != 0) {
        near.push_back(global_batch - d);
      }
      if (exact_accumulation(global_batch + d, total, n) != 0) near.push_back(global_batch + d);
    }
    std::ostringstream msg;
    msg << where << ": train.global_batch = " << global_batch << " cannot be split exactly over " << n
        << " rank(s) holding at most " << list(capacity) << " samples per micro-step: it needs k "
        << "accumulation steps with k dividing " << global_batch << " and at least one sample per rank "
        << "in each. Global batches near it that work: " << list(near) << ".";
    throw ConfigError(msg.str());
  }
  plan.micro_batch = split_in_proportion(global_batch / k, capacity);
  plan.accumulation_steps = k;
  plan.global_batch = global_batch;
  return plan;
}

BatchPlan make_uniform_plan(int64_t global_batch, int64_t micro_batch, int world_size,
                            const std::string& where) {
  const int64_t per_micro_step = micro_batch * world_size;
  check_not_below_ranks(global_batch, world_size, where);
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
