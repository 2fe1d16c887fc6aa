// The model builders: the config's model spec -> a sequential Model. Spec errors
// are ConfigErrors that name the model.* key; the runtime adds the config file and
// line where it knows them.
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "kernels/errors.h"
#include "models/conv2d.h"
#include "models/flatten.h"
#include "models/linear.h"
#include "models/linear_regression.h"
#include "models/maxpool2d.h"
#include "models/model.h"
#include "models/gpt.h"
#include "models/sequential_classifier.h"
#include "models/relu.h"

namespace dtrain {

namespace {

using Layers = std::vector<std::unique_ptr<Layer>>;

void check_widths(const std::vector<int64_t>& widths, const char* key) {
  for (size_t i = 0; i < widths.size(); ++i) {
    if (widths[i] < 1) {
      std::ostringstream msg;
      msg << key << "[" << i << "] is " << widths[i] << "; layer widths must be at least 1";
      throw ConfigError(msg.str());
    }
  }
}

// Linear+ReLU per width, then the classifier.
void add_classifier_head(Layers& layers, int64_t features, const std::vector<int64_t>& widths,
                         int64_t classes) {
  for (int64_t width : widths) {
    layers.push_back(std::make_unique<Linear>(features, width));
    layers.push_back(std::make_unique<Relu>());
    features = width;
  }
  layers.push_back(std::make_unique<Linear>(features, classes));
}

Layers build_mlp(const ModelSpec& spec, const Shape& input, int64_t classes) {
  check_widths(spec.hidden, "model.hidden");
  Layers layers;
  layers.push_back(std::make_unique<Flatten>());
  add_classifier_head(layers, input.numel(), spec.hidden, classes);
  return layers;
}

Layers build_cnn(const ModelSpec& spec, const Shape& input, int64_t classes) {
  if (input.rank() != 3) {
    throw ConfigError("model.name: cnn needs image samples (channels, height, width), but the "
                      "data gives samples of shape " + input.str() + "; use model.name: mlp");
  }
  if (spec.kernel_size < 1 || spec.kernel_size % 2 == 0) {
    throw ConfigError("model.kernel_size is " + std::to_string(spec.kernel_size) +
                      "; \"same\" padding needs a positive odd kernel size (3, 5, 7, ...)");
  }
  if (spec.channels.empty()) {
    throw ConfigError("model.channels is empty; a cnn needs at least one conv-pool stage "
                      "(or use model.name: mlp)");
  }
  check_widths(spec.channels, "model.channels");
  check_widths(spec.cnn_hidden, "model.cnn_hidden");

  // Each stage keeps the size through the "same" convolution and halves it in the pool.
  int64_t height = input[1], width = input[2];
  for (size_t stage = 0; stage < spec.channels.size(); ++stage) {
    height /= 2;
    width /= 2;
    if (height < 1 || width < 1) {
      std::ostringstream msg;
      msg << "model.channels: after " << stage + 1 << " conv-pool stages the " << input[1] << "x"
          << input[2] << " image is " << height << "x" << width << "; use at most " << stage
          << " channels entries";
      throw ConfigError(msg.str());
    }
  }

  Layers layers;
  int64_t in_channels = input[0];
  for (int64_t out_channels : spec.channels) {
    layers.push_back(std::make_unique<Conv2d>(in_channels, out_channels, spec.kernel_size));
    layers.push_back(std::make_unique<Relu>());
    layers.push_back(std::make_unique<MaxPool2d>());
    in_channels = out_channels;
  }
  layers.push_back(std::make_unique<Flatten>());
  add_classifier_head(layers, in_channels * height * width, spec.cnn_hidden, classes);
  return layers;
}

}  // namespace

std::unique_ptr<Model> build_model(Context& ctx, const ModelSpec& spec, const DataFacts& data) {
  if (spec.compute != "fp32" && spec.compute != "bf16") {
    throw ConfigError("key 'precision.compute' = '" + spec.compute + "': accepted values: fp32, bf16");
  }
  if (spec.recompute != "none" && spec.recompute != "blocks") {
    throw ConfigError("key 'memory.recompute' = '" + spec.recompute + "': accepted values: none, blocks");
  }
  if (spec.name == "gpt") return build_gpt(ctx, spec, data);
  if (spec.compute != "fp32") {
    throw ConfigError("key 'precision.compute' = '" + spec.compute + "': the " + spec.name +
                      " computes in fp32 only (bf16 is the gpt's); set precision.compute: fp32");
  }
  if (spec.recompute != "none") {
    throw ConfigError("key 'memory.recompute' = '" + spec.recompute + "': the " + spec.name +
                      " has no blocks to recompute (recompute is the gpt's); set memory.recompute: none");
  }
  const Shape& input = data.layout.input;
  const int64_t classes = data.classes;
  if (spec.name == "linear") {
    if (data.classes != 0 || input.rank() != 1 || input.numel() < 2) {
      throw ConfigError("model.name: linear is a regression on samples of features and a target (data.name: "
                        "regression), but the data holds samples of shape " + input.str() +
                        (data.classes > 0 ? " with " + std::to_string(data.classes) + " classes" : std::string()) +
                        "; use model.name: mlp or cnn for a classifier");
    }
    return std::make_unique<LinearRegression>(ctx, input.numel() - 1);
  }
  if (spec.name != "mlp" && spec.name != "cnn") {
    throw ConfigError("model.name: unknown model '" + spec.name + "'; accepted values: mlp, cnn, gpt, linear");
  }
  if (data.layout.input_type != ElementType::kFloat32 || data.layout.target.numel() != 1) {
    throw ConfigError("model.name: the " + spec.name + " classifies images with one label each, but the data holds " +
                      std::string(element_name(data.layout.input_type)) + " samples of shape " +
                      data.layout.input.str() + "; use model.name: gpt for text, or an image dataset");
  }
  if (input.rank() < 1 || input.numel() < 1) {
    throw ConfigError("model: samples of shape " + input.str() + " are empty; check the data");
  }
  if (classes < 2) {
    throw ConfigError("model: a classifier needs at least 2 classes, the data has " +
                      std::to_string(classes));
  }
  Layers layers = spec.name == "mlp" ? build_mlp(spec, input, classes) : build_cnn(spec, input, classes);
  return std::make_unique<SequentialClassifier>(ctx, spec.name, std::move(layers), input);
}

}  // namespace dtrain
