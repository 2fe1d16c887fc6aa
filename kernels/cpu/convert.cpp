// Conversion between the stored element types (Note [bf16 storage] in kernels/dtype.h).
#include <cstring>

#include "kernels/cpu/cpu_ops.h"

namespace dtrain::cpu {

void convert(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t n) {
  if (n <= 0) return;
  if (x.type == y.type) {
    std::memcpy(y.data, x.data, static_cast<size_t>(n) * dtype_size(x.type));
  } else if (y.type == DType::kBF16) {
    const float* src = x.f32();
    bf16* dst = y.b16();
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16(src[i]);
  } else {
    const bf16* src = x.b16();
    float* dst = y.f32();
#pragma omp parallel for simd num_threads(ctx.num_threads()) if (parallel : n >= kParallelMinWork)
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
  }
}

}  // namespace dtrain::cpu
