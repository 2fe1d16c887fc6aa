// Stored element types on the device (Note [bf16 storage], kernels/dtype.h), for the
// kernels/cuda/*.cu kernels that are templates on their storage type T (float or
// __nv_bfloat16). A kernel loads with to_float, computes in float exactly as its fp32
// form does, and stores with from_float<T>, which rounds to nearest even: for T =
// float both are the identity, so the fp32 instantiation does the fp32 op's float
// operations unchanged.
//
// The host half: storage_dispatch calls a function with the storage tag of a DType,
// and typed<T> checks that a TypedPtr holds T. bf16 elementwise kernels read and write
// in packs of kPackElements (128-bit loads for bf16) where every pointer is aligned for
// it (pack_count); the fp32 ones keep their scalar loops.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

#include "kernels/check.h"
#include "kernels/cuda/launch.cuh"
#include "kernels/dtype.h"

namespace dtrain::cuda {

static_assert(sizeof(bf16) == sizeof(__nv_bfloat16) && alignof(bf16) == alignof(__nv_bfloat16),
              "dtrain::bf16 must be layout-compatible with __nv_bfloat16");

// ------------------------------------------------------------------------ device half

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Elements per pack: 16 bytes of bf16 (one 128-bit access), 32 bytes of float.
inline constexpr int kPackElements = 8;

template <class T>
struct alignas(sizeof(T) * kPackElements) Pack {
  T v[kPackElements];
};

// y[i] = f(i, x[i]) for i < n, in float: packs [0, packs) first, then the tail one by
// one. x and y may be the same array (each element is read, then written, by one
// thread), never overlapping otherwise.
template <class In, class Out, class F>
__device__ void map_elements(const In* x, Out* y, int64_t n, int64_t packs, F f) {
  const auto* xp = reinterpret_cast<const Pack<In>*>(x);
  auto* yp = reinterpret_cast<Pack<Out>*>(y);
  for (int64_t p = grid_start(); p < packs; p += grid_stride()) {
    const Pack<In> in = xp[p];
    Pack<Out> out;
#pragma unroll
    for (int k = 0; k < kPackElements; ++k) out.v[k] = from_float<Out>(f(p * kPackElements + k, to_float(in.v[k])));
    yp[p] = out;
  }
  for (int64_t i = packs * kPackElements + grid_start(); i < n; i += grid_stride()) {
    y[i] = from_float<Out>(f(i, to_float(x[i])));
  }
}

// y[i] = f(i, a[i], b[i]); y may be a or b.
template <class T, class F>
__device__ void map_elements(const T* a, const T* b, T* y, int64_t n, int64_t packs, F f) {
  const auto* ap = reinterpret_cast<const Pack<T>*>(a);
  const auto* bp = reinterpret_cast<const Pack<T>*>(b);
  auto* yp = reinterpret_cast<Pack<T>*>(y);
  for (int64_t p = grid_start(); p < packs; p += grid_stride()) {
    const Pack<T> va = ap[p];
    const Pack<T> vb = bp[p];
    Pack<T> out;
#pragma unroll
    for (int k = 0; k < kPackElements; ++k) {
      out.v[k] = from_float<T>(f(p * kPackElements + k, to_float(va.v[k]), to_float(vb.v[k])));
    }
    yp[p] = out;
  }
  for (int64_t i = packs * kPackElements + grid_start(); i < n; i += grid_stride()) {
    y[i] = from_float<T>(f(i, to_float(a[i]), to_float(b[i])));
  }
}

// -------------------------------------------------------------------------- host half

template <class T>
struct StorageTag {
  using type = T;
};

template <class T>
inline constexpr DType dtype_of = std::is_same_v<T, float> ? DType::kF32 : DType::kBF16;

// Calls f(StorageTag<float>{}) or f(StorageTag<__nv_bfloat16>{}) for `type`.
template <class F>
decltype(auto) storage_dispatch(DType type, F&& f) {
  if (type == DType::kBF16) return f(StorageTag<__nv_bfloat16>{});
  return f(StorageTag<float>{});
}

// The device pointer of `p` as T*, checking its type (a null pointer may have any).
template <class T>
T* typed(TypedPtr p, const char* op) {
  DTRAIN_ASSERT(p.data == nullptr || p.type == dtype_of<T>,
                "cuda " << op << ": all typed tensors of one call share one type; got " << dtype_name(p.type)
                        << " where " << dtype_name(dtype_of<T>) << " was expected");
  return static_cast<T*>(p.data);
}
template <class T>
const T* typed(ConstTypedPtr p, const char* op) {
  DTRAIN_ASSERT(p.data == nullptr || p.type == dtype_of<T>,
                "cuda " << op << ": all typed tensors of one call share one type; got " << dtype_name(p.type)
                        << " where " << dtype_name(dtype_of<T>) << " was expected");
  return static_cast<const T*>(p.data);
}

// The packs map_elements may take over n elements of these arrays: none when all are
// float (the fp32 kernels keep their scalar loops), else n / kPackElements when every
// pointer is aligned to its pack, and none otherwise.
template <class... P>
int64_t pack_count(int64_t n, const P*... pointers) {
  if constexpr ((std::is_same_v<std::remove_cv_t<P>, float> && ...)) {
    return 0;
  } else {
    const bool aligned = ((reinterpret_cast<uintptr_t>(pointers) % sizeof(Pack<std::remove_cv_t<P>>) == 0) && ...);
    return aligned ? n / kPackElements : 0;
  }
}

}  // namespace dtrain::cuda
