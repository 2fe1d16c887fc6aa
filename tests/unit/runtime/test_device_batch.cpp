// DeviceBatch on the CPU backend: the double-buffered prefetch/take sequence returns
// each prefetched batch in order with its own inputs, targets and sample ids (the
// dataset's gather is the reference), slots alternate without one overwriting a batch
// not yet taken, typed samples (int32 token windows with a target per token) and the
// epoch reach the dataset unchanged, and misuse (a second batch ahead, a take without
// prefetch) is refused.
#include <gtest/gtest.h>

#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/errors.h"
#include "models/batch.h"
#include "runtime/device_batch.h"
#include "runtime/synthetic_dataset.h"

namespace dtrain {
namespace {

struct Expected {
  std::vector<char> inputs;
  std::vector<int32_t> targets;
  std::vector<int64_t> ids;
};

Expected gathered(const Dataset& data, int64_t epoch, const std::vector<int64_t>& indices) {
  const SampleLayout layout = data.layout();
  Expected e;
  e.inputs.resize(indices.size() * static_cast<size_t>(layout.input_bytes()));
  e.targets.resize(indices.size() * static_cast<size_t>(layout.target.numel()));
  data.gather(epoch, indices, e.inputs.data(), e.targets.data());
  e.ids = indices;
  return e;
}

void expect_batch(const Batch& b, const Expected& e) {
  ASSERT_EQ(static_cast<size_t>(b.size), e.ids.size());
  EXPECT_EQ(std::memcmp(b.inputs, e.inputs.data(), e.inputs.size()), 0);
  EXPECT_EQ(std::memcmp(b.targets, e.targets.data(), e.targets.size() * sizeof(int32_t)), 0);
  EXPECT_EQ(std::memcmp(b.sample_ids, e.ids.data(), e.ids.size() * sizeof(int64_t)), 0);
}

// Windows of 3 int32 tokens whose values name the epoch, the sample and the position,
// so a batch mixed up with another batch, epoch or sample shows.
class CountingTokens final : public Dataset {
 public:
  std::string name() const override { return "counting"; }
  int64_t size() const override { return 50; }
  SampleLayout layout() const override { return SampleLayout{Shape{3}, ElementType::kInt32, Shape{3}}; }
  int64_t num_classes() const override { return 1 << 20; }
  void gather(int64_t epoch, std::span<const int64_t> indices, void* inputs, int32_t* targets) const override {
    auto* in = static_cast<int32_t*>(inputs);
    for (size_t s = 0; s < indices.size(); ++s) {
      for (int64_t t = 0; t < 3; ++t) {
        const auto v = static_cast<int32_t>(epoch * 10000 + indices[s] * 10 + t);
        in[s * 3 + static_cast<size_t>(t)] = v;
        targets[s * 3 + static_cast<size_t>(t)] = v + 1;
      }
    }
  }
};

TEST(DeviceBatch, BatchesComeBackInOrderWithTheirLabelsAndIds) {
  auto ctx = Context::make_cpu(1);
  const SyntheticDataset data(100, 7, true);
  DeviceBatch batch(*ctx, data.layout(), 8);
  // Sizes vary (a last partial batch is smaller); indices repeat and jump around.
  const std::vector<std::vector<int64_t>> batches{{3, 1, 4, 1, 5, 9, 2, 6}, {99, 0, 42}, {7, 7, 7, 7, 7},
                                                  {10, 20, 30, 40, 50, 60, 70, 80}, {5}};
  batch.prefetch(data, 0, batches[0]);
  for (size_t i = 0; i < batches.size(); ++i) {
    const Batch b = batch.take();
    // As the trainer does: the next batch is prefetched while this one is in use.
    if (i + 1 < batches.size()) batch.prefetch(data, 0, batches[i + 1]);
    expect_batch(b, gathered(data, 0, batches[i]));
  }
}

TEST(DeviceBatch, TokenWindowsAndTheEpochReachTheBatch) {
  auto ctx = Context::make_cpu(1);
  const CountingTokens data;
  DeviceBatch batch(*ctx, data.layout(), 4);
  const std::vector<std::vector<int64_t>> batches{{0, 49, 7, 7}, {12, 3}, {48, 1, 2}};
  const std::vector<int64_t> epochs{0, 3, 1};
  batch.prefetch(data, epochs[0], batches[0]);
  for (size_t i = 0; i < batches.size(); ++i) {
    const Batch b = batch.take();
    if (i + 1 < batches.size()) batch.prefetch(data, epochs[i + 1], batches[i + 1]);
    const Expected e = gathered(data, epochs[i], batches[i]);
    expect_batch(b, e);
    // The reference itself: the first token is epoch*10000 + index*10.
    EXPECT_EQ(b.token_inputs()[3], static_cast<int32_t>(epochs[i] * 10000 + batches[i][1] * 10));
    EXPECT_EQ(b.targets[3 * b.size - 1], static_cast<int32_t>(epochs[i] * 10000 + batches[i].back() * 10 + 3));
  }
  // load() is prefetch and take at once.
  const std::vector<int64_t> last{9, 8};
  expect_batch(batch.load(data, 5, last), gathered(data, 5, last));
}

TEST(DeviceBatch, SecondBatchAheadAndTakeWithoutPrefetchAreRefused) {
  auto ctx = Context::make_cpu(1);
  const SyntheticDataset data(10, 1, true);
  DeviceBatch batch(*ctx, data.layout(), 4);
  EXPECT_THROW(batch.take(), Error);
  const std::vector<int64_t> idx{0, 1};
  batch.prefetch(data, 0, idx);
  EXPECT_THROW(batch.prefetch(data, 0, idx), Error);
  batch.take();
  EXPECT_THROW(batch.take(), Error);
  const std::vector<int64_t> too_many{0, 1, 2, 3, 4};
  EXPECT_THROW(batch.prefetch(data, 0, too_many), Error);
}

}  // namespace
}  // namespace dtrain
