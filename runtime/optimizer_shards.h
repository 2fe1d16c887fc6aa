// Optimizer-state sharding (ZeRO stage 1, optimizer.shard): which contiguous range of
// the flat parameter buffer each rank owns.
//
// Note [Shard ranges]
// Rank r owns [offset_r, offset_r + count_r) of the n parameters; the ranges lie back
// to back in rank order and cover [0, n) exactly once (DESIGN contract 1: sharding
// works on flat ranges). Each range is in proportion to its rank's weight, the
// planner's memory budget of that rank, so a device with more free memory keeps more
// of the optimizer state and every device is left about the same share of its memory
// for activations. The boundaries are cumulative: boundary r is the nearest multiple
// of `align` elements to n * (w_0 + ... + w_{r-1}) / sum(w), capped at n, the last one
// n. Rounding
// each boundary (not each count) keeps every count within `align` of its exact share
// and the total exact. A rank whose share is below half an alignment unit owns an
// empty range: it still takes part in every collective (with no elements) but holds
// no optimizer state. Equal weights give equal ranges up to the alignment.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "comm/gradient_reducer.h"

namespace dtrain {

// The ranges of `n` elements for ranks with `weights` (>= 0; all zero counts as all
// equal), every boundary a multiple of `align` (>= 1) or n. Pure.
std::vector<FlatRange> shard_ranges(int64_t n, std::span<const int64_t> weights, int64_t align);

// The alignment of shard boundaries: 64 elements (256 bytes of fp32), so every range
// but the last starts on a boundary that vector loads and NCCL's chunks like.
constexpr int64_t kShardAlign = 64;

}  // namespace dtrain
