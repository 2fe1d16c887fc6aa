// Causal multi-head self-attention (Note [Transformer ops], kernels/ops.h) from
// cuBLAS strided-batched GEMMs and two softmax kernels.
//
// Layout: qkv (B, T, 3C) with head h of q, k and v in features h*hs + [0, hs) of the
// thirds, hs = C / H; out (B, T, C) with head h in features h*hs + [0, hs). So head
// (b, h) of q is a T x hs row-major matrix with leading dimension 3C at
// qkv + b*T*3C + h*hs: every operand is reachable with a stride per batch entry and a
// stride per head, and nothing is re-laid out. cuBLAS batches over one stride, so
// each GEMM runs as min(B, H) strided-batched calls of max(B, H) matrices each (over
// b with the heads batched, or over h with the batch entries batched).
//
//   forward   S = scale * Q K^T                  into probs (B, H, T, T)
//             P = causal softmax of S's rows     in place: P[i, j] = 0 for j > i
//             out = P V
//   backward  dP = dO V^T                        workspace, one GEMM call's matrices
//             dV = P^T dO
//             dS = scale * P * (dP - rowsum(P * dP))   in place over dP (0 above the diagonal)
//             dQ = dS K,  dK = dS^T Q
//
// The GEMMs compute all T x T scores, the masked half too (it is multiplied by the
// zeros of P afterwards). Row sums in the softmax kernels are per-lane double sums
// combined by a butterfly, a fixed order, so both ops give the same bits every run
// (cuBLAS picks the same kernel for the same shapes on the same device).
// Workspace: forward takes none; backward takes dP for max(B, H) heads, T x T floats
// each, which attention_workspace_bytes reports.
#include <cstdint>
#include <limits>

#include "kernels/check.h"
#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"

namespace dtrain {

namespace {

using cuda::kBlockThreads;
using cuda::kWarpSize;

constexpr int kRowsPerBlock = kBlockThreads / kWarpSize;
constexpr unsigned kFullMask = 0xffffffffu;

// Every lane returns the same bits (lanes i and i^k combine the same two values).
__device__ inline double warp_sum(double v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}
__device__ inline float warp_max(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// In place over rows of (rows, T) scores, row r being query position r % T: the
// softmax over keys 0..i, and 0 above the diagonal. One warp per row.
__global__ void causal_softmax_forward(float* probs, int64_t rows, int64_t seq) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t i = r % seq;
    float* p = probs + r * seq;
    float mx = -INFINITY;
    for (int64_t j = lane; j <= i; j += kWarpSize) mx = fmaxf(mx, p[j]);
    mx = warp_max(mx);
    double sum = 0.0;
    for (int64_t j = lane; j <= i; j += kWarpSize) {
      const float e = expf(p[j] - mx);
      p[j] = e;
      sum += e;
    }
    const auto inv = static_cast<float>(1.0 / warp_sum(sum));
    for (int64_t j = lane; j < seq; j += kWarpSize) p[j] = j <= i ? p[j] * inv : 0.0f;
  }
}

// dS = scale * P * (dP - sum_j P dP) in place over dP, for `count` matrices of T x T:
// P's at probs + g * probs_stride, dP's contiguous. One warp per row.
__global__ void causal_softmax_backward(const float* probs, int64_t probs_stride, float* dprobs, int64_t count,
                                        int64_t seq, float scale) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  const int64_t rows = count * seq;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t g = r / seq;
    const int64_t i = r - g * seq;
    const float* p = probs + g * probs_stride + i * seq;
    float* d = dprobs + r * seq;
    double dot = 0.0;
    for (int64_t j = lane; j <= i; j += kWarpSize) dot += static_cast<double>(p[j]) * d[j];
    const auto total = static_cast<float>(warp_sum(dot));
    for (int64_t j = lane; j < seq; j += kWarpSize) d[j] = j <= i ? scale * p[j] * (d[j] - total) : 0.0f;
  }
}

// The offsets of one operand's (b, h) matrix: b * per_batch + h * per_head floats.
struct HeadStrides {
  int64_t per_batch, per_head;
};

// How the B x H matrices are split into strided-batched calls: `calls` calls of
// `count` matrices each, over b (heads batched) when B <= H, else over h.
struct HeadLoop {
  bool over_batch;
  int64_t calls, count;
  HeadLoop(int64_t batch, int64_t heads)
      : over_batch(batch <= heads), calls(over_batch ? batch : heads), count(over_batch ? heads : batch) {}
  // The offset of call `call`'s first matrix, and the stride between its matrices.
  int64_t offset(const HeadStrides& s, int64_t call) const { return call * (over_batch ? s.per_batch : s.per_head); }
  int64_t stride(const HeadStrides& s) const { return over_batch ? s.per_head : s.per_batch; }
};

struct AttentionShape {
  int64_t batch, seq, channels, heads, head_size;
  HeadStrides qkv, out, probs;
};

AttentionShape attention_shape(int64_t batch, int64_t seq, int64_t channels, int64_t heads) {
  DTRAIN_ASSERT(heads > 0 && channels % heads == 0,
                "attention: " << channels << " channels do not split into " << heads << " heads");
  // cuBLAS takes int dimensions and leading dimensions.
  DTRAIN_ASSERT(3 * channels <= std::numeric_limits<int>::max() && seq <= std::numeric_limits<int>::max() &&
                    batch <= std::numeric_limits<int>::max(),
                "attention: B=" << batch << " T=" << seq << " C=" << channels << " exceed cuBLAS's int");
  const int64_t hs = channels / heads;
  return {batch,
          seq,
          channels,
          heads,
          hs,
          {seq * 3 * channels, hs},
          {seq * channels, hs},
          {heads * seq * seq, seq * seq}};
}

unsigned row_blocks(int64_t rows) {
  // A grid-stride loop: cap the grid (any legal count gives the same result).
  const int64_t needed = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;
  return static_cast<unsigned>(needed < kMaxBlocks ? needed : kMaxBlocks);
}

}  // namespace

void CudaBackend::gemm_strided_batched(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                                       const float* a, int64_t lda, int64_t stride_a, const float* b, int64_t ldb,
                                       int64_t stride_b, float beta, float* c, int64_t ldc, int64_t stride_c,
                                       int64_t batch) {
  if (m == 0 || n == 0 || batch == 0) return;
  // Row-major through column-major cuBLAS: operands swapped, as in gemm.cpp.
  DTRAIN_CUBLAS_CHECK(cublasSgemmStridedBatched(
      cublas_.get(), trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N,
      static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, b, static_cast<int>(ldb), stride_b, a,
      static_cast<int>(lda), stride_a, &beta, c, static_cast<int>(ldc), stride_c, static_cast<int>(batch)));
}

size_t CudaBackend::attention_workspace_bytes(int64_t batch, int64_t seq, int64_t /*channels*/,
                                              int64_t heads, DType /*type*/) const {
  if (batch == 0 || seq == 0 || heads == 0) return 0;
  const HeadLoop loop(batch, heads);
  return static_cast<size_t>(loop.count) * static_cast<size_t>(seq) * static_cast<size_t>(seq) * sizeof(float);
}

void CudaBackend::attention_forward(Context& /*ctx*/, ConstTypedPtr qkv_t, TypedPtr out_t, TypedPtr probs_t, int64_t batch,
                                    int64_t seq, int64_t channels, int64_t heads) { const float* qkv = qkv_t.f32(); float* out = out_t.f32(); float* probs = probs_t.f32();
  if (batch == 0 || seq == 0 || channels == 0) return;
  const AttentionShape s = attention_shape(batch, seq, channels, heads);
  const HeadLoop loop(batch, heads);
  const int64_t T = seq, C = channels, hs = s.head_size;
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  const float* q = qkv;
  const float* k = qkv + C;
  const float* v = qkv + 2 * C;
  for (int64_t call = 0; call < loop.calls; ++call) {  // S = scale * Q K^T
    gemm_strided_batched(false, true, T, T, hs, scale, q + loop.offset(s.qkv, call), 3 * C, loop.stride(s.qkv),
                         k + loop.offset(s.qkv, call), 3 * C, loop.stride(s.qkv), 0.0f,
                         probs + loop.offset(s.probs, call), T, loop.stride(s.probs), loop.count);
  }
  const int64_t rows = batch * heads * seq;
  causal_softmax_forward<<<row_blocks(rows), kBlockThreads, 0, stream()>>>(probs, rows, seq);
  DTRAIN_CUDA_LAUNCH_CHECK();
  for (int64_t call = 0; call < loop.calls; ++call) {  // out = P V
    gemm_strided_batched(false, false, T, hs, T, 1.0f, probs + loop.offset(s.probs, call), T, loop.stride(s.probs),
                         v + loop.offset(s.qkv, call), 3 * C, loop.stride(s.qkv), 0.0f,
                         out + loop.offset(s.out, call), C, loop.stride(s.out), loop.count);
  }
}

void CudaBackend::attention_backward(Context& ctx, ConstTypedPtr dout_t, ConstTypedPtr qkv_t, ConstTypedPtr probs_t,
                                     TypedPtr dqkv_t, int64_t batch, int64_t seq, int64_t channels, int64_t heads) { const float* dout = dout_t.f32(); const float* qkv = qkv_t.f32(); const float* probs = probs_t.f32(); float* dqkv = dqkv_t.f32();
  if (batch == 0 || seq == 0 || channels == 0) return;
  const AttentionShape s = attention_shape(batch, seq, channels, heads);
  const HeadLoop loop(batch, heads);
  const int64_t T = seq, C = channels, hs = s.head_size;
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  auto* dprobs = static_cast<float*>(ctx.workspace(attention_workspace_bytes(batch, seq, channels, heads, DType::kF32)));
  const float* q = qkv;
  const float* k = qkv + C;
  const float* v = qkv + 2 * C;
  float* dq = dqkv;
  float* dk = dqkv + C;
  float* dv = dqkv + 2 * C;
  for (int64_t call = 0; call < loop.calls; ++call) {
    const int64_t at_qkv = loop.offset(s.qkv, call), at_out = loop.offset(s.out, call);
    const int64_t qkv_stride = loop.stride(s.qkv), out_stride = loop.stride(s.out);
    const float* p = probs + loop.offset(s.probs, call);
    const int64_t p_stride = loop.stride(s.probs);
    // dP = dO V^T, then dV = P^T dO.
    gemm_strided_batched(false, true, T, T, hs, 1.0f, dout + at_out, C, out_stride, v + at_qkv, 3 * C, qkv_stride,
                         0.0f, dprobs, T, T * T, loop.count);
    gemm_strided_batched(true, false, T, hs, T, 1.0f, p, T, p_stride, dout + at_out, C, out_stride, 0.0f,
                         dv + at_qkv, 3 * C, qkv_stride, loop.count);
    causal_softmax_backward<<<row_blocks(loop.count * T), kBlockThreads, 0, stream()>>>(p, p_stride, dprobs,
                                                                                       loop.count, T, scale);
    DTRAIN_CUDA_LAUNCH_CHECK();
    // dQ = dS K, dK = dS^T Q.
    gemm_strided_batched(false, false, T, hs, T, 1.0f, dprobs, T, T * T, k + at_qkv, 3 * C, qkv_stride, 0.0f,
                         dq + at_qkv, 3 * C, qkv_stride, loop.count);
    gemm_strided_batched(true, false, T, hs, T, 1.0f, dprobs, T, T * T, q + at_qkv, 3 * C, qkv_stride, 0.0f,
                         dk + at_qkv, 3 * C, qkv_stride, loop.count);
  }
}

}  // namespace dtrain
