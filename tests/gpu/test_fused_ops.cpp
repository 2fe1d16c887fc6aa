// The fused ops of kernels/ops.h on the CUDA context, in fp32 and bf16
// (tests/gpu/stored_types.h), against the CPU's fused op (the oracle, itself tested
// bit for bit against the unfused chain in tests/unit/kernels/test_fused_ops.cpp), and
// against the CUDA chain they replace:
//   add_layernorm_forward   the sum: equal bits (one float operation per element);
//                           y and the row statistics: LayerNorm forward's 2e-5
//                           (test_transformer_ops.cpp); and against the CUDA add then
//                           layernorm_forward: equal bits (the contract, Note [Fused
//                           residual LayerNorm]).
//   softmax_cross_entropy   already llm.c's fused classifier (Note [Fused classifier],
//                           kernels/cuda/cross_entropy.cu): test_cuda_ops.cpp checks
//                           its values in place; here, that a GPT-sized call in place
//                           takes no device memory beyond its per-row workspace, so
//                           no probabilities are materialised.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/context.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/stored_types.h"

namespace dtrain {
namespace {

using testing::all_close;
using testing::close_relative;
using testing::DeviceArray;
using testing::exactly;
using testing::nans;
using testing::random_normal;
using testing::stored;
using testing::stored_nans;

template <class T>
class FusedOpsIn : public testing::CudaAgainstCpuTest {};
TYPED_TEST_SUITE(FusedOpsIn, testing::StoredTypes, testing::StoredTypeNames);

struct RowsCase {
  int64_t rows, channels;
};
// One channel, widths below, at and above a warp, GPT-2's 768, and many rows.
const RowsCase kRowsCases[] = {{1, 1}, {3, 5}, {17, 32}, {40, 33}, {64, 768}, {5003, 40}};

TYPED_TEST(FusedOpsIn, AddLayerNormMatchesCpuAndIsTheCudaChainBitForBit) {
  using T = TypeParam;
  Rng rng(41);
  for (const RowsCase& c : kRowsCases) {
    SCOPED_TRACE(::testing::Message() << "rows=" << c.rows << " channels=" << c.channels);
    const int64_t n = c.rows * c.channels;
    const auto a = stored<T>(random_normal(rng, n, 0.3));
    const auto b = stored<T>(random_normal(rng, n, 2.0, 3.0));
    const auto w = stored<T>(random_normal(rng, c.channels, 0.5, 1.0));
    const auto bias = stored<T>(random_normal(rng, c.channels, 0.5));

    std::vector<T> res(static_cast<size_t>(n)), y(res.size());
    std::vector<float> mean(static_cast<size_t>(c.rows)), rstd(mean.size());
    ops::add_layernorm_forward(this->cpu(), a.data(), b.data(), res.data(), w.data(), bias.data(), y.data(),
                               mean.data(), rstd.data(), c.rows, c.channels);

    // The fused op, with the sum written over a (as the GPT does).
    DeviceArray<T> ga(this->gpu(), a), gb(this->gpu(), b), gw(this->gpu(), w), gbias(this->gpu(), bias);
    DeviceArray<T> gy(this->gpu(), stored_nans<T>(n));
    DeviceArray<float> gmean(this->gpu(), nans(c.rows)), grstd(this->gpu(), nans(c.rows));
    ops::add_layernorm_forward(this->gpu(), ga.get(), gb.get(), ga.get(), gw.get(), gbias.get(), gy.get(),
                               gmean.get(), grstd.get(), c.rows, c.channels);
    EXPECT_TRUE(exactly(ga.to_host(), res));
    EXPECT_TRUE(close_relative(gy.to_host(), y, 2e-5));
    EXPECT_TRUE(all_close(gmean.to_host(), mean, 2e-5));
    EXPECT_TRUE(all_close(grstd.to_host(), rstd, 2e-5));

    // The CUDA chain it replaces.
    DeviceArray<T> ca(this->gpu(), a), cb(this->gpu(), b), cy(this->gpu(), stored_nans<T>(n));
    DeviceArray<float> cmean(this->gpu(), nans(c.rows)), crstd(this->gpu(), nans(c.rows));
    ops::add(this->gpu(), ca.get(), cb.get(), ca.get(), n);
    ops::layernorm_forward(this->gpu(), ca.get(), gw.get(), gbias.get(), cy.get(), cmean.get(), crstd.get(), c.rows,
                           c.channels);
    EXPECT_TRUE(exactly(gy.to_host(), cy.to_host()));
    EXPECT_TRUE(exactly(gmean.to_host(), cmean.to_host()));
    EXPECT_TRUE(exactly(grstd.to_host(), crstd.to_host()));
  }
}

TYPED_TEST(FusedOpsIn, ClassifierInPlaceTakesOnlyItsPerRowWorkspace) {
  using T = TypeParam;
  const int64_t rows = 256, vocab = 50257;  // GPT-2's vocabulary
  Rng rng(42);
  DeviceArray<T> glogits(this->gpu(), stored<T>(random_normal(rng, rows * vocab, 2.0)));
  std::vector<int32_t> labels(static_cast<size_t>(rows));
  for (int32_t& l : labels) l = static_cast<int32_t>(rng.below(vocab));
  DeviceArray<int32_t> glabels(this->gpu(), labels);
  DeviceArray<double> gstats(this->gpu(), std::vector<double>{0.0, 0.0});
  const size_t declared = ops::softmax_cross_entropy_workspace_bytes(this->gpu(), rows);
  // A row of probabilities alone would take more than the whole declared workspace.
  ASSERT_LT(declared, static_cast<size_t>(vocab) * sizeof(T));
  this->gpu().release_workspace();
  this->gpu().synchronize();
  Allocator& alloc = this->gpu().allocator();
  const size_t before = alloc.stats().in_use;
  alloc.reset_peak();
  ops::softmax_cross_entropy(this->gpu(), glogits.get(), glabels.get(), rows, vocab, 1.0f / rows, glogits.get(),
                             gstats.get(), 1.0);
  this->gpu().synchronize();
  EXPECT_LE(alloc.stats().peak - before, declared);
  const auto stats = gstats.to_host();
  EXPECT_TRUE(std::isfinite(stats[0]) && stats[0] > 0.0);
}

}  // namespace
}  // namespace dtrain
