// Token and position embedding (Note [Transformer ops], kernels/ops.h):
//   forward   y[b, t] = wte[tokens[b, t]] + wpe[t]
//   backward  dwte[v] += sum of dy[b, t] over tokens[b, t] == v;  dwpe[t] += sum_b dy[b, t]
//
// Backward is deterministic without float atomics. The (token, position) pairs are
// sorted by token with cub's radix sort, which is stable and deterministic, so each
// token's positions form one run, in increasing flat position b * seq + t. One block
// per run start then adds the run into its wte row, channel by channel, in that order,
// starting from the row's current value: exactly the float additions of the plain loop
// "for b, for t: dwte[tokens[b, t]] += dy[b, t]", whatever the grid. dwpe[t] likewise
// adds dy[0, t], dy[1, t], ... in order. A frequent token's run is summed by one block;
// for GPT batches (a few thousand positions) that is short.
//
// Tokens come from the batch, so they are checked on the device: Note [Label check on
// the device] (cuda_backend.h), the token record. A bad token's forward row is wpe[t]
// alone, and backward leaves it out of dwte (its position still adds to dwpe).
//
// In bf16 (wte, wpe, y and dy; dwte and dwpe stay fp32) forward rounds each sum once,
// and backward adds the widened dy in the same order as in fp32.
#include <cub/device/device_radix_sort.cuh>

#include <cstdint>
#include <limits>

#include "kernels/check.h"
#include "kernels/context.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/index_check.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/storage.cuh"

namespace dtrain {

namespace {

using cuda::from_float;
using cuda::grid_start;
using cuda::grid_stride;
using cuda::kBlockThreads;
using cuda::to_float;
using cuda::typed;

// Sub-buffers of the workspace start on this boundary (cub wants 256-byte alignment
// for its temporary storage, and the key and value arrays are read coalesced).
constexpr size_t kAlign = 256;

size_t align_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Bits of the sort keys: valid tokens are [0, vocab) and every bad one becomes vocab.
int key_bits(int64_t vocab) {
  int bits = 1;
  while (bits < 32 && (int64_t{1} << bits) <= vocab) ++bits;
  return bits;
}

// Where backward's arrays lie in the workspace: keys and positions before and after
// the sort, then cub's temporary storage.
struct SortLayout {
  size_t keys_in, keys_out, positions_in, positions_out, temp, temp_bytes, total;
};

SortLayout sort_layout(int64_t positions, int64_t vocab) {
  SortLayout l{};
  const size_t n = static_cast<size_t>(positions);
  // The size query reads no data; it needs only the current device (cub picks its
  // tuning by the device's architecture).
  DTRAIN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, l.temp_bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), static_cast<int>(positions), 0,
      key_bits(vocab)));
  l.keys_in = 0;
  l.keys_out = l.keys_in + align_up(n * sizeof(uint32_t));
  l.positions_in = l.keys_out + align_up(n * sizeof(uint32_t));
  l.positions_out = l.positions_in + align_up(n * sizeof(int32_t));
  l.temp = l.positions_out + align_up(n * sizeof(int32_t));
  l.total = l.temp + align_up(l.temp_bytes);
  return l;
}

void check_sizes(int64_t batch, int64_t seq, int64_t vocab) {
  // The token record packs the flat position into 32 bits, cub sorts int-counted
  // arrays, and the sort keys are 32-bit.
  DTRAIN_ASSERT(batch * seq <= std::numeric_limits<int32_t>::max(),
                "embedding: " << batch << " x " << seq << " positions exceed 2^31");
  DTRAIN_ASSERT(vocab < std::numeric_limits<int32_t>::max(), "embedding: vocab " << vocab << " exceeds 2^31 - 1");
}

template <class T>
__global__ void embedding_forward_kernel(const int32_t* tokens, const T* wte, const T* wpe, T* y,
                                         int64_t seq, int64_t channels, int64_t vocab, int64_t n,
                                         unsigned long long* record, unsigned long long launch) {
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    const int64_t position = i / channels;
    const int64_t c = i - position * channels;
    const int64_t t = position % seq;
    const int32_t token = tokens[position];
    const float pos = to_float(wpe[t * channels + c]);
    if (token < 0 || token >= vocab) {
      if (c == 0) cuda::record_bad_index(record, launch, position, token, vocab, seq);
      y[i] = from_float<T>(pos);
    } else {
      y[i] = from_float<T>(to_float(wte[token * channels + c]) + pos);
    }
  }
}

// The sort's input: key = token (vocab for a bad one, which is recorded), value = the
// flat position.
__global__ void embedding_sort_input(const int32_t* tokens, int64_t positions, int64_t seq, int64_t vocab,
                                     uint32_t* keys, int32_t* values, unsigned long long* record,
                                     unsigned long long launch) {
  for (int64_t i = grid_start(); i < positions; i += grid_stride()) {
    const int32_t token = tokens[i];
    const bool bad = token < 0 || token >= vocab;
    if (bad) cuda::record_bad_index(record, launch, i, token, vocab, seq);
    keys[i] = static_cast<uint32_t>(bad ? vocab : token);
    values[i] = static_cast<int32_t>(i);
  }
}

// One block per run of equal keys (the block at the run's first index does it all;
// the others find they are not a start and move on), its threads over channels.
template <class T>
__global__ void embedding_wte_runs(const T* dy, const uint32_t* keys, const int32_t* positions,
                                   int64_t count, int64_t channels, int64_t vocab, float* dwte) {
  for (int64_t i = blockIdx.x; i < count; i += gridDim.x) {
    const uint32_t key = keys[i];
    if (key >= vocab || (i > 0 && keys[i - 1] == key)) continue;  // block-uniform
    float* row = dwte + static_cast<int64_t>(key) * channels;
    for (int64_t c = threadIdx.x; c < channels; c += blockDim.x) {
      float acc = row[c];
      for (int64_t j = i; j < count && keys[j] == key; ++j) acc += to_float(dy[positions[j] * channels + c]);
      row[c] = acc;
    }
  }
}

template <class T>
__global__ void embedding_wpe_sums(const T* dy, int64_t batch, int64_t seq, int64_t channels, float* dwpe) {
  const int64_t n = seq * channels;
  for (int64_t i = grid_start(); i < n; i += grid_stride()) {
    float acc = dwpe[i];
    for (int64_t b = 0; b < batch; ++b) acc += to_float(dy[b * n + i]);
    dwpe[i] = acc;
  }
}

}  // namespace

void CudaBackend::embedding_forward(Context& /*ctx*/, const int32_t* tokens, ConstTypedPtr wte_t, ConstTypedPtr wpe_t,
                                    TypedPtr y_t, int64_t batch, int64_t seq, int64_t channels, int64_t vocab) {
  const int64_t n = batch * seq * channels;
  if (n == 0) return;
  check_sizes(batch, seq, vocab);
  cuda::storage_dispatch(y_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    constexpr const char* kOp = "embedding_forward";
    embedding_forward_kernel<<<blocks_for(n, kBlockThreads), kBlockThreads, 0, stream()>>>(
        tokens, typed<T>(wte_t, kOp), typed<T>(wpe_t, kOp), typed<T>(y_t, kOp), seq, channels, vocab, n,
        token_record(), token_launches_);
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
  ++token_launches_;
}

size_t CudaBackend::embedding_backward_workspace_bytes(int64_t batch, int64_t seq, int64_t channels,
                                                       int64_t vocab) const {
  if (batch * seq * channels == 0) return 0;
  return sort_layout(batch * seq, vocab).total;
}

void CudaBackend::embedding_backward(Context& ctx, ConstTypedPtr dy_t, const int32_t* tokens, float* dwte,
                                     float* dwpe, int64_t batch, int64_t seq, int64_t channels, int64_t vocab) {
  const int64_t positions = batch * seq;
  if (positions * channels == 0) return;
  check_sizes(batch, seq, vocab);
  const SortLayout l = sort_layout(positions, vocab);
  auto* scratch = static_cast<char*>(ctx.workspace(l.total));
  auto* keys_in = reinterpret_cast<uint32_t*>(scratch + l.keys_in);
  auto* keys_out = reinterpret_cast<uint32_t*>(scratch + l.keys_out);
  auto* positions_in = reinterpret_cast<int32_t*>(scratch + l.positions_in);
  auto* positions_out = reinterpret_cast<int32_t*>(scratch + l.positions_out);

  embedding_sort_input<<<blocks_for(positions, kBlockThreads), kBlockThreads, 0, stream()>>>(
      tokens, positions, seq, vocab, keys_in, positions_in, token_record(), token_launches_);
  DTRAIN_CUDA_LAUNCH_CHECK();
  ++token_launches_;
  size_t temp_bytes = l.temp_bytes;
  DTRAIN_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(scratch + l.temp, temp_bytes, keys_in, keys_out,
                                                    positions_in, positions_out, static_cast<int>(positions),
                                                    0, key_bits(vocab), stream()));
  cuda::storage_dispatch(dy_t.type, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* dy = typed<T>(dy_t, "embedding_backward");
    embedding_wte_runs<<<blocks_for(positions, 1), kBlockThreads, 0, stream()>>>(
        dy, keys_out, positions_out, positions, channels, vocab, dwte);
    DTRAIN_CUDA_LAUNCH_CHECK();
    embedding_wpe_sums<<<blocks_for(seq * channels, kBlockThreads), kBlockThreads, 0, stream()>>>(
        dy, batch, seq, channels, dwpe);
  });
  DTRAIN_CUDA_LAUNCH_CHECK();
}

}  // namespace dtrain
