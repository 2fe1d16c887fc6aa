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
// scratch per pair in flight (attention_scratch_slots).
#include <algorithm>
#include <cmath>

#include "kernels/check.h"
#include "kernels/cpu/cpu_ops.h"

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

}  // namespace

int64_t attention_scratch_slots(int64_t batch, int64_t seq, int64_t heads) {
  const size_t matrix = static_cast<size_t>(seq) * static_cast<size_t>(seq) * sizeof(float);
  const auto by_budget = static_cast<int64_t>(matrix == 0 ? kAttentionMaxSlots : kAttentionWorkspaceBudget / matrix);
  return std::max<int64_t>(1, std::min({batch * heads, kAttentionMaxSlots, by_budget}));
}

size_t attention_workspace_bytes(int64_t batch, int64_t seq, int64_t /*channels*/, int64_t heads) {
  if (batch * heads == 0 || seq == 0) return 0;
  return static_cast<size_t>(attention_scratch_slots(batch, seq, heads)) * static_cast<size_t>(seq) *
         static_cast<size_t>(seq) * sizeof(float);
}

void attention_forward(Context& ctx, const float* qkv, float* out, float* probs, int64_t batch,
                       int64_t seq, int64_t channels, int64_t heads) {
  const AttentionShape s = checked_shape(batch, seq, channels, heads);
  if (s.pairs() == 0 || seq == 0) return;
  const int64_t hs = s.head_size(), C = channels, T = seq, ld = 3 * channels;
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

void attention_backward(Context& ctx, const float* dout, const float* qkv, const float* probs,
                        float* dqkv, int64_t batch, int64_t seq, int64_t channels, int64_t heads) {
  const AttentionShape s = checked_shape(batch, seq, channels, heads);
  if (s.pairs() == 0 || seq == 0 || s.head_size() == 0) return;
  const int64_t hs = s.head_size(), C = channels, T = seq, ld = 3 * channels;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const int64_t slots = attention_scratch_slots(batch, seq, heads);
  auto* scratch = static_cast<float*>(ctx.workspace(attention_workspace_bytes(batch, seq, channels, heads)));
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
      for (int64_t i = 0; i < T; ++i) {
        const float* pr = p + i * T;
        float* dr = ds + i * T;
        double dot = 0.0;
        for (int64_t j = 0; j <= i; ++j) dot += static_cast<double>(pr[j]) * dr[j];
        const auto d = static_cast<float>(dot);
        for (int64_t j = 0; j <= i; ++j) dr[j] = pr[j] * (dr[j] - d) * scale;
        for (int64_t j = i + 1; j < T; ++j) dr[j] = 0.0f;
      }
      gemm_serial(true, false, T, hs, T, 1.0f, p, T, dy, C, 0.0f, dv, ld);
      gemm_serial(false, false, T, hs, T, 1.0f, ds, T, k, ld, 0.0f, dq, ld);
      gemm_serial(true, false, T, hs, T, 1.0f, ds, T, q, ld, 0.0f, dk, ld);
    }
  }
}

}  // namespace dtrain::cpu
