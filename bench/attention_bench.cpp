// Times causal attention's forward and backward on a GPU, per path the CUDA backend
// can take (Note [Own fused attention], kernels/cuda/flash_attention.h): cuDNN's fused
// SDPA, dtrain's own fused kernels, and the unfused GEMMs that keep the probabilities.
// Own fused is the default wherever cuDNN declines, fp32 included, for the memory it
// saves; this says what that costs in time against unfused, and how far the own
// kernels are from cuDNN's where both run. It checks nothing (the GPU tests do);
// scripts/gpu-check.sh records its lines.
// Usage: attention_bench [REPEATS]   (default 10; the median of REPEATS timed calls)
// Exit 77 where no CUDA device is visible.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/memory.h"
#include "kernels/ops.h"
#include "kernels/rng.h"

namespace dtrain {
namespace {

struct Shape {
  const char* name;
  int64_t batch, seq, channels, heads;
};

// One forward and backward's worth of device arrays, filled with N(0, 1) values.
struct Arrays {
  Buffer qkv, out, dout, dqkv, saved;
  Arrays(Context& ctx, const Shape& s, DType type, size_t saved_bytes) {
    const size_t e = dtype_size(type), n_qkv = static_cast<size_t>(s.batch * s.seq * 3 * s.channels);
    const size_t n_out = static_cast<size_t>(s.batch * s.seq * s.channels);
    auto& a = ctx.allocator();
    qkv = Buffer(a, n_qkv * e, MemoryCategory::Activations);
    dqkv = Buffer(a, n_qkv * e, MemoryCategory::Activations);
    out = Buffer(a, n_out * e, MemoryCategory::Activations);
    dout = Buffer(a, n_out * e, MemoryCategory::Activations);
    saved = Buffer(a, std::max<size_t>(saved_bytes, 1), MemoryCategory::Activations);
    Rng rng(3);
    for (Buffer* b : {&qkv, &dout}) {
      const size_t n = b == &qkv ? n_qkv : n_out;
      std::vector<float> v(n);
      for (float& x : v) x = static_cast<float>(rng.normal());
      if (type == DType::kF32) {
        ops::copy_from_host(ctx, b->data(), v.data(), n * 4);
      } else {
        std::vector<bf16> h(n);
        for (size_t i = 0; i < n; ++i) h[i] = float_to_bf16(v[i]);
        ops::copy_from_host(ctx, b->data(), h.data(), n * 2);
      }
    }
    ctx.synchronize();
  }
};

// The median wall time of `repeats` calls of f, each waited for, after 3 untimed ones.
double median_ms(Context& ctx, int repeats, const std::function<void()>& f) {
  for (int i = 0; i < 3; ++i) f();
  ctx.synchronize();
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    f();
    ctx.synchronize();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Forward and backward through the ops, on whatever path `ctx` takes for the shape.
double time_ops(Context& ctx, const Shape& s, DType type, int repeats) {
  const size_t saved = ops::attention_saved_bytes(ctx, s.batch, s.seq, s.channels, s.heads, type);
  Arrays a(ctx, s, type, saved);
  return median_ms(ctx, repeats, [&] {
    ops::attention_forward(ctx, ConstTypedPtr(a.qkv.data(), type), TypedPtr(a.out.data(), type),
                           TypedPtr(a.saved.data(), type), s.batch, s.seq, s.channels, s.heads);
    ops::attention_backward(ctx, ConstTypedPtr(a.dout.data(), type), ConstTypedPtr(a.qkv.data(), type),
                            ConstTypedPtr(a.out.data(), type), ConstTypedPtr(a.saved.data(), type),
                            TypedPtr(a.dqkv.data(), type), s.batch, s.seq, s.channels, s.heads);
  });
}

// Forward and backward through dtrain's own fused kernels, whichever path the ops take.
double time_own(Context& ctx, const Shape& s, DType type, int repeats) {
  auto& backend = dynamic_cast<CudaBackend&>(ctx.backend());
  const FusedAttentionShape shape{s.batch, s.seq, s.channels, s.heads};
  const FlashAttention& own = backend.flash_attention();
  Arrays a(ctx, s, type, static_cast<size_t>(s.batch * s.heads * s.seq) * sizeof(float));
  Buffer workspace(ctx.allocator(), own.workspace_bytes(shape), MemoryCategory::Workspace);
  return median_ms(ctx, repeats, [&] {
    own.forward(backend.stream(), type, shape, a.qkv.data(), a.out.data(), a.saved.as<float>());
    own.backward(backend.stream(), type, shape, a.qkv.data(), a.out.data(), a.dout.data(), a.saved.as<float>(),
                 a.dqkv.data(), workspace.as<float>());
  });
}

std::string mib(size_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return text;
}

int run(int repeats) {
  if (cuda_device_count() == 0) {
    std::printf("attention_bench: no CUDA device visible\n");
    return 77;
  }
  CudaOptions unfused_options;
  unfused_options.fused_attention = false;
  auto fused = Context::make_cuda(CudaOptions{});
  auto unfused = Context::make_cuda(unfused_options);
  auto& backend = dynamic_cast<CudaBackend&>(fused->backend());
  // GPT-2 124M's attention at a micro-batch of 4; configs/gpt_fortunes.yaml's; a head
  // size of 100 (no multiple of 8: cuDNN declines it in bf16 too).
  const Shape shapes[] = {{"gpt2-124m", 4, 1024, 768, 12}, {"fortunes", 32, 64, 128, 4}, {"hs100", 4, 512, 800, 8}};
  for (const DType type : {DType::kF32, DType::kBF16}) {
    for (const Shape& s : shapes) {
      const FusedAttentionShape shape{s.batch, s.seq, s.channels, s.heads};
      const bool cudnn = backend.fused_attention().supports(shape, type);
      const bool own = backend.flash_attention().supports(shape);
      const double unfused_ms = time_ops(*unfused, s, type, repeats);
      const size_t probs = ops::attention_saved_bytes(*unfused, s.batch, s.seq, s.channels, s.heads, type);
      std::printf("attention %s %s B=%lld T=%lld C=%lld H=%lld: unfused %.3f ms (keeps %s)", dtype_name(type), s.name,
                  static_cast<long long>(s.batch), static_cast<long long>(s.seq), static_cast<long long>(s.channels),
                  static_cast<long long>(s.heads), unfused_ms, mib(probs).c_str());
      if (own) {
        const double own_ms = time_own(*fused, s, type, repeats);
        std::printf(", own fused %.3f ms (%.2fx unfused's time)", own_ms, own_ms / unfused_ms);
      }
      if (cudnn) {
        const double cudnn_ms = time_ops(*fused, s, type, repeats);
        std::printf(", cuDNN %.3f ms", cudnn_ms);
      }
      std::printf("; the ops take %s\n", cudnn ? "cuDNN" : own ? "own fused" : "unfused");
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace
}  // namespace dtrain

int main(int argc, char** argv) {
  const int repeats = argc > 1 ? std::atoi(argv[1]) : 10;
  if (repeats < 1) {
    std::fprintf(stderr, "attention_bench: REPEATS must be a positive count, got '%s'\n", argv[1]);
    return 2;
  }
  try {
    return dtrain::run(repeats);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "attention_bench: %s\n", e.what());
    return 1;
  }
}
