#include "models/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "kernels/errors.h"
#include "models/model.h"

namespace dtrain {
namespace {

// Mixed with the user's seed, so that sampling draws from a stream of its own
// (parameter init and the data order use others).
constexpr uint64_t kSamplingPurpose = 0x73616d706c65ULL;  // "sample"

// Token a before token b: the larger logit, then the lower id.
struct MoreLikely {
  std::span<const float> logits;
  bool operator()(int32_t a, int32_t b) const {
    const float la = logits[static_cast<size_t>(a)], lb = logits[static_cast<size_t>(b)];
    return la != lb ? la > lb : a < b;
  }
};

}  // namespace

void check_sampling_options(const SamplingOptions& options) {
  if (!std::isfinite(options.temperature) || options.temperature < 0.0) {
    throw ConfigError("temperature " + std::to_string(options.temperature) +
                      " is out of range: use a finite number >= 0 (1 samples the model's distribution, "
                      "lower is more conservative, 0 always takes the most likely token)");
  }
  if (options.top_k < 0) {
    throw ConfigError("top-k " + std::to_string(options.top_k) +
                      " is out of range: use 0 (all tokens) or a positive number of the most likely tokens");
  }
}

int32_t sample_token(std::span<const float> logits, const SamplingOptions& options, double u) {
  const auto vocab = static_cast<int64_t>(logits.size());
  if (vocab == 0) throw Error("sampling: no logits to sample from");
  for (const float l : logits) {
    if (std::isnan(l) || (std::isinf(l) && l > 0)) {
      throw Error("sampling: the model gave a logit of " + std::to_string(l) + "; its parameters are not finite");
    }
  }
  const MoreLikely more_likely{logits};
  if (options.temperature == 0.0 || options.top_k == 1) {
    int32_t best = 0;
    for (int32_t i = 1; i < vocab; ++i) {
      if (more_likely(i, best)) best = i;
    }
    return best;
  }
  const int64_t k = options.top_k > 0 ? std::min(options.top_k, vocab) : vocab;
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), more_likely);
  order.resize(static_cast<size_t>(k));

  const double top = logits[static_cast<size_t>(order[0])];
  if (std::isinf(top)) throw Error("sampling: every logit is -inf; there is no token to take");
  std::vector<double> weights(order.size());
  double total = 0.0;
  for (size_t i = 0; i < order.size(); ++i) {
    weights[i] = std::exp((static_cast<double>(logits[static_cast<size_t>(order[i])]) - top) / options.temperature);
    total += weights[i];
  }
  // weights[0] is 1, so total >= 1 and the target below is reached.
  const double target = u * total;
  double cumulative = 0.0;
  for (size_t i = 0; i < order.size(); ++i) {
    cumulative += weights[i];
    if (cumulative > target) return order[i];
  }
  // Rounding left the sum short of the target: the least likely token with weight.
  for (size_t i = order.size(); i-- > 0;) {
    if (weights[i] > 0.0) return order[i];
  }
  return order[0];
}

TokenSampler::TokenSampler(const SamplingOptions& options, uint64_t seed)
    : options_(options), rng_(Rng::mix(seed, kSamplingPurpose)) {
  check_sampling_options(options_);
}

std::vector<int32_t> generate_tokens(Model& model, const std::vector<int32_t>& prompt, int64_t count,
                                     const SamplingOptions& options, uint64_t seed,
                                     const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) throw ConfigError("the prompt is empty; generation needs at least one token to start from");
  if (count < 0) throw ConfigError("cannot generate " + std::to_string(count) + " tokens; use 0 or more");
  TokenSampler sampler(options, seed);
  std::vector<int32_t> context = prompt;
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const std::vector<float> logits = model.next_token_logits(context);
    const int32_t token = sampler.next(logits);
    context.push_back(token);
    out.push_back(token);
    if (on_token) on_token(token);
  }
  return out;
}

}  // namespace dtrain
