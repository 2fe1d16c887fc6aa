// Datasets held on the host: labelled images, or windows of tokens. gather() writes a
// batch of samples' inputs and targets (SampleLayout, models/batch.h) into host
// buffers; the trainer copies them to the device.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "kernels/tensor.h"
#include "models/batch.h"
#include "models/model.h"
#include "runtime/config.h"

namespace dtrain {

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::string name() const = 0;
  // Samples per epoch (a text stream: the windows an epoch takes).
  virtual int64_t size() const = 0;
  virtual SampleLayout layout() const = 0;
  // Classes of a classifier's labels, or token values of a language model's data.
  virtual int64_t num_classes() const = 0;
  virtual bool tokens_are_bytes() const { return false; }
  // inputs: indices.size() x layout().input elements of layout().input_type;
  // targets: indices.size() x layout().target int32. `epoch` (0-based) lets a stream
  // move its windows from epoch to epoch (text); a fixed set of samples ignores it.
  virtual void gather(int64_t epoch, std::span<const int64_t> indices, void* inputs,
                      int32_t* targets) const = 0;

  DataFacts facts() const { return DataFacts{layout(), num_classes(), tokens_are_bytes()}; }
};

struct DataSplits {
  std::unique_ptr<Dataset> train;
  std::unique_ptr<Dataset> test;  // the held-out split evaluation reads (validation for text)
};

// Loads the dataset the config names. Throws DataError for missing or bad files.
// `model` supplies what a stream of tokens needs: seq_len and, when given, vocab.
DataSplits load_data(const DataConfig& config, const ModelSpec& model, uint64_t seed);

}  // namespace dtrain
