// DeviceBatch on a real device, in the trainer's order (take, queue the work on the
// batch, prefetch the next, take ...): every batch's readers see that batch and no
// later one. The readers are many passes over a large batch, so the device falls far
// behind the host; an upload released too early (the slot's release recorded before
// its reads were queued) would then overwrite a batch while it is still being read.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "models/batch.h"
#include "runtime/dataset.h"
#include "runtime/device_batch.h"
#include "tests/gpu/gpu_test.h"

namespace dtrain {
namespace {

// Every pixel of a gathered batch is its first index plus one: a marker per batch,
// written at memset speed so the host stays ahead of the device.
class MarkerDataset final : public Dataset {
 public:
  std::string name() const override { return "marker"; }
  int64_t size() const override { return int64_t{1} << 30; }
  SampleLayout layout() const override { return SampleLayout{Shape{1, 28, 28}, ElementType::kFloat32, Shape{}}; }
  int64_t num_classes() const override { return 10; }
  void gather(int64_t, std::span<const int64_t> indices, void* inputs, int32_t* labels) const override {
    const auto n = static_cast<int64_t>(indices.size()) * layout().input.numel();
    auto* images = static_cast<float*>(inputs);
    std::fill(images, images + n, static_cast<float>(indices[0] + 1));
    std::fill(labels, labels + indices.size(), 0);
  }
};

class DeviceBatchOnGpu : public testing::GpuTest {};

TEST_F(DeviceBatchOnGpu, ReadersSeeTheirOwnBatchInTheTrainersOrder) {
  constexpr int64_t kBatch = 16384;  // 51 MB of images per batch
  constexpr int kPasses = 2000;      // each reads the whole batch
  constexpr int kBatches = 5;
  auto ctx = Context::make_cuda(CudaOptions{});
  const MarkerDataset data;
  const int64_t n = kBatch * data.layout().input.numel();
  DeviceBatch batch(*ctx, data.layout(), kBatch);
  std::vector<Buffer> outs;
  for (int b = 0; b < kBatches; ++b) {
    outs.emplace_back(ctx->allocator(), static_cast<size_t>(n) * sizeof(float), MemoryCategory::Other);
  }
  auto indices = [&](int b) {
    std::vector<int64_t> idx(static_cast<size_t>(kBatch));
    for (int64_t i = 0; i < kBatch; ++i) idx[static_cast<size_t>(i)] = b * 1000 + i;
    return idx;
  };
  batch.prefetch(data, 0, indices(0));
  for (int b = 0; b < kBatches; ++b) {
    const Batch x = batch.take();
    for (int pass = 0; pass < kPasses; ++pass) ops::relu_forward(*ctx, x.float_inputs(), outs[b].as<float>(), n);
    if (b + 1 < kBatches) batch.prefetch(data, 0, indices(b + 1));
  }
  std::vector<float> got(static_cast<size_t>(n));
  for (int b = 0; b < kBatches; ++b) {
    ops::copy_to_host(*ctx, got.data(), outs[b].data(), got.size() * sizeof(float));
    const float want = static_cast<float>(b * 1000 + 1);
    EXPECT_EQ(std::count_if(got.begin(), got.end(), [&](float v) { return v != want; }), 0)
        << "batch " << b << "'s readers saw another batch: an upload did not wait for them";
  }
}

}  // namespace
}  // namespace dtrain
