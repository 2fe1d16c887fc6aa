// What a collective costs on a given set of links: the alpha-beta model.
//
// Note [Alpha-beta collectives]
// A message of S bytes over one link takes alpha + S / beta, where alpha is the
// per-step latency (seconds) and beta the bandwidth (bytes/s). A collective over n
// ranks is a sequence of such steps, and its cost is counted the way NCCL's own
// tuning model counts it (NVIDIA/nccl, src/graph/tuning.cc), with bandwidths given as
// bus bandwidths (what nccl-tests prints as busbw), so that one figure per link type
// serves every collective:
//   ring all-reduce:  2 (n - 1) steps, each rank sending 2 (n - 1) / n * S bytes;
//   ring reduce-scatter or all-gather of S bytes in all: n - 1 steps, (n - 1) / n * S;
//   tree all-reduce (NCCL's double binary tree between nodes, a chain inside a node):
//     2 ((ranks per node - 1) + ceil(log2 nodes)) steps, and 2 S bytes through the
//     busiest rank, up the tree and down again.
// On more than one node, the steps that cross between nodes pay the inter-node
// latency, the others the intra-node one; a ring crossing nodes is as fast as its
// slowest link, so its bytes move at the smaller of the two bandwidths. An all-reduce
// takes the faster of ring and tree, as NCCL's tuner does: ring wins on bandwidth
// (it moves 2 (n - 1) / n * S bytes, tree 2 S), tree on latency when n is large.
// What the model leaves out: protocol switches for small messages (NCCL's LL and
// LL128), contention with other jobs, and NVLink SHARP; the figures are inputs, so a
// user who measures their own links replaces them (runtime/cluster_spec.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrain {

struct Link {
  double latency_s = 0.0;        // alpha: per step
  double bandwidth_Bps = 0.0;    // beta: bus bandwidth, bytes per second
};

// Where the ranks of a collective are: n ranks spread over `nodes` nodes.
struct RankLayout {
  int ranks = 1;
  int nodes = 1;
  int ranks_per_node() const { return (ranks + nodes - 1) / nodes; }
};

enum class AllReduceAlgorithm { kRing, kTree };

struct CollectiveCost {
  double seconds = 0.0;
  AllReduceAlgorithm algorithm = AllReduceAlgorithm::kRing;  // all-reduce only
};

// All of these are pure; one rank costs nothing.
double ring_all_reduce_s(double bytes, const RankLayout& at, const Link& intra, const Link& inter);
double tree_all_reduce_s(double bytes, const RankLayout& at, const Link& intra, const Link& inter);
CollectiveCost all_reduce_cost(double bytes, const RankLayout& at, const Link& intra, const Link& inter);
// `bytes`: the whole buffer (each rank ends with or starts from bytes / n).
double reduce_scatter_s(double bytes, const RankLayout& at, const Link& intra, const Link& inter);
double all_gather_s(double bytes, const RankLayout& at, const Link& intra, const Link& inter);

const char* algorithm_name(AllReduceAlgorithm a);

// A link fitted from all-reduce times measured on `ranks` ranks of a ring joined by it
// (two ranks: one on each side of the link): t(S) = 2 (n - 1) alpha + 2 (n - 1) / n
// S / beta, a straight line in S fitted by least squares. `residual` is the
// root-mean-square relative error of the fit.
struct LinkFit {
  Link link;
  double residual = 0.0;
};
// Throws std::invalid_argument for fewer than two ranks or two distinct sizes, or a fit
// with a non-positive slope or intercept (times that do not grow with size: measure
// larger messages).
LinkFit fit_ring_link(int ranks, const std::vector<double>& bytes, const std::vector<double>& seconds);

// The link that gives a ring all-reduce on `ranks` ranks exactly two measured times: a
// message so small that its time is latency alone (`small_s`), and `large_bytes` in
// `large_s`. A link's cost per byte is not the same at every size (TCP's grows past a
// few hundred KiB on a loaded host), so where a model is used at two sizes (a step's
// small all-reduce and its gradient buckets), the line through those two is the one
// to use. Throws std::invalid_argument unless large_s > small_s > 0 and ranks >= 2.
Link ring_link_from_ends(int ranks, double small_s, double large_bytes, double large_s);

}  // namespace dtrain
