// Deterministic column sums of a row-major (rows, channels) input on the device, for
// the reductions over rows: bias_backward's (elementwise.cu) and LayerNorm's parameter
// gradients (layernorm.cu). For each output o < Terms::kOutputs,
//   out_o[c] += sum over rows r of term_o(r, c),
// summed in double and added to out_o as one float, without atomics, in an order that
// depends on (rows, channels) alone: the same inputs give the same bits on every run
// and every GPU.
//
// Note [Column sum partition]
// Two kernels, with the partials in a workspace between them. column_partials cuts the
// rows into chunks of rows_per_chunk (column_sum_plan); block (tile, chunk) has
// kColumnLanes threads across a tile of channels and kColumnGroups row groups. Group g
// sums rows first + g, first + g + kColumnGroups, ... of its chunk in order, the block
// then adds its groups' sums in group order, and the chunk's partial goes to the
// workspace, laid out [output][chunk][channel]. column_totals gives each channel
// kTotalGroups threads, each summing chunks g, g + kTotalGroups, ... in order, adds
// those in group order and adds the total to out. A thread holds a pack of
// kPackElements channels where rows_packable allows (16-byte loads of bf16) and one
// channel otherwise; either way each channel's terms are added in the same order, so
// the vector and the scalar form give the same bits.
//
// Why this shape: a kernel that sums a column per thread over all rows has only
// channels/32 blocks (24 to 96 for GPT-2's 768 to 3072 channels, on 132 SMs) and took
// ~750 us a call on GPT-2's bf16 gradients of 16384 rows, which a full read does in
// 10-30 us on an H200. Here the chunks are
// sized for about kColumnTargetBlocks blocks in the first kernel (some 15 per SM of an
// H200), at least kColumnMinChunkRows rows each (4 per thread, loads in flight) and at
// most kColumnMaxChunks; the partials are then about 2 MiB per output whatever the
// width (kColumnTargetBlocks tiles of 128 channels of doubles), a few percent of the
// input at GPT sizes, and the second kernel reads them with (channels / 8) x outputs
// blocks. The plan never looks at the device, so a 132-SM and a 114-SM card, or a
// resumed run, sum in the same order.
//
// The kernels live here, apart from their launch (column_sums.cuh), so that the unit
// tests' SIMT emulator (tests/unit/kernels/simt_emulator.h) runs this very source on
// the CPU in CI (tests/unit/kernels/test_layernorm_emulated.cpp): it keeps to the CUDA
// names the emulator defines, and to kPackElements and what a Terms loads with
// (kernels/cuda/storage.cuh on the device, the test's own on the host), which the
// includer provides first.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/launch.cuh"

namespace dtrain::cuda {

// column_partials: threads across a tile, and row groups (16 x 16 = one block).
inline constexpr int kColumnLanes = 16;
inline constexpr int kColumnGroups = kBlockThreads / kColumnLanes;
// The channels of a packed tile; the plan counts tiles of this width in either form.
inline constexpr int64_t kColumnTileChannels = int64_t{kColumnLanes} * kPackElements;
inline constexpr int64_t kColumnTargetBlocks = 2048;
inline constexpr int64_t kColumnMinChunkRows = 4 * kColumnGroups;
inline constexpr int64_t kColumnMaxChunks = 1024;
// column_totals: channels of a block (8 doubles: two 32-byte sectors per chunk row),
// and the chunk groups that share each channel.
inline constexpr int kTotalLanes = 8;
inline constexpr int kTotalGroups = kBlockThreads / kTotalLanes;

struct ColumnSumPlan {
  int64_t rows_per_chunk, chunks;
};

// A function of the shape only (Note [Column sum partition]); rows, channels > 0.
inline ColumnSumPlan column_sum_plan(int64_t rows, int64_t channels) {
  const int64_t tiles = (channels + kColumnTileChannels - 1) / kColumnTileChannels;
  int64_t wanted = (kColumnTargetBlocks + tiles - 1) / tiles;
  if (wanted > kColumnMaxChunks) wanted = kColumnMaxChunks;
  int64_t per = (rows + wanted - 1) / wanted;
  if (per < kColumnMinChunkRows) per = kColumnMinChunkRows;
  per = (per + kColumnGroups - 1) / kColumnGroups * kColumnGroups;
  return {per, (rows + per - 1) / per};
}

// The workspace column_sums takes: the partials, `outputs` doubles per chunk and channel.
inline size_t column_sum_workspace_bytes(int64_t rows, int64_t channels, int outputs) {
  if (rows <= 0 || channels <= 0) return 0;
  return static_cast<size_t>(outputs) * static_cast<size_t>(column_sum_plan(rows, channels).chunks) *
         static_cast<size_t>(channels) * sizeof(double);
}

template <int kOutputs>
struct ColumnOutputs {
  float* out[kOutputs];  // (channels) each, added into
};

// Terms is a small copyable struct with `static constexpr int kOutputs` and
//   template <int V> __device__ void add(int64_t row, int64_t at, double (&acc)[kOutputs][V]) const
// which adds term_o(row, c + k) to acc[o][k] for k < V, where at = row * channels + c
// (V elements of the row from c: one pack when V is kPackElements).
template <int V, class Terms>
__global__ void __launch_bounds__(kBlockThreads)
    column_partials(Terms terms, int64_t rows, int64_t channels, ColumnSumPlan plan, double* partials) {
  constexpr int kOutputs = Terms::kOutputs;
  constexpr int kTile = kColumnLanes * V;
  __shared__ double group_sums[kOutputs][kColumnGroups][kTile];
  const int lane = static_cast<int>(threadIdx.x) % kColumnLanes;
  const int group = static_cast<int>(threadIdx.x) / kColumnLanes;
  const int64_t tile_start = static_cast<int64_t>(blockIdx.x) * kTile;
  const int64_t c = tile_start + static_cast<int64_t>(lane) * V;
  const int64_t chunk = blockIdx.y;
  const int64_t first = chunk * plan.rows_per_chunk;
  const int64_t last = first + plan.rows_per_chunk < rows ? first + plan.rows_per_chunk : rows;
  double acc[kOutputs][V] = {};
  if (c < channels) {  // with V > 1, channels % V == 0: the whole pack is in the row
    DTRAIN_UNROLL_BY(4)
    for (int64_t r = first + group; r < last; r += kColumnGroups) terms.template add<V>(r, r * channels + c, acc);
  }
  DTRAIN_UNROLL
  for (int o = 0; o < kOutputs; ++o) {
    DTRAIN_UNROLL
    for (int k = 0; k < V; ++k) group_sums[o][group][lane * V + k] = acc[o][k];
  }
  __syncthreads();
  for (int i = static_cast<int>(threadIdx.x); i < kOutputs * kTile; i += kBlockThreads) {
    const int o = i / kTile, col = i % kTile;
    if (tile_start + col >= channels) continue;
    double sum = 0.0;
    for (int g = 0; g < kColumnGroups; ++g) sum += group_sums[o][g][col];
    partials[(o * plan.chunks + chunk) * channels + tile_start + col] = sum;
  }
}

// Block (channel group, output): out[c] += the channel's partials, chunk groups first.
template <int kOutputs>
__global__ void __launch_bounds__(kBlockThreads)
    column_totals(const double* partials, int64_t chunks, int64_t channels, ColumnOutputs<kOutputs> outputs) {
  __shared__ double group_sums[kTotalGroups][kTotalLanes];
  const int lane = static_cast<int>(threadIdx.x) % kTotalLanes;
  const int group = static_cast<int>(threadIdx.x) / kTotalLanes;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kTotalLanes + lane;
  const int o = static_cast<int>(blockIdx.y);
  const double* p = partials + o * chunks * channels;
  double sum = 0.0;
  if (c < channels) {
    for (int64_t k = group; k < chunks; k += kTotalGroups) sum += p[k * channels + c];
  }
  group_sums[group][lane] = sum;
  __syncthreads();
  if (group == 0 && c < channels) {
    double total = 0.0;
    for (int g = 0; g < kTotalGroups; ++g) total += group_sums[g][lane];
    float* out = outputs.out[0];  // selected, not indexed: an indexed array would go to local memory
    DTRAIN_UNROLL
    for (int i = 1; i < kOutputs; ++i) out = o == i ? outputs.out[i] : out;
    out[c] += static_cast<float>(total);
  }
}

}  // namespace dtrain::cuda
