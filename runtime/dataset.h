// Datasets of labelled images held on the host. gather() writes a batch of samples
// (normalised float32, NCHW) and labels into host buffers; the trainer copies them
// to the device.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "kernels/tensor.h"
#include "runtime/config.h"

namespace dtrain {

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::string name() const = 0;
  virtual int64_t size() const = 0;
  virtual Shape sample_shape() const = 0;  // (C, H, W)
  virtual int64_t num_classes() const = 0;
  // images: indices.size() * sample_shape().numel() floats; labels: indices.size().
  virtual void gather(std::span<const int64_t> indices, float* images, int32_t* labels) const = 0;
};

struct DataSplits {
  std::unique_ptr<Dataset> train;
  std::unique_ptr<Dataset> test;
};

// Loads the dataset the config names. Throws DataError for missing or bad files.
DataSplits load_data(const DataConfig& config, uint64_t seed);

}  // namespace dtrain
