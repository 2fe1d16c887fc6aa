#include "runtime/dataset.h"

#include "runtime/image_dataset.h"
#include "runtime/synthetic_dataset.h"

namespace dtrain {

DataSplits load_data(const DataConfig& config, const ModelSpec& model, uint64_t seed) {
  (void)model;  // the token streams (text, tokens) read seq_len and vocab from it
  DataSplits splits;
  if (config.name == "synthetic") {
    splits.train = std::make_unique<SyntheticDataset>(config.train_samples, seed, true);
    splits.test = std::make_unique<SyntheticDataset>(config.test_samples, seed, false);
  } else {
    splits.train = load_fashion_mnist(config.path, true);
    splits.test = load_fashion_mnist(config.path, false);
  }
  return splits;
}

}  // namespace dtrain
