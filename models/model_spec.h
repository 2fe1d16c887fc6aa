// What the config says about the model: the runtime fills it, models/ builds from it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dtrain {

struct ModelSpec {
  std::string name = "mlp";                    // "mlp", "cnn" or "gpt"
  std::vector<int64_t> hidden = {256, 128};    // mlp: hidden widths (784-256-128-10)
  std::vector<int64_t> channels = {16, 32};    // cnn: output channels of each conv-relu-pool
  int64_t kernel_size = 5;                     // cnn: square kernel, "same" padding, stride 1
  std::vector<int64_t> cnn_hidden = {128};     // cnn: fully connected widths before the classifier
  // gpt (GPT-2's architecture, models/gpt.h)
  int64_t n_layer = 4;     // transformer blocks
  int64_t n_head = 4;      // attention heads; n_embd must be a multiple
  int64_t n_embd = 128;    // the residual stream's width
  int64_t seq_len = 64;    // tokens per sample (the context length)
  int64_t vocab = 0;       // token values; 0: from the data (256 for bytes of text)
  double dropout = 0.0;    // on the embeddings and both residual branches of each block
  uint64_t seed = 1;       // the run's seed (train.seed), for dropout's masks
  std::string compute = "fp32";  // precision.compute: fp32 | bf16 (the runtime fills it, as seed)
  std::string recompute = "none";  // memory.recompute: none | blocks (the runtime fills it, as seed)
};

}  // namespace dtrain
