// Micro-batches on the device, double-buffered (Note [Batch prefetch], kernels/ops.h):
// while one slot's batch computes, the next batch is gathered on the host into pinned
// transfer memory and uploaded into the other slot on a side stream.
//   prefetch(first) take() -> queue compute on it -> prefetch(next) -> take() -> ...
// A batch holds typed inputs and targets (models/batch.h) and each sample's index in
// its dataset (dropout's masks are keyed by it).
// One batch is prefetched ahead at most: every prefetch is followed by one take before
// the next prefetch, and the work on a taken batch must be queued before the next take
// (which releases its slot for the upload after next). prefetch() may come before or
// after that work is queued; after, the host's gather overlaps it too.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>

#include "kernels/context.h"
#include "kernels/host_buffer.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/tensor.h"
#include "models/batch.h"
#include "runtime/dataset.h"

namespace dtrain {

class DeviceBatch {
 public:
  DeviceBatch(Context& ctx, const SampleLayout& layout, int64_t capacity);
  // Device bytes per sample of capacity: two slots of input, target and sample id.
  static int64_t bytes_per_sample(const SampleLayout& layout) {
    return 2 * (layout.input_bytes() + layout.target_bytes() + static_cast<int64_t>(sizeof(int64_t)));
  }

  // Gathers the samples `indices` of `data` (for 0-based `epoch`) and starts their
  // upload into a free slot; the upload overlaps the work queued since the last take().
  void prefetch(const Dataset& data, int64_t epoch, std::span<const int64_t> indices);
  // The oldest prefetched batch on the device, ready for work queued from now on
  // (its step is 0: the caller sets it).
  Batch take();
  // prefetch() and take() at once, for loops that do not overlap (evaluation).
  Batch load(const Dataset& data, int64_t epoch, std::span<const int64_t> indices);

 private:
  struct Slot {
    HostBuffer host_inputs, host_targets, host_ids;
    Buffer inputs, targets, ids;
    std::unique_ptr<Uploader> uploader;
    int64_t count = 0;
  };
  Context& ctx_;
  SampleLayout layout_;
  int64_t capacity_;
  std::array<Slot, 2> slots_;
  int64_t filled_ = 0;  // prefetches so far
  int64_t taken_ = 0;   // takes so far
};

}  // namespace dtrain
