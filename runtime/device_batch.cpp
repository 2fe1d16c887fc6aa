#include "runtime/device_batch.h"

#include "kernels/check.h"

namespace dtrain {

DeviceBatch::DeviceBatch(Context& ctx, const Shape& sample_shape, int64_t capacity)
    : ctx_(ctx), sample_shape_(sample_shape), capacity_(capacity) {
  const size_t image_bytes = static_cast<size_t>(capacity * sample_shape.numel()) * sizeof(float);
  const size_t label_bytes = static_cast<size_t>(capacity) * sizeof(int32_t);
  for (Slot& s : slots_) {
    s.host_images = HostBuffer(ctx, image_bytes);
    s.host_labels = HostBuffer(ctx, label_bytes);
    s.images = Buffer(ctx.allocator(), image_bytes, MemoryCategory::Activations);
    s.labels = Buffer(ctx.allocator(), label_bytes, MemoryCategory::Activations);
    s.uploader = ctx.backend().make_uploader(ctx);
  }
}

void DeviceBatch::prefetch(const Dataset& data, std::span<const int64_t> indices) {
  const auto n = static_cast<int64_t>(indices.size());
  DTRAIN_ASSERT(n <= capacity_, "batch of " << n << " exceeds capacity " << capacity_);
  // One batch ahead at most: a slot's release is recorded at the next take, so a second
  // batch ahead would be uploaded over a slot whose reads were never released.
  DTRAIN_ASSERT(filled_ == taken_, "prefetch without take: a batch is already in flight");
  Slot& s = slots_[static_cast<size_t>(filled_ % 2)];
  s.uploader->wait_source_free();  // the slot's last upload has read the host buffers
  data.gather(indices, s.host_images.as<float>(), s.host_labels.as<int32_t>());
  s.uploader->upload(s.images.data(), s.host_images.data(),
                     static_cast<size_t>(n * sample_shape_.numel()) * sizeof(float));
  s.uploader->upload(s.labels.data(), s.host_labels.data(), static_cast<size_t>(n) * sizeof(int32_t));
  s.count = n;
  ++filled_;
}

ConstTensor DeviceBatch::take() {
  DTRAIN_ASSERT(taken_ < filled_, "take without prefetch");
  Slot& s = slots_[static_cast<size_t>(taken_ % 2)];
  ++taken_;
  s.uploader->make_visible();
  // The other slot's batch was taken before this one, and the work on it is queued
  // before the next take: the work queued so far is its last reader, so its next
  // upload waits for that and overlaps the work on this batch.
  slots_[static_cast<size_t>(taken_ % 2)].uploader->release();
  labels_ = s.labels.as<int32_t>();
  return ConstTensor(s.images.as<float>(), sample_shape_.with_batch(s.count));
}

ConstTensor DeviceBatch::load(const Dataset& data, std::span<const int64_t> indices) {
  prefetch(data, indices);
  return take();
}

}  // namespace dtrain
