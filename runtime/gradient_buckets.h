// How training cuts the flat gradient buffer into all-reduce buckets
// (comm/gradient_reducer.h), shared by the trainer and by the scaling prediction
// (Note [Scaling model]) so that both see the same buckets.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/flat_range.h"
#include "models/model.h"

namespace dtrain {

// Every parameter tensor's range of the flat buffer, in layer order.
inline std::vector<FlatRange> gradient_layer_ranges(const Model& model) {
  std::vector<FlatRange> ranges;
  for (const ParamRange& r : model.param_ranges()) ranges.push_back({r.offset, r.count});
  return ranges;
}

// comm.bucket_mb of fp32 gradients, whatever type they travel in (Note [Narrow
// gradient reduction]), as elements; at least one.
inline int64_t bucket_cap_elements(double bucket_mb) {
  return std::max<int64_t>(1, static_cast<int64_t>(bucket_mb * 1024 * 1024 / sizeof(float)));
}

}  // namespace dtrain
