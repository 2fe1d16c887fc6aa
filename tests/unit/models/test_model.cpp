// Model structure: shapes and parameter counts by formula, the flat layout, seeded
// initialisation, memory accounting against the allocator, and spec errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "kernels/errors.h"
#include "kernels/memory.h"
#include "kernels/rng.h"
#include "models/linear.h"
#include "models/model.h"
#include "models/relu.h"

namespace dtrain {
namespace {

const Shape kMnist{1, 28, 28};

ModelSpec mlp(std::vector<int64_t> hidden) {
  ModelSpec spec;
  spec.name = "mlp";
  spec.hidden = std::move(hidden);
  return spec;
}

ModelSpec cnn(std::vector<int64_t> channels, int64_t kernel, std::vector<int64_t> hidden) {
  ModelSpec spec;
  spec.name = "cnn";
  spec.channels = std::move(channels);
  spec.kernel_size = kernel;
  spec.cnn_hidden = std::move(hidden);
  return spec;
}

std::vector<float> params_of(const Model& m) {
  return std::vector<float>(m.params(), m.params() + m.param_count());
}

class ModelTest : public ::testing::Test {
 protected:
  std::unique_ptr<Context> ctx_ = Context::make_cpu(1);
};

TEST_F(ModelTest, DefaultMlpIs784x256x128x10) {
  auto m = build_model(*ctx_, ModelSpec{}, kMnist, 10);
  EXPECT_EQ(m->param_count(), 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);
  ASSERT_EQ(m->num_layers(), 6);  // flatten, (linear, relu) x 2, linear
  EXPECT_EQ(m->layer(0).name(), "flatten");
  EXPECT_EQ(m->layer(1).name(), "linear(784->256)");
  EXPECT_EQ(m->layer(5).name(), "linear(128->10)");
  const std::vector<Shape> expected{kMnist,      Shape{784}, Shape{256}, Shape{256},
                                    Shape{128},  Shape{128}, Shape{10}};
  EXPECT_EQ(m->shapes(), expected);
  EXPECT_EQ(m->input_shape(), kMnist);
  EXPECT_EQ(m->output_shape(), (Shape{10}));
}

TEST_F(ModelTest, DefaultCnnShapesAndParamCount) {
  auto m = build_model(*ctx_, cnn({16, 32}, 5, {128}), kMnist, 10);
  const int64_t conv1 = 16 * 1 * 5 * 5 + 16, conv2 = 32 * 16 * 5 * 5 + 32;
  const int64_t fc1 = 32 * 7 * 7 * 128 + 128, fc2 = 128 * 10 + 10;
  EXPECT_EQ(m->param_count(), conv1 + conv2 + fc1 + fc2);
  const std::vector<Shape> expected{kMnist,
                                    Shape{16, 28, 28}, Shape{16, 28, 28}, Shape{16, 14, 14},
                                    Shape{32, 14, 14}, Shape{32, 14, 14}, Shape{32, 7, 7},
                                    Shape{32 * 7 * 7}, Shape{128}, Shape{128}, Shape{10}};
  EXPECT_EQ(m->shapes(), expected);
  EXPECT_EQ(m->layer(0).name(), "conv2d(1->16, 5x5)");
}

TEST_F(ModelTest, CnnPoolsFloorOddSizes) {
  // 9x7 -> 4x3 -> 2x1: odd rows and columns are dropped, as in PyTorch.
  auto m = build_model(*ctx_, cnn({2, 3}, 3, {}), Shape{3, 9, 7}, 4);
  EXPECT_EQ(m->shapes()[3], (Shape{2, 4, 3}));
  EXPECT_EQ(m->shapes()[6], (Shape{3, 2, 1}));
  EXPECT_EQ(m->param_count(), (2 * 3 * 9 + 2) + (3 * 2 * 9 + 3) + (3 * 2 * 1 * 4 + 4));
}

TEST_F(ModelTest, LayerParamRangesAreContiguousAndCoverTheBuffer) {
  for (const ModelSpec& spec : {ModelSpec{}, cnn({4, 8}, 5, {16})}) {
    auto m = build_model(*ctx_, spec, kMnist, 10);
    ASSERT_EQ(m->layer_params().size(), static_cast<size_t>(m->num_layers()));
    int64_t next = 0;
    for (int i = 0; i < m->num_layers(); ++i) {
      const ParamRange r = m->layer_params()[static_cast<size_t>(i)];
      EXPECT_EQ(r.offset, next) << spec.name << " layer " << i;
      EXPECT_EQ(r.count, m->layer(i).param_count()) << spec.name << " layer " << i;
      next += r.count;
    }
    EXPECT_EQ(next, m->param_count()) << spec.name;
  }
}

TEST_F(ModelTest, ParamsAndGradsAreAccountedByCategory) {
  auto m = build_model(*ctx_, ModelSpec{}, kMnist, 10);
  const MemoryStats s = ctx_->allocator().stats();
  const size_t bytes = static_cast<size_t>(m->param_count()) * sizeof(float);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Params)], bytes);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Grads)], bytes);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Activations)], 0u);
}

TEST_F(ModelTest, InitIsDeterministicPerSeed) {
  for (const ModelSpec& spec : {ModelSpec{}, cnn({4, 8}, 5, {16})}) {
    auto a = build_model(*ctx_, spec, kMnist, 10);
    auto b = build_model(*ctx_, spec, kMnist, 10);
    a->init(7);
    b->init(7);
    EXPECT_EQ(params_of(*a), params_of(*b)) << spec.name;
    b->init(8);
    const std::vector<float> pa = params_of(*a), pb = params_of(*b);
    int64_t equal = 0;
    for (size_t i = 0; i < pa.size(); ++i) equal += pa[i] == pb[i] ? 1 : 0;
    EXPECT_LT(equal * 1000, static_cast<int64_t>(pa.size())) << spec.name;
  }
}

TEST_F(ModelTest, EachLayerDrawsFromItsOwnStream) {
  // Appending layers leaves the earlier layers' initial values unchanged.
  auto small = build_model(*ctx_, mlp({8}), kMnist, 10);
  auto large = build_model(*ctx_, mlp({8, 6}), kMnist, 10);
  small->init(3);
  large->init(3);
  const ParamRange r = small->layer_params()[1];
  ASSERT_EQ(r.offset, large->layer_params()[1].offset);
  ASSERT_EQ(r.count, large->layer_params()[1].count);
  for (int64_t i = r.offset; i < r.offset + r.count; ++i) {
    ASSERT_EQ(small->params()[i], large->params()[i]) << i;
  }
}

TEST_F(ModelTest, LayersOfTheSameShapeGetDifferentValues) {
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(std::make_unique<Linear>(6, 6));
  layers.push_back(std::make_unique<Linear>(6, 6));
  Model m(*ctx_, std::move(layers), Shape{6});
  m.init(4);
  const int64_t count = m.layer_params()[0].count;
  int64_t equal = 0;
  for (int64_t i = 0; i < count; ++i) equal += m.params()[i] == m.params()[count + i] ? 1 : 0;
  EXPECT_EQ(equal, 0);
}

TEST_F(ModelTest, InitFollowsPyTorchDefaultBounds) {
  auto m = build_model(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  m->init(11);
  // Layers with parameters and their fan_in: conv 1*5*5, conv 4*5*5, linear 392, linear 16.
  const std::vector<std::pair<int, double>> fan_in{{0, 25}, {3, 100}, {7, 392}, {9, 16}};
  for (const auto& [layer, fan] : fan_in) {
    const ParamRange r = m->layer_params()[static_cast<size_t>(layer)];
    const double bound = 1.0 / std::sqrt(fan);
    double lo = 0, hi = 0, sum = 0;
    for (int64_t i = r.offset; i < r.offset + r.count; ++i) {
      const double v = m->params()[i];
      lo = std::min(lo, v);
      hi = std::max(hi, v);
      sum += v;
    }
    EXPECT_GE(lo, -bound) << m->layer(layer).name();
    EXPECT_LE(hi, bound) << m->layer(layer).name();
    // Uniform draws fill the range: the extremes come close to the bounds.
    EXPECT_LT(lo, -0.8 * bound) << m->layer(layer).name();
    EXPECT_GT(hi, 0.8 * bound) << m->layer(layer).name();
    EXPECT_LT(std::abs(sum / static_cast<double>(r.count)), 0.2 * bound) << m->layer(layer).name();
  }
}

TEST_F(ModelTest, InitZeroesGradients) {
  auto m = build_model(*ctx_, mlp({8}), kMnist, 10);
  for (int64_t i = 0; i < m->param_count(); ++i) m->grads()[i] = 1.0f;
  m->init(1);
  for (int64_t i = 0; i < m->param_count(); ++i) ASSERT_EQ(m->grads()[i], 0.0f) << i;
}

TEST_F(ModelTest, LoadParamsCopiesExactlyAndRejectsWrongCounts) {
  auto m = build_model(*ctx_, mlp({8}), kMnist, 10);
  std::vector<float> host(static_cast<size_t>(m->param_count()));
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.25f;
  m->load_params(host.data(), m->param_count());
  EXPECT_EQ(params_of(*m), host);
  EXPECT_THROW(m->load_params(host.data(), m->param_count() - 1), DataError);
}

TEST_F(ModelTest, ForwardReturnsBatchOfLogits) {
  auto m = build_model(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  m->init(5);
  Rng rng(6);
  std::vector<float> x(static_cast<size_t>(5 * kMnist.numel()));
  for (float& v : x) v = static_cast<float>(rng.uniform());
  const ConstTensor y = m->forward(ConstTensor(x.data(), kMnist.with_batch(5)));
  EXPECT_EQ(y.shape, (Shape{5, 10}));
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_TRUE(std::isfinite(y.data[i]));

  // A smaller batch reuses the buffers and gives each sample the same logits.
  const std::vector<float> first(y.data, y.data + 3 * 10);
  const ConstTensor y3 = m->forward(ConstTensor(x.data(), kMnist.with_batch(3)));
  EXPECT_EQ(y3.shape, (Shape{3, 10}));
  for (int64_t i = 0; i < 30; ++i) {
    EXPECT_NEAR(y3.data[i], first[static_cast<size_t>(i)], 1e-5f * (1 + std::abs(first[static_cast<size_t>(i)])));
  }
}

TEST_F(ModelTest, ActivationBytesMatchTheAllocator) {
  auto m = build_model(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  // Per sample: outputs of conv, relu (4x28x28 each), pool (4x14x14), conv, relu
  // (8x14x14 each), pool (8x7x7), no copy for flatten, linear, relu (16), linear (10);
  // int32 argmax of both pools; two gradient buffers as large as the largest input of
  // a layer after the first (4x28x28).
  const int64_t outputs = 2 * 4 * 28 * 28 + 4 * 14 * 14 + 2 * 8 * 14 * 14 + 8 * 7 * 7 + 16 + 16 + 10;
  const int64_t argmax = 4 * 14 * 14 + 8 * 7 * 7;
  const int64_t grads = 2 * 4 * 28 * 28;
  EXPECT_EQ(m->activation_bytes_per_sample(), 4 * (outputs + argmax + grads));

  m->init(1);
  std::vector<float> x(static_cast<size_t>(6 * kMnist.numel()), 0.5f);
  std::vector<float> dy(6 * 10, 0.1f);
  auto activations = [&] {
    return static_cast<int64_t>(
        ctx_->allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Activations)]);
  };
  for (int64_t n : {2, 6, 4}) {
    const ConstTensor y = m->forward(ConstTensor(x.data(), kMnist.with_batch(n)));
    m->backward(ConstTensor(dy.data(), y.shape));
  }
  // Grown to the largest batch seen (6), never beyond.
  EXPECT_EQ(activations(), 6 * m->activation_bytes_per_sample());
}

TEST_F(ModelTest, FlopsPerSampleFollowTheLayerFormulas) {
  // MLP 784-256-128-10: GEMMs 2 in out, biases out, ReLUs one per element.
  auto m = build_model(*ctx_, mlp({256, 128}), kMnist, 10);
  const int64_t mlp_forward = (2 * 784 * 256 + 256) + 256 + (2 * 256 * 128 + 128) + 128 + (2 * 128 * 10 + 10);
  EXPECT_EQ(m->forward_flops_per_sample(), mlp_forward);
  EXPECT_EQ(m->training_flops_per_sample(), 3 * mlp_forward);
  // CNN [4, 8] k5, hidden 16: conv 28x28x4 outputs of 2*1*25+1, relu, pool (a compare
  // per input), conv 14x14x8 of 2*4*25+1, relu, pool, then the two linears.
  auto c = build_model(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  const int64_t cnn_forward = 4 * 28 * 28 * 51 + 4 * 28 * 28 + 4 * 28 * 28 + 8 * 14 * 14 * 201 + 8 * 14 * 14 +
                              8 * 14 * 14 + (2 * 392 * 16 + 16) + 16 + (2 * 16 * 10 + 10);
  EXPECT_EQ(c->forward_flops_per_sample(), cnn_forward);
}

TEST_F(ModelTest, EachLayerReportsItsOwnActivationBytes) {
  auto m = build_model(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  // conv, relu, pool, conv, relu, pool, flatten, linear, relu, linear: fp32 outputs,
  // int32 argmax for the pools, nothing for flatten (it aliases its input).
  const std::vector<int64_t> expected = {4 * 4 * 28 * 28, 4 * 4 * 28 * 28, 2 * 4 * 4 * 14 * 14,
                                         4 * 8 * 14 * 14, 4 * 8 * 14 * 14, 2 * 4 * 8 * 7 * 7,
                                         0, 4 * 16, 4 * 16, 4 * 10};
  ASSERT_EQ(m->num_layers(), static_cast<int>(expected.size()));
  for (int i = 0; i < m->num_layers(); ++i) {
    EXPECT_EQ(m->layer(i).activation_bytes_per_sample(m->shapes()[static_cast<size_t>(i)]),
              expected[static_cast<size_t>(i)])
        << m->layer(i).name();
  }
}

TEST_F(ModelTest, WorkspaceBytesMatchWhatTheOpsTake) {
  std::vector<float> x(static_cast<size_t>(64 * kMnist.numel()), 0.25f);
  std::vector<float> dy(64 * 10, 0.1f);
  for (int64_t n : {1, 7, 64}) {
    auto fresh = Context::make_cpu(1);
    auto model = build_model(*fresh, cnn({4, 8}, 5, {16}), kMnist, 10);
    const ConstTensor y = model->forward(ConstTensor(x.data(), kMnist.with_batch(n)));
    model->backward(ConstTensor(dy.data(), y.shape));
    // The context keeps one workspace, grown to the largest request.
    const auto taken = fresh->allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Workspace)];
    EXPECT_EQ(model->workspace_bytes(n), taken) << "batch " << n;
  }
}

TEST_F(ModelTest, ReleasedActivationsAreFreedAndComeBack) {
  auto m = build_model(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  m->init(1);
  std::vector<float> x(static_cast<size_t>(8 * kMnist.numel()), 0.5f);
  auto activations = [&] {
    return ctx_->allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Activations)];
  };
  const ConstTensor y = m->forward(ConstTensor(x.data(), kMnist.with_batch(8)));
  const std::vector<float> before(y.data, y.data + y.numel());
  m->release_activations();
  EXPECT_EQ(activations(), 0u);  // outputs, gradient buffers and the pools' argmax
  const ConstTensor again = m->forward(ConstTensor(x.data(), kMnist.with_batch(3)));
  EXPECT_EQ(activations(), static_cast<size_t>(3 * m->activation_bytes_per_sample()));
  for (int64_t i = 0; i < again.numel(); ++i) EXPECT_EQ(again.data[i], before[static_cast<size_t>(i)]);
}

TEST_F(ModelTest, UnknownModelNameIsAConfigErrorListingTheChoices) {
  ModelSpec spec;
  spec.name = "resnet";
  try {
    build_model(*ctx_, spec, kMnist, 10);
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.name"), std::string::npos) << msg;
    EXPECT_NE(msg.find("resnet"), std::string::npos) << msg;
    EXPECT_NE(msg.find("mlp, cnn"), std::string::npos) << msg;
  }
}

// Expects a ConfigError whose message contains every fragment.
void expect_config_error(Context& ctx, const ModelSpec& spec, const Shape& input,
                         const std::vector<std::string>& fragments) {
  try {
    build_model(ctx, spec, input, 10);
    ADD_FAILURE() << "expected a ConfigError for " << spec.name << " on " << input.str();
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    for (const std::string& f : fragments) {
      EXPECT_NE(msg.find(f), std::string::npos) << "'" << f << "' not in: " << msg;
    }
  }
}

TEST_F(ModelTest, SpecsThatDoNotFitTheInputAreConfigErrors) {
  // 28 -> 14 -> 7 -> 3 -> 1 -> 0.
  expect_config_error(*ctx_, cnn({4, 4, 4, 4, 4}, 3, {}), kMnist,
                      {"model.channels", "after 5 conv-pool stages", "0x0", "at most 4"});
  expect_config_error(*ctx_, cnn({4}, 4, {}), kMnist, {"model.kernel_size", "odd"});
  expect_config_error(*ctx_, cnn({}, 5, {}), kMnist, {"model.channels", "empty"});
  expect_config_error(*ctx_, cnn({4, 0}, 5, {}), kMnist, {"model.channels[1]"});
  expect_config_error(*ctx_, cnn({4}, 5, {16, -2}), kMnist, {"model.cnn_hidden[1]"});
  expect_config_error(*ctx_, mlp({32, 0}), kMnist, {"model.hidden[1]"});
  expect_config_error(*ctx_, cnn({4}, 5, {}), Shape{784}, {"model.name", "cnn", "(784)"});
}

TEST_F(ModelTest, LayersThatDoNotFitAreConfigErrorsNamingTheLayer) {
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(std::make_unique<Relu>());
  layers.push_back(std::make_unique<Linear>(10, 5));
  try {
    Model m(*ctx_, std::move(layers), Shape{12});
    FAIL() << "expected a ConfigError";
  } catch (const ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("layer 1 of 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("linear(10->5)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(12)"), std::string::npos) << msg;
  }
  // A 1x1 image cannot be pooled; the builder says which key to change.
  expect_config_error(*ctx_, cnn({4}, 3, {}), Shape{1, 1, 1}, {"model.channels", "0x0"});
}

}  // namespace
}  // namespace dtrain
