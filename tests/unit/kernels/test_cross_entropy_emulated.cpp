// The CUDA softmax cross-entropy kernels (Note [Fused classifier],
// kernels/cuda/cross_entropy_kernels.cuh), the very source the GPU runs, executed on the
// CPU by the SIMT emulator (simt_emulator.h) against the CPU's op, the oracle: the
// warp-per-row kernel, and the block-per-row kernel of a language model's vocabulary in
// both row forms (16-byte packs and one by one), in fp32 and bf16, with dlogits apart
// and in place over the logits; the CPU's argmax rule with NaN logits; bad labels
// recorded, not trusted. tests/gpu/test_cuda_ops.cpp runs the same checks through the
// CUDA backend on a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/context.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/stored_types.h"
// Last: it defines the CUDA names (threadIdx, __global__, ...) as macros.
#include "tests/unit/kernels/simt_emulator.h"
#include "tests/unit/kernels/simt_storage.h"

#include "kernels/cuda/cross_entropy_kernels.cuh"

namespace dtrain {
namespace {

using testing::random_normal;
using testing::stored;
namespace xent = cuda::xent;

enum class Kernel { WarpRows, BlockRowsPacked, BlockRowsOneByOne };

const char* name_of(Kernel k) {
  return k == Kernel::WarpRows ? "a warp a row" : k == Kernel::BlockRowsPacked ? "a block a row, packed" : "a block a row";
}

// A fresh label record: no bad index, no owner (Note [Label check on the device]).
std::vector<unsigned long long> empty_record() { return {~0ULL, 0, ~0ULL, 0}; }

// The host half of kernels/cuda/cross_entropy.cu, launching on the emulator with a grid
// smaller than the rows, so that every kernel's grid-stride loop turns.
template <class T>
void emulated_cross_entropy(Kernel kernel, const T* logits, const int32_t* labels, int64_t batch, int64_t classes,
                            float grad_scale, T* dlogits, double* stats, std::vector<unsigned long long>& record,
                            double loss_weight = 1.0) {
  std::vector<double> row_loss(static_cast<size_t>(batch), std::nan(""));
  std::vector<int32_t> row_hit(static_cast<size_t>(batch), -1);
  const unsigned long long launch = 7;
  if (kernel == Kernel::WarpRows) {
    simt::launch({2, 1, 1}, {cuda::kBlockThreads, 1, 1}, 0, xent::cross_entropy_rows<T>, logits, labels, batch,
                 classes, grad_scale, dlogits, loss_weight, row_loss.data(), row_hit.data(), record.data(), launch);
  } else if (kernel == Kernel::BlockRowsPacked) {
    ASSERT_EQ(classes % cuda::kPackElements, 0) << "packs need whole rows of them";
    simt::launch({2, 1, 1}, {xent::kRowThreads, 1, 1}, 0, xent::cross_entropy_block_rows<cuda::kPackElements, T>,
                 logits, labels, batch, classes, grad_scale, dlogits, loss_weight, row_loss.data(), row_hit.data(),
                 record.data(), launch);
  } else {
    simt::launch({2, 1, 1}, {xent::kRowThreads, 1, 1}, 0, xent::cross_entropy_block_rows<1, T>, logits, labels,
                 batch, classes, grad_scale, dlogits, loss_weight, row_loss.data(), row_hit.data(), record.data(),
                 launch);
  }
  simt::launch({1, 1, 1}, {cuda::kBlockThreads, 1, 1}, 0, xent::cross_entropy_totals,
               static_cast<const double*>(row_loss.data()), static_cast<const int32_t*>(row_hit.data()), batch,
               loss_weight, stats);
}

std::vector<int32_t> random_labels(Rng& rng, int64_t batch, int64_t classes) {
  std::vector<int32_t> labels(static_cast<size_t>(batch));
  for (int32_t& l : labels) l = static_cast<int32_t>(rng.below(static_cast<uint64_t>(classes)));
  return labels;
}

template <class T>
class CrossEntropyEmulated : public ::testing::Test {};
TYPED_TEST_SUITE(CrossEntropyEmulated, testing::StoredTypes, testing::StoredTypeNames);

// The bounds of tests/gpu/test_cuda_ops.cpp's SoftmaxCrossEntropyMatchesCpu: the loss
// sums in double in another order (1e-6 relative), the hit count exactly, and dlogits
// within 1e-6 of the largest (each element is the CPU's float operations in its order;
// only the row's 1/sum, from that double, may differ in its last bit).
TYPED_TEST(CrossEntropyEmulated, MatchesCpu) {
  using T = TypeParam;
  struct Case {
    Kernel kernel;
    int64_t batch, classes;
    double logit_scale;
  };
  // 4096 classes and up take a block a row on the device; the emulated kernels take any.
  const Case cases[] = {{Kernel::WarpRows, 20, 10, 1.0},          {Kernel::WarpRows, 9, 1000, 3.0},
                        {Kernel::WarpRows, 11, 37, 50.0},         {Kernel::BlockRowsPacked, 3, 4096, 1.0},
                        {Kernel::BlockRowsPacked, 3, 2048, 30.0}, {Kernel::BlockRowsOneByOne, 3, 4095, 1.0},
                        {Kernel::BlockRowsOneByOne, 2, 3001, 2.0}};
  auto cpu = Context::make_cpu(1);
  uint64_t seed = 50;
  for (const Case& c : cases) {
    for (const bool in_place : {false, true}) {
      SCOPED_TRACE(::testing::Message() << name_of(c.kernel) << ", batch " << c.batch << ", classes " << c.classes
                                        << ", in place " << in_place);
      Rng rng(++seed);
      auto logits = stored<T>(random_normal(rng, c.batch * c.classes, c.logit_scale));
      const auto labels = random_labels(rng, c.batch, c.classes);
      const float grad_scale = 1.0f / 48.0f;
      const int64_t n = c.batch * c.classes;
      auto device_logits = logits;
      auto record = empty_record();

      // Without dlogits only the statistics move (the evaluation path); += is the contract.
      double want[2] = {1.5, 2.0}, got[2] = {1.5, 2.0};
      ops::softmax_cross_entropy(*cpu, logits.data(), labels.data(), c.batch, c.classes, grad_scale, nullptr, want);
      emulated_cross_entropy<T>(c.kernel, device_logits.data(), labels.data(), c.batch, c.classes, grad_scale,
                                nullptr, got, record);
      EXPECT_NEAR(got[0], want[0], 1e-6 * std::fabs(want[0]));
      EXPECT_EQ(got[1], want[1]);

      std::vector<T> dl(static_cast<size_t>(n)), device_dl = testing::stored_nans<T>(n);
      ops::softmax_cross_entropy(*cpu, logits.data(), labels.data(), c.batch, c.classes, grad_scale,
                                 in_place ? logits.data() : dl.data(), want);
      emulated_cross_entropy<T>(c.kernel, device_logits.data(), labels.data(), c.batch, c.classes, grad_scale,
                                in_place ? device_logits.data() : device_dl.data(), got, record);
      EXPECT_NEAR(got[0], want[0], 1e-6 * std::fabs(want[0]));
      EXPECT_EQ(got[1], want[1]);
      EXPECT_TRUE(testing::close_to_norm(in_place ? device_logits : device_dl, in_place ? logits : dl, 1e-6));
      EXPECT_EQ(record, empty_record()) << "no label was out of range";
    }
  }
}

// The CPU's argmax rule, wherever a NaN falls among the lanes and warps: z[0] seeds the
// search even when NaN, a later NaN is passed over. Rows: NaN inside, NaN first, all
// NaN but one, no NaN.
TEST(CrossEntropyEmulatedNan, CountsHitsLikeCpu) {
  auto cpu = Context::make_cpu(1);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const Kernel kernel : {Kernel::WarpRows, Kernel::BlockRowsPacked, Kernel::BlockRowsOneByOne}) {
    const int64_t classes = kernel == Kernel::WarpRows ? 64 : kernel == Kernel::BlockRowsPacked ? 4096 : 4095;
    SCOPED_TRACE(::testing::Message() << name_of(kernel) << ", classes " << classes);
    const int64_t batch = 4;
    std::vector<float> logits(static_cast<size_t>(batch * classes), 0.0f);
    auto at = [&](int64_t r, int64_t c) -> float& { return logits[static_cast<size_t>(r * classes + c)]; };
    at(0, 5) = nan;
    at(0, 37) = 100.0f;
    at(1, 0) = nan;
    at(1, 37) = 100.0f;
    for (int64_t c = 0; c < classes; ++c) at(2, c) = c == 40 ? 3.0f : nan;
    at(3, 37) = 100.0f;
    const std::vector<int32_t> labels{37, 37, 40, 37};
    double want[2] = {0.0, 0.0}, got[2] = {0.0, 0.0};
    ops::softmax_cross_entropy(*cpu, logits.data(), labels.data(), batch, classes, 1.0f, nullptr, want);
    auto record = empty_record();
    emulated_cross_entropy<float>(kernel, logits.data(), labels.data(), batch, classes, 1.0f, nullptr, got, record);
    EXPECT_EQ(got[1], want[1]);
    EXPECT_EQ(want[1], 2.0);  // rows 0 and 3: row 1 has its NaN first, row 2 too
  }
}

// Bad labels are recorded (the lowest bad row, its value, the bound, the launch), and
// their rows add nothing and get zero gradients; the other rows are as the CPU's.
TEST(CrossEntropyEmulatedLabels, RecordsTheFirstBadLabelAndZeroesItsRow) {
  for (const Kernel kernel : {Kernel::WarpRows, Kernel::BlockRowsPacked, Kernel::BlockRowsOneByOne}) {
    const int64_t classes = kernel == Kernel::WarpRows ? 10 : kernel == Kernel::BlockRowsPacked ? 4096 : 4095;
    SCOPED_TRACE(::testing::Message() << name_of(kernel) << ", classes " << classes);
    const int64_t batch = 5;
    Rng rng(60);
    const auto logits = random_normal(rng, batch * classes);
    const std::vector<int32_t> labels{1, 2, -1, 3, static_cast<int32_t>(classes)};
    auto record = empty_record();
    auto dl = testing::nans(batch * classes);
    double got[2] = {0.0, 0.0};
    emulated_cross_entropy<float>(kernel, logits.data(), labels.data(), batch, classes, 1.0f, dl.data(), got, record);
    EXPECT_EQ(record[0], (2ULL << 32) | static_cast<uint32_t>(-1)) << "row 2, label -1: the lowest bad row";
    EXPECT_EQ(record[1], static_cast<unsigned long long>(classes));
    EXPECT_EQ(record[2], 7ULL) << "the launch that recorded";
    // The good rows alone, on the CPU.
    auto cpu = Context::make_cpu(1);
    const std::vector<int64_t> good{0, 1, 3};
    std::vector<float> good_logits;
    std::vector<int32_t> good_labels;
    for (const int64_t r : good) {
      good_logits.insert(good_logits.end(), logits.begin() + r * classes, logits.begin() + (r + 1) * classes);
      good_labels.push_back(labels[static_cast<size_t>(r)]);
    }
    std::vector<float> good_dl(good_logits.size());
    double want[2] = {0.0, 0.0};
    ops::softmax_cross_entropy(*cpu, good_logits.data(), good_labels.data(), 3, classes, 1.0f, good_dl.data(), want);
    EXPECT_NEAR(got[0], want[0], 1e-6 * std::fabs(want[0]));
    EXPECT_EQ(got[1], want[1]);
    for (int64_t r = 0; r < batch; ++r) {
      const auto row = std::vector<float>(dl.begin() + r * classes, dl.begin() + (r + 1) * classes);
      const auto it = std::find(good.begin(), good.end(), r);
      if (it == good.end()) {
        EXPECT_EQ(row, std::vector<float>(static_cast<size_t>(classes), 0.0f)) << "bad row " << r;
      } else {
        const int64_t g = it - good.begin();
        const auto want_row = std::vector<float>(good_dl.begin() + g * classes, good_dl.begin() + (g + 1) * classes);
        EXPECT_TRUE(testing::close_to_norm(row, want_row, 1e-6)) << "row " << r;
      }
    }
  }
}

}  // namespace
}  // namespace dtrain
