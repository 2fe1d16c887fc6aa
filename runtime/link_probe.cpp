#include "runtime/link_probe.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <span>
#include <stdexcept>
#include <vector>

#include "comm/typed_collectives.h"
#include "kernels/ops.h"
#include "runtime/byte_size.h"

namespace dtrain {

namespace {

// The median time of `reps` all-reduces of `count` fp32 after one warm-up. Every rank
// runs the same number of collectives (a fixed count, never one timed locally).
double median_all_reduce_s(Communicator& comm, Context& ctx, float* buffer, int64_t count, int reps) {
  auto once = [&] {
    comm.all_reduce(buffer, static_cast<size_t>(count), DataType::Float32, ReduceOp::Sum)->wait();
    ctx.synchronize();
  };
  once();
  std::vector<double> seconds;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    once();
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(seconds.begin(), seconds.begin() + reps / 2, seconds.end());
  return seconds[static_cast<size_t>(reps / 2)];
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), f, v);
  return buf;
}

}  // namespace

bool buckets_overlap_backward(const Communicator& gradients) { return gradients.backend_name() == "nccl"; }

LinkProbe probe_gradient_link(Communicator& gradients, Communicator& control, Context& ctx, float* buffer,
                              int64_t elements, int64_t largest) {
  const int n = gradients.size();
  // Three sizes, each a factor apart: 1 KiB up to the largest bucket (Note [Link probe]).
  const int64_t large = std::max<int64_t>(2, std::min(elements, largest));
  const int64_t small = std::max<int64_t>(1, std::min<int64_t>(256, large / 16));
  const int64_t mid = std::max<int64_t>(small, static_cast<int64_t>(std::sqrt(double(small) * double(large))));
  const int64_t counts[3] = {small, mid, large};
  const int reps[3] = {21, 11, 7};
  ops::fill(ctx, buffer, large, 0.0f);
  std::vector<double> mine(3, 1e30);
  constexpr int kPasses = 2;
  for (int pass = 0; pass < kPasses; ++pass) {
    for (int i = 0; i < 3; ++i) {
      control.barrier()->wait();
      mine[static_cast<size_t>(i)] =
          std::min(mine[static_cast<size_t>(i)], median_all_reduce_s(gradients, ctx, buffer, counts[i], reps[i]));
    }
  }
  ops::fill(ctx, buffer, large, 0.0f);
  ctx.synchronize();
  std::vector<double> all(3 * static_cast<size_t>(n));
  all_gather(control, std::span<const double>(mine), std::span<double>(all))->wait();
  std::vector<double> bytes, seconds(3, 0.0);
  for (int i = 0; i < 3; ++i) {
    bytes.push_back(4.0 * static_cast<double>(counts[i]));
    for (int r = 0; r < n; ++r) {
      seconds[static_cast<size_t>(i)] = std::max(seconds[static_cast<size_t>(i)], all[3 * static_cast<size_t>(r) + i]);
    }
  }

  LinkProbe probe;
  probe.overlap = buckets_overlap_backward(gradients);
  const std::string what = "measured on the " + gradients.backend_name() + " gradient communicator, all-reduces of " +
                           format_bytes(4.0 * double(small)) + " to " + format_bytes(4.0 * double(large));
  try {
    const LinkFit fit = fit_ring_link(n, bytes, seconds);
    probe.link = fit.link;
    probe.residual = fit.residual;
    probe.source = what + ", rms error " + fmt("%.0f", 100.0 * fit.residual) + "%";
  } catch (const std::invalid_argument&) {
    // Times that do not grow with the size: all latency. The largest message counts
    // as taking a little longer than the smallest, so the bandwidth is a finite bound.
    probe.link = ring_link_from_ends(n, seconds[0], bytes[2], std::max(seconds[2], seconds[0] * (1.0 + 1e-3)));
    probe.source = what + ", times that do not grow with the size: bounded from the smallest and the largest";
  }
  return probe;
}

}  // namespace dtrain
