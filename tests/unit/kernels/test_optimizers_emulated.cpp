// The CUDA optimizer kernels (kernels/cuda/optimizer_kernels.cuh), the very source the
// GPU runs, executed on the CPU by the SIMT emulator (simt_emulator.h) against the CPU
// op, the oracle. The kernels spell each float operation out as a rounded intrinsic in
// the CPU op's order, so that they compute the CPU's bits: checked here bit for bit,
// over several steps, for SGD (plain, momentum, Nesterov) and AdamW, with and without
// the bf16 copy written in the same pass, and both over decay spans in one launch per
// table of spans (Note [Optimizers over spans]) against the update span by span. The grid
// is smaller than the elements, so every thread's grid-stride loop turns.
// tests/gpu/test_cuda_ops.cpp runs the kernels through the CUDA backend on a GPU.
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

// Spans that alternate decay from `first` on, of the given sizes (0 included: left out
// of the tables), the first decaying when `decay_first`.
std::vector<DecaySpan> alternating_spans(int64_t first, const std::vector<int64_t>& sizes, bool decay_first) {
  std::vector<DecaySpan> spans;
  int64_t at = first;
  bool decay = decay_first;
  for (const int64_t size : sizes) {
    spans.push_back(DecaySpan{at, size, decay});
    at += size;
    decay = !decay;
  }
  return spans;
}

// A GPT-like run (one-element and empty spans among them), and more spans than one
// launch's table holds (three tables), from an offset into the buffers.
std::vector<std::vector<DecaySpan>> span_cases() {
  std::vector<int64_t> many;
  for (int i = 0; i < 2 * optim::kMaxLaunchSpans + 17; ++i) many.push_back(1 + (i * 37) % 61);
  return {alternating_spans(0, {1, 700, 3, 0, 2000, 5, 1, 4096, 37, 3163}, true), alternating_spans(11, many, false)};
}

TEST(OptimizersEmulated, SgdOverSpansComputesTheCpuBitsOfEachSpanInTurn) {
  auto cpu = Context::make_cpu(1);
  for (const auto& spans : span_cases()) {
    const int64_t n = spans.back().offset + spans.back().count;
    const std::vector<optim::SpanTable> tables = optim::span_tables(spans);
    ASSERT_FALSE(tables.empty());
    // Nesterov, plain momentum, and none (no buffer); with clipping's coefficient too.
    for (const SgdHyper& h : {SgdHyper{0.1f, 0.9f, 0.01f, true, 0.3f}, SgdHyper{0.05f, 0.9f, 0.02f, false},
                              SgdHyper{0.2f, 0.0f, 0.001f, false}}) {
      SCOPED_TRACE(::testing::Message() << spans.size() << " spans over " << n << " elements, momentum "
                                        << h.momentum << (h.nesterov ? " nesterov" : ""));
      const bool with_buffer = h.momentum != 0.0f;
      Rng rng(79);
      auto p = random_normal(rng, n);
      auto buf = random_normal(rng, n, 0.1);
      auto emulated_p = p, emulated_buf = buf;
      for (int step = 0; step < 3; ++step) {
        const auto g = random_normal(rng, n);
        for (const DecaySpan& span : spans) {
          if (span.count == 0) continue;
          SgdHyper span_h = h;
          if (!span.decay) span_h.weight_decay = 0.0f;
          const auto at = static_cast<size_t>(span.offset);
          ops::sgd_update(*cpu, p.data() + at, g.data() + at, with_buffer ? buf.data() + at : nullptr, span.count,
                          span_h);
        }
        const float lr_wd = h.lr * h.weight_decay, lr_wd_off = h.lr * 0.0f;
        float* momentum = with_buffer ? emulated_buf.data() : nullptr;
        for (const optim::SpanTable& t : tables) {
          if (!with_buffer) {
            simt::launch(kGrid, kBlock, 0, optim::sgd_spans_kernel<optim::SgdKind::Plain>, emulated_p.data(),
                         g.data(), momentum, h.lr, lr_wd, lr_wd_off, 0.0f, h.grad_scale, t);
          } else if (h.nesterov) {
            simt::launch(kGrid, kBlock, 0, optim::sgd_spans_kernel<optim::SgdKind::Nesterov>, emulated_p.data(),
                         g.data(), momentum, h.lr, lr_wd, lr_wd_off, h.momentum, h.grad_scale, t);
          } else {
            simt::launch(kGrid, kBlock, 0, optim::sgd_spans_kernel<optim::SgdKind::Momentum>, emulated_p.data(),
                         g.data(), momentum, h.lr, lr_wd, lr_wd_off, h.momentum, h.grad_scale, t);
          }
        }
        ASSERT_TRUE(same_bits(emulated_p, p)) << "step " << step;
        ASSERT_TRUE(same_bits(emulated_buf, buf)) << "step " << step;
      }
    }
  }
}

TEST(OptimizersEmulated, AdamWOverSpansComputesTheCpuBitsOfEachSpanInTurn) {
  auto cpu = Context::make_cpu(1);
  for (const auto& spans : span_cases()) {
    const int64_t n = spans.back().offset + spans.back().count;
    SCOPED_TRACE(::testing::Message() << spans.size() << " spans over " << n << " elements");
    const std::vector<optim::SpanTable> tables = optim::span_tables(spans);
    ASSERT_FALSE(tables.empty());
    for (const bool with_copy : {false, true}) {
      SCOPED_TRACE(with_copy ? "with the bf16 copy" : "fp32 alone");
      Rng rng(with_copy ? 77 : 78);
      auto p = random_normal(rng, n);
      std::vector<float> m(static_cast<size_t>(n), 0.0f), v(m.size(), 0.0f);
      auto emulated_p = p, emulated_m = m, emulated_v = v;
      std::vector<bf16> copy(static_cast<size_t>(n), float_to_bf16(std::nanf("")));
      const auto untouched_copy = copy;
      for (const int64_t step : {int64_t{1}, int64_t{2}, int64_t{3}}) {
        const AdamWHyper h{3e-3f, 0.9f, 0.999f, 1e-8f, 0.1f, step, step == 2 ? 0.37f : 1.0f};
        const auto g = adamw_gradients(rng, n);
        for (const DecaySpan& span : spans) {
          if (span.count == 0) continue;
          AdamWHyper span_h = h;
          if (!span.decay) span_h.weight_decay = 0.0f;
          const auto at = static_cast<size_t>(span.offset);
          ops::adamw_update(*cpu, p.data() + at, g.data() + at, m.data() + at, v.data() + at, span.count, span_h);
        }
        const optim::AdamWScalars k = optim::adamw_scalars(h);
        for (const optim::SpanTable& t : tables) {
          if (with_copy) {
            simt::launch(kGrid, kBlock, 0, optim::adamw_spans_kernel<true, bf16>, emulated_p.data(), g.data(),
                         emulated_m.data(), emulated_v.data(), copy.data(), k, t);
          } else {
            simt::launch(kGrid, kBlock, 0, optim::adamw_spans_kernel<false, bf16>, emulated_p.data(), g.data(),
                         emulated_m.data(), emulated_v.data(), static_cast<bf16*>(nullptr), k, t);
          }
        }
        ASSERT_TRUE(same_bits(emulated_p, p)) << "step " << step;
        ASSERT_TRUE(same_bits(emulated_m, m)) << "step " << step;
        ASSERT_TRUE(same_bits(emulated_v, v)) << "step " << step;
      }
      // The copy: every spanned element rounded, the elements before the first span
      // not written.
      auto want_copy = rounded(p);
      const auto first = static_cast<size_t>(spans.front().offset);
      std::copy(untouched_copy.begin(), untouched_copy.begin() + static_cast<std::ptrdiff_t>(first), want_copy.begin());
      if (with_copy) {
        EXPECT_TRUE(same_bits(copy, want_copy));
      }
    }
  }
}

// The tables' cut: kMaxLaunchSpans spans each, empty spans left out, and none at all
// for spans with a gap or an overlap between them (the op then goes span by span).
TEST(OptimizersEmulated, SpanTablesHoldFollowingSpansAndRefuseGaps) {
  // kMaxLaunchSpans + 1 spans of 2 elements from 3 on, and an empty one (entry 5).
  std::vector<int64_t> sizes(static_cast<size_t>(optim::kMaxLaunchSpans + 2), 2);
  sizes[5] = 0;
  const auto tables = optim::span_tables(alternating_spans(3, sizes, true));
  ASSERT_EQ(tables.size(), 2u);
  EXPECT_EQ(tables[0].count, optim::kMaxLaunchSpans);
  EXPECT_EQ(tables[0].first, 3);
  EXPECT_EQ(tables[0].end[0], 5);
  EXPECT_EQ(tables[0].end[optim::kMaxLaunchSpans - 1], 3 + 2 * optim::kMaxLaunchSpans);
  const auto decays = [&](int s) { return ((tables[0].decays[s / 32] >> (s % 32)) & 1u) != 0u; };
  EXPECT_TRUE(decays(4));   // entry 4
  EXPECT_TRUE(decays(5));   // entry 6: the empty entry 5 is left out
  EXPECT_FALSE(decays(6));  // entry 7
  EXPECT_EQ(tables[1].count, 1);
  EXPECT_EQ(tables[1].first, 3 + 2 * optim::kMaxLaunchSpans);
  EXPECT_EQ(tables[1].end[0], 5 + 2 * optim::kMaxLaunchSpans);
  EXPECT_TRUE(optim::span_tables({DecaySpan{0, 2, true}, DecaySpan{3, 2, false}}).empty());  // a gap
  EXPECT_TRUE(optim::span_tables({DecaySpan{0, 2, true}, DecaySpan{1, 2, false}}).empty());  // an overlap
  EXPECT_TRUE(optim::span_tables({}).empty());
}

}  // namespace
}  // namespace dtrain
