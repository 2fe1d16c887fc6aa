// The element types a tensor may be stored in (Note [bf16 storage], kernels/dtype.h)
// in the GPU tests: conversions, comparisons, and the helpers of the tests typed over
// StoredTypes (fp32 and bf16), which run each op's CUDA form against its CPU form, the
// oracle, in both types.
//
// The bf16 comparison. Both backends widen the same bf16 inputs, compute in fp32 and
// round each stored value once (to nearest even). Where their fp32 values can differ
// by at most e (the op's fp32 bound), the stored values differ by at most
//     |r_gpu - r_cpu| <= |r_gpu - v_gpu| + |v_gpu - v_cpu| + |v_cpu - r_cpu|
//                     <= ulp/2 + e + ulp/2 = ulp_bf16(max(|r_gpu|, |r_cpu|)) + e,
// as rounding to nearest moves a value by at most half the spacing at the result.
// bf16_close checks exactly that, with e given per element; close_relative and
// close_to_norm take e from the fp32 test's bound, so a typed test states one bound
// for both types.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/dtype.h"
#include "tests/gpu/gpu_test.h"

namespace dtrain::testing {

using StoredTypes = ::testing::Types<float, bf16>;

template <class T>
inline constexpr DType dtype_of = std::is_same_v<T, float> ? DType::kF32 : DType::kBF16;

// Names typed tests by their type: Suite/fp32.Test, Suite/bf16.Test.
struct StoredTypeNames {
  template <class T>
  static std::string GetName(int /*index*/) {
    return dtype_name(dtype_of<T>);
  }
};

inline std::vector<bf16> to_bf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = float_to_bf16(v[i]);
  return out;
}

inline std::vector<float> widen(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_float(v[i]);
  return out;
}

// fp32 values stored as T (bf16: rounded), and their values back as floats.
template <class T>
std::vector<T> stored(const std::vector<float>& v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return to_bf16(v);
  }
}
template <class T>
std::vector<float> values(const std::vector<T>& v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return widen(v);
  }
}
template <class T>
std::vector<T> stored_nans(int64_t n) {
  return stored<T>(nans(n));
}

// The spacing of bf16 values at |x|: 8 significant bits, so 2^(e - 7) for |x| in
// [2^e, 2^(e+1)); subnormals (below 2^-126) are 2^-133 apart.
inline double bf16_ulp(double x) {
  x = std::fabs(x);
  if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
  if (x < std::ldexp(1.0, -126)) return std::ldexp(1.0, -133);
  int e = 0;
  std::frexp(x, &e);  // x = f * 2^e with f in [0.5, 1)
  return std::ldexp(1.0, e - 8);
}

// |got - want| <= ulp_bf16(max(|got|, |want|)) + slack[i] everywhere (the file
// comment's bound); NaN matches NaN.
inline ::testing::AssertionResult bf16_close(const std::vector<bf16>& got, const std::vector<bf16>& want,
                                             const std::vector<double>& slack) {
  if (got.size() != want.size() || slack.size() != want.size()) {
    return ::testing::AssertionFailure() << "sizes " << got.size() << ", " << want.size() << ", " << slack.size();
  }
  std::ostringstream bad;
  size_t failures = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = bf16_to_float(got[i]), w = bf16_to_float(want[i]);
    if ((std::isnan(g) && std::isnan(w)) || g == w) continue;
    const double allowed = bf16_ulp(std::max(std::fabs(g), std::fabs(w))) + slack[i];
    if (!(std::fabs(g - w) <= allowed)) {
      if (failures < 5) bad << "\n  [" << i << "] got " << g << ", want " << w << ", allowed " << allowed;
      ++failures;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << want.size() << " elements differ:" << bad.str();
}

// tol * (1 + |want|), all_close's bound.
inline std::vector<double> relative_slack(const std::vector<bf16>& want, double tol) {
  std::vector<double> s(want.size());
  for (size_t i = 0; i < want.size(); ++i) s[i] = tol * (1.0 + std::fabs(bf16_to_float(want[i])));
  return s;
}

// tol * max(1, max |want|), norm_close's bound.
inline std::vector<double> norm_slack(const std::vector<bf16>& want, double tol) {
  double scale = 1.0;
  for (const bf16 w : want) scale = std::max(scale, std::fabs(static_cast<double>(bf16_to_float(w))));
  return std::vector<double>(want.size(), tol * scale);
}

// gamma_n, the bound on n roundings' relative error (Higham, Accuracy and Stability
// of Numerical Algorithms, 3.1), for the GEMM-based ops' bounds: fp32 sums round to
// nearest (unit roundoff 2^-24), but tensor cores may truncate inside their block sums
// (Fasi et al., "Numerical behavior of NVIDIA tensor cores", 2021), which at most
// doubles it, so u = 2^-23 here. 1.01 covers gamma_n = n u / (1 - n u) while n u < 0.01.
inline double gamma_n(int64_t n) { return 1.01 * static_cast<double>(n) * std::ldexp(1.0, -23); }

// The dot product of n floats, in double (each product exact), and the magnitude
// sum |a_d b_d| that an fp32 dot product's rounding bound scales with (gamma_n times it).
struct DotMagnitude {
  double dot, magnitude;
};
inline DotMagnitude dot_magnitude(const float* a, const float* b, int64_t n) {
  DotMagnitude r{0.0, 0.0};
  for (int64_t d = 0; d < n; ++d) {
    const double product = static_cast<double>(a[d]) * b[d];
    r.dot += product;
    r.magnitude += std::fabs(product);
  }
  return r;
}

inline uint32_t bits_of(bf16 v) { return v.bits; }
inline uint32_t bits_of(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return u;
}

// Equal bit patterns (infinities, signed zeros and NaN payloads included).
template <class T>
::testing::AssertionResult same_bits(const std::vector<T>& got, const std::vector<T>& want) {
  if (got.size() != want.size()) return ::testing::AssertionFailure() << "size " << got.size() << " != " << want.size();
  const auto got_values = values(got), want_values = values(want);
  std::ostringstream bad;
  size_t failures = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (bits_of(got[i]) == bits_of(want[i])) continue;
    if (failures < 5) {
      bad << "\n  [" << i << "] got 0x" << std::hex << bits_of(got[i]) << " (" << got_values[i] << "), want 0x"
          << bits_of(want[i]) << std::dec << " (" << want_values[i] << ")";
    }
    ++failures;
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << failures << " of " << want.size() << " elements differ:" << bad.str();
}

// The typed tests' comparisons: one float operation per element, so equal values (fp32
// as all_close with 0, NaN matching NaN; bf16 equal bits); and the fp32 bounds of
// all_close and norm_close, which bf16 widens by the rounding (the file comment).
template <class T>
::testing::AssertionResult exactly(const std::vector<T>& got, const std::vector<T>& want) {
  if constexpr (std::is_same_v<T, float>) {
    return all_close(got, want, 0.0);
  } else {
    return same_bits(got, want);
  }
}
template <class T>
::testing::AssertionResult close_relative(const std::vector<T>& got, const std::vector<T>& want, double tol) {
  if constexpr (std::is_same_v<T, float>) {
    return all_close(got, want, tol);
  } else {
    return bf16_close(got, want, relative_slack(want, tol));
  }
}
template <class T>
::testing::AssertionResult close_to_norm(const std::vector<T>& got, const std::vector<T>& want, double tol) {
  if constexpr (std::is_same_v<T, float>) {
    return norm_close(got, want, tol);
  } else {
    return bf16_close(got, want, norm_slack(want, tol));
  }
}

}  // namespace dtrain::testing
