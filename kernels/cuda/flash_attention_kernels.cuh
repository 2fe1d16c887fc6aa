// The kernels of dtrain's own fused causal attention (Note [Own fused attention],
// kernels/cuda/flash_attention.h): forward, backward's row statistic D, and backward's
// dQ and dK/dV passes. Templates on the storage type T (float, or bf16: __nv_bfloat16
// on the device) and on DPL, the head dimensions each lane of a warp owns (hs <= 32 DPL).
//
// This file is compiled twice: by nvcc, from flash_attention.cu, and by the host
// compiler, from the unit tests' SIMT emulator (tests/unit/kernels/simt_emulator.h),
// which runs each CUDA thread as a fiber so that CI executes these very kernels on the
// CPU. So it uses only what both provide: the CUDA built-in names (threadIdx, blockIdx,
// __syncthreads, __syncwarp, __shfl_sync, __shfl_xor_sync, __host__, __device__, expf, logf,
// fmaxf), to_float and from_float<T> (kernels/cuda/storage.cuh, or the emulator's), and
// block_shared(), the block's dynamic shared memory, 16-byte aligned (the emulator's
// is a std::vector's, malloc's 16). The includer provides them before including this.
//
// Layout, as attention.cu: qkv (B, T, 3C), head h of q, k, v in features h*hs + [0, hs)
// of each third; out, dout (B, T, C); stats and D (B, H, T) fp32, row (b*H + h)*T + t.
//
// Every warp-collective call (the shuffles) is reached by all 32 lanes of the warp:
// the conditions around them depend on the warp's row, never on the lane. And every
// __syncthreads is reached by every thread of the block: the tile loops' bounds depend
// on the block alone. The emulator fails a test that breaks either rule.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/launch.cuh"

namespace dtrain::cuda::flash {

inline constexpr int kWarpLanes = 32;
inline constexpr int kWarps = 4;            // a block is 128 threads
inline constexpr int kRowsPerWarp = 4;      // rows a warp carries through one tile loop
inline constexpr int kBlockRows = kWarps * kRowsPerWarp;  // the block's own rows: 16
inline constexpr int kTile = kWarpLanes;    // the rows streamed past them: one a lane
inline constexpr int kThreads = kWarps * kWarpLanes;
inline constexpr unsigned kAllLanes = 0xffffffffu;

// Note [Own attention's shared rows]
// A warp carries its 4 own rows (queries; keys in dK/dV) together: each lane scores its
// tile row against all 4, reading its tile row's element once for the 4 products and
// each own row's 4 consecutive elements in one 16-byte load, and the weighted sums over
// the tile read each tile row's element once for the 4 rows. So the block's own rows
// sit hs rounded up to 4 floats apart (own_ld: 16-byte rows, read by every lane at
// once, a broadcast), and the tile's rows hs + 1 apart (shared_ld: lane j reading
// element d of row j hits bank (j + d) % 32, no conflict). Each row's sums keep their
// order (d, then the tile's rows in order), so the results are the bits of one row at a
// time; only the shared-memory reads are fewer. The weights of those sums (lane j's,
// one per own row) go through the warp's stage in shared memory, 4 floats a lane, so
// that a lane reads tile row j's 4 weights in one 16-byte load rather than 4 shuffles.
//
// The launch geometry (host code): grid (grid_rows(T), B * H) of kThreads threads, and
// each kernel's dynamic shared memory: the own rows (own_ld floats each) and the warps'
// stages (one each; dK/dV two) first, so that they start 16-byte aligned, then the
// tile's rows (shared_ld), then dK/dV's 64 row statistics. row_dot is a grid-stride
// loop over rows, a warp each.
inline constexpr int kStageFloats = kTile * kRowsPerWarp;  // one warp's stage
inline unsigned grid_rows(int64_t seq) { return static_cast<unsigned>((seq + kBlockRows - 1) / kBlockRows); }
__host__ __device__ inline int own_ld(int64_t hs) { return static_cast<int>((hs + 3) / 4 * 4); }
inline size_t forward_shared_bytes(int64_t hs) {
  return (static_cast<size_t>(kBlockRows) * own_ld(hs) + kWarps * kStageFloats +
          static_cast<size_t>(2 * kTile) * (hs + 1)) *
         4;
}
inline size_t backward_shared_bytes(int64_t hs) {
  return (static_cast<size_t>(2 * kBlockRows) * own_ld(hs) + 2 * kWarps * kStageFloats +
          static_cast<size_t>(2 * kTile) * (hs + 1) + 2 * kTile) *
         4;
}
inline unsigned row_dot_blocks(int64_t rows) {
  constexpr int64_t kMaxBlocks = int64_t{1} << 20;  // any count gives the same bits
  const int64_t needed = (rows + kWarps - 1) / kWarps;
  return static_cast<unsigned>(needed < kMaxBlocks ? needed : kMaxBlocks);
}

// Calls f with DPL, the lanes' share of a head, as a std::integral_constant: the least
// of 1, 2, 4, 8 with 32 DPL >= hs (hs <= 256).
template <class F>
void head_dispatch(int64_t hs, F&& f) {
  if (hs <= 32) {
    f(std::integral_constant<int, 1>{});
  } else if (hs <= 64) {
    f(std::integral_constant<int, 2>{});
  } else if (hs <= 128) {
    f(std::integral_constant<int, 4>{});
  } else {
    f(std::integral_constant<int, 8>{});
  }
}

// Shared-memory rows are hs + 1 floats apart, so that 32 lanes reading one column of 32
// rows (lane j, row j) hit 32 different banks when hs is a multiple of 32.
__device__ inline int shared_ld(int hs) { return hs + 1; }

// Every lane returns the same bits (lanes i and i^k combine the same two values).
__device__ inline float warp_max(float v) {
  for (int offset = kWarpLanes / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(kAllLanes, v, offset));
  return v;
}
__device__ inline float warp_sum(float v) {
  for (int offset = kWarpLanes / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kAllLanes, v, offset);
  return v;
}

// rows x hs values of a head, from `base` (row r at base + r * ld_global), into shared
// memory with row stride ld; rows at or past `valid` are zero. Warp w takes rows w,
// w + 4, ..., its lanes a row's consecutive values (no division by hs per value).
template <class T>
__device__ inline void load_rows(const T* base, int64_t ld_global, int rows, int valid, int hs, float* dst, int ld) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpLanes;
  for (int r = static_cast<int>(threadIdx.x) / kWarpLanes; r < rows; r += kWarps) {
    float* row = dst + r * ld;
    if (r < valid) {
      const T* src = base + static_cast<int64_t>(r) * ld_global;
      for (int d = lane; d < hs; d += kWarpLanes) row[d] = to_float(src[d]);
    } else {
      for (int d = lane; d < hs; d += kWarpLanes) row[d] = 0.0f;
    }
  }
}

// Rows key0 .. key0 + 31 of the head's k and v (zeros past seq) into ks and vs.
template <class T>
__device__ inline void load_key_tile(const T* q_base, int64_t ld_qkv, int channels, int key0, int seq, int hs,
                                     float* ks, float* vs, int ld) {
  const int valid = seq - key0 < kTile ? seq - key0 : kTile;
  load_rows(q_base + key0 * ld_qkv + channels, ld_qkv, kTile, valid, hs, ks, ld);
  load_rows(q_base + key0 * ld_qkv + 2 * channels, ld_qkv, kTile, valid, hs, vs, ld);
}

// Four consecutive floats of shared memory, read as one 16-byte load.
struct alignas(16) Quad {
  float v[4];
};

// s[r] = own row r . the lane's tile row, over hs floats: own rows at own + r * ld_own
// (ld_own and own 16-byte aligned: Note [Own attention's shared rows]), the lane's at
// lane_row. Each sum runs over d in order, s += own[d] * lane_row[d].
__device__ inline void dot_own_rows(const float* own, int ld_own, const float* lane_row, int hs,
                                    float (&s)[kRowsPerWarp]) {
  DTRAIN_UNROLL
  for (int r = 0; r < kRowsPerWarp; ++r) s[r] = 0.0f;
  int d = 0;
  for (; d + 4 <= hs; d += 4) {
    const float b[4] = {lane_row[d], lane_row[d + 1], lane_row[d + 2], lane_row[d + 3]};
    DTRAIN_UNROLL
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const Quad a = *reinterpret_cast<const Quad*>(own + r * ld_own + d);
      DTRAIN_UNROLL
      for (int k = 0; k < 4; ++k) s[r] += a.v[k] * b[k];
    }
  }
  for (; d < hs; ++d) {
    const float b = lane_row[d];
    DTRAIN_UNROLL
    for (int r = 0; r < kRowsPerWarp; ++r) s[r] += own[r * ld_own + d] * b;
  }
}

// For each own row r: acc[r][t] += sum over the tile's lanes first[r] <= jj < end[r] of
// w_jj * rows[jj][lane + 32 t], where lane jj holds w[r]: each lane adds to the head
// dimensions it owns, in the order of jj. first and end must be the same on every lane
// (an empty range, first = end, leaves the row's sums alone). Every lane of the warp
// calls it; `stage` is the warp's (kStageFloats, 16-byte aligned), free until the
// block's next __syncthreads.
static_assert(kRowsPerWarp == 4, "a lane's weights for its warp's rows fill one Quad");
template <int DPL>
__device__ inline void accumulate_own_rows(float (&acc)[kRowsPerWarp][DPL], const float (&w)[kRowsPerWarp],
                                           float* stage, const float* rows, int ld,
                                           const int (&first)[kRowsPerWarp], const int (&end)[kRowsPerWarp],
                                           int hs, int lane) {
  *reinterpret_cast<Quad*>(stage + lane * kRowsPerWarp) = Quad{{w[0], w[1], w[2], w[3]}};
  __syncwarp();
  int lo = kTile, hi = 0;
  DTRAIN_UNROLL
  for (int r = 0; r < kRowsPerWarp; ++r) {
    if (first[r] < end[r]) {
      lo = first[r] < lo ? first[r] : lo;
      hi = end[r] > hi ? end[r] : hi;
    }
  }
  for (int jj = lo; jj < hi; ++jj) {
    const Quad wj = *reinterpret_cast<const Quad*>(stage + jj * kRowsPerWarp);
    DTRAIN_UNROLL
    for (int t = 0; t < DPL; ++t) {
      const int d = lane + kWarpLanes * t;
      if (d >= hs) continue;
      const float x = rows[jj * ld + d];
      DTRAIN_UNROLL
      for (int r = 0; r < kRowsPerWarp; ++r) {
        if (jj >= first[r] && jj < end[r]) acc[r][t] += wj.v[r] * x;
      }
    }
  }
}

// Where a block of the forward and backward kernels works: head (b, h) = blockIdx.y,
// its 16 own rows from row0 = 16 blockIdx.x (queries, or keys in dK/dV), this thread's
// warp and lane, and the head's q (and so k, v: + C, + 2C) and dO rows in memory.
template <class T>
struct HeadBlock {
  int hs, ld, ld_own, warp, lane, head, b, h, row0, rows;  // rows: own rows before seq ends
  int64_t ld_qkv, head_at;
  const T* q_base;
  const T* do_base;
  __device__ HeadBlock(const T* qkv, const T* dout, int seq, int channels, int heads)
      : hs(channels / heads),
        ld(shared_ld(hs)),
        ld_own(own_ld(hs)),
        warp(static_cast<int>(threadIdx.x) / kWarpLanes),
        lane(static_cast<int>(threadIdx.x) % kWarpLanes),
        head(static_cast<int>(blockIdx.y)),
        b(head / heads),
        h(head - b * heads),
        row0(static_cast<int>(blockIdx.x) * kBlockRows),
        rows(seq - row0 < kBlockRows ? seq - row0 : kBlockRows),
        ld_qkv(3 * static_cast<int64_t>(channels)),
        head_at(static_cast<int64_t>(h) * hs),
        q_base(qkv + static_cast<int64_t>(b) * seq * ld_qkv + head_at),
        do_base(dout == nullptr ? nullptr : dout + static_cast<int64_t>(b) * seq * channels + head_at) {}
};

// Forward. Grid (ceil(T / 16), B * H); each block takes 16 query rows of one head,
// each warp 4 of them, and streams the keys and values of rows 0 .. its last row past
// them, 32 at a time: lane j scores key j of the tile against the warp's 4 rows (Note
// [Own attention's shared rows]), and the online softmax (running max m, running sum
// l, output rescaled when m grows) keeps only O(hs) state a row.
// out = acc / l, stats = m + log l. Shared memory: Q (16 rows), the warps' stages, K and
// V (32 rows each).
template <class T, int DPL>
__global__ void forward(const T* qkv, T* out, float* stats, int seq, int channels, int heads, float scale) {
  const HeadBlock<T> at(qkv, nullptr, seq, channels, heads);
  const int hs = at.hs, ld = at.ld, ld_own = at.ld_own, warp = at.warp, lane = at.lane, row0 = at.row0;
  const int64_t ld_qkv = at.ld_qkv;
  const T* q_base = at.q_base;
  float* qs = block_shared();
  float* stage = qs + kBlockRows * ld_own + warp * kStageFloats;
  float* ks = qs + kBlockRows * ld_own + kWarps * kStageFloats;
  float* vs = ks + kTile * ld;
  const int last = row0 + at.rows - 1;  // the block's last row
  load_rows(q_base + row0 * ld_qkv, ld_qkv, kBlockRows, at.rows, hs, qs, ld_own);

  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][DPL];
  DTRAIN_UNROLL
  for (int r = 0; r < kRowsPerWarp; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
    DTRAIN_UNROLL
    for (int t = 0; t < DPL; ++t) acc[r][t] = 0.0f;
  }
  const int warp_row0 = row0 + warp * kRowsPerWarp;  // the warp's first row
  for (int key0 = 0; key0 <= last; key0 += kTile) {
    __syncthreads();  // the previous tile is used up (and Q is loaded)
    load_key_tile(q_base, ld_qkv, channels, key0, seq, hs, ks, vs, ld);
    __syncthreads();
    // The warp's rows that see a key of this tile: i < seq and key0 <= i, the same on
    // every lane; their scores by lane j = key j of the tile.
    if (warp_row0 >= seq || key0 > warp_row0 + kRowsPerWarp - 1) continue;  // warp-uniform
    float dots[kRowsPerWarp], p[kRowsPerWarp];
    int first[kRowsPerWarp], end[kRowsPerWarp];
    dot_own_rows(qs + warp * kRowsPerWarp * ld_own, ld_own, ks + lane * ld, hs, dots);
    const int j = key0 + lane;
    DTRAIN_UNROLL
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int i = warp_row0 + r;
      p[r] = 0.0f;
      first[r] = end[r] = 0;
      if (i >= seq || key0 > i) continue;  // the row: the same for every lane
      const float s = j <= i ? scale * dots[r] : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(s));  // finite: key0 <= i scores
      p[r] = j <= i ? expf(s - m_new) : 0.0f;
      const float rescale = expf(m[r] - m_new);  // 0 on the first tile (m = -inf)
      l[r] = l[r] * rescale + warp_sum(p[r]);
      DTRAIN_UNROLL
      for (int t = 0; t < DPL; ++t) acc[r][t] *= rescale;
      end[r] = i - key0 + 1 < kTile ? i - key0 + 1 : kTile;
      m[r] = m_new;
    }
    accumulate_own_rows(acc, p, stage, vs, ld, first, end, hs, lane);
  }
  DTRAIN_UNROLL
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = row0 + warp * kRowsPerWarp + r;
    if (i >= seq) continue;
    const float inv = 1.0f / l[r];
    T* o = out + (static_cast<int64_t>(at.b) * seq + i) * channels + at.head_at;
    DTRAIN_UNROLL
    for (int t = 0; t < DPL; ++t) {
      const int d = lane + kWarpLanes * t;
      if (d < hs) o[d] = from_float<T>(acc[r][t] * inv);
    }
    if (lane == 0) stats[static_cast<int64_t>(at.head) * seq + i] = m[r] + logf(l[r]);
  }
}

// D_i = dO_i . O_i for every row (b, h, i), from the stored output: one warp a row,
// grid-stride over the B * H * T rows. Backward's dS = P (dP - D) needs it for every
// (query, key) pair, so it is computed once here.
template <class T>
__global__ void row_dot(const T* dout, const T* out, float* d_rows, int64_t rows, int seq, int channels, int heads) {
  const int hs = channels / heads;
  const int lane = static_cast<int>(threadIdx.x) % kWarpLanes;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * kWarps;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / kWarpLanes; row < rows;
       row += warps) {
    // Row (b, h, i) of the (B, H, T) statistics; its features in (B, T, C).
    const int64_t i = row % seq, bh = row / seq, h = bh % heads, b = bh / heads;
    const int64_t at = (b * seq + i) * channels + h * hs;
    float sum = 0.0f;
    for (int d = lane; d < hs; d += kWarpLanes) sum += to_float(dout[at + d]) * to_float(out[at + d]);
    sum = warp_sum(sum);
    if (lane == 0) d_rows[row] = sum;
  }
}

// Backward, dQ: the forward's loop over keys again, per query row i:
//   P_ij = exp(s q_i.k_j - stats_i),  dP_ij = dO_i . v_j,  dS_ij = P_ij (dP_ij - D_i),
//   dQ_i = s sum_j dS_ij k_j.
// Shared memory: Q and dO (16 rows each), the warps' stages, K and V (32 rows each).
template <class T, int DPL>
__global__ void backward_dq(const T* qkv, const T* dout, const float* stats, const float* d_rows, T* dqkv, int seq,
                            int channels, int heads, float scale) {
  const HeadBlock<T> at(qkv, dout, seq, channels, heads);
  const int hs = at.hs, ld = at.ld, ld_own = at.ld_own, warp = at.warp, lane = at.lane, head = at.head,
            row0 = at.row0;
  const int64_t ld_qkv = at.ld_qkv;
  const T* q_base = at.q_base;
  float* qs = block_shared();
  float* dos = qs + kBlockRows * ld_own;
  float* stage = dos + kBlockRows * ld_own + warp * kStageFloats;
  float* ks = dos + kBlockRows * ld_own + kWarps * kStageFloats;
  float* vs = ks + kTile * ld;
  const int last = row0 + at.rows - 1;
  load_rows(q_base + row0 * ld_qkv, ld_qkv, kBlockRows, at.rows, hs, qs, ld_own);
  load_rows(at.do_base + static_cast<int64_t>(row0) * channels, channels, kBlockRows, at.rows, hs, dos, ld_own);

  float acc[kRowsPerWarp][DPL];
  DTRAIN_UNROLL
  for (int r = 0; r < kRowsPerWarp; ++r) {
    DTRAIN_UNROLL
    for (int t = 0; t < DPL; ++t) acc[r][t] = 0.0f;
  }
  const float* head_stats = stats + static_cast<int64_t>(head) * seq;
  const float* head_d = d_rows + static_cast<int64_t>(head) * seq;
  const int warp_row0 = row0 + warp * kRowsPerWarp;
  for (int key0 = 0; key0 <= last; key0 += kTile) {
    __syncthreads();
    load_key_tile(q_base, ld_qkv, channels, key0, seq, hs, ks, vs, ld);
    __syncthreads();
    if (warp_row0 >= seq || key0 > warp_row0 + kRowsPerWarp - 1) continue;  // warp-uniform
    float qk[kRowsPerWarp], dov[kRowsPerWarp], ds[kRowsPerWarp];
    int first[kRowsPerWarp], end[kRowsPerWarp];
    dot_own_rows(qs + warp * kRowsPerWarp * ld_own, ld_own, ks + lane * ld, hs, qk);
    dot_own_rows(dos + warp * kRowsPerWarp * ld_own, ld_own, vs + lane * ld, hs, dov);
    const int j = key0 + lane;
    DTRAIN_UNROLL
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int i = warp_row0 + r;
      ds[r] = 0.0f;
      first[r] = end[r] = 0;
      if (i >= seq || key0 > i) continue;  // warp-uniform
      if (j <= i) {
        const float p = expf(scale * qk[r] - head_stats[i]);
        ds[r] = p * (dov[r] - head_d[i]);
      }
      end[r] = i - key0 + 1 < kTile ? i - key0 + 1 : kTile;
    }
    accumulate_own_rows(acc, ds, stage, ks, ld, first, end, hs, lane);
  }
  DTRAIN_UNROLL
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int i = row0 + warp * kRowsPerWarp + r;
    if (i >= seq) continue;
    T* dq = dqkv + (static_cast<int64_t>(at.b) * seq + i) * ld_qkv + at.head_at;
    DTRAIN_UNROLL
    for (int t = 0; t < DPL; ++t) {
      const int d = lane + kWarpLanes * t;
      if (d < hs) dq[d] = from_float<T>(scale * acc[r][t]);
    }
  }
}

// Backward, dK and dV: each block takes 16 key rows of one head, each warp 4 of them,
// and streams the query rows that see them (i >= the block's first key) past, 32 at a
// time, lane i scoring query i of the tile against the warp's 4 keys:
//   dV_j = sum_i P_ij dO_i,  dK_j = s sum_i dS_ij q_i.
// Each (b, h, j) is one warp's alone, so there is no atomic and no cross-block sum:
// the result is the same bits every run. Shared memory: K and V (16 rows each), the
// warps' two stages each (P's and dS's), then Q and dO (32 rows each), then the tile's
// stats and D (32 each).
template <class T, int DPL>
__global__ void backward_dkv(const T* qkv, const T* dout, const float* stats, const float* d_rows, T* dqkv, int seq,
                             int channels, int heads, float scale) {
  const HeadBlock<T> at(qkv, dout, seq, channels, heads);
  const int hs = at.hs, ld = at.ld, ld_own = at.ld_own, warp = at.warp, lane = at.lane, head = at.head,
            row0 = at.row0;
  const int64_t ld_qkv = at.ld_qkv;
  const T* q_base = at.q_base;
  const T* do_base = at.do_base;
  float* ks = block_shared();
  float* vs = ks + kBlockRows * ld_own;
  float* p_stage = vs + kBlockRows * ld_own + warp * 2 * kStageFloats;  // the warp's two
  float* ds_stage = p_stage + kStageFloats;
  float* qs = vs + kBlockRows * ld_own + kWarps * 2 * kStageFloats;
  float* dos = qs + kTile * ld;
  float* tile_stats = dos + kTile * ld;
  float* tile_d = tile_stats + kTile;
  load_rows(q_base + row0 * ld_qkv + channels, ld_qkv, kBlockRows, at.rows, hs, ks, ld_own);
  load_rows(q_base + row0 * ld_qkv + 2 * channels, ld_qkv, kBlockRows, at.rows, hs, vs, ld_own);

  float dk[kRowsPerWarp][DPL], dv[kRowsPerWarp][DPL];
  DTRAIN_UNROLL
  for (int r = 0; r < kRowsPerWarp; ++r) {
    DTRAIN_UNROLL
    for (int t = 0; t < DPL; ++t) dk[r][t] = dv[r][t] = 0.0f;
  }
  const float* head_stats = stats + static_cast<int64_t>(head) * seq;
  const float* head_d = d_rows + static_cast<int64_t>(head) * seq;
  const int warp_row0 = row0 + warp * kRowsPerWarp;  // the warp's first key
  for (int q0 = row0 / kTile * kTile; q0 < seq; q0 += kTile) {
    __syncthreads();
    const int valid = seq - q0 < kTile ? seq - q0 : kTile;
    load_rows(q_base + q0 * ld_qkv, ld_qkv, kTile, valid, hs, qs, ld);
    load_rows(do_base + static_cast<int64_t>(q0) * channels, channels, kTile, valid, hs, dos, ld);
    if (static_cast<int>(threadIdx.x) < kTile) {
      const int i = q0 + static_cast<int>(threadIdx.x);
      tile_stats[threadIdx.x] = i < seq ? head_stats[i] : 0.0f;
      tile_d[threadIdx.x] = i < seq ? head_d[i] : 0.0f;
    }
    __syncthreads();
    // No key of the warp's is seen by a query of the tile: warp-uniform.
    if (warp_row0 >= seq || q0 + kTile <= warp_row0) continue;
    float qk[kRowsPerWarp], dov[kRowsPerWarp], p[kRowsPerWarp], ds[kRowsPerWarp];
    int first[kRowsPerWarp], end[kRowsPerWarp];
    dot_own_rows(ks + warp * kRowsPerWarp * ld_own, ld_own, qs + lane * ld, hs, qk);
    dot_own_rows(vs + warp * kRowsPerWarp * ld_own, ld_own, dos + lane * ld, hs, dov);
    const int i = q0 + lane;
    DTRAIN_UNROLL
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int j = warp_row0 + r;
      p[r] = ds[r] = 0.0f;
      first[r] = end[r] = 0;
      if (j >= seq || q0 + kTile <= j) continue;  // warp-uniform: no query of the tile sees key j
      if (i >= j && i < seq) {
        p[r] = expf(scale * qk[r] - tile_stats[lane]);
        ds[r] = p[r] * (dov[r] - tile_d[lane]);
      }
      // Lanes below j - q0 and at or past `valid` hold zeros: start and stop around them.
      first[r] = j - q0 > 0 ? j - q0 : 0;
      end[r] = valid;
    }
    accumulate_own_rows(dv, p, p_stage, dos, ld, first, end, hs, lane);
    accumulate_own_rows(dk, ds, ds_stage, qs, ld, first, end, hs, lane);
  }
  DTRAIN_UNROLL
  for (int r = 0; r < kRowsPerWarp; ++r) {
    const int j = row0 + warp * kRowsPerWarp + r;
    if (j >= seq) continue;
    T* dk_row = dqkv + (static_cast<int64_t>(at.b) * seq + j) * ld_qkv + channels + at.head_at;
    T* dv_row = dk_row + channels;
    DTRAIN_UNROLL
    for (int t = 0; t < DPL; ++t) {
      const int d = lane + kWarpLanes * t;
      if (d < hs) {
        dk_row[d] = from_float<T>(scale * dk[r][t]);
        dv_row[d] = from_float<T>(dv[r][t]);
      }
    }
  }
}

}  // namespace dtrain::cuda::flash
