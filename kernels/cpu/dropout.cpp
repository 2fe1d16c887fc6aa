// Dropout without a stored mask (Note [Transformer ops] in kernels/ops.h): element i of
// sample s is kept when dropout_keeps(key, sample_ids[s], i, p), the one hash every
// backend uses, so forward and backward (and any layout of the batch) agree.
#include <algorithm>
#include <cstring>

#include "kernels/check.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/storage.h"
#include "kernels/dropout_hash.h"

namespace dtrain::cpu {

namespace {

// Elements of one sample handled by one task, so short batches of long samples still
// spread over the team.
constexpr int64_t kDropoutBlock = 4096;

// out = keep ? in / (1 - p) : 0, the same for forward (x -> y) and backward (dy -> dx).
template <class T>
void apply_mask(Context& ctx, const T* in, T* out, int64_t samples, int64_t per_sample,
                const int64_t* sample_ids, uint64_t key, float p) {
  DTRAIN_ASSERT(p >= 0.0f && p < 1.0f, "dropout probability " << p << " is outside [0, 1)");
  if (p == 0.0f) {
    if (in != out && samples * per_sample > 0) {
      std::memmove(out, in, static_cast<size_t>(samples * per_sample) * sizeof(T));
    }
    return;
  }
  const float keep_scale = 1.0f / (1.0f - p);
  const int64_t blocks_per_sample = (per_sample + kDropoutBlock - 1) / kDropoutBlock;
  const int64_t tasks = samples * blocks_per_sample;
#pragma omp parallel for num_threads(ctx.num_threads()) if (samples * per_sample >= kParallelMinWork)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t s = task / blocks_per_sample;
    const int64_t lo = (task % blocks_per_sample) * kDropoutBlock;
    const int64_t hi = std::min(per_sample, lo + kDropoutBlock);
    const int64_t id = sample_ids[s];
    const T* x = in + s * per_sample;
    T* y = out + s * per_sample;
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) {
      const float v = widen(x[i]) * keep_scale;
      y[i] = narrow<T>(dropout_keeps(key, id, i, p) ? v : 0.0f);
    }
  }
}

void apply_mask(const char* op, Context& ctx, ConstTypedPtr in, TypedPtr out, int64_t samples,
                int64_t per_sample, const int64_t* sample_ids, uint64_t key, float p) {
  with_storage(common_type(op, {{"input", in}, {"output", out}}), [&](auto tag) {
    using T = decltype(tag);
    apply_mask(ctx, typed<T>(in), typed<T>(out), samples, per_sample, sample_ids, key, p);
  });
}

}  // namespace

void dropout_forward(Context& ctx, ConstTypedPtr x, TypedPtr y, int64_t samples, int64_t per_sample,
                     const int64_t* sample_ids, uint64_t key, float p) {
  apply_mask("dropout_forward", ctx, x, y, samples, per_sample, sample_ids, key, p);
}

void dropout_backward(Context& ctx, ConstTypedPtr dy, TypedPtr dx, int64_t samples, int64_t per_sample,
                      const int64_t* sample_ids, uint64_t key, float p) {
  apply_mask("dropout_backward", ctx, dy, dx, samples, per_sample, sample_ids, key, p);
}

}  // namespace dtrain::cpu
