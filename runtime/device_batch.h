// Micro-batches on the device, double-buffered (Note [Batch prefetch], kernels/ops.h):
// while one slot's batch computes, the next batch is gathered on the host into pinned
// transfer memory and uploaded into the other slot on a side stream.
//   prefetch(first) take() -> queue compute on it -> prefetch(next) -> take() -> ...
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
#include "runtime/dataset.h"

namespace dtrain {

class DeviceBatch {
 public:
  DeviceBatch(Context& ctx, const Shape& sample_shape, int64_t capacity);
  // Device bytes per sample of capacity: two slots of image and label.
  static int64_t bytes_per_sample(const Shape& sample_shape) {
    return 2 * (sample_shape.numel() * static_cast<int64_t>(sizeof(float)) + static_cast<int64_t>(sizeof(int32_t)));
  }

  // Gathers the samples `indices` of `data` and starts their upload into a free slot;
  // the upload overlaps the work queued since the previous take().
  void prefetch(const Dataset& data, std::span<const int64_t> indices);
  // The oldest prefetched batch: images (N, C, H, W) on the device, ready for work
  // queued from now on; labels() are its labels.
  ConstTensor take();
  const int32_t* labels() const { return labels_; }
  // prefetch() and take() at once, for loops that do not overlap (evaluation).
  ConstTensor load(const Dataset& data, std::span<const int64_t> indices);

 private:
  struct Slot {
    HostBuffer host_images, host_labels;
    Buffer images, labels;
    std::unique_ptr<Uploader> uploader;
    int64_t count = 0;
  };
  Context& ctx_;
  Shape sample_shape_;
  int64_t capacity_;
  std::array<Slot, 2> slots_;
  int64_t filled_ = 0;  // prefetches so far
  int64_t taken_ = 0;   // takes so far
  const int32_t* labels_ = nullptr;
};

}  // namespace dtrain
