// The independent reference for the GELU backward through a linear (Note [Fused GELU
// backward], kernels/ops.h), in double, for the CPU's and the GPU's tests of it.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace dtrain::testing {

// The tanh form's derivative, g'(v) = (1 + t) / 2 + v (1 - t^2) k (1 + 3a v^2) / 2 with
// t = tanh(k (v + a v^3)), k = sqrt(2/pi), a = 0.044715.
inline double gelu_derivative(double v) {
  const double k = std::sqrt(2.0 / M_PI), a = 0.044715;
  const double t = std::tanh(k * (v + a * v * v * v));
  return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * k * (1.0 + 3.0 * a * v * v);
}

// What an error eps relative in t moves g'(v) by, over eps: 1/2 + k |v| (1 + 3a v^2)
// (Note [cuBLASLt GELU]).
inline double gelu_derivative_sensitivity(double v) {
  const double k = std::sqrt(2.0 / M_PI), a = 0.044715;
  return 0.5 + k * std::fabs(v) * (1.0 + 3.0 * a * v * v);
}

// Element (r, i) of dy (rows, out) W (out, in) in double, and the sum of its terms'
// magnitudes, which an fp32 dot product's rounding bound scales with.
struct DotInDouble {
  double value = 0.0, magnitude = 0.0;
};
template <class F>
DotInDouble input_gradient_element(const std::vector<F>& dy, const std::vector<F>& w, int64_t r, int64_t i,
                                   int64_t in, int64_t out) {
  DotInDouble d;
  for (int64_t o = 0; o < out; ++o) {
    const double term = static_cast<double>(dy[static_cast<size_t>(r * out + o)]) * w[static_cast<size_t>(o * in + i)];
    d.value += term;
    d.magnitude += std::fabs(term);
  }
  return d;
}

}  // namespace dtrain::testing
