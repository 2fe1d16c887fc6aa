// Each layer's forward against a direct loop written here from the definition. The
// finite-difference tests prove backward is the derivative of forward; these prove
// forward computes the right function (on shapes that are not square, so a height/
// width mix-up cannot hide).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/rng.h"
#include "models/conv2d.h"
#include "models/linear.h"
#include "models/maxpool2d.h"
#include "models/relu.h"

namespace dtrain {
namespace {

std::vector<float> uniform_vector(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.uniform(-1.0, 1.0));
  return v;
}

// Runs `layer` on x (n, in...) with parameters from init and returns y.
std::vector<float> run(Context& ctx, Layer& layer, const Shape& in, int64_t n,
                       const std::vector<float>& x, std::vector<float>& params) {
  params.assign(static_cast<size_t>(layer.param_count()), 0.0f);
  std::vector<float> grads(params.size(), 0.0f);
  layer.bind(params.data(), grads.data());
  Rng rng(99);
  layer.init(rng, params.data());
  const Shape out = layer.output_shape(in);
  std::vector<float> y(static_cast<size_t>(n * out.numel()), std::nanf(""));
  layer.forward(ctx, ConstTensor(x.data(), in.with_batch(n)), Tensor(y.data(), out.with_batch(n)));
  return y;
}

void expect_near_all(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-5 * (1.0 + std::abs(want[i]))) << "element " << i;
  }
}

class LayerForward : public ::testing::Test {
 protected:
  std::unique_ptr<Context> ctx_ = Context::make_cpu(1);
};

TEST_F(LayerForward, LinearComputesXWTransposePlusBias) {
  const int64_t n = 3, in = 5, out = 4;
  Linear layer(in, out);
  const std::vector<float> x = uniform_vector(n * in, 1);
  std::vector<float> p;
  const std::vector<float> y = run(*ctx_, layer, Shape{in}, n, x, p);
  std::vector<double> want;
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = p[static_cast<size_t>(out * in + o)];  // bias after the (out, in) weight
      for (int64_t i = 0; i < in; ++i) acc += double(p[static_cast<size_t>(o * in + i)]) * x[static_cast<size_t>(s * in + i)];
      want.push_back(acc);
    }
  }
  expect_near_all(y, want);
}

TEST_F(LayerForward, ReluClampsNegatives) {
  Relu layer;
  const std::vector<float> x = uniform_vector(2 * 7, 2);
  std::vector<float> p;
  const std::vector<float> y = run(*ctx_, layer, Shape{7}, 2, x, p);
  std::vector<double> want;
  for (float v : x) want.push_back(std::max(v, 0.0f));
  expect_near_all(y, want);
}

class Conv2dForward : public LayerForward, public ::testing::WithParamInterface<int> {};

TEST_P(Conv2dForward, MatchesDirectSamePaddedConvolution) {
  const int64_t n = 2, ci = 2, co = 3, h = 5, w = 7, k = GetParam(), pad = (k - 1) / 2;
  Conv2d layer(ci, co, k);
  const std::vector<float> x = uniform_vector(n * ci * h * w, 3);
  std::vector<float> p;
  const std::vector<float> y = run(*ctx_, layer, Shape{ci, h, w}, n, x, p);
  auto X = [&](int64_t s, int64_t c, int64_t r, int64_t q) -> double {
    if (r < 0 || r >= h || q < 0 || q >= w) return 0.0;  // zero padding
    return x[static_cast<size_t>(((s * ci + c) * h + r) * w + q)];
  };
  std::vector<double> want;
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t o = 0; o < co; ++o) {
      for (int64_t r = 0; r < h; ++r) {
        for (int64_t q = 0; q < w; ++q) {
          double acc = p[static_cast<size_t>(co * ci * k * k + o)];
          for (int64_t c = 0; c < ci; ++c) {
            for (int64_t i = 0; i < k; ++i) {
              for (int64_t j = 0; j < k; ++j) {
                acc += double(p[static_cast<size_t>(((o * ci + c) * k + i) * k + j)]) *
                       X(s, c, r + i - pad, q + j - pad);
              }
            }
          }
          want.push_back(acc);
        }
      }
    }
  }
  expect_near_all(y, want);
}

INSTANTIATE_TEST_SUITE_P(Kernels, Conv2dForward, ::testing::Values(1, 3, 5),
                         [](const ::testing::TestParamInfo<int>& info) {
                           std::string name = "K";  // operator+ on a literal trips GCC 12's -Wrestrict
                           return name += std::to_string(info.param);
                         });

TEST_F(LayerForward, MaxPool2dTakesTheMaximumOfEach2x2Window) {
  const int64_t n = 2, c = 3, h = 5, w = 6;  // odd height: the last row is dropped
  MaxPool2d layer;
  const std::vector<float> x = uniform_vector(n * c * h * w, 4);
  std::vector<float> p;
  const std::vector<float> y = run(*ctx_, layer, Shape{c, h, w}, n, x, p);
  std::vector<double> want;
  for (int64_t plane = 0; plane < n * c; ++plane) {
    for (int64_t r = 0; r < h / 2; ++r) {
      for (int64_t q = 0; q < w / 2; ++q) {
        float m = -INFINITY;
        for (int64_t i = 0; i < 2; ++i) {
          for (int64_t j = 0; j < 2; ++j) {
            m = std::max(m, x[static_cast<size_t>((plane * h + 2 * r + i) * w + 2 * q + j)]);
          }
        }
        want.push_back(m);
      }
    }
  }
  expect_near_all(y, want);
}

}  // namespace
}  // namespace dtrain
