// Sampling the next token (models/sampling.h): the greedy limits, the distribution
// against a softmax computed here, top-k, the seeded stream, and generation through
// the Model interface (a GPT generates, a classifier refuses).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "kernels/errors.h"
#include "kernels/rng.h"
#include "models/model.h"
#include "models/sampling.h"

namespace dtrain {
namespace {

std::vector<float> random_logits(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> l(static_cast<size_t>(n));
  for (float& x : l) x = static_cast<float>(3.0 * rng.normal());
  return l;
}

int32_t argmax(const std::vector<float>& l) {
  return static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
}

// softmax(l / t) over the `k` largest logits (all when k is 0), in double.
std::vector<double> softmax_top_k(const std::vector<float>& l, double t, size_t k) {
  std::vector<float> sorted = l;
  std::sort(sorted.begin(), sorted.end(), std::greater<>());
  const float cutoff = sorted[(k == 0 ? l.size() : k) - 1];
  std::vector<double> p(l.size(), 0.0);
  double sum = 0.0;
  for (size_t i = 0; i < l.size(); ++i) {
    if (l[i] >= cutoff) sum += p[i] = std::exp(static_cast<double>(l[i]) / t);
  }
  for (double& x : p) x /= sum;
  return p;
}

// Draws `n` tokens and checks each token's count against n p within 5 binomial
// standard deviations (plus one for rounding): a false alarm has odds below 1e-5 per
// token, and a sampler off by a few percent of p fails.
void expect_frequencies(const std::vector<float>& logits, const SamplingOptions& options,
                        const std::vector<double>& p, int64_t n, uint64_t seed) {
  TokenSampler sampler(options, seed);
  std::vector<int64_t> counts(logits.size(), 0);
  for (int64_t i = 0; i < n; ++i) ++counts[static_cast<size_t>(sampler.next(logits))];
  for (size_t v = 0; v < logits.size(); ++v) {
    const double expected = static_cast<double>(n) * p[v];
    const double sd = std::sqrt(static_cast<double>(n) * p[v] * (1.0 - p[v]));
    EXPECT_NEAR(static_cast<double>(counts[v]), expected, 5.0 * sd + 1.0) << "token " << v << ", p " << p[v];
  }
}

TEST(Sampling, TopKOneIsTheArgmaxForAnyDraw) {
  SamplingOptions options;
  options.top_k = 1;
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    const std::vector<float> l = random_logits(37, seed);
    for (const double u : {0.0, 0.3, 0.999999}) EXPECT_EQ(sample_token(l, options, u), argmax(l));
  }
}

TEST(Sampling, TemperatureTowardZeroIsTheArgmax) {
  // The runner-up's probability is below exp(-0.01 / t): under 1e-43 at t = 1e-4, so
  // even u = 1 - 1e-6 falls on the argmax.
  const std::vector<float> l = {0.5f, 2.0f, 1.99f, -3.0f, 1.0f};
  for (const double t : {0.0, 1e-4, 1e-6}) {
    SamplingOptions options;
    options.temperature = t;
    for (const double u : {0.0, 0.5, 0.999999}) EXPECT_EQ(sample_token(l, options, u), 1) << "temperature " << t;
  }
}

TEST(Sampling, EqualMaximaGreedyTakesTheLowestId) {
  SamplingOptions options;
  options.temperature = 0.0;
  EXPECT_EQ(sample_token(std::vector<float>{1.0f, 3.0f, 0.0f, 3.0f}, options, 0.9), 1);
}

TEST(Sampling, FrequenciesMatchTheSoftmax) {
  const std::vector<float> l = {1.0f, 0.0f, -1.0f, 2.0f, 0.5f, -4.0f};
  for (const double t : {1.0, 0.7, 2.0}) {
    SamplingOptions options;
    options.temperature = t;
    expect_frequencies(l, options, softmax_top_k(l, t, 0), 40000, 11);
  }
}

TEST(Sampling, TopKSamplesOnlyTheKMostLikelyRenormalised) {
  const std::vector<float> l = random_logits(50, 5);
  SamplingOptions options;
  options.top_k = 3;
  options.temperature = 1.5;
  expect_frequencies(l, options, softmax_top_k(l, 1.5, 3), 30000, 3);
  // A k beyond the vocabulary is all of it.
  options.top_k = 1000;
  expect_frequencies(l, options, softmax_top_k(l, 1.5, 0), 30000, 4);
}

TEST(Sampling, MinusInfinityIsNeverDrawnAndNanIsAnError) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> l = {-inf, 0.0f, -inf, 0.0f};
  SamplingOptions options;
  TokenSampler sampler(options, 9);
  for (int i = 0; i < 1000; ++i) {
    const int32_t t = sampler.next(l);
    EXPECT_TRUE(t == 1 || t == 3) << t;
  }
  EXPECT_THROW(sample_token(std::vector<float>{0.0f, std::nanf("")}, options, 0.5), Error);
  EXPECT_THROW(sample_token(std::vector<float>{-inf, -inf}, options, 0.5), Error);
  EXPECT_THROW(sample_token(std::vector<float>{}, options, 0.5), Error);
}

TEST(Sampling, TheSameSeedGivesTheSameTokensAndAnotherSeedOthers) {
  const std::vector<float> l = random_logits(64, 2);
  SamplingOptions options;
  auto draw = [&](uint64_t seed) {
    TokenSampler sampler(options, seed);
    std::vector<int32_t> out;
    for (int i = 0; i < 200; ++i) out.push_back(sampler.next(l));
    return out;
  };
  EXPECT_EQ(draw(1), draw(1));
  EXPECT_NE(draw(1), draw(2));
}

TEST(Sampling, BadOptionsAreConfigErrors) {
  SamplingOptions options;
  options.temperature = -0.5;
  EXPECT_THROW(check_sampling_options(options), ConfigError);
  options.temperature = std::nan("");
  EXPECT_THROW(TokenSampler(options, 1), ConfigError);
  options.temperature = 1.0;
  options.top_k = -1;
  EXPECT_THROW(check_sampling_options(options), ConfigError);
}

DataFacts byte_windows(int64_t seq_len) {
  DataFacts data;
  data.layout.input = Shape{seq_len};
  data.layout.input_type = ElementType::kInt32;
  data.layout.target = Shape{seq_len};
  data.classes = 256;
  data.tokens_are_bytes = true;
  return data;
}

TEST(Generation, AGptGreedilyFollowsItsOwnArgmaxAndSeedsRepeat) {
  auto ctx = Context::make_cpu(1);
  ModelSpec spec;
  spec.name = "gpt";
  spec.n_layer = 1;
  spec.n_head = 2;
  spec.n_embd = 8;
  spec.seq_len = 6;
  const std::unique_ptr<Model> model = build_model(*ctx, spec, byte_windows(spec.seq_len));
  model->init(3);
  ASSERT_TRUE(model->can_generate());
  const std::vector<int32_t> prompt = {'\n', 'a'};

  SamplingOptions greedy;
  greedy.temperature = 0.0;
  std::vector<int32_t> seen;
  const std::vector<int32_t> out =
      generate_tokens(*model, prompt, 10, greedy, 1, [&](int32_t t) { seen.push_back(t); });
  ASSERT_EQ(out.size(), 10u);
  EXPECT_EQ(seen, out);
  std::vector<int32_t> context = prompt;  // the same loop, by hand
  for (const int32_t t : out) {
    EXPECT_EQ(t, argmax(model->next_token_logits(context)));
    context.push_back(t);
  }

  SamplingOptions sampled;
  EXPECT_EQ(generate_tokens(*model, prompt, 30, sampled, 7), generate_tokens(*model, prompt, 30, sampled, 7));
  EXPECT_NE(generate_tokens(*model, prompt, 30, sampled, 7), generate_tokens(*model, prompt, 30, sampled, 8));
  EXPECT_THROW(generate_tokens(*model, {}, 3, sampled, 1), ConfigError);
}

TEST(Generation, AClassifierSaysItCannotGenerate) {
  auto ctx = Context::make_cpu(1);
  DataFacts images;
  images.layout.input = Shape{1, 4, 4};
  images.layout.input_type = ElementType::kFloat32;
  images.layout.target = Shape{1};
  images.classes = 3;
  ModelSpec spec;
  spec.name = "mlp";
  spec.hidden = {5};
  const std::unique_ptr<Model> model = build_model(*ctx, spec, images);
  EXPECT_FALSE(model->can_generate());
  try {
    generate_tokens(*model, {1}, 3, SamplingOptions{}, 1);
    FAIL() << "a classifier generated tokens";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model 'mlp'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot generate"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace dtrain
