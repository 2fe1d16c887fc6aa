// Softmax cross-entropy, one warp per row, then a fixed-order reduction into stats.
//
// Note [Fused classifier]
// This is llm.c's fused classifier (its fused_classifier kernel): the loss and the
// loss gradient of a row come from one kernel that reads the row's logits and writes
// dlogits over them in place (the GPT passes dlogits = logits), so the (B*T, V)
// probabilities are never materialised and the logits are the one V-wide activation
// held (Note [Gpt activation layout]). Its workspace is a loss and a hit per ROW
// (softmax_cross_entropy_workspace_bytes(batch), independent of V), checked by
// tests/gpu/test_fused_ops.cpp. One difference from llm.c: the row is read three
// times (max, sum of exponentials, gradient) where llm.c reads it twice (an online
// softmax keeps the max and the rescaled sum in one pass); for large rows the second
// and third reads come from L2 (below), so merging the first two would save little.
//
// Per row: the max (and the first index reaching it, as the CPU's strict-'>' scan),
// then sum(exp(z - max)) in double, loss = log(sum) + max - z[label], and, when asked,
// dlogits = grad_scale * (softmax - onehot). Shifting by the max keeps every exponent
// <= 0, so no logits overflow. The row's loss and hit go to workspace slots, and one
// block adds them in a fixed order to stats, so the loss sum is the same every run
// (an atomicAdd per row would make it depend on scheduling).
//
// A warp per row suits the image classifiers' heads (10 to a few thousand classes):
// eight rows per block and coalesced reads of each row. A language model's head (the
// GPT's 50,304 classes: 100 KB a bf16 row) takes a block per row instead
// (cross_entropy_block_rows, from kBlockRowClasses classes). With a warp per row every
// resident warp had a row in flight, thousands of rows, far more than L2 holds, so all
// three reads came from DRAM (2.5 ms in a GPT-2 124M step of 16 x 1024 tokens on an
// H200). A block of 1024 threads per row keeps two rows in flight per SM (264 on an
// H200, 26 MB in bf16), which its 50 MB L2 holds, so the second and third reads hit
// it; and its threads read 16-byte packs where the row allows (rows_packable). The
// float operations on each element are the warp kernel's; the row's max and sum are
// combined over the block in a fixed order (each thread's elements in index order,
// then lanes, then warps in order), so the results repeat bit for bit. Labels outside
// [0, classes) are recorded, not trusted:
// Note [Label check on the device] (cuda_backend.h).
// With bf16 logits (and dlogits) everything is computed in float from the widened
// logits, as in fp32, and only the stored gradient is rounded (kernels/cuda/storage.cuh).
//
// The kernels live here, apart from their launches (cross_entropy.cu), so that the unit
// tests' SIMT emulator (tests/unit/kernels/simt_emulator.h) runs this very source on the
// CPU in CI (tests/unit/kernels/test_cross_entropy_emulated.cpp): it keeps to the CUDA
// names the emulator defines, and to_float, from_float, load_floats and store_floats
// (kernels/cuda/storage.cuh on the device, the test's own on the host), which the
// includer provides first.
#pragma once

#include <cstdint>

#include "kernels/cuda/index_check.cuh"
#include "kernels/cuda/launch.cuh"

namespace dtrain::cuda::xent {

constexpr int kRowsPerBlock = kBlockThreads / kWarpSize;
constexpr unsigned kFullMask = 0xffffffffu;
// From this many classes a block takes a row (cross_entropy_block_rows).
constexpr int64_t kBlockRowClasses = 4096;
constexpr int kRowThreads = 1024;
constexpr int kRowWarps = kRowThreads / kWarpSize;

// Combines two (max, first index) candidates; idx < 0 marks an empty one. Keeps the
// larger value, and of equal values the smaller index, i.e. the first in the row.
__device__ inline void keep_first_max(float& best, int64_t& best_at, float v, int64_t at) {
  if (at < 0) return;
  if (best_at < 0 || v > best || (v == best && at < best_at)) {
    best = v;
    best_at = at;
  }
}

template <class T>
__global__ void cross_entropy_rows(const T* logits, const int32_t* labels, int64_t batch,
                                   int64_t classes, float grad_scale, T* dlogits,
                                   double loss_weight, double* row_loss, int32_t* row_hit,
                                   unsigned long long* label_error,
                                   unsigned long long launch) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t warp = threadIdx.x / kWarpSize;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(kRowsPerBlock) + warp; r < batch;
       r += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* z = logits + r * classes;
    T* d = dlogits == nullptr ? nullptr : dlogits + r * classes;
    const int32_t label = labels[r];  // the same in every lane: branches stay warp-uniform
    if (label < 0 || label >= classes) {
      if (lane == 0) {
        cuda::record_bad_index(label_error, launch, r, label, classes);
        row_loss[r] = 0.0;
        row_hit[r] = 0;
      }
      if (d != nullptr) {
        for (int64_t c = lane; c < classes; c += kWarpSize) d[c] = from_float<T>(0.0f);
      }
      continue;
    }

    // Each lane scans its stride of the row in order, so a strict '>' keeps the lane's
    // first maximum; the combine keeps the lowest index among equal maxima. As on the
    // CPU, z[0] seeds the search even when NaN, and any later NaN is passed over (a
    // lane does not start from one).
    float mx = 0.0f;
    int64_t arg = -1;
    for (int64_t c = lane; c < classes; c += kWarpSize) {
      const float v = to_float(z[c]);
      if (arg < 0 ? (c == 0 || v == v) : v > mx) {
        mx = v;
        arg = c;
      }
    }
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      const float other = __shfl_down_sync(kFullMask, mx, offset);
      const int64_t other_at = __shfl_down_sync(kFullMask, arg, offset);
      keep_first_max(mx, arg, other, other_at);
    }
    // Broadcast lane 0's result, so every lane shifts by the same max (with NaN logits
    // the lanes' own reductions could disagree).
    mx = __shfl_sync(kFullMask, mx, 0);
    arg = __shfl_sync(kFullMask, arg, 0);

    double sum = 0.0;
    for (int64_t c = lane; c < classes; c += kWarpSize) sum += expf(to_float(z[c]) - mx);
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      sum += __shfl_down_sync(kFullMask, sum, offset);
    }
    sum = __shfl_sync(kFullMask, sum, 0);

    // Read before dlogits is written: it may be the logits themselves (lane
    // label % 32 writes d[label]; the other lanes must have read it first).
    const float z_label = to_float(z[label]);
    __syncwarp();
    if (d != nullptr) {
      // The CPU op's float operations in its order: exp, times scale, minus grad_scale
      // (explicitly rounded, so nvcc does not fuse them into one FMA).
      const auto scale = static_cast<float>(static_cast<double>(grad_scale) / sum);
      for (int64_t c = lane; c < classes; c += kWarpSize) {
        const float p = __fmul_rn(expf(to_float(z[c]) - mx), scale);
        d[c] = from_float<T>(c == label ? __fsub_rn(p, grad_scale) : p);
      }
    }
    if (lane == 0) {
      row_loss[r] = loss_weight * (log(sum) + (static_cast<double>(mx) - static_cast<double>(z_label)));
      row_hit[r] = arg == label ? 1 : 0;
    }
  }
}

// The warp kernel's per-row work with a block of kRowThreads per row: thread t takes
// elements [V i, V i + V) for i = t, t + kRowThreads, ..., in that order (V = 8 when
// the rows are packable, else 1).
template <int V, class T>
// Two blocks per SM (32 registers a thread) keep the two rows in flight the file
// comment counts on.
__global__ void __launch_bounds__(kRowThreads, 2)
    cross_entropy_block_rows(const T* logits, const int32_t* labels, int64_t batch, int64_t classes,
                             float grad_scale, T* dlogits, double loss_weight, double* row_loss, int32_t* row_hit,
                             unsigned long long* label_error, unsigned long long launch) {
  __shared__ float warp_max[kRowWarps];
  __shared__ int64_t warp_arg[kRowWarps];
  __shared__ double warp_sum[kRowWarps];
  __shared__ float row_max;
  __shared__ int64_t row_arg;
  __shared__ double row_sum;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int64_t groups = classes / V;  // V divides classes when V > 1 (rows_packable)
  for (int64_t r = blockIdx.x; r < batch; r += gridDim.x) {
    const T* z = logits + r * classes;
    T* d = dlogits == nullptr ? nullptr : dlogits + r * classes;
    const int32_t label = labels[r];  // the same in every thread: branches stay block-uniform
    if (label < 0 || label >= classes) {
      if (threadIdx.x == 0) {
        cuda::record_bad_index(label_error, launch, r, label, classes);
        row_loss[r] = 0.0;
        row_hit[r] = 0;
      }
      if (d != nullptr) {
        for (int64_t c = threadIdx.x; c < classes; c += kRowThreads) d[c] = from_float<T>(0.0f);
      }
      continue;
    }

    // The max and its first index, by the warp kernel's rule per thread; combined with
    // keep_first_max, warp 0 (which holds index 0, the seed even when NaN) first.
    float mx = 0.0f;
    int64_t arg = -1;
    for (int64_t g = threadIdx.x; g < groups; g += kRowThreads) {
      float v[V];
      cuda::load_floats<V>(z + g * V, v);
      DTRAIN_UNROLL
      for (int k = 0; k < V; ++k) {
        const int64_t c = g * V + k;
        if (arg < 0 ? (c == 0 || v[k] == v[k]) : v[k] > mx) {
          mx = v[k];
          arg = c;
        }
      }
    }
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      const float other = __shfl_down_sync(kFullMask, mx, offset);
      const int64_t other_at = __shfl_down_sync(kFullMask, arg, offset);
      keep_first_max(mx, arg, other, other_at);
    }
    if (lane == 0) {
      warp_max[warp] = mx;
      warp_arg[warp] = arg;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      float best = warp_max[0];
      int64_t best_at = warp_arg[0];
      for (int w = 1; w < kRowWarps; ++w) keep_first_max(best, best_at, warp_max[w], warp_arg[w]);
      row_max = best;
      row_arg = best_at;
    }
    __syncthreads();
    mx = row_max;
    arg = row_arg;

    double sum = 0.0;
    for (int64_t g = threadIdx.x; g < groups; g += kRowThreads) {
      float v[V];
      cuda::load_floats<V>(z + g * V, v);
      DTRAIN_UNROLL
      for (int k = 0; k < V; ++k) sum += expf(v[k] - mx);
    }
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) sum += __shfl_down_sync(kFullMask, sum, offset);
    if (lane == 0) warp_sum[warp] = sum;
    // Read before dlogits is written (it may be the logits): every thread reads it
    // here, and the barrier below comes before any write.
    const float z_label = to_float(z[label]);
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0.0;
      for (int w = 0; w < kRowWarps; ++w) total += warp_sum[w];
      row_sum = total;
    }
    __syncthreads();
    sum = row_sum;

    if (d != nullptr) {
      const auto scale = static_cast<float>(static_cast<double>(grad_scale) / sum);
      for (int64_t g = threadIdx.x; g < groups; g += kRowThreads) {
        float v[V];
        cuda::load_floats<V>(z + g * V, v);
        DTRAIN_UNROLL
        for (int k = 0; k < V; ++k) {
          const float p = __fmul_rn(expf(v[k] - mx), scale);
          v[k] = g * V + k == label ? __fsub_rn(p, grad_scale) : p;
        }
        cuda::store_floats<V>(d + g * V, v);
      }
    }
    if (threadIdx.x == 0) {
      row_loss[r] = loss_weight * (log(sum) + (static_cast<double>(mx) - static_cast<double>(z_label)));
      row_hit[r] = arg == label ? 1 : 0;
    }
    __syncthreads();  // the shared slots are reused by the next row
  }
}

// stats[0] += sum of row_loss, stats[1] += hit_weight * sum of row_hit; one block,
// fixed order.
__global__ void cross_entropy_totals(const double* row_loss, const int32_t* row_hit,
                                     int64_t batch, double hit_weight, double* stats) {
  __shared__ double loss[kBlockThreads];
  __shared__ long long hits[kBlockThreads];
  double l = 0.0;
  long long h = 0;
  for (int64_t r = threadIdx.x; r < batch; r += kBlockThreads) {
    l += row_loss[r];
    h += row_hit[r];
  }
  loss[threadIdx.x] = l;
  hits[threadIdx.x] = h;
  __syncthreads();
  for (int half = kBlockThreads / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) {
      loss[threadIdx.x] += loss[threadIdx.x + half];
      hits[threadIdx.x] += hits[threadIdx.x + half];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    stats[0] += loss[0];
    stats[1] += hit_weight * static_cast<double>(hits[0]);
  }
}

}  // namespace dtrain::cuda::xent
