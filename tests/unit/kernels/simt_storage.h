// The half of kernels/cuda/storage.cuh that the emulated kernels use, for the host's
// storage types (float and dtrain::bf16): load as float, store rounded to nearest
// even, V elements at a time. Include after simt_emulator.h and before a kernel .cuh.
#pragma once

#include "kernels/dtype.h"

namespace dtrain::cuda {

inline float to_float(float v) { return v; }
inline float to_float(bf16 v) { return bf16_to_float(v); }

template <class T>
T from_float(float v);
template <>
inline float from_float<float>(float v) {
  return v;
}
template <>
inline bf16 from_float<bf16>(float v) {
  return float_to_bf16(v);
}

// The device reads V = kPackElements elements as one 16- or 32-byte access; the same
// values one by one here (the emulated launch checks the alignment the device needs).
inline constexpr int kPackElements = 8;
template <int V, class T>
void load_floats(const T* p, float (&out)[V]) {
  for (int k = 0; k < V; ++k) out[k] = to_float(p[k]);
}
template <int V, class T>
void store_floats(T* p, const float (&in)[V]) {
  for (int k = 0; k < V; ++k) p[k] = from_float<T>(in[k]);
}

}  // namespace dtrain::cuda
