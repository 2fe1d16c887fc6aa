// The dropout decision (Note [Transformer ops], kernels/ops.h), one function for every
// backend so that the CPU and a GPU drop the same elements: a counter-based hash of
// (key, sample id, element), SplitMix64's finaliser, which is a bijection of 64-bit
// words with good avalanche, so neighbouring counters give unrelated bits.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define DTRAIN_HOST_DEVICE __host__ __device__
#else
#define DTRAIN_HOST_DEVICE
#endif

namespace dtrain {

DTRAIN_HOST_DEVICE inline uint64_t dropout_mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// A uniform draw in [0, 1) from the top 24 bits (exact in float).
DTRAIN_HOST_DEVICE inline float dropout_uniform(uint64_t key, int64_t sample_id, int64_t element) {
  const uint64_t h = dropout_mix(dropout_mix(key ^ dropout_mix(static_cast<uint64_t>(sample_id))) +
                                 static_cast<uint64_t>(element));
  return static_cast<float>(h >> 40) * (1.0f / 16777216.0f);
}

// True when element `element` of sample `sample_id` is kept at drop probability p.
DTRAIN_HOST_DEVICE inline bool dropout_keeps(uint64_t key, int64_t sample_id, int64_t element, float p) {
  return dropout_uniform(key, sample_id, element) >= p;
}

// The key of one dropout site: the run's seed, the 0-based optimizer step and the
// site's index in the model (never the rank or the micro-step).
inline uint64_t dropout_key(uint64_t seed, int64_t step, int64_t site) {
  return dropout_mix(dropout_mix(seed ^ dropout_mix(static_cast<uint64_t>(step))) + static_cast<uint64_t>(site));
}

}  // namespace dtrain
