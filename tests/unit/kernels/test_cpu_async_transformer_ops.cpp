// The transformer ops on the cpu-async device: the same CPU functions run in the same
// order behind the queue, so every output must have the CPU backend's bits; ops that
// take workspace must take what their formula declared (the worker's allocator checks).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu_async/cpu_async_backend.h"
#include "kernels/dropout_hash.h"
#include "kernels/errors.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

std::vector<float> random_normal(Rng& rng, size_t n) {
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.normal());
  return v;
}

template <class T>
Buffer upload(Context& ctx, const std::vector<T>& values) {
  Buffer b(ctx.allocator(), values.size() * sizeof(T), MemoryCategory::Other);
  ops::copy_from_host(ctx, b.data(), values.data(), values.size() * sizeof(T));
  return b;
}

std::vector<float> download(Context& ctx, const Buffer& b) {
  std::vector<float> out(b.bytes() / sizeof(float));
  ops::copy_to_host(ctx, out.data(), b.data(), b.bytes());
  return out;
}

Buffer floats(Context& ctx, size_t n) { return upload(ctx, std::vector<float>(n, 0.0f)); }

// A GPT-2 block's ops, forward then backward, queued while the device is held so that
// the workspace is taken (and grows) before any op runs.
TEST(CpuAsyncTransformerOps, ForwardAndBackwardGiveTheCpuBackendsBits) {
  const int64_t B = 3, T = 24, C = 32, H = 4, V = 11;
  Rng rng(21);
  std::vector<int32_t> tokens(B * T);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(V));
  const std::vector<int64_t> ids{40, 2, 17};
  const auto wte = random_normal(rng, V * C), wpe = random_normal(rng, T * C);
  const auto ln_w = random_normal(rng, C), ln_b = random_normal(rng, C);
  const auto qkv_in = random_normal(rng, B * T * 3 * C), dout = random_normal(rng, B * T * C);
  const uint64_t key = dropout_key(5, 1, 2);

  auto run = [&](Context& ctx, bool hold_device) {
    Buffer gtok = upload(ctx, tokens), gids = upload(ctx, ids), gwte = upload(ctx, wte), gwpe = upload(ctx, wpe);
    Buffer gw = upload(ctx, ln_w), gb = upload(ctx, ln_b), gqkv = upload(ctx, qkv_in), gdout = upload(ctx, dout);
    const size_t n = B * T * C;
    Buffer x = floats(ctx, n), y = floats(ctx, n), mean = floats(ctx, B * T), rstd = floats(ctx, B * T);
    Buffer g = floats(ctx, n), drop = floats(ctx, n), att = floats(ctx, n), probs = floats(ctx, B * H * T * T);
    Buffer dqkv = floats(ctx, B * T * 3 * C), dx = floats(ctx, n), dy = floats(ctx, n);
    Buffer dw = floats(ctx, C), db = floats(ctx, C), dwte = floats(ctx, V * C), dwpe = floats(ctx, T * C);
    ctx.release_workspace();
    {
      std::unique_ptr<CpuAsyncHold> hold = hold_device ? std::make_unique<CpuAsyncHold>(ctx) : nullptr;
      ops::embedding_forward(ctx, gtok.as<int32_t>(), gwte.as<float>(), gwpe.as<float>(), x.as<float>(), B, T, C, V);
      ops::layernorm_forward(ctx, x.as<float>(), gw.as<float>(), gb.as<float>(), y.as<float>(), mean.as<float>(),
                             rstd.as<float>(), B * T, C);
      ops::gelu_forward(ctx, y.as<float>(), g.as<float>(), n);
      ops::dropout_forward(ctx, g.as<float>(), drop.as<float>(), B, T * C, gids.as<int64_t>(), key, 0.25f);
      ops::attention_forward(ctx, gqkv.as<float>(), att.as<float>(), probs.as<float>(), B, T, C, H);
      ops::add(ctx, drop.as<float>(), att.as<float>(), drop.as<float>(), n);
      ops::scale(ctx, drop.as<float>(), n, 0.5f);
      ops::attention_backward(ctx, gdout.as<float>(), gqkv.as<float>(), att.as<float>(), probs.as<float>(), dqkv.as<float>(), B, T,
                              C, H);
      ops::dropout_backward(ctx, gdout.as<float>(), dy.as<float>(), B, T * C, gids.as<int64_t>(), key, 0.25f);
      ops::gelu_backward(ctx, y.as<float>(), dy.as<float>(), dy.as<float>(), n);
      ops::layernorm_backward(ctx, dy.as<float>(), x.as<float>(), gw.as<float>(), mean.as<float>(),
                              rstd.as<float>(), dx.as<float>(), dw.as<float>(), db.as<float>(), B * T, C, false);
      ops::embedding_backward(ctx, dx.as<float>(), gtok.as<int32_t>(), dwte.as<float>(), dwpe.as<float>(), B, T,
                              C, V);
    }
    std::vector<std::vector<float>> out;
    for (const Buffer* b : {&x, &y, &mean, &rstd, &g, &drop, &att, &probs, &dqkv, &dy, &dx, &dw, &db, &dwte, &dwpe}) {
      out.push_back(download(ctx, *b));
    }
    return out;
  };
  auto cpu = Context::make_cpu(2);
  auto async = Context::make_cpu_async(2);
  EXPECT_EQ(ops::attention_workspace_bytes(*async, B, T, C, H), ops::attention_workspace_bytes(*cpu, B, T, C, H));
  EXPECT_EQ(ops::embedding_backward_workspace_bytes(*async, B, T, C, V),
            ops::embedding_backward_workspace_bytes(*cpu, B, T, C, V));
  const auto a = run(*cpu, false), b = run(*async, true);
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "output " << i);
    ASSERT_EQ(a[i].size(), b[i].size());
    EXPECT_EQ(0, std::memcmp(a[i].data(), b[i].data(), a[i].size() * sizeof(float)));
  }
}

std::vector<uint8_t> download_bytes(Context& ctx, const Buffer& b) {
  std::vector<uint8_t> out(b.bytes());
  ops::copy_to_host(ctx, out.data(), b.data(), b.bytes());
  return out;
}

std::vector<bf16> random_bf16(Rng& rng, size_t n) {
  std::vector<bf16> v(n);
  for (bf16& x : v) x = float_to_bf16(static_cast<float>(rng.normal()));
  return v;
}

// A GPT-2 block and head in bf16 (Note [bf16 storage]): the GEMMs on bf16 inputs
// (bf16 and fp32 C) and the bf16 attention take workspace, which the worker's
// allocator checks against what each op declared.
TEST(CpuAsyncTransformerOps, Bf16ForwardAndBackwardGiveTheCpuBackendsBits) {
  const int64_t B = 2, T = 16, C = 48, H = 4, V = 67, BT = B * T;
  Rng rng(22);
  std::vector<int32_t> tokens(BT);
  for (auto& t : tokens) t = static_cast<int32_t>(rng.below(V));
  const std::vector<int64_t> ids{9, 4};
  const auto wte = random_bf16(rng, V * C), wpe = random_bf16(rng, T * C);
  const auto ln_w = random_bf16(rng, C), ln_b = random_bf16(rng, C);
  const auto w_qkv = random_bf16(rng, 3 * C * C), b_qkv = random_bf16(rng, 3 * C);
  const uint64_t key = dropout_key(5, 1, 2);

  auto run = [&](Context& ctx, bool hold_device) {
    Buffer gtok = upload(ctx, tokens), gids = upload(ctx, ids), gwte = upload(ctx, wte), gwpe = upload(ctx, wpe);
    Buffer gw = upload(ctx, ln_w), gb = upload(ctx, ln_b), gwq = upload(ctx, w_qkv), gbq = upload(ctx, b_qkv);
    auto halves = [&](size_t n) { return upload(ctx, std::vector<bf16>(n, bf16{0})); };
    Buffer x = halves(BT * C), y = halves(BT * C), qkv = halves(BT * 3 * C), att = halves(BT * C);
    Buffer probs = halves(B * H * T * T), g = halves(BT * C), drop = halves(BT * C), logits = halves(BT * V);
    Buffer dx = halves(BT * C), dqkv = halves(BT * 3 * C), datt = halves(BT * C), dy = halves(BT * C);
    Buffer mean = floats(ctx, BT), rstd = floats(ctx, BT), dw = floats(ctx, C), db = floats(ctx, C);
    Buffer dwq = floats(ctx, 3 * C * C), dbq = floats(ctx, 3 * C), dwte = floats(ctx, V * C), dwpe = floats(ctx, T * C);
    Buffer lnf = floats(ctx, BT * C);
    Buffer labels = upload(ctx, tokens), stats = upload(ctx, std::vector<double>{0.0, 0.0});
    ctx.release_workspace();
    {
      std::unique_ptr<CpuAsyncHold> hold = hold_device ? std::make_unique<CpuAsyncHold>(ctx) : nullptr;
      ops::embedding_forward(ctx, gtok.as<int32_t>(), gwte.as<bf16>(), gwpe.as<bf16>(), x.as<bf16>(), B, T, C, V);
      ops::layernorm_forward(ctx, x.as<bf16>(), gw.as<bf16>(), gb.as<bf16>(), y.as<bf16>(), mean.as<float>(),
                             rstd.as<float>(), BT, C);
      ops::gemm(ctx, false, true, BT, 3 * C, C, 1.0f, y.as<bf16>(), C, gwq.as<bf16>(), C, 0.0f, qkv.as<bf16>(), 3 * C);
      ops::add_bias(ctx, qkv.as<bf16>(), gbq.as<bf16>(), BT, 3 * C, 1);
      ops::attention_forward(ctx, qkv.as<bf16>(), att.as<bf16>(), probs.as<bf16>(), B, T, C, H);
      ops::gelu_forward(ctx, att.as<bf16>(), g.as<bf16>(), BT * C);
      ops::dropout_forward(ctx, g.as<bf16>(), drop.as<bf16>(), B, T * C, gids.as<int64_t>(), key, 0.25f);
      ops::add(ctx, drop.as<bf16>(), x.as<bf16>(), drop.as<bf16>(), BT * C);
      ops::gemm(ctx, false, true, BT, V, C, 1.0f, drop.as<bf16>(), C, gwte.as<bf16>(), C, 0.0f, logits.as<bf16>(), V);
      ops::softmax_cross_entropy(ctx, logits.as<bf16>(), labels.as<int32_t>(), BT, V, 1.0f / BT, logits.as<bf16>(),
                                 stats.as<double>(), 1.0 / T);
      ops::gemm(ctx, false, false, BT, C, V, 1.0f, logits.as<bf16>(), V, gwte.as<bf16>(), C, 0.0f, dy.as<bf16>(), C);
      ops::gemm(ctx, true, false, V, C, BT, 1.0f, logits.as<bf16>(), V, drop.as<bf16>(), C, 1.0f, dwte.as<float>(), C);
      ops::dropout_backward(ctx, dy.as<bf16>(), datt.as<bf16>(), B, T * C, gids.as<int64_t>(), key, 0.25f);
      ops::gelu_backward(ctx, att.as<bf16>(), datt.as<bf16>(), datt.as<bf16>(), BT * C);
      ops::attention_backward(ctx, datt.as<bf16>(), qkv.as<bf16>(), att.as<bf16>(), probs.as<bf16>(), dqkv.as<bf16>(), B, T, C, H);
      ops::bias_backward(ctx, dqkv.as<bf16>(), dbq.as<float>(), BT, 3 * C, 1);
      ops::gemm(ctx, true, false, 3 * C, C, BT, 1.0f, dqkv.as<bf16>(), 3 * C, y.as<bf16>(), C, 1.0f, dwq.as<float>(), C);
      ops::gemm(ctx, false, false, BT, C, 3 * C, 1.0f, dqkv.as<bf16>(), 3 * C, gwq.as<bf16>(), C, 0.0f, dx.as<bf16>(),
                C);
      ops::layernorm_backward(ctx, dx.as<bf16>(), x.as<bf16>(), gw.as<bf16>(), mean.as<float>(), rstd.as<float>(),
                              dy.as<bf16>(), dw.as<float>(), db.as<float>(), BT, C, true);
      ops::embedding_backward(ctx, dy.as<bf16>(), gtok.as<int32_t>(), dwte.as<float>(), dwpe.as<float>(), B, T, C, V);
      ops::convert(ctx, dy.as<bf16>(), lnf.as<float>(), BT * C);
    }
    std::vector<std::vector<uint8_t>> out;
    for (const Buffer* b : {&x, &y, &qkv, &att, &probs, &g, &drop, &logits, &dx, &dqkv, &datt, &dy, &mean, &rstd, &dw,
                            &db, &dwq, &dbq, &dwte, &dwpe, &lnf, &stats}) {
      out.push_back(download_bytes(ctx, *b));
    }
    return out;
  };
  auto cpu = Context::make_cpu(2);
  auto async = Context::make_cpu_async(2);
  EXPECT_EQ(ops::attention_workspace_bytes(*async, B, T, C, H, DType::kBF16),
            ops::attention_workspace_bytes(*cpu, B, T, C, H, DType::kBF16));
  EXPECT_EQ(ops::gemm_workspace_bytes(*async, BT, V, C, DType::kBF16, DType::kBF16),
            ops::gemm_workspace_bytes(*cpu, BT, V, C, DType::kBF16, DType::kBF16));
  EXPECT_GT(ops::gemm_workspace_bytes(*async, BT, V, C, DType::kBF16, DType::kBF16), 0u);
  const auto a = run(*cpu, false), b = run(*async, true);
  for (size_t i = 0; i < a.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "output " << i);
    EXPECT_EQ(a[i], b[i]);
  }
}

TEST(CpuAsyncTransformerOps, AnOutOfRangeTokenSurfacesAsDataErrorAtTheNextSynchronization) {
  auto ctx = Context::make_cpu_async(1);
  const int64_t B = 1, T = 3, C = 2, V = 4;
  Buffer tok = upload(*ctx, std::vector<int32_t>{0, 4, 1});
  Buffer wte = floats(*ctx, V * C), wpe = floats(*ctx, T * C), y = floats(*ctx, B * T * C);
  EXPECT_NO_THROW(ops::embedding_forward(*ctx, tok.as<int32_t>(), wte.as<float>(), wpe.as<float>(), y.as<float>(),
                                         B, T, C, V));
  EXPECT_THROW(ctx->synchronize(), DataError);
}

}  // namespace
}  // namespace dtrain
