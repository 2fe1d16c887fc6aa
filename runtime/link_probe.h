// The link a run's gradients travel on, measured on its own communicator.
//
// Note [Link probe]
// The lever choice (Note [Memory levers]) weighs sharding's collectives against the
// micro-steps its memory saves, so it needs the link of the communicator this run's
// gradients use (NCCL, MPI on the host, or MPI through staged device buffers), not a
// table's figure for another machine. Every rank all-reduces fp32 messages of three
// sizes through it, from 1 KiB (or less, for a tiny model) to the largest gradient
// bucket, in the model's own gradient buffer (device memory where the communicator
// wants it, zeroed afterwards): for each size the median of its repetitions after a
// warm-up, the best of two passes, so that a moment of other load moves one pass and
// not the fit. Every rank then takes each size's slowest time, so that all ranks fit
// the same link and choose alike, and fits the ring of Note [Alpha-beta collectives]
// (fit_ring_link). Where the times do not grow with the size (a link so fast that the
// messages are all latency), the link is bounded from the two ends instead: the
// smallest message's time as latency, the largest's as bandwidth.
// Whether the buckets overlap backward is the backend's: NCCL runs them on its own
// stream during backward; MPI on the host makes progress only inside MPI calls, so
// its buckets (staged or not) travel after backward (Note [Scaling model]).
#pragma once

#include <cstdint>
#include <string>

#include "comm/communicator.h"
#include "kernels/context.h"
#include "runtime/collective_cost.h"

namespace dtrain {

// Whether `gradients` reduces the buckets during backward: NCCL, on its own stream.
bool buckets_overlap_backward(const Communicator& gradients);

struct LinkProbe {
  Link link;
  bool overlap = false;    // the gradient buckets travel during backward
  double residual = 0.0;   // of the fit (0 when bounded from the ends)
  std::string source;      // how it was measured, for the plan
};

// Collective over `gradients` and `control` (the same ranks, at least two).
// `buffer`: `elements` fp32 of `ctx`'s memory that the communicator takes, whose
// contents are lost (left zero); `largest` the largest message to time, in elements.
LinkProbe probe_gradient_link(Communicator& gradients, Communicator& control, Context& ctx, float* buffer,
                              int64_t elements, int64_t largest);

}  // namespace dtrain
