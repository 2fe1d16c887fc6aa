// Element access for the CPU ops that take fp32 or bf16 tensors (Note [bf16 storage]
// in kernels/dtype.h). Their loops are templates on the storage type T (float or
// bf16): they read through widen() and write through narrow<T>(), and compute in fp32
// between the two, so the fp32 instantiation is the plain fp32 loop and the bf16 one
// computes the same numbers from the widened inputs and rounds each stored value once.
// Both are bit operations that `omp simd` loops vectorise (no call per element).
// Private to kernels/cpu/.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <type_traits>

#include "kernels/dtype.h"
#include "kernels/ops.h"

namespace dtrain::cpu {

inline float widen(float v) { return v; }
inline float widen(bf16 v) { return bf16_to_float(v); }

template <class T>
inline T narrow(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    static_assert(std::is_same_v<T, bf16>, "storage types are float and bf16");
    return float_to_bf16(v);
  }
}

// dst[0, n) = src[0, n) widened / rounded, on the calling thread: widen() and
// narrow<bf16>() over a row, in the widest vectors the CPU has (Note [Conversion
// clones] in storage.cpp).
void widen_row(const bf16* src, int64_t n, float* dst);
void narrow_row(const float* src, int64_t n, bf16* dst);
// The same over [0, n) on ctx's team, in chunks of whole cache lines.
void widen_team(Context& ctx, const bf16* src, int64_t n, float* dst);
void narrow_team(Context& ctx, const float* src, int64_t n, bf16* dst);

template <class T>
const T* typed(ConstTypedPtr p) {
  return static_cast<const T*>(p.data);
}
template <class T>
T* typed(TypedPtr p) {
  return static_cast<T*>(p.data);
}

struct NamedTensor {
  const char* name;
  ConstTypedPtr tensor;
};

// The one storage type of an op's typed tensors; throws Error naming the op and the
// tensors when they differ. Null pointers (an absent optional output) are skipped.
DType common_type(const char* op, std::initializer_list<NamedTensor> tensors);

// Calls f(T{}) with T the storage type of `type`: float or bf16.
template <class F>
void with_storage(DType type, F&& f) {
  if (type == DType::kBF16) {
    f(bf16{});
  } else {
    f(float{});
  }
}

}  // namespace dtrain::cpu
