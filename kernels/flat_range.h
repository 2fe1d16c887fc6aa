// A contiguous range of a flat buffer (DESIGN contract 1: everything is a flat range):
// gradient buckets, optimizer shards, a model's master weights.
#pragma once

#include <algorithm>
#include <cstdint>

namespace dtrain {

struct FlatRange {
  int64_t offset = 0;  // elements
  int64_t count = 0;
};

// The elements of `a` that `b` also covers (count 0 when they do not meet).
inline FlatRange intersect(const FlatRange& a, const FlatRange& b) {
  const int64_t lo = std::max(a.offset, b.offset);
  const int64_t hi = std::min(a.offset + a.count, b.offset + b.count);
  return hi > lo ? FlatRange{lo, hi - lo} : FlatRange{lo, 0};
}

// A run of a flat buffer whose parameters share their weight decay (the optimizers'
// decay spans, runtime/optimizer.h; ops::adamw_update_spans).
struct DecaySpan {
  int64_t offset = 0;
  int64_t count = 0;
  bool decay = true;
};

}  // namespace dtrain
