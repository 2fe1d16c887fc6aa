// The device half of Note [Label check on the device] (cuda_backend.h), shared by the
// ops that index with data from the batch: cross-entropy's labels and the embedding's
// tokens. Included by kernels/cuda/*.cu only.
#pragma once

#include <cstdint>

namespace dtrain::cuda {

// Words of one bad-index record: the host reads them at the next synchronization.
inline constexpr int kIndexRecordWords = 4;
// [0] (position << 32) | value of the lowest bad position, all ones when none;
// [1] the bound the value was checked against; [2] the number of the launch that
// recorded; [3] the op's row length (the embedding's seq), to name (sample, position).

// Records that `value` at `position` (< 2^32) is outside [0, bound) in launch number
// `launch`. Launches on the stream run in order, so a record left by an earlier launch
// is complete here and is kept: the report names the first bad batch, not the lowest
// position of any batch since the last check. Threads of this launch read either
// "empty" or their own launch number, so they race only on atomicMin, and the other
// words they write are the same in every thread.
__device__ inline void record_bad_index(unsigned long long* record, unsigned long long launch,
                                        int64_t position, int32_t value, int64_t bound,
                                        int64_t row_length = 0) {
  const unsigned long long owner = record[2];
  if (owner == ~0ULL || owner == launch) {
    const unsigned long long code =
        (static_cast<unsigned long long>(position) << 32) | static_cast<uint32_t>(value);
    atomicMin(record, code);
    record[1] = static_cast<unsigned long long>(bound);
    record[2] = launch;
    record[3] = static_cast<unsigned long long>(row_length);
  }
}

}  // namespace dtrain::cuda
