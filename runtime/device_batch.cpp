#include "runtime/device_batch.h"

#include "kernels/check.h"
#include "kernels/ops.h"

namespace dtrain {

DeviceBatch::DeviceBatch(Context& ctx, const Shape& sample_shape, int64_t capacity)
    : ctx_(ctx), sample_shape_(sample_shape), capacity_(capacity),
      host_images_(static_cast<size_t>(capacity * sample_shape.numel())),
      host_labels_(static_cast<size_t>(capacity)),
      images_(ctx.allocator(), host_images_.size() * sizeof(float), MemoryCategory::Activations),
      labels_(ctx.allocator(), host_labels_.size() * sizeof(int32_t), MemoryCategory::Activations) {}

ConstTensor DeviceBatch::load(const Dataset& data, std::span<const int64_t> indices) {
  const int64_t n = static_cast<int64_t>(indices.size());
  DTRAIN_ASSERT(n <= capacity_, "batch of " << n << " exceeds capacity " << capacity_);
  data.gather(indices, host_images_.data(), host_labels_.data());
  const size_t image_bytes = static_cast<size_t>(n * sample_shape_.numel()) * sizeof(float);
  ops::copy_from_host(ctx_, images_.data(), host_images_.data(), image_bytes);
  ops::copy_from_host(ctx_, labels_.data(), host_labels_.data(), static_cast<size_t>(n) * sizeof(int32_t));
  return ConstTensor(images_.as<float>(), sample_shape_.with_batch(n));
}

}  // namespace dtrain
