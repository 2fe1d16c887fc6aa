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
// it (pack_count); the fp32 ones keep their scalar loops. The row and column kernels
// (LayerNorm, the column sums) use packs in both types where rows_packable says so.
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

// V consecutive elements at p as floats, and back (rounded once each): one Pack when
// V is kPackElements (p must then be aligned to its pack), else V scalar accesses. The
// row and column kernels are templates on V, so their vector and scalar forms do the
// same float operations on each element.
template <int V, class T>
__device__ __forceinline__ void load_floats(const T* p, float (&out)[V]) {
  if constexpr (V == kPackElements) {
    const Pack<T> v = *reinterpret_cast<const Pack<T>*>(p);
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = to_float(v.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) out[k] = to_float(p[k]);
  }
}
template <int V, class T>
__device__ __forceinline__ void store_floats(T* p, const float (&in)[V]) {
  if constexpr (V == kPackElements) {
    Pack<T> v;
#pragma unroll
    for (int k = 0; k < V; ++k) v.v[k] = from_float<T>(in[k]);
    *reinterpret_cast<Pack<T>*>(p) = v;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) p[k] = from_float<T>(in[k]);
  }
}

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

// Whether rows of `channels` elements of these arrays may be read and written in packs
// (load_floats<kPackElements>): every row starts on a pack boundary when channels is a
// multiple of kPackElements and every pointer is aligned to its pack. Unlike
// pack_count, fp32 arrays qualify too: the row and column kernels (a warp per row, a
// block per column tile) are bound by how many bytes each thread has in flight, and
// one pack access keeps eight elements in flight where scalar loads keep one.
template <class... P>
bool rows_packable(int64_t channels, const P*... pointers) {
  return channels % kPackElements == 0 &&
         ((reinterpret_cast<uintptr_t>(pointers) % sizeof(Pack<std::remove_cv_t<P>>) == 0) && ...);
}

// Calls f(std::integral_constant<int, V>{}) with V = kPackElements when `packed`, else
// 1: the launch of a kernel template on V in the form rows_packable chose.
template <class F>
void with_row_form(bool packed, F&& f) {
  if (packed) {
    f(std::integral_constant<int, kPackElements>{});
  } else {
    f(std::integral_constant<int, 1>{});
  }
}

}  // namespace dtrain::cuda
