// Causal multi-head self-attention (Note [Transformer ops] in kernels/ops.h), one
// (batch, head) pair per task. Each pair's GEMMs run on one thread (gemm_serial), so
// the team splits the pairs, and every pair's bits are the same for any team size.
//
// Per pair, with Q, K, V (T, hs) strided views of qkv (row stride 3C) and
// s = 1/sqrt(hs):
//   forward : P = causal_softmax(s Q K^T)  written into probs (T, T), 0 above the diagonal
//             O = P V                       into out (row stride C)
//   backward: dP = dO V^T                   into a T x T scratch of the workspace
//             dS = P * (dP - rowsum(P * dP)) * s, in place (0 above the diagonal)
//             dV = P^T dO,  dQ = dS K,  dK = dS^T Q
// probs is the only T x T tensor kept between the two; backward takes one T x T
// scratch per pair in flight (attention_scratch_slots). In bf16 both take a slot of
// widened operands per pair in flight (Note [bf16 attention]).
//
// Note [bf16 attention]
// With bf16 qkv, out, probs, dout and dqkv, each pair's operands are widened to fp32
// into its slot of the workspace (rows of hs, no longer strided) and the fp32 steps
// above run on them, with the same OpenBLAS calls:
//   forward : S and the softmax in fp32; P is rounded to bf16 into probs, and O is the
//             product of the rounded P (widened again) with V, so that every backend
//             computes out from the probabilities backward will see; out = round(O).
//   backward: P is probs widened; dV, dQ and dK are each computed into one fp32
//             block and rounded into dqkv.
// A slot holds P and dS (T x T each) and Q, K, V, dO and the fp32 result (T x hs
// each): 2 T^2 + 5 T hs floats; forward uses its first T^2 + 4 T hs.
#include <algorithm>
#include <cmath>

#include "kernels/check.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/storage.h"

namespace dtrain::cpu {

namespace {

struct AttentionShape {
  int64_t batch, seq, channels, heads;
  int64_t head_size() const { return channels / heads; }
  int64_t pairs() const { return batch * heads; }
};

AttentionShape checked_shape(int64_t batch, int64_t seq, int64_t channels, int64_t heads) {
  DTRAIN_ASSERT(heads > 0 && channels % heads == 0,
                "attention: channels " << channels << " is not a multiple of heads " << heads);
  // Outside the parallel regions, where an exception could not escape.
  check_blas_dimension(seq, "attention seq");
  check_blas_dimension(3 * channels, "attention 3 * channels");
  return {batch, seq, channels, heads};
}

// Softmax of row i of the scores over its first i + 1 entries; the rest become 0.
void causal_softmax_row(float* row, int64_t i, int64_t seq) {
  float mx = row[0];
  for (int64_t j = 1; j <= i; ++j) mx = std::max(mx, row[j]);
  double sum = 0.0;
  for (int64_t j = 0; j <= i; ++j) {
    row[j] = std::exp(row[j] - mx);
    sum += row[j];
  }
  const auto inv = static_cast<float>(1.0 / sum);
  for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
  for (int64_t j = i + 1; j < seq; ++j) row[j] = 0.0f;
}

// dS = P * (dP - rowsum(P * dP)) * scale, over dP in place; 0 above the diagonal.
void causal_softmax_backward(const float* p, float* ds, int64_t seq, float scale) {
  for (int64_t i = 0; i < seq; ++i) {
    const float* pr = p + i * seq;
    float* dr = ds + i * seq;
    double dot = 0.0;
    for (int64_t j = 0; j <= i; ++j) dot += static_cast<double>(pr[j]) * dr[j];
    const auto d = static_cast<float>(dot);
    for (int64_t j = 0; j <= i; ++j) dr[j] = pr[j] * (dr[j] - d) * scale;
    for (int64_t j = i + 1; j < seq; ++j) dr[j] = 0.0f;
  }
}

// dst (rows, cols), packed, = src (rows, cols) with row stride ld, widened.
void widen_rows(const bf16* src, int64_t ld, int64_t rows, int64_t cols, float* dst) {
  for (int64_t r = 0; r < rows; ++r) widen_row(src + r * ld, cols, dst + r * cols);
}

// dst (rows, cols) with row stride ld = src (rows, cols), packed, rounded.
void narrow_rows(const float* src, int64_t rows, int64_t cols, bf16* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) narrow_row(src + r * cols, cols, dst + r * ld);
}

void attention_forward_f32(Context& ctx, const AttentionShape& s, const float* qkv, float* out, float* probs) {
  const int64_t hs = s.head_size(), C = s.channels, T = s.seq, ld = 3 * s.channels, heads = s.heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const bool parallel = s.pairs() * T * T * hs >= kParallelMinWork;
#pragma omp parallel for num_threads(ctx.num_threads()) schedule(static, 1) if (parallel)
  for (int64_t pair = 0; pair < s.pairs(); ++pair) {
    const int64_t b = pair / heads, h = pair % heads;
    const float* q = qkv + b * T * ld + h * hs;
    const float* k = q + C;
    const float* v = q + 2 * C;
    float* p = probs + pair * T * T;
    if (hs == 0) {
      std::fill(p, p + T * T, 0.0f);
    } else {
      gemm_serial(false, true, T, T, hs, scale, q, ld, k, ld, 0.0f, p, T);
    }
    for (int64_t i = 0; i < T; ++i) causal_softmax_row(p + i * T, i, T);
    if (hs > 0) gemm_serial(false, false, T, hs, T, 1.0f, p, T, v, ld, 0.0f, out + b * T * C + h * hs, C);
  }
}

void attention_backward_f32(Context& ctx, const AttentionShape& s, const float* dout, const float* qkv,
                            const float* probs, float* dqkv) {
  const int64_t hs = s.head_size(), C = s.channels, T = s.seq, ld = 3 * s.channels, heads = s.heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t slots = attention_scratch_slots(s.batch, T, C, heads, DType::kF32);
  auto* scratch = static_cast<float*>(ctx.workspace(attention_workspace_bytes(s.batch, T, C, heads, DType::kF32)));
  // Slot j serves pairs j, j + slots, ...: one thread per slot, so the team is at most
  // `slots` wide, and the assignment of pairs to slots is the shape's alone.
  const int threads = static_cast<int>(std::min<int64_t>(ctx.num_threads(), slots));
  const bool parallel = s.pairs() * T * T * hs >= kParallelMinWork && threads > 1;
#pragma omp parallel for num_threads(threads) schedule(static, 1) if (parallel)
  for (int64_t slot = 0; slot < slots; ++slot) {
    float* ds = scratch + slot * T * T;
    for (int64_t pair = slot; pair < s.pairs(); pair += slots) {
      const int64_t b = pair / heads, h = pair % heads;
      const int64_t offset = b * T * ld + h * hs;
      const float* q = qkv + offset;
      const float* k = q + C;
      const float* v = q + 2 * C;
      float* dq = dqkv + offset;
      float* dk = dq + C;
      float* dv = dq + 2 * C;
      const float* p = probs + pair * T * T;
      const float* dy = dout + b * T * C + h * hs;
      gemm_serial(false, true, T, T, hs, 1.0f, dy, C, v, ld, 0.0f, ds, T);
      causal_softmax_backward(p, ds, T, scale);
      gemm_serial(true, false, T, hs, T, 1.0f, p, T, dy, C, 0.0f, dv, ld);
      gemm_serial(false, false, T, hs, T, 1.0f, ds, T, k, ld, 0.0f, dq, ld);
      gemm_serial(true, false, T, hs, T, 1.0f, ds, T, q, ld, 0.0f, dk, ld);
    }
  }
}

// The bf16 ops' slots of widened operands (Note [bf16 attention]), taken from the
// workspace; pairs go to slots as in attention_backward_f32, one thread per slot.
struct Bf16Slots {
  Bf16Slots(Context& ctx, const AttentionShape& s)
      : slots(attention_scratch_slots(s.batch, s.seq, s.channels, s.heads, DType::kBF16)),
        slot_floats(static_cast<int64_t>(attention_slot_bytes(s.seq, s.channels, s.heads, DType::kBF16) /
                                         sizeof(float))),
        scratch(static_cast<float*>(
            ctx.workspace(attention_workspace_bytes(s.batch, s.seq, s.channels, s.heads, DType::kBF16)))),
        threads(static_cast<int>(std::min<int64_t>(ctx.num_threads(), slots))),
        parallel(s.pairs() * s.seq * s.seq * s.head_size() >= kParallelMinWork && threads > 1) {}
  int64_t slots, slot_floats;
  float* scratch;
  int threads;
  bool parallel;
};

void attention_forward_bf16(Context& ctx, const AttentionShape& s, const bf16* qkv, bf16* out, bf16* probs) {
  const int64_t hs = s.head_size(), C = s.channels, T = s.seq, ld = 3 * s.channels, heads = s.heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const Bf16Slots w(ctx, s);
#pragma omp parallel for num_threads(w.threads) schedule(static, 1) if (w.parallel)
  for (int64_t slot = 0; slot < w.slots; ++slot) {
    float* sp = w.scratch + slot * w.slot_floats;  // S, then P rounded
    float* q = sp + T * T;
    float* k = q + T * hs;
    float* v = k + T * hs;
    float* o = v + T * hs;
    for (int64_t pair = slot; pair < s.pairs(); pair += w.slots) {
      const int64_t b = pair / heads, h = pair % heads;
      const bf16* src = qkv + b * T * ld + h * hs;
      widen_rows(src, ld, T, hs, q);
      widen_rows(src + C, ld, T, hs, k);
      widen_rows(src + 2 * C, ld, T, hs, v);
      if (hs == 0) {
        std::fill(sp, sp + T * T, 0.0f);
      } else {
        gemm_serial(false, true, T, T, hs, scale, q, hs, k, hs, 0.0f, sp, T);
      }
      for (int64_t i = 0; i < T; ++i) causal_softmax_row(sp + i * T, i, T);
      bf16* p = probs + pair * T * T;
      narrow_row(sp, T * T, p);
      widen_row(p, T * T, sp);
      if (hs > 0) {
        gemm_serial(false, false, T, hs, T, 1.0f, sp, T, v, hs, 0.0f, o, hs);
        narrow_rows(o, T, hs, out + b * T * C + h * hs, C);
      }
    }
  }
}

void attention_backward_bf16(Context& ctx, const AttentionShape& s, const bf16* dout, const bf16* qkv,
                             const bf16* probs, bf16* dqkv) {
  const int64_t hs = s.head_size(), C = s.channels, T = s.seq, ld = 3 * s.channels, heads = s.heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const Bf16Slots w(ctx, s);
#pragma omp parallel for num_threads(w.threads) schedule(static, 1) if (w.parallel)
  for (int64_t slot = 0; slot < w.slots; ++slot) {
    float* p = w.scratch + slot * w.slot_floats;
    float* ds = p + T * T;
    float* q = ds + T * T;
    float* k = q + T * hs;
    float* v = k + T * hs;
    float* dy = v + T * hs;
    float* g = dy + T * hs;  // dV, then dQ, then dK
    for (int64_t pair = slot; pair < s.pairs(); pair += w.slots) {
      const int64_t b = pair / heads, h = pair % heads;
      const int64_t offset = b * T * ld + h * hs;
      widen_rows(qkv + offset, ld, T, hs, q);
      widen_rows(qkv + offset + C, ld, T, hs, k);
      widen_rows(qkv + offset + 2 * C, ld, T, hs, v);
      widen_rows(dout + b * T * C + h * hs, C, T, hs, dy);
      widen_row(probs + pair * T * T, T * T, p);
      gemm_serial(false, true, T, T, hs, 1.0f, dy, hs, v, hs, 0.0f, ds, T);
      causal_softmax_backward(p, ds, T, scale);
      bf16* dq = dqkv + offset;
      gemm_serial(true, false, T, hs, T, 1.0f, p, T, dy, hs, 0.0f, g, hs);
      narrow_rows(g, T, hs, dq + 2 * C, ld);
      gemm_serial(false, false, T, hs, T, 1.0f, ds, T, k, hs, 0.0f, g, hs);
      narrow_rows(g, T, hs, dq, ld);
      gemm_serial(true, false, T, hs, T, 1.0f, ds, T, q, hs, 0.0f, g, hs);
      narrow_rows(g, T, hs, dq + C, ld);
    }
  }
}

}  // namespace

size_t attention_slot_bytes(int64_t seq, int64_t channels, int64_t heads, DType type) {
  const int64_t hs = heads > 0 ? channels / heads : 0;
  const int64_t floats = type == DType::kF32 ? seq * seq : 2 * seq * seq + 5 * seq * hs;
  return static_cast<size_t>(floats) * sizeof(float);
}

int64_t attention_scratch_slots(int64_t batch, int64_t seq, int64_t channels, int64_t heads, DType type) {
  const size_t slot = attention_slot_bytes(seq, channels, heads, type);
  const auto by_budget = static_cast<int64_t>(slot == 0 ? kAttentionMaxSlots : kAttentionWorkspaceBudget / slot);
  return std::max<int64_t>(1, std::min({batch * heads, kAttentionMaxSlots, by_budget}));
}

size_t attention_workspace_bytes(int64_t batch, int64_t seq, int64_t channels, int64_t heads, DType type) {
  if (batch * heads == 0 || seq == 0) return 0;
  return static_cast<size_t>(attention_scratch_slots(batch, seq, channels, heads, type)) *
         attention_slot_bytes(seq, channels, heads, type);
}

void attention_forward(Context& ctx, ConstTypedPtr qkv, TypedPtr out, TypedPtr probs, int64_t batch,
                       int64_t seq, int64_t channels, int64_t heads) {
  const DType type = common_type("attention_forward", {{"qkv", qkv}, {"out", out}, {"probs", probs}});
  const AttentionShape s = checked_shape(batch, seq, channels, heads);
  if (s.pairs() == 0 || seq == 0) return;
  if (type == DType::kF32) {
    attention_forward_f32(ctx, s, qkv.f32(), out.f32(), probs.f32());
  } else {
    attention_forward_bf16(ctx, s, qkv.b16(), out.b16(), probs.b16());
  }
}

void attention_backward(Context& ctx, ConstTypedPtr dout, ConstTypedPtr qkv, ConstTypedPtr probs,
                        TypedPtr dqkv, int64_t batch, int64_t seq, int64_t channels, int64_t heads) {
  const DType type =
      common_type("attention_backward", {{"dout", dout}, {"qkv", qkv}, {"probs", probs}, {"dqkv", dqkv}});
  const AttentionShape s = checked_shape(batch, seq, channels, heads);
  if (s.pairs() == 0 || seq == 0 || s.head_size() == 0) return;
  if (type == DType::kF32) {
    attention_backward_f32(ctx, s, dout.f32(), qkv.f32(), probs.f32(), dqkv.f32());
  } else {
    attention_backward_bf16(ctx, s, dout.b16(), qkv.b16(), probs.b16(), dqkv.b16());
  }
}

}  // namespace dtrain::cpu
