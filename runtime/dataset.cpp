#include "runtime/dataset.h"

#include "runtime/image_dataset.h"
#include "runtime/regression_dataset.h"
#include "runtime/synthetic_dataset.h"
#include "runtime/text_dataset.h"

namespace dtrain {

DataSplits load_data(const DataConfig& config, const ModelSpec& model, uint64_t seed) {
  if (config.name == "text") return load_text_data(config, model, seed);
  if (config.name == "tokens") return load_token_data(config, model, seed);
  DataSplits splits;
  if (config.name == "regression") {
    splits.train = std::make_unique<RegressionDataset>(config.train_samples, config.features, config.noise, seed, true);
    splits.test = std::make_unique<RegressionDataset>(config.test_samples, config.features, config.noise, seed, false);
  } else if (config.name == "synthetic") {
    splits.train = std::make_unique<SyntheticDataset>(config.train_samples, seed, true);
    splits.test = std::make_unique<SyntheticDataset>(config.test_samples, seed, false);
  } else {
    splits.train = load_fashion_mnist(config.path, true);
    splits.test = load_fashion_mnist(config.path, false);
  }
  return splits;
}

}  // namespace dtrain
