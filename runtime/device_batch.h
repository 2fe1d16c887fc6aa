// A batch of images and labels: gathered on the host, then copied to the device
// buffers the model reads. Sized for the largest batch it is asked to hold.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/tensor.h"
#include "runtime/dataset.h"

namespace dtrain {

class DeviceBatch {
 public:
  DeviceBatch(Context& ctx, const Shape& sample_shape, int64_t capacity);
  // Loads the samples `indices` of `data`; returns the device view of the images.
  ConstTensor load(const Dataset& data, std::span<const int64_t> indices);
  const int32_t* labels() const { return labels_.as<int32_t>(); }  // device

 private:
  Context& ctx_;
  Shape sample_shape_;
  int64_t capacity_;
  std::vector<float> host_images_;
  std::vector<int32_t> host_labels_;
  Buffer images_;
  Buffer labels_;
};

}  // namespace dtrain
