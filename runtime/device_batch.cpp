#include "runtime/device_batch.h"

#include <algorithm>

#include "kernels/check.h"

namespace dtrain {

DeviceBatch::DeviceBatch(Context& ctx, const SampleLayout& layout, int64_t capacity)
    : ctx_(ctx), layout_(layout), capacity_(capacity) {
  const auto input_bytes = static_cast<size_t>(capacity * layout.input_bytes());
  const auto target_bytes = static_cast<size_t>(capacity * layout.target_bytes());
  const size_t id_bytes = static_cast<size_t>(capacity) * sizeof(int64_t);
  for (Slot& s : slots_) {
    s.host_inputs = HostBuffer(ctx, input_bytes);
    s.host_targets = HostBuffer(ctx, target_bytes);
    s.host_ids = HostBuffer(ctx, id_bytes);
    s.inputs = Buffer(ctx.allocator(), input_bytes, MemoryCategory::Activations);
    s.targets = Buffer(ctx.allocator(), target_bytes, MemoryCategory::Activations);
    s.ids = Buffer(ctx.allocator(), id_bytes, MemoryCategory::Activations);
    s.uploader = ctx.backend().make_uploader(ctx);
  }
}

void DeviceBatch::prefetch(const Dataset& data, int64_t epoch, std::span<const int64_t> indices) {
  const auto n = static_cast<int64_t>(indices.size());
  DTRAIN_ASSERT(n <= capacity_, "batch of " << n << " exceeds capacity " << capacity_);
  // One batch ahead at most: a slot's release is recorded at the next take, so a second
  // batch ahead would be uploaded over a slot whose reads were never released.
  DTRAIN_ASSERT(filled_ == taken_, "prefetch without take: a batch is already in flight");
  Slot& s = slots_[static_cast<size_t>(filled_ % 2)];
  s.uploader->wait_source_free();  // the slot's last upload has read the host buffers
  data.gather(epoch, indices, s.host_inputs.data(), s.host_targets.as<int32_t>());
  std::copy(indices.begin(), indices.end(), s.host_ids.as<int64_t>());
  s.uploader->upload(s.inputs.data(), s.host_inputs.data(), static_cast<size_t>(n * layout_.input_bytes()));
  s.uploader->upload(s.targets.data(), s.host_targets.data(), static_cast<size_t>(n * layout_.target_bytes()));
  s.uploader->upload(s.ids.data(), s.host_ids.data(), static_cast<size_t>(n) * sizeof(int64_t));
  s.count = n;
  ++filled_;
}

Batch DeviceBatch::take() {
  DTRAIN_ASSERT(taken_ < filled_, "take without prefetch");
  Slot& s = slots_[static_cast<size_t>(taken_ % 2)];
  ++taken_;
  s.uploader->make_visible();
  // The other slot's batch was taken before this one, and the work on it is queued
  // before the next take: the work queued so far is its last reader, so its next
  // upload waits for that and overlaps the work on this batch.
  slots_[static_cast<size_t>(taken_ % 2)].uploader->release();
  Batch b;
  b.size = s.count;
  b.inputs = s.inputs.data();
  b.targets = s.targets.as<int32_t>();
  b.sample_ids = s.ids.as<int64_t>();
  return b;
}

Batch DeviceBatch::load(const Dataset& data, int64_t epoch, std::span<const int64_t> indices) {
  prefetch(data, epoch, indices);
  return take();
}

}  // namespace dtrain
