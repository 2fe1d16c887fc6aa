// Causal multi-head self-attention (Note [Transformer ops], kernels/ops.h): fused, by
// cuDNN's SDPA, where it takes the shape (Note [Fused attention],
// kernels/cuda/fused_attention.h), else by dtrain's own fused kernels, fp32 included
// (Note [Own fused attention], kernels/cuda/flash_attention.h); and only where both
// decline (or CudaOptions::fused_attention is off), unfused here from cuBLAS
// strided-batched GEMMs and two softmax kernels, which keep the probabilities as the
// saved state.
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
//
// Note [bf16 attention]
// In bf16 (qkv, out, probs, dout, dqkv) the ops keep every intermediate the CPU's bf16
// ops keep in fp32 in fp32 too, so that the only differences from the oracle are the
// order of fp32 sums (Note [bf16 storage], kernels/dtype.h):
//   forward   S in fp32 in the workspace (bf16 Q and K, fp32 accumulation and C); the
//             softmax reads it and stores P rounded to bf16 in probs; out = P V from
//             the stored, rounded P (bf16 GEMM, rounded once).
//   backward  dP = dO V^T in fp32; dV = P^T dO as a bf16 GEMM; dS in fp32 from the
//             stored P. dS is not rounded to bf16 for dQ = dS K and dK = dS^T Q:
//             cuBLAS multiplies only operands of one type, so K (then Q) is widened to
//             fp32 in the workspace, the product runs as the fp32 path's GEMM, and its
//             fp32 result is rounded into dqkv.
// Rounding dS to bf16 and running those two GEMMs on bf16 tensor cores would be faster,
// but it would add an error of up to 2^-8 |dS| per term that the CPU's ops do not make.
// Workspace per GEMM call of max(B, H) heads: fp32 forward none; fp32 backward dP;
// bf16 forward S; bf16 backward dP and two T x hs fp32 matrices per head (the widened
// operand and the product). attention_workspace_bytes reports the larger of the two.
#include <cstdint>
#include <limits>

#include "kernels/check.h"
#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace dtrain {

namespace {

using cuda::from_float;
using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;
using cuda::kWarpSize;
using cuda::to_float;
using cuda::typed;

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

// For `count` matrices of T x T, the scores' at scores + g * scores_stride and the
// probabilities' at probs + g * probs_stride: each row i gets the softmax of its
// scores over keys 0..i, and 0 above the diagonal. One warp per row. The scores row
// is overwritten with exp(s - max); probs may be the scores themselves (fp32: in place).
template <class P>
__global__ void causal_softmax_forward(float* scores, int64_t scores_stride, P* probs, int64_t probs_stride,
                                       int64_t count, int64_t seq) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  const int64_t rows = count * seq;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t g = r / seq;
    const int64_t i = r - g * seq;
    float* s = scores + g * scores_stride + i * seq;
    P* p = probs + g * probs_stride + i * seq;
    float mx = -INFINITY;
    for (int64_t j = lane; j <= i; j += kWarpSize) mx = fmaxf(mx, s[j]);
    mx = warp_max(mx);
    double sum = 0.0;
    for (int64_t j = lane; j <= i; j += kWarpSize) {
      const float e = expf(s[j] - mx);
      s[j] = e;
      sum += e;
    }
    const auto inv = static_cast<float>(1.0 / warp_sum(sum));
    for (int64_t j = lane; j < seq; j += kWarpSize) p[j] = from_float<P>(j <= i ? s[j] * inv : 0.0f);
  }
}

// dS = scale * P * (dP - sum_j P dP) in place over dP, for `count` matrices of T x T:
// P's at probs + g * probs_stride, dP's contiguous. One warp per row.
template <class P>
__global__ void causal_softmax_backward(const P* probs, int64_t probs_stride, float* dprobs, int64_t count,
                                        int64_t seq, float scale) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  const int64_t rows = count * seq;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < rows;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const int64_t g = r / seq;
    const int64_t i = r - g * seq;
    const P* p = probs + g * probs_stride + i * seq;
    float* d = dprobs + r * seq;
    double dot = 0.0;
    for (int64_t j = lane; j <= i; j += kWarpSize) dot += static_cast<double>(to_float(p[j])) * d[j];
    const auto total = static_cast<float>(warp_sum(dot));
    for (int64_t j = lane; j < seq; j += kWarpSize) d[j] = j <= i ? scale * to_float(p[j]) * (d[j] - total) : 0.0f;
  }
}

// dst = src for `count` matrices of rows x cols, converted (Note [bf16 attention]):
// matrix g's row r at src + g * src_stride + r * src_ld, likewise dst.
template <class In, class Out>
__global__ void copy_matrices(const In* src, int64_t src_ld, int64_t src_stride, Out* dst, int64_t dst_ld,
                              int64_t dst_stride, int64_t count, int64_t rows, int64_t cols) {
  const int64_t n = count * rows * cols;
  for (int64_t e = grid_start(); e < n; e += grid_stride()) {
    const int64_t row_of_all = e / cols;
    const int64_t col = e - row_of_all * cols;
    const int64_t g = row_of_all / rows;
    const int64_t row = row_of_all - g * rows;
    dst[g * dst_stride + row * dst_ld + col] = from_float<Out>(to_float(src[g * src_stride + row * src_ld + col]));
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

// Where the ops' arrays lie in the workspace, for one GEMM call's `count` heads
// (Note [bf16 attention]); each starts on a 256-byte boundary, as cuBLAS prefers.
struct WorkspaceLayout {
  size_t scores = 0;   // fp32 T x T per head: bf16 forward's S, and backward's dP
  size_t operand = 0;  // bf16 backward: K or Q widened to fp32, T x hs per head
  size_t product = 0;  // bf16 backward: dS K or dS^T Q in fp32, T x hs per head
  size_t forward_bytes = 0, backward_bytes = 0;
};

constexpr size_t kWorkspaceAlign = 256;
size_t align_up(size_t bytes) { return (bytes + kWorkspaceAlign - 1) / kWorkspaceAlign * kWorkspaceAlign; }

WorkspaceLayout workspace_layout(int64_t count, int64_t seq, int64_t head_size, DType type) {
  WorkspaceLayout l;
  const size_t square = static_cast<size_t>(count) * static_cast<size_t>(seq) * static_cast<size_t>(seq) * sizeof(float);
  if (type == DType::kF32) {
    l.backward_bytes = square;  // dP alone, exactly as before bf16
    return l;
  }
  const size_t head = static_cast<size_t>(count) * static_cast<size_t>(seq) * static_cast<size_t>(head_size) *
                      sizeof(float);
  l.operand = align_up(square);
  l.product = l.operand + align_up(head);
  l.forward_bytes = square;
  l.backward_bytes = l.product + head;
  return l;
}

unsigned row_blocks(int64_t rows) {
  // A grid-stride loop: cap the grid (any legal count gives the same result).
  const int64_t needed = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;
  return static_cast<unsigned>(needed < kMaxBlocks ? needed : kMaxBlocks);
}

}  // namespace

size_t CudaBackend::attention_workspace_bytes(int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                                              DType type) const {
  if (batch == 0 || seq == 0 || heads == 0 || channels == 0) return 0;
  const FusedAttentionShape shape{batch, seq, channels, heads};
  if (fused_attention_->supports(shape, type)) return fused_attention_->workspace_bytes(shape);
  if (flash_attention_->supports(shape)) return flash_attention_->workspace_bytes(shape);
  const HeadLoop loop(batch, heads);
  const WorkspaceLayout l = workspace_layout(loop.count, seq, channels / heads, type);
  return l.forward_bytes > l.backward_bytes ? l.forward_bytes : l.backward_bytes;
}

size_t CudaBackend::attention_saved_bytes(int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                                          DType type) const {
  const FusedAttentionShape shape{batch, seq, channels, heads};
  if (fused_attention_->supports(shape, type) || flash_attention_->supports(shape)) {
    return static_cast<size_t>(batch * heads * seq) * sizeof(float);  // each row's log-sum-exp
  }
  return OpsBackend::attention_saved_bytes(batch, seq, channels, heads, type);
}

bool CudaBackend::attention_backward_deterministic(int64_t batch, int64_t seq, int64_t channels, int64_t heads,
                                                   DType type) const {
  // dtrain's own fused kernels and the unfused path sum in a fixed order.
  return fused_attention_->deterministic() || !fused_attention_->supports({batch, seq, channels, heads}, type);
}

void CudaBackend::attention_forward(Context& ctx, ConstTypedPtr qkv, TypedPtr out, TypedPtr probs, int64_t batch,
                                    int64_t seq, int64_t channels, int64_t heads) {
  if (batch == 0 || seq == 0 || channels == 0) return;
  const DType type = qkv.type;
  constexpr const char* kOp = "attention_forward";
  DTRAIN_ASSERT(out.type == type && probs.type == type,
                "cuda " << kOp << ": qkv, out and saved share one type; got " << dtype_name(qkv.type) << ", "
                        << dtype_name(out.type) << ", " << dtype_name(probs.type));
  const FusedAttentionShape shape{batch, seq, channels, heads};
  if (fused_attention_->supports(shape, type)) {
    const size_t bytes = fused_attention_->workspace_bytes(shape);
    fused_attention_->forward(shape, qkv.data, out.data, static_cast<float*>(probs.data),
                              bytes == 0 ? nullptr : ctx.workspace(bytes));
    return;
  }
  if (flash_attention_->supports(shape)) {
    flash_attention_->forward(stream(), type, shape, qkv.data, out.data, static_cast<float*>(probs.data));
    return;
  }
  const AttentionShape s = attention_shape(batch, seq, channels, heads);
  const HeadLoop loop(batch, heads);
  const int64_t T = seq, C = channels, hs = s.head_size;
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  const WorkspaceLayout l = workspace_layout(loop.count, T, hs, type);
  // fp32 scores are the probabilities themselves (softmax in place); bf16 ones are fp32
  // in the workspace.
  float* scratch = l.forward_bytes == 0 ? nullptr : static_cast<float*>(ctx.workspace(l.forward_bytes));
  const ConstTypedPtr q = qkv, k = qkv.at(C), v = qkv.at(2 * C);
  for (int64_t call = 0; call < loop.calls; ++call) {
    const int64_t at_qkv = loop.offset(s.qkv, call), qkv_stride = loop.stride(s.qkv);
    const TypedPtr p = probs.at(loop.offset(s.probs, call));
    const int64_t p_stride = loop.stride(s.probs);
    const TypedPtr scores = scratch == nullptr ? p : TypedPtr(scratch, DType::kF32);
    const int64_t scores_stride = scratch == nullptr ? p_stride : T * T;
    // S = scale * Q K^T
    gemm_strided_batched(false, true, T, T, hs, scale, q.at(at_qkv), 3 * C, qkv_stride, k.at(at_qkv), 3 * C,
                         qkv_stride, 0.0f, scores, T, scores_stride, loop.count);
    cuda::storage_dispatch(type, [&](auto tag) {
      using P = typename decltype(tag)::type;
      causal_softmax_forward<<<row_blocks(loop.count * T), kBlockThreads, 0, stream()>>>(
          scores.f32(), scores_stride, typed<P>(p, kOp), p_stride, loop.count, T);
    });
    DTRAIN_CUDA_LAUNCH_CHECK();
    // out = P V
    gemm_strided_batched(false, false, T, hs, T, 1.0f, p, T, p_stride, v.at(at_qkv), 3 * C, qkv_stride, 0.0f,
                         out.at(loop.offset(s.out, call)), C, loop.stride(s.out), loop.count);
  }
}

void CudaBackend::attention_backward(Context& ctx, ConstTypedPtr dout, ConstTypedPtr qkv, ConstTypedPtr out,
                                     ConstTypedPtr probs, TypedPtr dqkv, int64_t batch, int64_t seq, int64_t channels,
                                     int64_t heads) {
  if (batch == 0 || seq == 0 || channels == 0) return;
  const DType type = qkv.type;
  constexpr const char* kOp = "attention_backward";
  DTRAIN_ASSERT(dout.type == type && out.type == type && probs.type == type && dqkv.type == type,
                "cuda " << kOp << ": dout, qkv, out, saved and dqkv share one type; got " << dtype_name(dout.type)
                        << ", " << dtype_name(qkv.type) << ", " << dtype_name(out.type) << ", "
                        << dtype_name(probs.type) << ", " << dtype_name(dqkv.type));
  const FusedAttentionShape shape{batch, seq, channels, heads};
  if (fused_attention_->supports(shape, type)) {
    const size_t bytes = fused_attention_->workspace_bytes(shape);
    fused_attention_->backward(shape, qkv.data, out.data, dout.data, static_cast<const float*>(probs.data),
                               dqkv.data, bytes == 0 ? nullptr : ctx.workspace(bytes));
    return;
  }
  if (flash_attention_->supports(shape)) {
    flash_attention_->backward(stream(), type, shape, qkv.data, out.data, dout.data,
                               static_cast<const float*>(probs.data), dqkv.data,
                               static_cast<float*>(ctx.workspace(flash_attention_->workspace_bytes(shape))));
    return;
  }
  const AttentionShape s = attention_shape(batch, seq, channels, heads);
  const HeadLoop loop(batch, heads);
  const int64_t T = seq, C = channels, hs = s.head_size;
  const float scale = 1.0f / sqrtf(static_cast<float>(hs));
  const WorkspaceLayout l = workspace_layout(loop.count, T, hs, type);
  auto* scratch = static_cast<char*>(ctx.workspace(l.backward_bytes));
  auto* dprobs = reinterpret_cast<float*>(scratch + l.scores);
  auto* operand = reinterpret_cast<float*>(scratch + l.operand);
  auto* product = reinterpret_cast<float*>(scratch + l.product);
  const TypedPtr dprobs_t(dprobs, DType::kF32);
  const ConstTypedPtr q = qkv, k = qkv.at(C), v = qkv.at(2 * C);
  const TypedPtr dq = dqkv, dk = dqkv.at(C), dv = dqkv.at(2 * C);
  for (int64_t call = 0; call < loop.calls; ++call) {
    const int64_t at_qkv = loop.offset(s.qkv, call), at_out = loop.offset(s.out, call);
    const int64_t qkv_stride = loop.stride(s.qkv), out_stride = loop.stride(s.out);
    const ConstTypedPtr p = probs.at(loop.offset(s.probs, call));
    const int64_t p_stride = loop.stride(s.probs);
    // dP = dO V^T, then dV = P^T dO.
    gemm_strided_batched(false, true, T, T, hs, 1.0f, dout.at(at_out), C, out_stride, v.at(at_qkv), 3 * C,
                         qkv_stride, 0.0f, dprobs_t, T, T * T, loop.count);
    gemm_strided_batched(true, false, T, hs, T, 1.0f, p, T, p_stride, dout.at(at_out), C, out_stride, 0.0f,
                         dv.at(at_qkv), 3 * C, qkv_stride, loop.count);
    cuda::storage_dispatch(type, [&](auto tag) {
      using P = typename decltype(tag)::type;
      causal_softmax_backward<<<row_blocks(loop.count * T), kBlockThreads, 0, stream()>>>(
          typed<P>(p, kOp), p_stride, dprobs, loop.count, T, scale);
    });
    DTRAIN_CUDA_LAUNCH_CHECK();
    // dQ = dS K, dK = dS^T Q: `into` = op(dS) `by`. In bf16 through fp32 copies
    // (Note [bf16 attention]).
    const auto ds_product = [&](bool transpose_ds, ConstTypedPtr by, TypedPtr into) {
      if (type == DType::kF32) {
        gemm_strided_batched(transpose_ds, false, T, hs, T, 1.0f, dprobs_t, T, T * T, by, 3 * C, qkv_stride, 0.0f,
                             into, 3 * C, qkv_stride, loop.count);
        return;
      }
      const unsigned blocks = blocks_for(loop.count * T * hs, kBlockThreads);
      copy_matrices<<<blocks, kBlockThreads, 0, stream()>>>(typed<__nv_bfloat16>(by, kOp), 3 * C, qkv_stride,
                                                             operand, hs, T * hs, loop.count, T, hs);
      DTRAIN_CUDA_LAUNCH_CHECK();
      gemm_strided_batched(transpose_ds, false, T, hs, T, 1.0f, dprobs_t, T, T * T,
                           ConstTypedPtr(operand, DType::kF32), hs, T * hs, 0.0f, TypedPtr(product, DType::kF32),
                           hs, T * hs, loop.count);
      copy_matrices<<<blocks, kBlockThreads, 0, stream()>>>(static_cast<const float*>(product), hs, T * hs,
                                                             typed<__nv_bfloat16>(into, kOp), 3 * C, qkv_stride,
                                                             loop.count, T, hs);
      DTRAIN_CUDA_LAUNCH_CHECK();
    };
    ds_product(false, k.at(at_qkv), dq.at(at_qkv));
    ds_product(true, q.at(at_qkv), dk.at(at_qkv));
  }
}

}  // namespace dtrain
