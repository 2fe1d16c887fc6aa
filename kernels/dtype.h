// Element types of stored tensors, and typed device pointers for the ops that take
// either (Note [bf16 storage]).
//
// Note [bf16 storage]
// With precision.compute bf16 a model stores its activations, their gradients and a
// copy of its parameters in bfloat16 (1 sign, 8 exponent, 7 mantissa bits: fp32 with
// the low 16 bits dropped). The fp32 parameters stay the master copy that the
// optimizer updates; parameter gradients, optimizer state, row statistics (LayerNorm's
// mean and 1/std) and the loss stay fp32. Every op that takes bf16 tensors computes
// in fp32: it widens its inputs (exact), computes as its fp32 form does, and rounds
// each value it stores once, to nearest even. So on the CPU a bf16 op's output is
// exactly round_bf16(fp32 op of the same inputs), which makes the CPU ops the oracle
// for every other backend's bf16 ops. Where an op keeps an intermediate for later
// (attention's probabilities), the stored, rounded value is the one it goes on with,
// on every backend. A GEMM on bf16 inputs accumulates in fp32 (the products of two
// bf16 values are exact in fp32) and stores C in bf16 or fp32.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/check.h"

namespace dtrain {

enum class DType : uint8_t { kF32, kBF16 };

inline size_t dtype_size(DType t) { return t == DType::kF32 ? 4 : 2; }
inline const char* dtype_name(DType t) { return t == DType::kF32 ? "fp32" : "bf16"; }

// A bfloat16 value: the high half of an fp32 bit pattern. Layout-compatible with
// CUDA's __nv_bfloat16.
struct bf16 {
  uint16_t bits;
};

inline float bf16_to_float(bf16 h) {
  const uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest, ties to even; NaN stays a (quiet) NaN, infinities stay infinite,
// and a finite value beyond bf16's largest rounds to infinity, as IEEE rounding does.
// The same as CUDA's __float2bfloat16_rn for every non-NaN input.
inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

// The value an fp32 number has once stored as bf16.
inline float round_bf16(float f) { return bf16_to_float(float_to_bf16(f)); }

// A device pointer to elements of a stated type. float* and bf16* convert to it, so
// fp32 callers of the typed ops pass their pointers unchanged.
struct TypedPtr {
  void* data = nullptr;
  DType type = DType::kF32;
  TypedPtr() = default;
  TypedPtr(std::nullptr_t) {}                                   // NOLINT: implicit by design
  TypedPtr(float* p) : data(p), type(DType::kF32) {}            // NOLINT
  TypedPtr(bf16* p) : data(p), type(DType::kBF16) {}            // NOLINT
  TypedPtr(void* p, DType t) : data(p), type(t) {}
  float* f32() const {
    DTRAIN_ASSERT(type == DType::kF32, "an fp32 tensor was expected, got " << dtype_name(type));
    return static_cast<float*>(data);
  }
  bf16* b16() const {
    DTRAIN_ASSERT(type == DType::kBF16, "a bf16 tensor was expected, got " << dtype_name(type));
    return static_cast<bf16*>(data);
  }
  // The pointer `elements` elements further on.
  TypedPtr at(int64_t elements) const {
    return {data ? static_cast<char*>(data) + elements * static_cast<int64_t>(dtype_size(type)) : nullptr,
            type};
  }
};

struct ConstTypedPtr {
  const void* data = nullptr;
  DType type = DType::kF32;
  ConstTypedPtr() = default;
  ConstTypedPtr(std::nullptr_t) {}                                         // NOLINT
  ConstTypedPtr(const float* p) : data(p), type(DType::kF32) {}            // NOLINT
  ConstTypedPtr(const bf16* p) : data(p), type(DType::kBF16) {}            // NOLINT
  ConstTypedPtr(TypedPtr p) : data(p.data), type(p.type) {}                // NOLINT
  ConstTypedPtr(const void* p, DType t) : data(p), type(t) {}
  const float* f32() const {
    DTRAIN_ASSERT(type == DType::kF32, "an fp32 tensor was expected, got " << dtype_name(type));
    return static_cast<const float*>(data);
  }
  const bf16* b16() const {
    DTRAIN_ASSERT(type == DType::kBF16, "a bf16 tensor was expected, got " << dtype_name(type));
    return static_cast<const bf16*>(data);
  }
  ConstTypedPtr at(int64_t elements) const {
    return {data ? static_cast<const char*>(data) + elements * static_cast<int64_t>(dtype_size(type))
                 : nullptr,
            type};
  }
};

}  // namespace dtrain
