// An in-memory dataset of 8-bit images (as IDX files hold them), normalised on gather.
#pragma once

#include <vector>

#include "runtime/dataset.h"

namespace dtrain {

class ImageDataset final : public Dataset {
 public:
  // `pixels` holds size * C*H*W bytes; x -> (x / 255 - mean) / stddev.
  ImageDataset(std::string name, Shape sample_shape, int64_t classes, std::vector<uint8_t> pixels,
               std::vector<int32_t> labels, float mean, float stddev);
  std::string name() const override { return name_; }
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  SampleLayout layout() const override { return SampleLayout{shape_, ElementType::kFloat32, Shape{}}; }
  int64_t num_classes() const override { return classes_; }
  // inputs: normalised float32 images (NCHW); targets: labels.
  void gather(int64_t epoch, std::span<const int64_t> indices, void* inputs, int32_t* labels) const override;

 private:
  std::string name_;
  Shape shape_;
  int64_t classes_;
  std::vector<uint8_t> pixels_;
  std::vector<int32_t> labels_;
  float lut_[256];  // normalised value of each byte
};

// Reads the train (or t10k) images and labels from `dir` (".gz" or plain files).
std::unique_ptr<Dataset> load_fashion_mnist(const std::string& dir, bool train);

}  // namespace dtrain
