#include "runtime/collective_cost.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

namespace dtrain {

namespace {

// The bandwidth a collective's bytes move at: the slower link once it crosses nodes.
double bottleneck_Bps(const RankLayout& at, const Link& intra, const Link& inter) {
  return at.nodes > 1 ? std::min(intra.bandwidth_Bps, inter.bandwidth_Bps) : intra.bandwidth_Bps;
}

// Latency of `passes` trips around the ring (2 for an all-reduce, 1 for a
// reduce-scatter or all-gather): each trip has n - 1 steps, nodes - 1 of which cross
// between nodes (Note [Alpha-beta collectives]).
double ring_latency_s(int passes, const RankLayout& at, const Link& intra, const Link& inter) {
  const int steps = at.ranks - 1;
  const int crossing = at.nodes - 1;
  return passes * ((steps - crossing) * intra.latency_s + crossing * inter.latency_s);
}

int ceil_log2(int n) {
  int levels = 0;
  while ((1 << levels) < n) ++levels;
  return levels;
}

}  // namespace

double ring_all_reduce_s(double bytes, const RankLayout& at, const Link& intra, const Link& inter) {
  if (at.ranks <= 1) return 0.0;
  const double n = at.ranks;
  return ring_latency_s(2, at, intra, inter) + 2.0 * (n - 1.0) / n * bytes / bottleneck_Bps(at, intra, inter);
}

double tree_all_reduce_s(double bytes, const RankLayout& at, const Link& intra, const Link& inter) {
  if (at.ranks <= 1) return 0.0;
  const double latency =
      2.0 * ((at.ranks_per_node() - 1) * intra.latency_s + ceil_log2(at.nodes) * inter.latency_s);
  return latency + 2.0 * bytes / bottleneck_Bps(at, intra, inter);
}

CollectiveCost all_reduce_cost(double bytes, const RankLayout& at, const Link& intra, const Link& inter) {
  const double ring = ring_all_reduce_s(bytes, at, intra, inter);
  const double tree = tree_all_reduce_s(bytes, at, intra, inter);
  if (tree < ring) return {tree, AllReduceAlgorithm::kTree};
  return {ring, AllReduceAlgorithm::kRing};
}

double reduce_scatter_s(double bytes, const RankLayout& at, const Link& intra, const Link& inter) {
  if (at.ranks <= 1) return 0.0;
  const double n = at.ranks;
  return ring_latency_s(1, at, intra, inter) + (n - 1.0) / n * bytes / bottleneck_Bps(at, intra, inter);
}

double all_gather_s(double bytes, const RankLayout& at, const Link& intra, const Link& inter) {
  // The same steps and bytes as a reduce-scatter, with no sums.
  return reduce_scatter_s(bytes, at, intra, inter);
}

const char* algorithm_name(AllReduceAlgorithm a) { return a == AllReduceAlgorithm::kTree ? "tree" : "ring"; }

LinkFit fit_ring_link(int ranks, const std::vector<double>& bytes, const std::vector<double>& seconds) {
  if (ranks < 2) throw std::invalid_argument("fitting a link needs all-reduce times on two ranks or more");
  if (bytes.size() != seconds.size()) throw std::invalid_argument("fit_ring_link: sizes and times differ in length");
  if (std::set<double>(bytes.begin(), bytes.end()).size() < 2) {
    throw std::invalid_argument("fitting a link needs all-reduce times at two message sizes or more");
  }
  // Least squares for t = a + b S, weighted by 1 / t^2: the relative error of each
  // point counts alike, so the microsecond latencies of small messages are fitted as
  // well as the milliseconds of large ones.
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    const double w = 1.0 / (seconds[i] * seconds[i]);
    sw += w;
    sx += w * bytes[i];
    sy += w * seconds[i];
    sxx += w * bytes[i] * bytes[i];
    sxy += w * bytes[i] * seconds[i];
  }
  const double det = sw * sxx - sx * sx;
  const double slope = (sw * sxy - sx * sy) / det;
  const double intercept = (sy - slope * sx) / sw;
  if (!(slope > 0.0) || !(intercept > 0.0)) {
    throw std::invalid_argument("the all-reduce times do not fit t = 2 (n - 1) (alpha + S / (n beta)) with alpha, "
                                "beta > 0: measure over a wider range of message sizes");
  }
  // The ring all-reduce of Note [Alpha-beta collectives]: 2 (n - 1) steps, and
  // 2 (n - 1) / n S bytes at the bus bandwidth.
  const double n = static_cast<double>(ranks);
  LinkFit fit;
  fit.link.latency_s = intercept / (2.0 * (n - 1.0));
  fit.link.bandwidth_Bps = 2.0 * (n - 1.0) / n / slope;
  double sq = 0.0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    const double rel = (intercept + slope * bytes[i]) / seconds[i] - 1.0;
    sq += rel * rel;
  }
  fit.residual = std::sqrt(sq / static_cast<double>(bytes.size()));
  return fit;
}

Link ring_link_from_ends(int ranks, double small_s, double large_bytes, double large_s) {
  if (ranks < 2 || !(small_s > 0.0) || !(large_s > small_s) || !(large_bytes > 0.0)) {
    throw std::invalid_argument("a link from two all-reduce times needs two ranks or more, and a larger message "
                                "that takes longer than a small one");
  }
  // t(S) = 2 (n - 1) alpha + 2 (n - 1) / n S / beta, with t(0) = small_s.
  const double n = static_cast<double>(ranks);
  Link link;
  link.latency_s = small_s / (2.0 * (n - 1.0));
  link.bandwidth_Bps = 2.0 * (n - 1.0) / n * large_bytes / (large_s - small_s);
  return link;
}

}  // namespace dtrain
