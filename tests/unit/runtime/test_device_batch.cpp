// DeviceBatch on the CPU backend: the double-buffered prefetch/take sequence returns
// each prefetched batch in order with its own images and labels (the dataset's
// gather is the reference), slots alternate without one overwriting a batch not yet
// taken, and misuse (a second batch ahead, a take without prefetch) is refused.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "kernels/context.h"
#include "kernels/errors.h"
#include "runtime/device_batch.h"
#include "runtime/synthetic_dataset.h"

namespace dtrain {
namespace {

struct Expected {
  std::vector<float> images;
  std::vector<int32_t> labels;
};

Expected gathered(const Dataset& data, const std::vector<int64_t>& indices) {
  Expected e;
  e.images.resize(indices.size() * static_cast<size_t>(data.sample_shape().numel()));
  e.labels.resize(indices.size());
  data.gather(indices, e.images.data(), e.labels.data());
  return e;
}

void expect_batch(const ConstTensor& x, const int32_t* labels, const Expected& e) {
  ASSERT_EQ(static_cast<size_t>(x.dim(0)), e.labels.size());
  EXPECT_EQ(std::memcmp(x.data, e.images.data(), e.images.size() * sizeof(float)), 0);
  EXPECT_EQ(std::memcmp(labels, e.labels.data(), e.labels.size() * sizeof(int32_t)), 0);
}

TEST(DeviceBatch, BatchesComeBackInOrderWithTheirLabels) {
  auto ctx = Context::make_cpu(1);
  const SyntheticDataset data(100, 7, true);
  DeviceBatch batch(*ctx, data.sample_shape(), 8);
  // Sizes vary (a last partial batch is smaller); indices repeat and jump around.
  const std::vector<std::vector<int64_t>> batches{{3, 1, 4, 1, 5, 9, 2, 6}, {99, 0, 42}, {7, 7, 7, 7, 7},
                                                  {10, 20, 30, 40, 50, 60, 70, 80}, {5}};
  batch.prefetch(data, batches[0]);
  for (size_t i = 0; i < batches.size(); ++i) {
    ConstTensor x = batch.take();
    // As the trainer does: the next batch is prefetched while this one is in use.
    if (i + 1 < batches.size()) batch.prefetch(data, batches[i + 1]);
    expect_batch(x, batch.labels(), gathered(data, batches[i]));
  }
}

TEST(DeviceBatch, SecondBatchAheadAndTakeWithoutPrefetchAreRefused) {
  auto ctx = Context::make_cpu(1);
  const SyntheticDataset data(10, 1, true);
  DeviceBatch batch(*ctx, data.sample_shape(), 4);
  EXPECT_THROW(batch.take(), Error);
  const std::vector<int64_t> idx{0, 1};
  batch.prefetch(data, idx);
  EXPECT_THROW(batch.prefetch(data, idx), Error);
  batch.take();
  EXPECT_THROW(batch.take(), Error);
  const std::vector<int64_t> too_many{0, 1, 2, 3, 4};
  EXPECT_THROW(batch.prefetch(data, too_many), Error);
}

}  // namespace
}  // namespace dtrain
