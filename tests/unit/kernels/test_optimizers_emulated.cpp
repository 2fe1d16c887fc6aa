// The CUDA optimizer kernels (kernels/cuda/optimizer_kernels.cuh), the very source the
// GPU runs, executed on the CPU by the SIMT emulator (simt_emulator.h) against the CPU
// op, the oracle. The kernels spell each float operation out as a rounded intrinsic in
// the CPU op's order, so that they compute the CPU's bits: checked here bit for bit,
// over several steps, for SGD (plain, momentum, Nesterov) and AdamW, with and without
// the bf16 copy written in the same pass. The grid is smaller than the elements, so
// every thread's grid-stride loop turns. tests/gpu/test_cuda_ops.cpp runs the kernels
// through the CUDA backend on a GPU.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kernels/context.h"
#include "kernels/dtype.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "tests/gpu/stored_types.h"
// Last: it defines the CUDA names (threadIdx, __global__, ...) as macros.
#include "tests/unit/kernels/simt_emulator.h"
#include "tests/unit/kernels/simt_storage.h"

#include "kernels/cuda/optimizer_kernels.cuh"

namespace dtrain {
namespace {

using testing::random_normal;
using testing::same_bits;
namespace optim = cuda::optim;

// Three blocks over n elements: each thread takes several (n / 768 or more).
constexpr simt::Dim3 kGrid{3, 1, 1};
constexpr simt::Dim3 kBlock{cuda::kBlockThreads, 1, 1};
constexpr int64_t kElements = 10'007;

std::vector<bf16> rounded(const std::vector<float>& x) {
  std::vector<bf16> out(x.size());
  for (size_t i = 0; i < x.size(); ++i) out[i] = float_to_bf16(x[i]);
  return out;
}

// The host half of kernels/cuda/optimizers.cu's sgd_update, launching on the emulator.
void emulated_sgd(float* params, const float* grads, float* momentum, int64_t n, const SgdHyper& h) {
  const float lr_wd = h.lr * h.weight_decay;
  if (momentum == nullptr) {
    simt::launch(kGrid, kBlock, 0, optim::sgd_kernel<optim::SgdKind::Plain>, params, grads, momentum, n, h.lr, lr_wd,
                 0.0f, h.grad_scale);
  } else if (h.nesterov) {
    simt::launch(kGrid, kBlock, 0, optim::sgd_kernel<optim::SgdKind::Nesterov>, params, grads, momentum, n, h.lr,
                 lr_wd, h.momentum, h.grad_scale);
  } else {
    simt::launch(kGrid, kBlock, 0, optim::sgd_kernel<optim::SgdKind::Momentum>, params, grads, momentum, n, h.lr,
                 lr_wd, h.momentum, h.grad_scale);
  }
}

TEST(OptimizersEmulated, SgdComputesTheCpuBitsOverSeveralSteps) {
  auto cpu = Context::make_cpu(1);
  // Each with and without a gradient scale (clipping's coefficient).
  const SgdHyper variants[] = {{0.1f, 0.9f, 0.01f, false},       {0.05f, 0.9f, 0.0f, true},
                               {0.2f, 0.0f, 0.001f, false},      {0.1f, 0.9f, 0.01f, false, 0.3f},
                               {0.05f, 0.9f, 0.0f, true, 0.77f}, {0.2f, 0.0f, 0.001f, false, 0.123f}};
  uint64_t seed = 110;
  for (const SgdHyper& h : variants) {
    SCOPED_TRACE(::testing::Message() << "lr=" << h.lr << " momentum=" << h.momentum << " wd=" << h.weight_decay
                                      << " nesterov=" << h.nesterov << " grad_scale=" << h.grad_scale);
    Rng rng(++seed);
    auto p = random_normal(rng, kElements);
    auto buf = random_normal(rng, kElements, 0.1);
    auto emulated_p = p, emulated_buf = buf;
    const bool with_buffer = h.momentum != 0.0f;
    for (int step = 0; step < 3; ++step) {
      const auto g = random_normal(rng, kElements);
      ops::sgd_update(*cpu, p.data(), g.data(), with_buffer ? buf.data() : nullptr, kElements, h);
      emulated_sgd(emulated_p.data(), g.data(), with_buffer ? emulated_buf.data() : nullptr, kElements, h);
    }
    EXPECT_TRUE(same_bits(emulated_p, p));
    EXPECT_TRUE(same_bits(emulated_buf, buf));  // untouched by both without momentum
  }
}

// Gradients of mixed scales, so that v spans many binades and eps matters for some
// elements; zero gradients too (m and v decay, the parameter only decays).
std::vector<float> adamw_gradients(Rng& rng, int64_t n) {
  auto g = random_normal(rng, n, 0.5);
  for (int64_t i = 0; i < n; i += 7) g[static_cast<size_t>(i)] *= 1e-6f;
  for (int64_t i = 3; i < n; i += 101) g[static_cast<size_t>(i)] = 0.0f;
  return g;
}

TEST(OptimizersEmulated, AdamWComputesTheCpuBitsAndItsBf16CopyOverSeveralSteps) {
  auto cpu = Context::make_cpu(1);
  for (const bool with_copy : {false, true}) {
    SCOPED_TRACE(with_copy ? "with the bf16 copy" : "fp32 alone");
    Rng rng(with_copy ? 321 : 120);
    auto p = random_normal(rng, kElements);
    std::vector<float> m(static_cast<size_t>(kElements), 0.0f), v(m.size(), 0.0f);
    auto emulated_p = p, emulated_m = m, emulated_v = v;
    // NaN-filled, so an element the kernel skipped shows.
    std::vector<bf16> copy(static_cast<size_t>(kElements), float_to_bf16(std::nanf("")));
    // Late steps too: 1 - beta2^t is then far from both 0 and 1.
    for (const int64_t step : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, int64_t{1000}}) {
      // Clipping's coefficient on some steps.
      const AdamWHyper h{3e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, step, step % 2 == 0 ? 0.37f : 1.0f};
      const auto g = adamw_gradients(rng, kElements);
      ops::adamw_update(*cpu, p.data(), g.data(), m.data(), v.data(), kElements, h);
      const optim::AdamWScalars k = optim::adamw_scalars(h);
      if (with_copy) {
        simt::launch(kGrid, kBlock, 0, optim::adamw_kernel<true, bf16>, emulated_p.data(), g.data(),
                     emulated_m.data(), emulated_v.data(), copy.data(), kElements, k);
      } else {
        simt::launch(kGrid, kBlock, 0, optim::adamw_kernel<false, bf16>, emulated_p.data(), g.data(),
                     emulated_m.data(), emulated_v.data(), static_cast<bf16*>(nullptr), kElements, k);
      }
      ASSERT_TRUE(same_bits(emulated_p, p)) << "step " << step;
      ASSERT_TRUE(same_bits(emulated_m, m)) << "step " << step;
      ASSERT_TRUE(same_bits(emulated_v, v)) << "step " << step;
      if (with_copy) {
        ASSERT_TRUE(same_bits(copy, rounded(p))) << "step " << step;
      }
    }
  }
}

}  // namespace
}  // namespace dtrain
