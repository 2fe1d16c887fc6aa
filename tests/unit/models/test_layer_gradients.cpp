// Every layer's backward against central finite differences on the CPU (DESIGN
// contract 6), then whole models end to end with softmax cross-entropy as the loss.
//
// A layer is checked through the scalar L = sum(y * r) for a fixed random r, so
// dL/dy = r is what backward receives; the numerical gradients of L with respect to
// the input and to every parameter must match what backward produced. On the CPU
// backend device memory is host memory, so the tests work on std::vectors directly.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/ops.h"
#include "kernels/rng.h"
#include "models/conv2d.h"
#include "models/flatten.h"
#include "models/linear.h"
#include "models/maxpool2d.h"
#include "models/batch.h"
#include "models/model.h"
#include "models/relu.h"
#include "models/sequential_classifier.h"

namespace dtrain {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> uniform_vector(int64_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Rng rng(seed);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = static_cast<float>(rng.uniform(lo, hi));
  return v;
}

// Central differences with a kink bar. For a function that is smooth on [v-h, v+h]
// the one-sided slopes differ by O(h), while a ReLU or max-pool kink inside the
// interval makes them differ by the slope's jump, and the central difference is off
// by half that gap. kink_bar = |forward - backward| (the whole gap, which also
// covers a kink on each side) is added to the tolerance of that element, so a kink
// loosens only the elements it touches.
struct NumericGradient {
  std::vector<double> central;
  std::vector<double> kink_bar;
};

NumericGradient numeric_gradient(std::vector<float>& v, float h,
                                 const std::function<double()>& loss) {
  NumericGradient g;
  const double base = loss();
  for (float& x : v) {
    const float saved = x;
    x = saved + h;
    const double plus = loss();
    x = saved - h;
    const double minus = loss();
    x = saved;
    // The step actually taken in float, not the nominal h.
    const double up = static_cast<double>(saved + h) - saved;
    const double down = saved - static_cast<double>(saved - h);
    g.central.push_back((plus - minus) / (up + down));
    g.kink_bar.push_back(std::abs((plus - base) / up - (base - minus) / down));
  }
  return g;
}

struct Tolerance {
  double abs;       // per element
  double rel;       // per element, of |numeric|
  double norm_rel;  // ||analytic - numeric|| <= norm_rel * ||numeric|| over smooth elements
};

// An element is "smooth" (no kink within the step) when its kink bar is within a few
// absolute tolerances, which float noise in the one-sided slopes can reach.
constexpr double kSmoothBar = 3.0;

::testing::AssertionResult gradients_match(const std::vector<float>& analytic,
                                           const NumericGradient& numeric, const Tolerance& tol,
                                           const std::string& what) {
  const size_t n = numeric.central.size();
  if (analytic.size() != n) {
    return ::testing::AssertionFailure()
           << what << ": " << analytic.size() << " analytic values for " << n << " numeric";
  }
  double diff2 = 0.0, ref2 = 0.0;
  size_t smooth = 0, bad = 0;
  std::ostringstream detail;
  for (size_t i = 0; i < n; ++i) {
    const double a = analytic[i], c = numeric.central[i];
    const double err = std::abs(a - c);
    if (!(err <= tol.abs + tol.rel * std::abs(c) + numeric.kink_bar[i])) {
      if (bad++ < 5) {
        detail << "\n  [" << i << "] analytic " << a << " numeric " << c << " (kink bar "
               << numeric.kink_bar[i] << ")";
      }
    }
    if (numeric.kink_bar[i] <= kSmoothBar * tol.abs) {
      ++smooth;
      diff2 += (a - c) * (a - c);
      ref2 += c * c;
    }
  }
  if (bad > 0) {
    return ::testing::AssertionFailure() << what << ": " << bad << " of " << n
                                         << " elements differ from finite differences"
                                         << detail.str();
  }
  // Kinks may excuse some elements, never the check as a whole.
  if (5 * smooth < 3 * n) {
    return ::testing::AssertionFailure()
           << what << ": only " << smooth << " of " << n << " elements are away from kinks";
  }
  if (ref2 == 0.0) {
    return ::testing::AssertionFailure() << what << ": the numerical gradient is all zero, "
                                         << "so the check would prove nothing";
  }
  const double norm_err = std::sqrt(diff2), norm_ref = std::sqrt(ref2);
  if (!(norm_err <= tol.norm_rel * norm_ref + tol.abs * std::sqrt(static_cast<double>(smooth)))) {
    return ::testing::AssertionFailure() << what << ": relative error of the norm "
                                         << norm_err / norm_ref << " exceeds " << tol.norm_rel;
  }
  return ::testing::AssertionSuccess();
}

// Layers are linear or piecewise linear between kinks the inputs stay away from, so
// a float step of 1e-2 leaves only rounding noise (about 1e-5 here, against 2e-4).
constexpr float kLayerStep = 1e-2f;
constexpr Tolerance kLayerTol{2e-4, 5e-3, 2e-2};

// One layer on host vectors: x (n, in...), its parameters and gradients, the output
// y and the fixed weights r of L = sum(y * r).
class LayerRig {
 public:
  LayerRig(Context& ctx, Layer& layer, Shape in, int64_t batch, uint64_t seed)
      : ctx_(ctx), layer_(layer), in_(std::move(in)), out_(layer.output_shape(in_)), n_(batch) {
    params.assign(static_cast<size_t>(layer.param_count()), 0.0f);
    grads.assign(params.size(), 0.0f);
    layer.bind(params.data(), grads.data());
    Rng rng(Rng::mix(seed, 1));
    layer.init(rng, params.data());
    x = uniform_vector(n_ * in_.numel(), Rng::mix(seed, 2));
    r = uniform_vector(n_ * out_.numel(), Rng::mix(seed, 3));
    y.assign(r.size(), 0.0f);
  }

  double loss() {
    forward();
    double l = 0.0;
    for (size_t i = 0; i < y.size(); ++i) l += static_cast<double>(y[i]) * r[i];
    return l;
  }
  void forward() {
    layer_.forward(ctx_, ConstTensor(x.data(), in_.with_batch(n_)),
                   Tensor(y.data(), out_.with_batch(n_)));
  }
  // Backward of L: adds into `grads`, returns dx. dx starts as NaN, so an input
  // gradient that is not fully overwritten shows up.
  std::vector<float> backward() {
    forward();
    std::vector<float> dx(x.size(), kNaN);
    layer_.backward(ctx_, ConstTensor(x.data(), in_.with_batch(n_)),
                    ConstTensor(y.data(), out_.with_batch(n_)),
                    ConstTensor(r.data(), out_.with_batch(n_)), dx.data());
    return dx;
  }
  NumericGradient numeric_dx() {
    return numeric_gradient(x, kLayerStep, [this] { return loss(); });
  }
  NumericGradient numeric_dparams() {
    return numeric_gradient(params, kLayerStep, [this] { return loss(); });
  }

  std::vector<float> x, params, grads, y, r;

 private:
  Context& ctx_;
  Layer& layer_;
  Shape in_, out_;
  int64_t n_;
};

class LayerGradients : public ::testing::Test {
 protected:
  std::unique_ptr<Context> ctx_ = Context::make_cpu(1);
};

TEST_F(LayerGradients, CheckerRejectsWrongGradients) {
  Linear layer(5, 3);
  LayerRig rig(*ctx_, layer, Shape{5}, 4, 11);
  const std::vector<float> dx = rig.backward();
  const NumericGradient num = rig.numeric_dx();
  ASSERT_TRUE(gradients_match(dx, num, kLayerTol, "dx"));

  std::vector<float> scaled = dx;
  for (float& v : scaled) v *= 1.05f;
  EXPECT_FALSE(gradients_match(scaled, num, kLayerTol, "dx scaled by 1.05"));
  std::vector<float> swapped = dx;
  std::swap(swapped[0], swapped[1]);
  EXPECT_FALSE(gradients_match(swapped, num, kLayerTol, "dx with two elements swapped"));
  EXPECT_FALSE(gradients_match(std::vector<float>(dx.size(), 0.0f), num, kLayerTol, "zero dx"));
}

TEST_F(LayerGradients, LinearInputWeightAndBiasMatchFiniteDifferences) {
  Linear layer(5, 3);
  LayerRig rig(*ctx_, layer, Shape{5}, 4, 21);
  const std::vector<float> dx = rig.backward();
  EXPECT_TRUE(gradients_match(dx, rig.numeric_dx(), kLayerTol, "linear dx"));
  EXPECT_TRUE(gradients_match(rig.grads, rig.numeric_dparams(), kLayerTol, "linear dW, db"));
}

TEST_F(LayerGradients, ReluInputMatchesFiniteDifferences) {
  Relu layer;
  LayerRig rig(*ctx_, layer, Shape{2, 3, 4}, 3, 31);
  // Keep every input at least 0.1 from the kink at 0, ten steps away.
  for (float& v : rig.x) v = std::copysign(0.1f + 0.9f * std::abs(v), v);
  const std::vector<float> dx = rig.backward();
  EXPECT_TRUE(gradients_match(dx, rig.numeric_dx(), kLayerTol, "relu dx"));
}

class Conv2dGradients : public LayerGradients, public ::testing::WithParamInterface<int> {};

TEST_P(Conv2dGradients, InputWeightAndBiasMatchFiniteDifferences) {
  const int64_t k = GetParam();
  Conv2d layer(2, 3, k);
  // 5x6 is not square, so a height/width mix-up shows; K=5 pads more than half the image.
  LayerRig rig(*ctx_, layer, Shape{2, 5, 6}, 2, 41 + static_cast<uint64_t>(k));
  ASSERT_EQ(layer.output_shape(Shape{2, 5, 6}), (Shape{3, 5, 6}));
  const std::vector<float> dx = rig.backward();
  EXPECT_TRUE(gradients_match(dx, rig.numeric_dx(), kLayerTol, "conv2d dx"));
  EXPECT_TRUE(gradients_match(rig.grads, rig.numeric_dparams(), kLayerTol, "conv2d dW, db"));
}

INSTANTIATE_TEST_SUITE_P(Kernels, Conv2dGradients, ::testing::Values(1, 3, 5),
                         [](const ::testing::TestParamInfo<int>& info) {
                           std::string name = "K";  // operator+ on a literal trips GCC 12's -Wrestrict
                           return name += std::to_string(info.param);
                         });

TEST_F(LayerGradients, MaxPool2dInputMatchesFiniteDifferences) {
  MaxPool2d layer;
  // Odd height: the last row is dropped and must get a zero gradient.
  LayerRig rig(*ctx_, layer, Shape{2, 5, 6}, 2, 51);
  ASSERT_EQ(layer.output_shape(Shape{2, 5, 6}), (Shape{2, 2, 3}));
  // Distinct values 0.05 apart (five steps), shuffled: no window has a near tie.
  Rng rng(52);
  for (size_t i = 0; i < rig.x.size(); ++i) rig.x[i] = 0.05f * static_cast<float>(i) - 1.0f;
  for (size_t i = rig.x.size(); i > 1; --i) std::swap(rig.x[i - 1], rig.x[rng.below(i)]);
  const std::vector<float> dx = rig.backward();
  EXPECT_TRUE(gradients_match(dx, rig.numeric_dx(), kLayerTol, "maxpool2d dx"));
  EXPECT_EQ(layer.state_bytes_per_sample(Shape{2, 5, 6}), 2 * 2 * 3 * 4);
}

TEST_F(LayerGradients, FlattenPassesMemoryThroughBothWays) {
  Flatten layer;
  EXPECT_TRUE(layer.aliases_input());
  EXPECT_EQ(layer.output_shape(Shape{3, 4, 5}), (Shape{60}));
  std::vector<float> x = uniform_vector(2 * 60, 61);
  const std::vector<float> before = x;
  // In place both ways: y is x's memory and dx is dy's, so every value stays as it was.
  layer.forward(*ctx_, ConstTensor(x.data(), Shape{2, 3, 4, 5}), Tensor(x.data(), Shape{2, 60}));
  EXPECT_EQ(x, before) << "forward changed the values it passes through";
  layer.backward(*ctx_, ConstTensor(x.data(), Shape{2, 3, 4, 5}), ConstTensor(x.data(), Shape{2, 60}),
                 ConstTensor(x.data(), Shape{2, 60}), x.data());
  EXPECT_EQ(x, before) << "backward changed the gradient it passes through";
  std::vector<float> other(x.size());
  EXPECT_THROW(layer.forward(*ctx_, ConstTensor(x.data(), Shape{2, 3, 4, 5}),
                             Tensor(other.data(), Shape{2, 60})),
               Error);
}

// The accumulation rule: parameter gradients are added, the input gradient is
// overwritten. Gradient accumulation over micro-steps depends on both halves.
void expect_backward_accumulates(Context& ctx, Layer& layer, const Shape& in, uint64_t seed) {
  LayerRig rig(ctx, layer, in, 3, seed);
  const std::vector<float> dx1 = rig.backward();
  const std::vector<float> once = rig.grads;
  const std::vector<float> dx2 = rig.backward();
  for (size_t i = 0; i < once.size(); ++i) {
    ASSERT_NEAR(rig.grads[i], 2.0f * once[i], 1e-6f * (1.0f + std::abs(once[i])))
        << layer.name() << " parameter gradient " << i;
  }
  for (size_t i = 0; i < dx1.size(); ++i) {
    ASSERT_EQ(dx1[i], dx2[i]) << layer.name() << " input gradient " << i;
  }
}

TEST_F(LayerGradients, LinearBackwardTwiceDoublesParamGradsAndOverwritesInputGrad) {
  Linear layer(6, 4);
  expect_backward_accumulates(*ctx_, layer, Shape{6}, 71);
}

TEST_F(LayerGradients, Conv2dBackwardTwiceDoublesParamGradsAndOverwritesInputGrad) {
  Conv2d layer(2, 3, 3);
  expect_backward_accumulates(*ctx_, layer, Shape{2, 4, 5}, 72);
}

// Whole models: the loss is the model's own softmax cross-entropy over the batch,
// scaled by 1/batch as the trainer does, and the parameters are the variables.
class ModelGradients : public ::testing::Test {
 protected:
  static constexpr int64_t kBatch = 3;
  static constexpr int64_t kClasses = 4;

  void SetUp() override { ctx_ = Context::make_cpu(1); }

  std::unique_ptr<SequentialClassifier> make(const ModelSpec& spec, const Shape& input) {
    std::unique_ptr<Model> built =
        build_model(*ctx_, spec, DataFacts{SampleLayout{input, ElementType::kFloat32, Shape{}}, kClasses, false});
    auto* classifier = dynamic_cast<SequentialClassifier*>(built.get());
    if (classifier == nullptr) throw std::logic_error(spec.name + " is not a SequentialClassifier");
    built.release();
    std::unique_ptr<SequentialClassifier> model(classifier);
    model->init(81);
    x_ = uniform_vector(kBatch * input.numel(), 82);
    Rng rng(83);
    labels_.clear();
    ids_.clear();
    for (int64_t i = 0; i < kBatch; ++i) {
      labels_.push_back(static_cast<int32_t>(rng.below(kClasses)));
      ids_.push_back(i);
    }
    return model;
  }

  Batch batch() const { return Batch{kBatch, x_.data(), labels_.data(), ids_.data(), 0}; }

  double loss(Model& model) {
    double stats[kModelStats] = {0.0, 0.0};
    model.forward(batch(), Pass::kEval, 1.0f / kBatch, stats);
    return stats[kModelLossSum] / kBatch;
  }

  // Zeroes the gradients, runs forward and backward once, returns the gradients.
  std::vector<float> analytic(Model& model, const std::function<void(int)>& on_range_done = {}) {
    model.zero_grads();
    backward_once(model, on_range_done);
    return grads(model);
  }

  void backward_once(Model& model, const std::function<void(int)>& on_range_done = {}) {
    double stats[kModelStats] = {0.0, 0.0};
    model.forward(batch(), Pass::kTrain, 1.0f / kBatch, stats);
    model.backward(on_range_done);
  }

  std::vector<float> grads(const Model& model) const {
    return std::vector<float>(model.grads(), model.grads() + model.param_count());
  }

  NumericGradient numeric(Model& model) {
    std::vector<float> p(model.params(), model.params() + model.param_count());
    const NumericGradient g = numeric_gradient(p, kModelStep, [&] {
      model.load_params(p.data(), model.param_count());
      return loss(model);
    });
    model.load_params(p.data(), model.param_count());
    return g;
  }

  // A small step crosses few ReLU and max-pool kinks: over 1000 seeds of the tiny CNN,
  // a step of 2e-3 met more kinks than the bar covers for about one seed in 25, 5e-4
  // for one in 500. The loss's float noise of about 1e-7 then makes the slopes good
  // to about 1e-4, inside the 2e-4 absolute tolerance.
  static constexpr float kModelStep = 5e-4f;
  static constexpr Tolerance kModelTol{2e-4, 5e-3, 2e-2};

  std::unique_ptr<Context> ctx_;
  std::vector<float> x_;
  std::vector<int32_t> labels_;
  std::vector<int64_t> ids_;
};

ModelSpec tiny_mlp() {
  ModelSpec spec;
  spec.name = "mlp";
  spec.hidden = {5, 4};
  return spec;
}

ModelSpec tiny_cnn() {
  ModelSpec spec;
  spec.name = "cnn";
  spec.channels = {3, 2};
  spec.kernel_size = 3;
  spec.cnn_hidden = {4};
  return spec;
}

TEST_F(ModelGradients, MlpMatchesFiniteDifferences) {
  auto model = make(tiny_mlp(), Shape{1, 4, 4});
  const std::vector<float> g = analytic(*model);
  EXPECT_TRUE(gradients_match(g, numeric(*model), kModelTol, "mlp gradients"));
}

TEST_F(ModelGradients, CnnMatchesFiniteDifferences) {
  // 8x6: two stages give 2x1, so flatten sees a non-square map.
  auto model = make(tiny_cnn(), Shape{2, 8, 6});
  const std::vector<float> g = analytic(*model);
  EXPECT_TRUE(gradients_match(g, numeric(*model), kModelTol, "cnn gradients"));
}

TEST_F(ModelGradients, BackwardTwiceDoublesGradients) {
  for (const auto& [spec, input] : {std::pair{tiny_mlp(), Shape{1, 4, 4}},
                                    std::pair{tiny_cnn(), Shape{2, 8, 6}}}) {
    auto model = make(spec, input);
    const std::vector<float> once = analytic(*model);
    backward_once(*model);
    const std::vector<float> twice = grads(*model);
    for (size_t i = 0; i < once.size(); ++i) {
      ASSERT_NEAR(twice[i], 2.0f * once[i], 1e-6f * (1.0f + std::abs(once[i])))
          << spec.name << " gradient " << i;
    }
    model->zero_grads();
    for (float v : grads(*model)) ASSERT_EQ(v, 0.0f);
  }
}

TEST_F(ModelGradients, CallbackRunsInReverseOrderWhenLayerGradientsAreFinal) {
  auto model = make(tiny_cnn(), Shape{2, 8, 6});
  std::vector<int> order;
  std::vector<std::vector<float>> seen(static_cast<size_t>(model->num_layers()));
  const std::vector<float> final_grads = analytic(*model, [&](int i) {
    order.push_back(i);
    const ParamRange range = model->param_ranges()[static_cast<size_t>(i)];
    seen[static_cast<size_t>(i)].assign(model->grads() + range.offset,
                                        model->grads() + range.offset + range.count);
  });
  std::vector<int> expected;
  for (int i = model->num_layers() - 1; i >= 0; --i) expected.push_back(i);
  EXPECT_EQ(order, expected);
  for (int i = 0; i < model->num_layers(); ++i) {
    const ParamRange range = model->param_ranges()[static_cast<size_t>(i)];
    const std::vector<float> at_end(final_grads.begin() + range.offset,
                                    final_grads.begin() + range.offset + range.count);
    EXPECT_EQ(seen[static_cast<size_t>(i)], at_end) << "layer " << i << " " << model->layer(i).name();
  }
}

}  // namespace
}  // namespace dtrain
