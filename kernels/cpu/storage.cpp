// Note [Conversion clones]
// The project's baseline ISA is x86-64's SSE2, where rounding fp32 to bf16 vectorises
// poorly (no 32-to-16-bit pack without saturation), so the bf16 ops spent more time
// converting than computing. The row conversions are compiled three times
// (target_clones: AVX-512F, AVX2, SSE2) and the loader picks the widest the CPU has
// (an ifunc, resolved once per process), so the binary still runs on any x86-64. The
// arithmetic is the same integer rounding of float_to_bf16 (kernels/dtype.h) in every
// clone, with no floating-point operation to contract or reorder, so every clone gives
// the same bits as the scalar definition: test_bf16_ops.cpp checks the row conversions
// against float_to_bf16 and bf16_to_float on every bf16 pattern and rounding case, and
// its oracle tests hold the ops that use them to their fp32 forms.
#include "kernels/cpu/storage.h"

#include <algorithm>

#include "kernels/cpu/cpu_ops.h"

namespace dtrain::cpu {

#define DTRAIN_CONVERSION_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

DTRAIN_CONVERSION_CLONES void widen_row(const bf16* src, int64_t n, float* dst) {
  const auto* in = reinterpret_cast<const uint16_t*>(src);
  auto* out = reinterpret_cast<uint32_t*>(dst);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<uint32_t>(in[i]) << 16;
}

DTRAIN_CONVERSION_CLONES void narrow_row(const float* src, int64_t n, bf16* dst) {
  const auto* in = reinterpret_cast<const uint32_t*>(src);
  auto* out = reinterpret_cast<uint16_t*>(dst);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t u = in[i];
    const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (u >> 16) | 0x0040u;
    out[i] = static_cast<uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
}

namespace {

constexpr int64_t kConversionChunk = 4096;  // elements: whole cache lines of both types

template <class F>
void over_chunks(Context& ctx, int64_t n, F&& convert) {
  const int64_t chunks = (n + kConversionChunk - 1) / kConversionChunk;
#pragma omp parallel for num_threads(ctx.num_threads()) if (n >= kParallelMinWork)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t lo = c * kConversionChunk;
    convert(lo, std::min(kConversionChunk, n - lo));
  }
}

}  // namespace

void widen_team(Context& ctx, const bf16* src, int64_t n, float* dst) {
  over_chunks(ctx, n, [&](int64_t lo, int64_t len) { widen_row(src + lo, len, dst + lo); });
}

void narrow_team(Context& ctx, const float* src, int64_t n, bf16* dst) {
  over_chunks(ctx, n, [&](int64_t lo, int64_t len) { narrow_row(src + lo, len, dst + lo); });
}

}  // namespace dtrain::cpu
