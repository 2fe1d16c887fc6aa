// CudaFusions (kernels/context.h): each switch decides its own op's path and nothing
// else. With one switch off, its op runs the chain it replaced (the fused path's count
// stays) while the other four take their fused paths (their counts move), at GPT-2
// 124M's bf16 shapes, where every fused path takes the shape. The values of both paths
// are tested against the CPU where each op is (test_fused_ops.cpp and
// test_transformer_ops.cpp run the linears and LayerNorm's backward on a context with
// every switch off too; test_cuda_ops.cpp compares the span launch with the update span
// by span); here, the bits the Notes promise between them: LayerNorm's dx is the rows
// kernel's either way (Note [Fused LayerNorm backward]: the same arithmetic per row).
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/flat_range.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/gpu_test.h"
#include "tests/gpu/stored_types.h"

namespace dtrain {
namespace {

using testing::DeviceArray;
using testing::exactly;
using testing::norm_close;
using testing::random_normal;
using testing::stored;
using testing::stored_nans;

constexpr int kFusions = 5;
const char* const kNames[kFusions] = {"gelu_epilogue", "gelu_backward", "bias_gradient", "layernorm_backward",
                                      "optimizer_spans"};

// Every switch on but `off` (-1: all on).
CudaFusions all_but(int off) {
  CudaFusions f;
  bool* switches[kFusions] = {&f.gelu_epilogue, &f.gelu_backward, &f.bias_gradient, &f.layernorm_backward,
                              &f.optimizer_spans};
  if (off >= 0) *switches[off] = false;
  return f;
}

// How often each fused path has run on ctx, in kNames' order.
std::array<int64_t, kFusions> fused_paths_taken(Context& ctx) {
  const auto& backend = dynamic_cast<CudaBackend&>(ctx.backend());
  const LinearLt& lt = backend.linear_lt();
  return {lt.gelu_calls(), lt.gelu_backward_calls(), lt.parameter_gradient_calls(),
          backend.fused_layernorm_backward_calls(), backend.optimizer_span_launches()};
}

// One call of each op a switch governs, at GPT-2 124M's bf16 shapes (256 rows).
void call_each_fused_op(Context& ctx) {
  const int64_t rows = 256, C = 768;
  Rng rng(60);
  DeviceArray<bf16> x(ctx, stored<bf16>(random_normal(rng, rows * C)));
  DeviceArray<bf16> w_fc(ctx, stored<bf16>(random_normal(rng, 4 * C * C, 0.05)));
  DeviceArray<bf16> b_fc(ctx, stored<bf16>(random_normal(rng, 4 * C, 0.5)));
  DeviceArray<bf16> pre(ctx, stored_nans<bf16>(rows * 4 * C)), h(ctx, stored_nans<bf16>(rows * 4 * C));
  ops::linear_forward(ctx, x.get(), w_fc.get(), b_fc.get(), pre.get(), h.get(), rows, C, 4 * C,
                      LinearEpilogue::kBiasGelu);

  DeviceArray<bf16> dy(ctx, stored<bf16>(random_normal(rng, rows * C)));
  DeviceArray<bf16> w_proj(ctx, stored<bf16>(random_normal(rng, C * 4 * C, 0.05)));
  DeviceArray<bf16> dpre(ctx, stored_nans<bf16>(rows * 4 * C));
  ops::linear_backward_input_gelu(ctx, dy.get(), w_proj.get(), pre.get(), dpre.get(), rows, 4 * C, C);

  DeviceArray<float> dw(ctx, std::vector<float>(static_cast<size_t>(4 * C * C), 0.0f));
  DeviceArray<float> db(ctx, std::vector<float>(static_cast<size_t>(4 * C), 0.0f));
  ops::linear_parameter_gradients(ctx, dpre.get(), x.get(), dw.get(), db.get(), rows, C, 4 * C);

  DeviceArray<bf16> ln_w(ctx, stored<bf16>(random_normal(rng, C, 0.5, 1.0)));
  DeviceArray<float> mean(ctx, random_normal(rng, rows, 0.1)), rstd(ctx, random_normal(rng, rows, 0.1, 1.0));
  DeviceArray<bf16> dx(ctx, stored_nans<bf16>(rows * C));
  DeviceArray<float> dln_w(ctx, std::vector<float>(static_cast<size_t>(C), 0.0f)), dln_b(ctx, dln_w.to_host());
  ops::layernorm_backward(ctx, dy.get(), x.get(), ln_w.get(), mean.get(), rstd.get(), dx.get(), dln_w.get(),
                          dln_b.get(), rows, C, /*accumulate_dx=*/false);

  const std::vector<DecaySpan> spans = {{0, 1000, true}, {1000, 24, false}, {1024, 3000, true}};
  const int64_t n = 4024;
  DeviceArray<float> p(ctx, random_normal(rng, n)), g(ctx, random_normal(rng, n, 0.5));
  DeviceArray<float> m(ctx, std::vector<float>(static_cast<size_t>(n), 0.0f)), v(ctx, m.to_host());
  DeviceArray<bf16> copy(ctx, stored_nans<bf16>(n));
  ops::adamw_update_spans(ctx, p.get(), g.get(), m.get(), v.get(), spans,
                          AdamWHyper{6e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1, 1.0f}, copy.get());
  ctx.synchronize();
}

class CudaFusionsTest : public testing::GpuTest {};

TEST_F(CudaFusionsTest, Bf16EachSwitchTurnsOffItsOwnFusedPathAlone) {
  for (int off = -1; off < kFusions; ++off) {
    SCOPED_TRACE(off < 0 ? std::string("all on") : std::string(kNames[off]) + " off");
    CudaOptions options;
    options.fusions = all_but(off);
    auto ctx = Context::make_cuda(options);
    const auto before = fused_paths_taken(*ctx);
    call_each_fused_op(*ctx);
    const auto after = fused_paths_taken(*ctx);
    for (int i = 0; i < kFusions; ++i) {
      EXPECT_EQ(after[i] - before[i], i == off ? 0 : 1) << kNames[i];
    }
  }
}

TEST_F(CudaFusionsTest, Bf16LayerNormBackwardGivesTheRowsKernelsDxEitherWay) {
  const int64_t rows = 4099, C = 768;  // a last chunk short of its rows
  Rng rng(61);
  const auto x = stored<bf16>(random_normal(rng, rows * C, 2.0, -1.0));
  const auto w = stored<bf16>(random_normal(rng, C, 0.5, 1.0));
  const auto dy = stored<bf16>(random_normal(rng, rows * C));
  const auto dx0 = stored<bf16>(random_normal(rng, rows * C));
  const auto mean = random_normal(rng, rows, 0.3, -1.0), rstd = random_normal(rng, rows, 0.05, 0.5);
  std::vector<std::vector<bf16>> dxs;
  std::vector<std::vector<float>> dws, dbs;
  for (const bool fused : {true, false}) {
    CudaOptions options;
    options.fusions.layernorm_backward = fused;
    auto ctx = Context::make_cuda(options);
    DeviceArray<bf16> gx(*ctx, x), gw(*ctx, w), gdy(*ctx, dy), gdx(*ctx, dx0);
    DeviceArray<float> gmean(*ctx, mean), grstd(*ctx, rstd);
    DeviceArray<float> gdw(*ctx, std::vector<float>(static_cast<size_t>(C), 0.5f)), gdb(*ctx, gdw.to_host());
    ops::layernorm_backward(*ctx, gdy.get(), gx.get(), gw.get(), gmean.get(), grstd.get(), gdx.get(), gdw.get(),
                            gdb.get(), rows, C, /*accumulate_dx=*/true);
    dxs.push_back(gdx.to_host());
    dws.push_back(gdw.to_host());
    dbs.push_back(gdb.to_host());
  }
  EXPECT_TRUE(exactly(dxs[0], dxs[1]));
  // The parameter sums: float per warp against double (the Note's bound, under 1e-5 of
  // the terms' magnitudes; test_transformer_ops.cpp holds both to the CPU's within 1e-4).
  EXPECT_TRUE(norm_close(dws[0], dws[1], 1e-4));
  EXPECT_TRUE(norm_close(dbs[0], dbs[1], 1e-4));
}

}  // namespace
}  // namespace dtrain
