#include "runtime/image_dataset.h"

#include <sys/stat.h>

#include <cstring>

#include "kernels/errors.h"
#include "runtime/idx_reader.h"

namespace dtrain {
namespace {

// Fashion-MNIST training-set pixel statistics (of x / 255).
constexpr float kFashionMean = 0.2860f;
constexpr float kFashionStd = 0.3530f;
constexpr int64_t kFashionClasses = 10;
constexpr int64_t kCacheLineBytes = 64;

bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

// The shipped name with ".gz", or without when only the plain file exists.
std::string locate(const std::string& dir, const std::string& stem) {
  const std::string gz = dir + "/" + stem + ".gz";
  if (exists(gz) || !exists(dir + "/" + stem)) return gz;
  return dir + "/" + stem;
}

}  // namespace

ImageDataset::ImageDataset(std::string name, Shape sample_shape, int64_t classes,
                           std::vector<uint8_t> pixels, std::vector<int32_t> labels, float mean,
                           float stddev)
    : name_(std::move(name)), shape_(std::move(sample_shape)), classes_(classes),
      pixels_(std::move(pixels)), labels_(std::move(labels)) {
  for (int v = 0; v < 256; ++v) lut_[v] = (static_cast<float>(v) / 255.0f - mean) / stddev;
}

void ImageDataset::gather(int64_t, std::span<const int64_t> indices, void* inputs, int32_t* labels) const {
  auto* images = static_cast<float*>(inputs);
  const int64_t per = shape_.numel();
  // The rows lie scattered over the dataset, so their cache lines are misses to memory;
  // asking for all of them first lets the misses overlap instead of following one
  // another through the loop below (1.45x on a batch of 64 Fashion-MNIST rows,
  // bench/RESULTS.md).
  for (const int64_t index : indices) {
    const uint8_t* src = pixels_.data() + index * per;
    for (int64_t j = 0; j < per; j += kCacheLineBytes) __builtin_prefetch(src + j);
  }
  for (size_t i = 0; i < indices.size(); ++i) {
    const uint8_t* src = pixels_.data() + indices[i] * per;
    float* dst = images + static_cast<int64_t>(i) * per;
    for (int64_t j = 0; j < per; ++j) dst[j] = lut_[src[j]];
    labels[i] = labels_[static_cast<size_t>(indices[i])];
  }
}

std::unique_ptr<Dataset> load_fashion_mnist(const std::string& dir, bool train) {
  const std::string prefix = train ? "train" : "t10k";
  const std::string image_path = locate(dir, prefix + "-images-idx3-ubyte");
  const std::string label_path = locate(dir, prefix + "-labels-idx1-ubyte");
  IdxArray images = read_idx(image_path, 3);
  IdxArray labels = read_idx(label_path, 1);
  if (images.dims[1] != 28 || images.dims[2] != 28) {
    throw DataError(image_path + ": images are " + std::to_string(images.dims[1]) + "x" +
                    std::to_string(images.dims[2]) + ", Fashion-MNIST's are 28x28");
  }
  if (images.dims[0] != labels.dims[0]) {
    throw DataError(image_path + " holds " + std::to_string(images.dims[0]) + " images but " +
                    label_path + " holds " + std::to_string(labels.dims[0]) +
                    " labels; the two files must come from the same split");
  }
  std::vector<int32_t> label_values(labels.data.size());
  for (size_t i = 0; i < labels.data.size(); ++i) {
    if (labels.data[i] >= kFashionClasses) {
      throw DataError(label_path + ": label " + std::to_string(labels.data[i]) + " at index " +
                      std::to_string(i) + " is not a class in [0, 9]: corrupt file");
    }
    label_values[i] = labels.data[i];
  }
  return std::make_unique<ImageDataset>("fashion_mnist/" + prefix, Shape{1, 28, 28}, kFashionClasses,
                                        std::move(images.data), std::move(label_values),
                                        kFashionMean, kFashionStd);
}

}  // namespace dtrain
