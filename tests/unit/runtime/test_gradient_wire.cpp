// comm.reduce_dtype through the runtime's wire (runtime/gradient_wire.h): the staging
// bytes by formula, and the gradient reducer with the bf16 wire on one rank giving
// round_bf16 of the fp32 gradients, through ops::convert on the CPU and on the
// asynchronous CPU device with staged collectives (work queued behind the host, as on
// a GPU: Note [Narrow gradient reduction]'s ordering).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <vector>

#include "comm/gradient_reducer.h"
#include "comm/self_communicator.h"
#include "comm/staging_communicator.h"
#include "kernels/context.h"
#include "kernels/dtype.h"
#include "kernels/errors.h"
#include "kernels/ops.h"
#include "runtime/gradient_wire.h"

namespace dtrain {
namespace {

TEST(GradientWire, StagingBytesByType) {
  EXPECT_EQ(gradient_wire_staging_bytes("fp32", 1000), 0);
  EXPECT_EQ(gradient_wire_staging_bytes("bf16", 1000), 2000);
  EXPECT_THROW(gradient_wire_staging_bytes("fp16", 1000), ConfigError);
  auto ctx = Context::make_cpu(1);
  EXPECT_EQ(allocate_gradient_wire_staging(*ctx, "fp32", 1000).data(), nullptr);
  EXPECT_FALSE(gradient_wire(*ctx, "fp32", Buffer()).has_value());
}

// Gradients of 3 layers in `ctx`'s memory, reduced on one rank through `comm` with the
// bf16 wire; returns them on the host next to the fp32 values they started from.
void expect_rounded_after_reduction(Context& ctx, Communicator& comm) {
  const std::vector<FlatRange> layers = {{0, 1000}, {1000, 24}, {1024, 3000}};
  const int64_t n = 4024;
  std::vector<float> fp32(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const float x = 0.37f * static_cast<float>(i);
    fp32[static_cast<size_t>(i)] = std::sin(x) * std::ldexp(1.0f, static_cast<int>(i % 9) - 4);
  }
  Buffer grads(ctx.allocator(), static_cast<size_t>(n) * sizeof(float), MemoryCategory::Grads);
  const Buffer staging = allocate_gradient_wire_staging(ctx, "bf16", n);
  ASSERT_EQ(staging.bytes(), static_cast<size_t>(2 * n));
  GradientReducer reducer(comm, grads.as<float>(), layers, 1500, gradient_wire(ctx, "bf16", staging));
  for (int step = 0; step < 2; ++step) {  // the second step reuses the staging buffer
    ops::copy_from_host(ctx, grads.data(), fp32.data(), fp32.size() * sizeof(float));
    for (int layer = 2; layer >= 0; --layer) reducer.on_layer_done(layer);
    reducer.finish();
    std::vector<float> out(fp32.size());
    ops::copy_to_host(ctx, out.data(), grads.data(), out.size() * sizeof(float));
    ctx.synchronize();
    int wrong = 0, rounded = 0;
    for (size_t i = 0; i < out.size(); ++i) {
      wrong += out[i] != round_bf16(fp32[i]);
      rounded += out[i] != fp32[i];
    }
    EXPECT_EQ(wrong, 0) << "step " << step;
    EXPECT_GT(rounded, 3000) << "the test's gradients should need rounding";
  }
}

TEST(GradientWire, OneRankReductionRoundsTheGradientsOnTheCpu) {
  auto ctx = Context::make_cpu(1);
  SelfCommunicator self;
  expect_rounded_after_reduction(*ctx, self);
}

TEST(GradientWire, OneRankReductionRoundsTheGradientsOnTheAsyncDeviceWithStaging) {
  auto ctx = Context::make_cpu_async(1);
  SelfCommunicator self;
  StagingCommunicator staged(self, *ctx);
  expect_rounded_after_reduction(*ctx, staged);
}

}  // namespace
}  // namespace dtrain
