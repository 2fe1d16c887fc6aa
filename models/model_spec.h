// What the config says about the model: the runtime fills it, models/ builds from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrain {

struct ModelSpec {
  std::string name = "mlp";                    // "mlp" or "cnn"
  std::vector<int64_t> hidden = {256, 128};    // mlp: hidden widths (784-256-128-10)
  std::vector<int64_t> channels = {16, 32};    // cnn: output channels of each conv-relu-pool
  int64_t kernel_size = 5;                     // cnn: square kernel, "same" padding, stride 1
  std::vector<int64_t> cnn_hidden = {128};     // cnn: fully connected widths before the classifier
};

}  // namespace dtrain
