// Model structure: shapes and parameter counts by formula, the flat layout, seeded
// initialisation, the loss the model owns against a reference computed here from its
// logits, memory accounting against the allocator, and spec errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "kernels/errors.h"
#include "kernels/memory.h"
#include "kernels/rng.h"
#include "models/linear.h"
#include "models/batch.h"
#include "models/model.h"
#include "models/relu.h"
#include "models/sequential_classifier.h"

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

// build_model for images of `input` shape with `classes` labels; the MLP and the CNN
// are SequentialClassifiers, whose layers and shapes these tests inspect.
std::unique_ptr<SequentialClassifier> build_classifier(Context& ctx, const ModelSpec& spec,
                                                       const Shape& input, int64_t classes) {
  std::unique_ptr<Model> model =
      build_model(ctx, spec, DataFacts{SampleLayout{input, ElementType::kFloat32, Shape{}}, classes, false});
  auto* classifier = dynamic_cast<SequentialClassifier*>(model.get());
  if (classifier == nullptr) throw std::logic_error(spec.name + " is not a SequentialClassifier");
  model.release();
  return std::unique_ptr<SequentialClassifier>(classifier);
}

// A batch of `n` samples over host vectors (CPU device memory is host memory).
struct HostBatch {
  std::vector<float> inputs;
  std::vector<int32_t> labels;
  std::vector<int64_t> ids;
  Batch batch(int64_t n) const {
    return Batch{n, inputs.data(), labels.data(), ids.data(), 0};
  }
};

HostBatch host_batch(const Shape& input, int64_t n, int64_t classes, uint64_t seed, float fill = -1.0f) {
  HostBatch b;
  Rng rng(seed);
  b.inputs.resize(static_cast<size_t>(n * input.numel()));
  for (float& v : b.inputs) v = fill >= 0.0f ? fill : static_cast<float>(rng.uniform());
  for (int64_t i = 0; i < n; ++i) {
    b.labels.push_back(static_cast<int32_t>(rng.below(static_cast<uint64_t>(classes))));
    b.ids.push_back(i);
  }
  return b;
}

std::vector<float> params_of(const Model& m) {
  return std::vector<float>(m.params(), m.params() + m.param_count());
}

class ModelTest : public ::testing::Test {
 protected:
  std::unique_ptr<Context> ctx_ = Context::make_cpu(1);
};

TEST_F(ModelTest, DefaultMlpIs784x256x128x10) {
  auto m = build_classifier(*ctx_, ModelSpec{}, kMnist, 10);
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
  auto m = build_classifier(*ctx_, cnn({16, 32}, 5, {128}), kMnist, 10);
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
  auto m = build_classifier(*ctx_, cnn({2, 3}, 3, {}), Shape{3, 9, 7}, 4);
  EXPECT_EQ(m->shapes()[3], (Shape{2, 4, 3}));
  EXPECT_EQ(m->shapes()[6], (Shape{3, 2, 1}));
  EXPECT_EQ(m->param_count(), (2 * 3 * 9 + 2) + (3 * 2 * 9 + 3) + (3 * 2 * 1 * 4 + 4));
}

TEST_F(ModelTest, LayerParamRangesAreContiguousAndCoverTheBuffer) {
  for (const ModelSpec& spec : {ModelSpec{}, cnn({4, 8}, 5, {16})}) {
    auto m = build_classifier(*ctx_, spec, kMnist, 10);
    ASSERT_EQ(m->param_ranges().size(), static_cast<size_t>(m->num_layers()));
    int64_t next = 0;
    for (int i = 0; i < m->num_layers(); ++i) {
      const ParamRange r = m->param_ranges()[static_cast<size_t>(i)];
      EXPECT_EQ(r.offset, next) << spec.name << " layer " << i;
      EXPECT_EQ(r.count, m->layer(i).param_count()) << spec.name << " layer " << i;
      next += r.count;
    }
    EXPECT_EQ(next, m->param_count()) << spec.name;
  }
}

TEST_F(ModelTest, ParamsAndGradsAreAccountedByCategory) {
  auto m = build_classifier(*ctx_, ModelSpec{}, kMnist, 10);
  const MemoryStats s = ctx_->allocator().stats();
  const size_t bytes = static_cast<size_t>(m->param_count()) * sizeof(float);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Params)], bytes);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Grads)], bytes);
  EXPECT_EQ(s.in_use_by[static_cast<int>(MemoryCategory::Activations)], 0u);
}

TEST_F(ModelTest, InitIsDeterministicPerSeed) {
  for (const ModelSpec& spec : {ModelSpec{}, cnn({4, 8}, 5, {16})}) {
    auto a = build_classifier(*ctx_, spec, kMnist, 10);
    auto b = build_classifier(*ctx_, spec, kMnist, 10);
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
  auto small = build_classifier(*ctx_, mlp({8}), kMnist, 10);
  auto large = build_classifier(*ctx_, mlp({8, 6}), kMnist, 10);
  small->init(3);
  large->init(3);
  const ParamRange r = small->param_ranges()[1];
  ASSERT_EQ(r.offset, large->param_ranges()[1].offset);
  ASSERT_EQ(r.count, large->param_ranges()[1].count);
  for (int64_t i = r.offset; i < r.offset + r.count; ++i) {
    ASSERT_EQ(small->params()[i], large->params()[i]) << i;
  }
}

TEST_F(ModelTest, LayersOfTheSameShapeGetDifferentValues) {
  std::vector<std::unique_ptr<Layer>> layers;
  layers.push_back(std::make_unique<Linear>(6, 6));
  layers.push_back(std::make_unique<Linear>(6, 6));
  SequentialClassifier m(*ctx_, "test", std::move(layers), Shape{6});
  m.init(4);
  const int64_t count = m.param_ranges()[0].count;
  int64_t equal = 0;
  for (int64_t i = 0; i < count; ++i) equal += m.params()[i] == m.params()[count + i] ? 1 : 0;
  EXPECT_EQ(equal, 0);
}

TEST_F(ModelTest, InitFollowsPyTorchDefaultBounds) {
  auto m = build_classifier(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  m->init(11);
  // Layers with parameters and their fan_in: conv 1*5*5, conv 4*5*5, linear 392, linear 16.
  const std::vector<std::pair<int, double>> fan_in{{0, 25}, {3, 100}, {7, 392}, {9, 16}};
  for (const auto& [layer, fan] : fan_in) {
    const ParamRange r = m->param_ranges()[static_cast<size_t>(layer)];
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
  auto m = build_classifier(*ctx_, mlp({8}), kMnist, 10);
  for (int64_t i = 0; i < m->param_count(); ++i) m->grads()[i] = 1.0f;
  m->init(1);
  for (int64_t i = 0; i < m->param_count(); ++i) ASSERT_EQ(m->grads()[i], 0.0f) << i;
}

TEST_F(ModelTest, LoadParamsCopiesExactlyAndRejectsWrongCounts) {
  auto m = build_classifier(*ctx_, mlp({8}), kMnist, 10);
  std::vector<float> host(static_cast<size_t>(m->param_count()));
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i) * 0.25f;
  m->load_params(host.data(), m->param_count());
  EXPECT_EQ(params_of(*m), host);
  EXPECT_THROW(m->load_params(host.data(), m->param_count() - 1), DataError);
}

TEST_F(ModelTest, ForwardKeepsTheBatchOfLogits) {
  auto m = build_classifier(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  m->init(5);
  const HostBatch data = host_batch(kMnist, 5, 10, 6);
  double stats[kModelStats] = {0.0, 0.0};
  m->forward(data.batch(5), Pass::kEval, 1.0f, stats);
  const ConstTensor y = m->logits();
  EXPECT_EQ(y.shape, (Shape{5, 10}));
  for (int64_t i = 0; i < y.numel(); ++i) ASSERT_TRUE(std::isfinite(y.data[i]));

  // A smaller batch reuses the buffers and gives each sample the same logits.
  const std::vector<float> first(y.data, y.data + 3 * 10);
  m->forward(data.batch(3), Pass::kTrain, 1.0f, stats);
  const ConstTensor y3 = m->logits();
  EXPECT_EQ(y3.shape, (Shape{3, 10}));
  for (int64_t i = 0; i < 30; ++i) {
    EXPECT_NEAR(y3.data[i], first[static_cast<size_t>(i)], 1e-5f * (1 + std::abs(first[static_cast<size_t>(i)])));
  }
}

// The loss and the statistic the model adds, against a log-softmax in double over its
// own logits: the sum of -log p(label) and the count of rows whose argmax is the label.
TEST_F(ModelTest, ForwardAddsTheLossSumAndCorrectCountOfItsLogits) {
  for (const ModelSpec& spec : {mlp({8}), cnn({4, 8}, 5, {16})}) {
    for (Pass pass : {Pass::kEval, Pass::kTrain}) {
      auto m = build_classifier(*ctx_, spec, kMnist, 10);
      m->init(9);
      const int64_t n = 7;
      const HostBatch data = host_batch(kMnist, n, 10, 10);
      double stats[kModelStats] = {1.5, 2.0};  // forward adds, so start from non-zero sums
      m->forward(data.batch(n), pass, 1.0f / static_cast<float>(n), stats);
      const ConstTensor y = m->logits();
      ASSERT_EQ(y.shape, (Shape{n, 10}));
      double loss = 0.0;
      int64_t correct = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float* row = y.data + i * 10;
        double top = row[0];
        int64_t arg = 0;
        for (int64_t c = 1; c < 10; ++c) {
          if (row[c] > top) top = row[c], arg = c;
        }
        double z = 0.0;
        for (int64_t c = 0; c < 10; ++c) z += std::exp(static_cast<double>(row[c]) - top);
        const int32_t label = data.labels[static_cast<size_t>(i)];
        loss += top + std::log(z) - static_cast<double>(row[label]);
        correct += arg == label ? 1 : 0;
      }
      EXPECT_NEAR(stats[kModelLossSum] - 1.5, loss, 1e-5 * (1.0 + loss)) << spec.name;
      EXPECT_EQ(stats[kModelMetric] - 2.0, static_cast<double>(correct)) << spec.name;
      // Accuracy is the statistic over the samples.
      const std::vector<Metric> metrics = m->eval_metrics(3.0, loss, 4);
      ASSERT_EQ(metrics.size(), 1u);
      EXPECT_EQ(metrics[0].name, "accuracy");
      EXPECT_DOUBLE_EQ(metrics[0].value, 0.75);
    }
  }
}

TEST_F(ModelTest, ParamTensorsNameEachWeightAndBiasInBufferOrder) {
  auto m = build_classifier(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  const std::vector<ParamTensor> t = m->param_tensors();
  // conv (layer 0), conv (3), linear (7), linear (9): weight then bias, as PyTorch.
  const std::vector<std::pair<std::string, Shape>> expected{
      {"layers.0.weight", Shape{4, 1, 5, 5}}, {"layers.0.bias", Shape{4}},
      {"layers.3.weight", Shape{8, 4, 5, 5}}, {"layers.3.bias", Shape{8}},
      {"layers.7.weight", Shape{16, 392}},    {"layers.7.bias", Shape{16}},
      {"layers.9.weight", Shape{10, 16}},     {"layers.9.bias", Shape{10}}};
  ASSERT_EQ(t.size(), expected.size());
  int64_t next = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_EQ(t[i].name, expected[i].first);
    EXPECT_EQ(t[i].shape, expected[i].second) << t[i].name;
    EXPECT_EQ(t[i].offset, next) << t[i].name;
    next += t[i].count();
  }
  EXPECT_EQ(next, m->param_count());
}

TEST_F(ModelTest, ActivationBytesMatchTheAllocator) {
  auto m = build_classifier(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  // Per sample: outputs of conv, relu (4x28x28 each), pool (4x14x14), conv, relu
  // (8x14x14 each), pool (8x7x7), no copy for flatten, linear, relu (16), linear (10);
  // int32 argmax of both pools; two gradient buffers as large as the largest input of
  // a layer after the first (4x28x28); the loss gradient (10).
  const int64_t outputs = 2 * 4 * 28 * 28 + 4 * 14 * 14 + 2 * 8 * 14 * 14 + 8 * 7 * 7 + 16 + 16 + 10;
  const int64_t argmax = 4 * 14 * 14 + 8 * 7 * 7;
  const int64_t grads = 2 * 4 * 28 * 28;
  const int64_t dlogits = 10;
  EXPECT_EQ(m->activation_bytes_per_sample(), 4 * (outputs + argmax + grads + dlogits));

  m->init(1);
  const HostBatch data = host_batch(kMnist, 6, 10, 2, 0.5f);
  auto activations = [&] {
    return static_cast<int64_t>(
        ctx_->allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Activations)]);
  };
  for (int64_t n : {2, 6, 4}) {
    double stats[kModelStats] = {0.0, 0.0};
    m->forward(data.batch(n), Pass::kTrain, 1.0f / static_cast<float>(n), stats);
    m->backward();
  }
  // Grown to the largest batch seen (6), never beyond.
  EXPECT_EQ(activations(), 6 * m->activation_bytes_per_sample());
}

TEST_F(ModelTest, FlopsPerSampleFollowTheLayerFormulas) {
  // MLP 784-256-128-10: GEMMs 2 in out, biases out, ReLUs one per element.
  auto m = build_classifier(*ctx_, mlp({256, 128}), kMnist, 10);
  const int64_t mlp_forward = (2 * 784 * 256 + 256) + 256 + (2 * 256 * 128 + 128) + 128 + (2 * 128 * 10 + 10);
  EXPECT_EQ(m->forward_flops_per_sample(), mlp_forward);
  EXPECT_EQ(m->training_flops_per_sample(), 3 * mlp_forward);
  // CNN [4, 8] k5, hidden 16: conv 28x28x4 outputs of 2*1*25+1, relu, pool (a compare
  // per input), conv 14x14x8 of 2*4*25+1, relu, pool, then the two linears.
  auto c = build_classifier(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  const int64_t cnn_forward = 4 * 28 * 28 * 51 + 4 * 28 * 28 + 4 * 28 * 28 + 8 * 14 * 14 * 201 + 8 * 14 * 14 +
                              8 * 14 * 14 + (2 * 392 * 16 + 16) + 16 + (2 * 16 * 10 + 10);
  EXPECT_EQ(c->forward_flops_per_sample(), cnn_forward);
}

TEST_F(ModelTest, EachLayerReportsItsOwnActivationBytes) {
  auto m = build_classifier(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
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
  const HostBatch data = host_batch(kMnist, 64, 10, 3, 0.25f);
  for (int64_t n : {1, 7, 64}) {
    auto fresh = Context::make_cpu(1);
    auto model = build_classifier(*fresh, cnn({4, 8}, 5, {16}), kMnist, 10);
    double stats[kModelStats] = {0.0, 0.0};
    model->forward(data.batch(n), Pass::kTrain, 1.0f / static_cast<float>(n), stats);
    model->backward();
    // The context keeps one workspace, grown to the largest request.
    const auto taken = fresh->allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Workspace)];
    EXPECT_EQ(model->workspace_bytes(n), taken) << "batch " << n;
  }
}

TEST_F(ModelTest, ReleasedActivationsAreFreedAndComeBack) {
  auto m = build_classifier(*ctx_, cnn({4, 8}, 5, {16}), kMnist, 10);
  m->init(1);
  const HostBatch data = host_batch(kMnist, 8, 10, 4, 0.5f);
  auto activations = [&] {
    return ctx_->allocator().stats().in_use_by[static_cast<int>(MemoryCategory::Activations)];
  };
  double stats[kModelStats] = {0.0, 0.0};
  // The logits of the batch of 3 before the release, from activations of a batch of 8
  // (the same shape's products: an element's bits may depend on a GEMM's extents,
  // Note [One thread pool]).
  m->forward(data.batch(3), Pass::kTrain, 1.0f, stats);
  const ConstTensor y = m->logits();
  const std::vector<float> before(y.data, y.data + y.numel());
  m->forward(data.batch(8), Pass::kTrain, 1.0f, stats);
  m->release_activations();
  EXPECT_EQ(activations(), 0u);  // outputs, gradient buffers, the loss gradient and the pools' argmax
  m->forward(data.batch(3), Pass::kTrain, 1.0f, stats);
  EXPECT_EQ(activations(), static_cast<size_t>(3 * m->activation_bytes_per_sample()));
  const ConstTensor again = m->logits();
  ASSERT_EQ(again.shape, (Shape{3, 10}));
  for (int64_t i = 0; i < again.numel(); ++i) EXPECT_EQ(again.data[i], before[static_cast<size_t>(i)]);
}

TEST_F(ModelTest, UnknownModelNameIsAConfigErrorListingTheChoices) {
  ModelSpec spec;
  spec.name = "resnet";
  try {
    build_classifier(*ctx_, spec, kMnist, 10);
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
    build_model(ctx, spec, DataFacts{SampleLayout{input, ElementType::kFloat32, Shape{}}, 10, false});
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
    SequentialClassifier m(*ctx_, "test", std::move(layers), Shape{12});
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
