// dtrain against PyTorch, the independent implementation: the fixtures in
// tests/golden/ hold a small MLP's and CNN's parameters, a batch, and PyTorch's
// logits, loss and parameter gradients for it (tests/golden/make_golden.py writes
// them). The parameters are loaded in PyTorch's parameters() order, so a passing
// test also proves that dtrain's flat layout is PyTorch's.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "models/batch.h"
#include "models/model.h"
#include "models/sequential_classifier.h"
#include "tests/unit/models/golden_fixture.h"

namespace dtrain {
namespace {

using testing_golden::Fixture;
using testing_golden::read_fixture;

const char* const kRegenerate = "regenerate with: /usr/bin/python3 tests/golden/make_golden.py";

ModelSpec spec_of(const Fixture& f) {
  ModelSpec spec;
  spec.name = f.key("model").at(0);
  if (spec.name == "mlp") {
    spec.hidden = f.ints("hidden");
  } else {
    spec.channels = f.ints("channels");
    spec.kernel_size = f.ints("kernel_size").at(0);
    spec.cnn_hidden = f.ints("cnn_hidden");
  }
  return spec;
}

// |ours - torch| <= 1e-6 + 1e-4 |torch| per element: float summation orders differ
// between the two, nothing else may.
::testing::AssertionResult close_to_torch(const float* ours, const std::vector<float>& torch,
                                          const std::string& what) {
  int bad = 0;
  std::ostringstream detail;
  for (size_t i = 0; i < torch.size(); ++i) {
    const double err = std::abs(static_cast<double>(ours[i]) - torch[i]);
    if (!(err <= 1e-6 + 1e-4 * std::abs(torch[i]))) {
      if (bad++ < 5) detail << "\n  [" << i << "] dtrain " << ours[i] << " torch " << torch[i];
    }
  }
  if (bad == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": " << bad << " of " << torch.size()
                                       << " values differ from PyTorch" << detail.str();
}

void check_against_torch(const std::string& file) {
  const std::string path = std::string(DTRAIN_SOURCE_DIR) + "/tests/golden/" + file;
  Fixture f;
  try {
    f = read_fixture(path);
  } catch (const std::exception& e) {
    FAIL() << e.what() << "; " << kRegenerate;
  }

  auto ctx = Context::make_cpu(1);
  const std::vector<int64_t> dims = f.ints("input_shape");
  const Shape input(dims);
  const int64_t classes = f.ints("classes").at(0);
  const int64_t batch = f.ints("batch").at(0);
  std::unique_ptr<Model> built =
      build_model(*ctx, spec_of(f), DataFacts{SampleLayout{input, ElementType::kFloat32, Shape{}}, classes, false});
  auto* model = dynamic_cast<SequentialClassifier*>(built.get());
  ASSERT_NE(model, nullptr) << f.key("model").at(0) << " is not a SequentialClassifier";

  // The parameter tensors, in PyTorch's parameters() order, are our flat layout:
  // each layer with parameters has a weight then a bias tensor, of its sizes.
  std::vector<std::string> param_names;
  std::vector<float> params;
  for (const auto& [name, values] : f.tensors) {
    if (name.rfind("param:", 0) != 0) continue;
    param_names.push_back(name.substr(6));
    params.insert(params.end(), values.begin(), values.end());
  }
  ASSERT_EQ(static_cast<int64_t>(params.size()), model->param_count()) << path;
  size_t t = 0;
  for (int i = 0; i < model->num_layers(); ++i) {
    const ParamRange r = model->param_ranges()[static_cast<size_t>(i)];
    if (r.count == 0) continue;
    ASSERT_LT(t + 1, param_names.size());
    const int64_t w = static_cast<int64_t>(f.tensor("param:" + param_names[t]).size());
    const int64_t b = static_cast<int64_t>(f.tensor("param:" + param_names[t + 1]).size());
    EXPECT_EQ(w + b, r.count) << model->layer(i).name() << " vs " << param_names[t];
    t += 2;
  }
  model->load_params(params.data(), model->param_count());

  const std::vector<float>& x = f.tensor("input");
  std::vector<int32_t> labels;
  for (float v : f.tensor("labels")) labels.push_back(static_cast<int32_t>(v));
  ASSERT_EQ(static_cast<int64_t>(x.size()), batch * input.numel());
  ASSERT_EQ(static_cast<int64_t>(labels.size()), batch);

  std::vector<int64_t> ids;
  for (int64_t i = 0; i < batch; ++i) ids.push_back(i);
  // The trainer's loss: the mean over the batch, so each sample's gradient is scaled
  // by 1/batch.
  model->zero_grads();
  double stats[kModelStats] = {0.0, 0.0};
  model->forward(Batch{batch, x.data(), labels.data(), ids.data(), 0}, Pass::kTrain,
                 1.0f / static_cast<float>(batch), stats);
  const ConstTensor logits = model->logits();
  ASSERT_EQ(logits.shape, (Shape{batch, classes}));
  EXPECT_TRUE(close_to_torch(logits.data, f.tensor("logits"), "logits"));

  const float loss = static_cast<float>(stats[kModelLossSum] / static_cast<double>(batch));
  EXPECT_TRUE(close_to_torch(&loss, f.tensor("loss"), "loss"));

  model->backward();
  int64_t offset = 0;
  for (const std::string& name : param_names) {
    const std::vector<float>& g = f.tensor("grad:" + name);
    EXPECT_TRUE(close_to_torch(model->grads() + offset, g, "gradient of " + name));
    offset += static_cast<int64_t>(g.size());
  }
}

TEST(GoldenPyTorch, MlpLogitsLossAndGradientsMatch) { check_against_torch("mlp.golden"); }

TEST(GoldenPyTorch, CnnLogitsLossAndGradientsMatch) { check_against_torch("cnn.golden"); }

}  // namespace
}  // namespace dtrain
