// CudaOptions::gemm_autotune (Note [GEMM autotuning], kernels/cuda/linear_lt.h): what
// the timing does and when, read from LinearLt's counters and the backend's host
// waits. Each shape that cuBLASLt offers two or more algorithms for is timed on its
// first call only, with one host wait; one offered a single algorithm is not timed (the
// count offered varies with the shape's epilogue and cuBLAS's version, so the tests
// read it rather than assume it). Without autotune nothing is timed, the host never
// waits, and the epilogue-free GEMMs stay on cuBLAS.
// The values on an autotuned context are tested against the CPU with the ops' own
// bounds in test_cuda_ops.cpp (the GEMM) and test_fused_ops.cpp (the linears).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/stored_types.h"

namespace dtrain {
namespace {

using testing::DeviceArray;
using testing::random_normal;
using testing::stored;
using testing::stored_nans;

class GemmAutotuneTest : public testing::GpuTest {};

struct Counts {
  int64_t offered, tuned, timed, waits, host_syncs, calls, plain;
};

Counts counts(Context& ctx) {
  const auto& backend = dynamic_cast<CudaBackend&>(ctx.backend());
  const LinearLt& lt = backend.linear_lt();
  return {lt.candidates_offered(), lt.tuned_plans(), lt.timed_candidates(), lt.tuning_syncs(),
          backend.host_syncs(),    lt.calls(),       lt.plain_calls()};
}

// One new shape's first call, between `before` and `after`: timed, with one host wait,
// where cuBLASLt offered it two algorithms or more; untimed, without a wait, otherwise.
void expect_first_call_timed(const Counts& before, const Counts& after) {
  const int64_t offered = after.offered - before.offered;
  ASSERT_GE(offered, 1) << "the shape was planned before, or cuBLASLt declined it";
  ::testing::Test::RecordProperty("candidates_offered", static_cast<int>(offered));
  const bool timed = offered >= 2;
  EXPECT_EQ(after.tuned - before.tuned, timed ? 1 : 0);
  EXPECT_GE(after.timed - before.timed, timed ? 1 : 0);
  EXPECT_LE(after.timed - before.timed, timed ? offered : 0);
  EXPECT_EQ(after.waits - before.waits, timed ? 1 : 0);
  EXPECT_EQ(after.host_syncs - before.host_syncs, after.waits - before.waits);
}

// GPT-2 124M's c_attn at 256 rows: the bias linear, its parameter gradients, and the
// classifier's input gradient as a plain GEMM (dx = dlogits wte), each once.
class Gpt2Shapes {
 public:
  explicit Gpt2Shapes(Context& ctx)
      : ctx_(ctx),
        rng_(70),
        x_(ctx, stored<bf16>(random_normal(rng_, kRows * kC))),
        w_(ctx, stored<bf16>(random_normal(rng_, 3 * kC * kC, 0.05))),
        b_(ctx, stored<bf16>(random_normal(rng_, 3 * kC, 0.5))),
        y_(ctx, stored_nans<bf16>(kRows * 3 * kC)),
        dy_(ctx, stored<bf16>(random_normal(rng_, kRows * 3 * kC))),
        dw_(ctx, random_normal(rng_, 3 * kC * kC, 0.1)),
        db_(ctx, random_normal(rng_, 3 * kC, 0.1)),
        dlogits_(ctx, stored<bf16>(random_normal(rng_, kRows * kVocab))),
        wte_(ctx, stored<bf16>(random_normal(rng_, kVocab * kC, 0.02))),
        dx_(ctx, stored_nans<bf16>(kRows * kC)) {}
  void forward() {
    ops::linear_forward(ctx_, x_.get(), w_.get(), b_.get(), nullptr, y_.get(), kRows, kC, 3 * kC,
                        LinearEpilogue::kBias);
  }
  void parameter_gradients() {
    ops::linear_parameter_gradients(ctx_, dy_.get(), x_.get(), dw_.get(), db_.get(), kRows, kC, 3 * kC);
  }
  void classifier_input_gradient() {
    ops::gemm(ctx_, false, false, kRows, kC, kVocab, 1.0f, dlogits_.get(), kVocab, wte_.get(), kC, 0.0f, dx_.get(),
              kC);
  }

 private:
  static constexpr int64_t kRows = 256, kC = 768, kVocab = 50304;
  Context& ctx_;
  Rng rng_;
  DeviceArray<bf16> x_, w_, b_, y_, dy_;
  DeviceArray<float> dw_, db_;
  DeviceArray<bf16> dlogits_, wte_, dx_;
};

TEST_F(GemmAutotuneTest, EachShapeIsTimedOnItsFirstCallAloneWithOneHostWait) {
  const auto ctx = testing::make_cuda_autotuned();
  Gpt2Shapes shapes(*ctx);
  const Counts start = counts(*ctx);
  shapes.forward();
  const Counts first = counts(*ctx);
  expect_first_call_timed(start, first);
  // The bias epilogue at a GPT-2 shape has many algorithms on any GPU dtrain targets.
  EXPECT_GE(first.offered - start.offered, 2);
  EXPECT_EQ(first.calls - start.calls, 1);  // the timing's calls are not the op's

  shapes.forward();
  const Counts again = counts(*ctx);
  EXPECT_EQ(again.offered, first.offered);
  EXPECT_EQ(again.tuned, first.tuned);
  EXPECT_EQ(again.timed, first.timed);
  EXPECT_EQ(again.host_syncs, first.host_syncs);
  EXPECT_EQ(again.calls - first.calls, 1);
}

// dW is copied aside and back within the one wait (its values are checked against the
// CPU in test_fused_ops.cpp, on a context like this one).
TEST_F(GemmAutotuneTest, AnAccumulatedOutputIsTimedWithinTheSameOneWait) {
  const auto ctx = testing::make_cuda_autotuned();
  Gpt2Shapes shapes(*ctx);
  const Counts start = counts(*ctx);
  shapes.parameter_gradients();
  const Counts first = counts(*ctx);
  expect_first_call_timed(start, first);
  shapes.parameter_gradients();
  EXPECT_EQ(counts(*ctx).waits, first.waits);
}

TEST_F(GemmAutotuneTest, PlainBf16GemmsTakeCublasLtAndAreTimedOnce) {
  const auto ctx = testing::make_cuda_autotuned();
  Gpt2Shapes shapes(*ctx);
  const Counts start = counts(*ctx);
  shapes.classifier_input_gradient();
  const Counts first = counts(*ctx);
  expect_first_call_timed(start, first);
  shapes.classifier_input_gradient();
  const Counts after = counts(*ctx);
  EXPECT_EQ(after.plain - start.plain, 2);
  EXPECT_EQ(after.waits, first.waits);
}

TEST_F(GemmAutotuneTest, WithoutItNothingIsTimedTheHostNeverWaitsAndPlainGemmsStayOnCublas) {
  const auto ctx = Context::make_cuda(CudaOptions{});
  Gpt2Shapes shapes(*ctx);
  const Counts start = counts(*ctx);
  shapes.forward();
  shapes.parameter_gradients();
  shapes.classifier_input_gradient();
  const Counts after = counts(*ctx);
  EXPECT_EQ(after.offered - start.offered, 2);  // the two cuBLASLt shapes, one algorithm each
  EXPECT_EQ(after.tuned, 0);
  EXPECT_EQ(after.timed, 0);
  EXPECT_EQ(after.waits, 0);
  EXPECT_EQ(after.host_syncs, start.host_syncs);
  EXPECT_EQ(after.plain, 0);
  EXPECT_EQ(after.calls - start.calls, 2);  // the bias linear and its gradients, untimed
}

}  // namespace
}  // namespace dtrain
