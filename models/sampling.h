// Text generation from a language model's next-token logits: temperature, top-k and a
// seeded generator (kernels/rng.h), so that the same seed gives the same tokens on
// every machine. The choice of one token is a pure function of the logits, the
// options and one uniform draw; the generator draws exactly one uniform per token.
//
//   p_i = exp((l_i - max_j l_j) / temperature) over the top_k largest logits (ties
//   broken by the lower token id), 0 for the others; the token is the first i, in
//   the order of decreasing logit, whose cumulative p reaches u * sum(p).
//
// Temperature 0 is greedy decoding: the argmax (the lowest id among equal maxima).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kernels/rng.h"

namespace dtrain {

class Model;

struct SamplingOptions {
  double temperature = 1.0;  // >= 0; 0: greedy (argmax)
  int64_t top_k = 0;         // > 0: sample among the k most likely tokens; 0: all
};

// Throws ConfigError naming the option when temperature is negative or not finite,
// or top_k is negative.
void check_sampling_options(const SamplingOptions& options);

// The token that `u` in [0, 1) picks from `logits` (see the header comment).
// `logits` must not be empty; non-finite logits other than -inf are not allowed.
int32_t sample_token(std::span<const float> logits, const SamplingOptions& options, double u);

// Draws tokens one after another: a seeded stream of uniforms through sample_token.
class TokenSampler {
 public:
  TokenSampler(const SamplingOptions& options, uint64_t seed);
  int32_t next(std::span<const float> logits) { return sample_token(logits, options_, rng_.uniform()); }

 private:
  SamplingOptions options_;
  Rng rng_;
};

// Generates `count` tokens after `prompt` (at least one token) from `model`'s
// next_token_logits (models/model.h), calling on_token(token) as each is drawn.
// Returns the generated tokens (not the prompt). A model that cannot generate throws
// ConfigError from its next_token_logits.
std::vector<int32_t> generate_tokens(Model& model, const std::vector<int32_t>& prompt, int64_t count,
                                     const SamplingOptions& options, uint64_t seed,
                                     const std::function<void(int32_t)>& on_token = {});

}  // namespace dtrain
